#!/usr/bin/env bash
# Regenerates the Python modules of skygraph/rpc/*.proto (messages, .pyi stubs and gRPC
# service code) with grpcio-tools' bundled protoc, pinned in pyproject's dev extra so the
# output is byte-for-byte reproducible (tests/unit/rpc/test_protos.py checks it).
#
#   scripts/gen-protos.sh          regenerate in place (commit the result)
#   scripts/gen-protos.sh DIR      write into DIR/skygraph/rpc/ instead (the test uses this)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}
py=${PYTHON:-$root/.venv/bin/python}
cd "$root"
mkdir -p "$out/skygraph/rpc"
# Paths relative to the repo root: the generated imports become `from skygraph.rpc import ...`.
"$py" -m grpc_tools.protoc -I. --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  skygraph/rpc/*.proto
