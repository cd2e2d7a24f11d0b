#!/usr/bin/env bash
# Installs everything skygraph needs on Debian 12 as root: system packages
# (Open vSwitch, capture tools, independent decoders used by the tests) and a
# virtualenv in .venv with skygraph and its Python dependencies (the embedded
# Bolt server comes from the arcadedb-embedded wheel). Idempotent: a second
# run only checks. SKYGRAPH_SKIP_APT=1 skips the system packages.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

apt_pkgs=(python3 python3-venv python3-dev gcc iproute2 iputils-ping tcpdump tshark tcpreplay chromium
          softflowd nfdump openvswitch-switch netcat-openbsd procps curl openssl libpcap0.8
          pmacct   # pmacct: sfacctd, an independent sFlow decoder for the target tests
          vagrant) # vagrant: `vagrant validate` of the lab's Vagrantfile
if [ "${SKYGRAPH_SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "install: apt packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# Prefer an interpreter >= 3.11 already on PATH (pyenv), else Debian's.
py=""
for c in python3.11 python3.12 python3.13 python3 /usr/bin/python3; do
  if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    py=$(command -v "$c"); break
  fi
done
[ -n "$py" ] || { echo "install: no Python >= 3.11 found" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
stamp=.venv/.skygraph-installed
stale=
for f in pyproject.toml skygraph/capture/_fastflow.c skygraph/capture/_fastflow_*.h; do
  [ "$f" -nt "$stamp" ] && stale=1
done
if [ ! -f "$stamp" ] || [ -n "$stale" ]; then
  log=.venv/pip-install.log
  # a new file for the C extension: processes that loaded the old one keep it
  rm -f skygraph/capture/_fastflow.*.so
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q -e ".[dev]" &&
         # skydive-client (test peer): its REST client needs only the standard library;
         # its declared deps pull the Python 2 era `asyncio` backport, so skip them.
         .venv/bin/python -m pip install -q --no-deps skydive-client==0.10.0; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install: pip failed (log above, also in $log)" >&2
    exit 1
  fi
  touch "$stamp"
fi
echo "install: ok ($(.venv/bin/python --version), skygraph in $here/.venv)"
