#!/usr/bin/env bash
# Installs what the tests need (scripts/install.sh), then runs the whole
# suite: lint (ruff), types (mypy --strict), the C extension under
# AddressSanitizer/UBSan on the exactness tests (scripts/asan.sh, about 45 s)
# and pytest, as root, against real components (the embedded Bolt server,
# namespaces, OVS, real packets).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check skygraph tests benchmarks
.venv/bin/mypy
bash scripts/asan.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
