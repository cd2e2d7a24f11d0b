"""`skygraph capture ...` and `skygraph query --analyzer` against a running analyzer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SKYGRAPH = [sys.executable, "-m", "skygraph.cli"]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SKYGRAPH_")}
    return subprocess.run([*SKYGRAPH, *args], capture_output=True, text=True, timeout=120,
                          env={**clean, **(env or {})})


def test_capture_commands_and_remote_query(analyzer_at):
    with analyzer_at("analyzer:\n  auth:\n    token: s3cret\n") as a:
        auth = ["--analyzer", a.endpoint, "--token", "s3cret"]
        out = cli("capture", "create", "--gremlin", "G.V().Has('Name', 'eth0')", "--bpf", "icmp",
                  "--extra-layer", "DNS", "--rawpacket-limit", "2", "--reassamble-tcp",
                  "--workers", "4", *auth)
        assert out.returncode == 0, out.stderr
        created = json.loads(out.stdout)
        assert (created["BPFFilter"], created["ExtraLayers"], created["ReassembleTCP"],
                created["Workers"]) == ("icmp", 2, True, 4)
        node = cli("capture", "create", "--node", "it's-a-tid", *auth)
        assert node.returncode == 0, node.stderr
        assert json.loads(node.stdout)["GremlinQuery"] == "G.V().Has('TID', 'it\\'s-a-tid')"
        assert json.loads(node.stdout)["Workers"] == 0
        many = cli("capture", "create", "--node", "t2", "--workers", "65", *auth)
        assert many.returncode == 1 and "Workers: 65 is outside 0..64" in many.stderr
        listed = cli("capture", "list", *auth, env={"SKYGRAPH_ANALYZER": a.endpoint})
        assert set(json.loads(listed.stdout)) == {created["UUID"], json.loads(node.stdout)["UUID"]}
        bad = cli("capture", "create", "--gremlin", "G.V(", *auth)
        assert bad.returncode == 1 and f"analyzer {a.endpoint}: 400: invalid capture: " \
            "GremlinQuery: column" in bad.stderr
        assert cli("capture", "delete", created["UUID"], *auth).returncode == 0
        gone = cli("capture", "get", created["UUID"], *auth)
        assert gone.returncode == 1 and "404" in gone.stderr
        denied = cli("capture", "list", "--analyzer", a.endpoint)
        assert denied.returncode == 1 and "401: authentication required" in denied.stderr
        q = cli("query", "G.V().Count()", *auth)
        assert (q.returncode, q.stdout.strip()) == (0, "0"), q.stderr
    down = cli("capture", "list", "--analyzer", a.endpoint)
    assert down.returncode == 1 and "unreachable" in down.stderr
