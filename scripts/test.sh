#!/usr/bin/env bash
# Installs what the tests need (scripts/install.sh), then runs the whole
# suite: lint (ruff), types (mypy --strict) and pytest, as root, against real
# components (the embedded Bolt server, namespaces, OVS, real packets).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check skygraph tests benchmarks
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
