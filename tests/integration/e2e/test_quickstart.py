"""The README quick start, as written: `skygraph allinone` on the embedded graph,
a capture created with the CLI, a ping, the flows queried through the analyzer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from typing import Any

import pytest

from tests.conftest import RUN_ID, free_port
from tests.integration.e2e.test_two_agents import terminate, wait

pytestmark = [pytest.mark.root, pytest.mark.slow]
SKYGRAPH = [sys.executable, "-m", "skygraph.cli"]


def test_allinone_quick_start(tmp_path):
    listen = f"127.0.0.1:{free_port()}"
    cfg = tmp_path / "quick.yml"
    cfg.write_text(f"analyzer:\n  listen: {listen}\n  rpc:\n    listen: 127.0.0.1:{free_port()}\n"
                   f"graph:\n  embedded:\n    data_dir: {tmp_path / (RUN_ID + '-data')}\n"
                   f"    bolt_port: {free_port()}\n    http_port: {free_port()}\n"
                   f"    heap: 512m\nflow:\n  update: 1\n"
                   f"agent:\n  topology:\n    probes: []\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGRAPH_")}
    log = open(tmp_path / "allinone.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*SKYGRAPH, "-c", str(cfg), "allinone"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)

    def cli(*args: str) -> Any:
        out = subprocess.run([*SKYGRAPH, *args, "--analyzer", listen], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else None

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://{listen}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False
    try:
        wait("the analyzer", healthy, timeout=120)
        lo = "G.V().Has('Type', 'host').Out('Name', 'lo')"
        wait("the host's lo", lambda: cli("query", lo))
        capture = cli("capture", "create", "--gremlin", lo, "--bpf", "icmp")

        def active() -> bool:
            caps = cli("query", lo)[0]["Metadata"].get("Captures") or []
            return any(c["ID"] == capture["UUID"] and c["State"] == "active" for c in caps)
        wait("the capture active on lo", active)
        subprocess.run(["ping", "-c", "3", "-i", "0.2", "127.0.0.1"], check=True,
                       capture_output=True, timeout=30)

        def flows() -> list[Any]:
            found = cli("query", "G.Flows().Has('Application', 'ICMPv4')") or []
            return [f for f in found if f["Metric"]["ABPackets"] + f["Metric"]["BAPackets"] == 6]
        # 3 requests + 3 replies, each seen once on lo (not twice: out and in). Both ends
        # are 127.0.0.1, so Skydive's identical-endpoints rule (SPEC #9) counts one way.
        [flow] = wait("the ICMP flow", flows)
        assert (flow["Network"]["A"], flow["Network"]["B"]) == ("127.0.0.1", "127.0.0.1")
        assert cli("capture", "list")[capture["UUID"]]["Count"] == 1
    finally:
        terminate(proc, 60)
        log.close()
    assert proc.returncode == 0, (tmp_path / "allinone.log").read_text()[-3000:]
