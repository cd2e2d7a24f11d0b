"""The committed generated modules are exactly what scripts/gen-protos.sh makes
with the pinned grpcio-tools (a reproducible build)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RPC = ROOT / "skygraph" / "rpc"


def test_regenerating_gives_identical_files(tmp_path: Path) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "gen-protos.sh"), str(tmp_path)], check=True,
                   env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}, capture_output=True)
    made = sorted(p.name for p in (tmp_path / "skygraph" / "rpc").iterdir())
    assert made == ["agent_pb2.py", "agent_pb2.pyi", "agent_pb2_grpc.py"]
    for name in made:
        fresh = (tmp_path / "skygraph" / "rpc" / name).read_bytes()
        assert fresh == (RPC / name).read_bytes(), \
            f"skygraph/rpc/{name} differs from a fresh build: run scripts/gen-protos.sh"


def test_generated_modules_import() -> None:
    from skygraph.rpc import agent_pb2, agent_pb2_grpc
    assert agent_pb2.DESCRIPTOR.package == "skygraph.rpc.v1"
    assert hasattr(agent_pb2_grpc, "AnalyzerStub")
