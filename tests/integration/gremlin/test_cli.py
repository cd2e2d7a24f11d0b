"""`skygraph query` through `run_async` (with the store's read) and as
`python -m skygraph.gremlin.cli` against the embedded server."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys

import pytest

from skygraph.gremlin.cli import add_arguments, run_async
from tests.conftest import BoltServer
from tests.integration.gremlin.conftest import GremlinDB
from tests.integration.gremlin.test_seeds import seeds_graph  # noqa: F401

pytestmark = pytest.mark.bolt


def cli(gdb: GremlinDB, *argv: str) -> tuple[int, str, str]:
    p = argparse.ArgumentParser()
    add_arguments(p)
    out, err = io.StringIO(), io.StringIO()
    code = gdb.loop.run(run_async(p.parse_args(argv), gdb.store.read, 0, out, err))
    return code, out.getvalue(), err.getvalue()


def test_json(gdb: GremlinDB) -> None:
    code, out, _ = cli(gdb, "G.V().Has('Name', 'vm1').Out().Has('Name', 'eth0')")
    assert code == 0
    (node,) = json.loads(out)
    assert node["ID"] == "vm1.eth0" and node["Metadata"]["Type"] == "veth"
    assert cli(gdb, "G.V().Count()")[1] == "11\n"


def test_dot(gdb: GremlinDB) -> None:
    code, out, _ = cli(gdb, "G.V().Has('Name', 'br0').OutE()", "--format", "dot")
    assert code == 0 and out.startswith("digraph skygraph {")
    assert '"br0" -> "vm1-eth0" [label="layer2"];' in out
    code, _, err = cli(gdb, "G.V().Count()", "--format", "dot")
    assert code == 2 and "needs a node, edge, path or subgraph result" in err


def test_errors(gdb: GremlinDB) -> None:
    code, _, err = cli(gdb, "G.V().Has('Name'")
    assert code == 1
    assert err == "skygraph: query: column 17: expected ')' after argument list\n"
    code, _, err = cli(gdb, "G.V()", "--max-results", "2")
    assert code == 1 and "more than 2 results" in err


def test_module_entry_point(bolt_server: BoltServer, gdb: GremlinDB) -> None:
    env = {**os.environ, "SKYGRAPH_GRAPH_URI": bolt_server.uri,
           "SKYGRAPH_GRAPH_USER": bolt_server.user,
           "SKYGRAPH_GRAPH_PASSWORD": bolt_server.password}
    proc = subprocess.run(
        [sys.executable, "-m", "skygraph.gremlin.cli",
         "G.V().Has('Name', 'vm1').Out().Has('Name', 'eth0')"],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert [n["ID"] for n in json.loads(proc.stdout)] == ["vm1.eth0"]
