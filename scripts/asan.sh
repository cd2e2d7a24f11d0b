#!/usr/bin/env bash
# The C extension (skygraph/capture/_fastflow.c) under AddressSanitizer and
# UndefinedBehaviorSanitizer, on the exactness tests.
#
# Builds the extension with -fsanitize=address,undefined into a temporary
# directory (the tree's normal .so is not touched) and runs the tests that
# compare the C path with the per-packet path with that build loaded as
# `skygraph.capture._fastflow`: a pytest plugin in the temporary directory
# (on PYTHONPATH, loaded with `-p` before any conftest or test module) puts a
# finder first on sys.meta_path that serves that one module name from the ASan
# build, and at the end checks the module loaded is that build and the one the
# fast path drives.  The ASan runtime is preloaded (the interpreter is not
# instrumented), Python objects are allocated with malloc (PYTHONMALLOC) so
# reads past a bytes object's end are seen, and any report aborts the run.
# Leaks are not checked here (CPython is not built for LeakSanitizer): see
# tests/unit/capture/test_capture_fastflow_memory.py.
#
# Exits non-zero on a build failure, a sanitizer report or a test failure.
#   SKYGRAPH_ASAN_SRC=path/to/_fastflow.c  build another copy of the source
#   SKYGRAPH_ASAN_KEEP=1                   keep the temporary directory
#   extra arguments: passed to pytest instead of the default test files
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
py=.venv/bin/python
src=${SKYGRAPH_ASAN_SRC:-skygraph/capture/_fastflow.c}
start=$SECONDS

tmp=$(mktemp -d /tmp/skygraph-asan.XXXXXX)
if [ "${SKYGRAPH_ASAN_KEEP:-0}" = 1 ]; then
  echo "asan: keeping $tmp"
else
  trap 'rm -rf "$tmp"' EXIT
fi

runtime() {  # the full path of a sanitizer runtime gcc links, or fail
  local lib
  lib=$(gcc -print-file-name="$1")
  [ "$lib" != "$1" ] && [ -e "$lib" ] || {
    echo "asan: gcc has no $1 (Debian: apt-get install libasan8 libubsan1)" >&2; exit 1; }
  readlink -f "$lib"
}
libasan=$(runtime libasan.so)
libubsan=$(runtime libubsan.so)

include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
suffix=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
so=$tmp/_fastflow-asan$suffix
# No -DNDEBUG (asserts on) and no -fwrapv (signed overflow reported by UBSan); the
# -Wextra warnings of the CPython C API's idioms (unused `self`/`closure`
# parameters, PyModuleDef's trailing fields) are off so that any other one stands out.
gcc -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
    -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -fPIC -shared -I"$include" -I"$(dirname "$src")" "$src" -o "$so"
nm -D --undefined-only "$so" | grep -q __asan_report_load || {
  echo "asan: $so is not instrumented" >&2; exit 1; }
echo "asan: built $so from $src ($((SECONDS - start)) s)"

cat >"$tmp/_skygraph_asan.py" <<'EOF'
"""pytest plugin (-p _skygraph_asan): `skygraph.capture._fastflow` from the ASan build."""
import importlib.machinery
import importlib.util
import os
import sys

NAME = "skygraph.capture._fastflow"
SO = os.environ["SKYGRAPH_ASAN_SO"]
assert NAME not in sys.modules, f"{NAME} was imported before the ASan shim"


class AsanFinder:
    """Serves NAME from the ASan build; every other import goes on as usual."""

    served = False

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != NAME:
            return None
        cls.served = True
        return importlib.util.spec_from_file_location(
            NAME, SO, loader=importlib.machinery.ExtensionFileLoader(NAME, SO))


sys.meta_path.insert(0, AsanFinder)


def loaded():
    """Why the loaded extension is not the ASan build driven by the fast path, or None."""
    from skygraph.capture import fastpath

    mod = sys.modules.get(NAME)
    file = getattr(mod, "__file__", None)
    if not AsanFinder.served or file != SO:
        return f"{NAME} is {file}, not the ASan build {SO}"
    if fastpath.native is not mod:
        return f"the fast path does not drive {SO} (fastpath.native is {fastpath.native!r})"
    return None


def pytest_report_header(config):
    from skygraph.capture import _fastflow

    return [f"asan: {NAME} from {_fastflow.__file__}"]


def pytest_sessionfinish(session, exitstatus):
    problem = loaded()
    if problem is not None:
        print(f"\nasan: FAIL: {problem}", file=sys.stderr)
        session.exitstatus = 1
    else:
        print(f"\nasan: the tests ran {sys.modules[NAME].__file__}", file=sys.stderr)
EOF

export SKYGRAPH_ASAN_SO=$so
export PYTHONPATH=$tmp${PYTHONPATH:+:$PYTHONPATH}
export PYTHONMALLOC=malloc  # every Python object from malloc, so ASan bounds them
# pytest captures with --capture=sys, not fd 2, so that the reports (written to fd 2
# before an abort) reach the log; ASan's also go to $tmp/sanitizer.<pid> (UBSan's
# runtime ignores log_path), from subprocesses too.  Any report fails the run.
# Allocation and free stacks are kept 10 frames deep (the default 30 costs 30 %).
reports=$tmp/sanitizer
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:strict_string_checks=1:check_initialization_order=1:malloc_context_size=10:log_path=$reports
export UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1:log_path=$reports
preload="$libasan $libubsan"

# The ASan build loads and is the extension the fast path drives (not the tree's).
LD_PRELOAD=$preload "$py" -c '
import _skygraph_asan, sys
from skygraph.capture import fastpath, _fastflow
problem = _skygraph_asan.loaded()
print("asan: loaded", _fastflow.__file__, "VERSION", _fastflow.VERSION)
sys.exit(f"asan: FAIL: {problem}" if problem else 0)' || {
  cat "$reports".* 2>/dev/null; echo "asan: FAIL: the ASan build does not load" >&2; exit 1; }

tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(tests/unit/capture/test_capture_fastpath.py
                                 tests/unit/capture/test_capture_fastflow.py
                                 tests/unit/capture/test_capture_afpacket.py)
log=$tmp/pytest.log
rc=0
LD_PRELOAD=$preload "$py" -m pytest -q -p no:cacheprovider --capture=sys -p _skygraph_asan "${tests[@]}" \
  >"$log" 2>&1 || rc=$?
found=$(find "$tmp" -maxdepth 1 -name "sanitizer.*" | wc -l)
lines=$(grep -cE 'ERROR: AddressSanitizer|runtime error:|SUMMARY: (Address|UndefinedBehavior)Sanitizer' \
        "$log" || true)
if [ "$rc" != 0 ] || [ "$found" != 0 ] || [ "$lines" != 0 ]; then
  cat "$log"
  for f in "$reports".*; do [ -e "$f" ] && { echo "---- $f"; cat "$f"; }; done
  echo "asan: FAIL (pytest exit $rc, $found sanitizer report files, log and reports above)" >&2
  exit 1
fi
tail -n 4 "$log"
echo "asan: ok, no sanitizer report ($((SECONDS - start)) s)"
