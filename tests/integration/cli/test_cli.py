"""`skygraph` as users run it: the analyzer on the embedded default, graph
import/export, and what a Bolt client sees afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import neo4j
import pytest

from skygraph.capture.offline import process_file
from skygraph.capture.options import CaptureOptions
from skygraph.topology.flowschema import write_row
from skygraph.topology.flowstore import FlowStore
from tests.conftest import PCAPS, RUN_ID, free_port, open_store, run

SKYGRAPH = [sys.executable, "-m", "skygraph.cli"]

TOPOLOGY = {
    "Nodes": [
        {"ID": "host-1", "Metadata": {"Name": "agent1", "Type": "host",
                                      "mydict": {"value": 123}}},
        {"ID": "ns-1", "Metadata": {"Name": "vm1", "Type": "netns",
                                    "Path": "/var/run/netns/vm1"}},
        {"ID": "if-1", "Metadata": {"Name": "eth0", "Type": "veth", "MTU": 1500, "TID": "tid-eth0",
                                    "IPV4": ["192.168.0.1/24"],
                                    "Neighbors": [{"IP": "192.168.0.2", "MAC": "aa:bb"}]}},
        {"ID": "br-1", "Metadata": {"Name": "br-int", "Type": "ovsbridge", "UUID": "u1"}},
        {"ID": "pt-1", "Metadata": {"Name": "tap1", "Type": "ovsport", "UUID": "u2"}},
    ],
    "Edges": [
        {"ID": "e1", "Parent": "host-1", "Child": "ns-1",
         "Metadata": {"RelationType": "ownership"}},
        {"ID": "e2", "Parent": "ns-1", "Child": "if-1",
         "Metadata": {"RelationType": "ownership"}},
        {"ID": "e3", "Parent": "br-1", "Child": "pt-1", "Metadata": {"RelationType": "layer2"}},
        {"ID": "e4", "Parent": "pt-1", "Child": "if-1", "Metadata": {"RelationType": "layer2",
                                                                    "Type": "veth"}},
    ],
}


def graph_env(bolt_server) -> dict[str, str]:
    return {**os.environ, "SKYGRAPH_GRAPH_URI": bolt_server.uri,
            "SKYGRAPH_GRAPH_USER": bolt_server.user,
            "SKYGRAPH_GRAPH_PASSWORD": bolt_server.password}


def import_sample(bolt_server, tmp_path) -> dict[str, str]:
    """`skygraph graph import --replace` of TOPOLOGY; returns the environment used."""
    path = tmp_path / "topo.json"
    path.write_text(json.dumps(TOPOLOGY))
    env = graph_env(bolt_server)
    out = subprocess.run([*SKYGRAPH, "graph", "import", "--replace", str(path)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "imported 5 nodes and 4 edges" in out.stderr
    return env


def test_import_then_a_bolt_client_sees_the_documented_model(bolt_server, tmp_path):
    """Acceptance: labels, relationship types and properties of docs/graph-model.md."""
    env = import_sample(bolt_server, tmp_path)
    with neo4j.GraphDatabase.driver(bolt_server.uri,
                                    auth=(bolt_server.user, bolt_server.password)) as d:
        labels = {tuple(sorted(r["l"])) for r in d.execute_query(
            "MATCH (n:Node) RETURN labels(n) AS l").records}
        assert labels == {("Host", "Node"), ("Netns", "Node"), ("Interface", "Node"),
                          ("Node", "OvsBridge"), ("Node", "OvsPort")}
        rels = {r["t"] for r in d.execute_query(
            "MATCH (:Node)-[r]->(:Node) RETURN type(r) AS t").records}
        assert rels == {"OWNERSHIP", "LAYER2"}
        [row] = d.execute_query(
            "MATCH (:Host {Name: 'agent1'})-[:OWNERSHIP]->(:Netns)-[:OWNERSHIP]->(i:Interface) "
            "RETURN i.MTU AS mtu, i.IPV4 AS ip, i.Neighbors AS nb, i._json AS js").records
        assert (row["mtu"], row["ip"]) == (1500, ["192.168.0.1/24"])
        assert json.loads(row["nb"]) == [{"IP": "192.168.0.2", "MAC": "aa:bb"}]
        assert row["js"] == ['["Neighbors"]']
        [row] = d.execute_query("MATCH (h:Host) RETURN h.`mydict.value` AS v").records
        assert row["v"] == 123
    out = subprocess.run([*SKYGRAPH, "graph", "export"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert {n["ID"]: n["Metadata"] for n in doc["Nodes"]} == {
        n["ID"]: n["Metadata"] for n in TOPOLOGY["Nodes"]}
    assert {e["ID"]: (e["Parent"], e["Child"]) for e in doc["Edges"]} == {
        e["ID"]: (e["Parent"], e["Child"]) for e in TOPOLOGY["Edges"]}


def test_query_runs_the_seed_question_on_the_imported_graph(bolt_server, tmp_path):
    env = import_sample(bolt_server, tmp_path)
    out = subprocess.run([*SKYGRAPH, "query", "G.V().Has('Name', 'vm1').Out().Has('Name', 'eth0')"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert [n["ID"] for n in json.loads(out.stdout)] == ["if-1"]
    out = subprocess.run([*SKYGRAPH, "query", "G.V().Has('Name', 'vm1'"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "column" in out.stderr and "expected ')'" in out.stderr


def test_import_of_a_bad_file_names_the_element(tmp_path, bolt_server):
    bad = {"Nodes": [{"ID": "x", "Metadata": {"Type": "veth"}}], "Edges": []}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    out = subprocess.run([*SKYGRAPH, "graph", "import", str(path)], env=graph_env(bolt_server),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "node x: field 'Metadata.Name': required" in out.stderr


def test_unreachable_database_is_a_clear_error(tmp_path):
    env = {**os.environ, "SKYGRAPH_GRAPH_URI": f"bolt://127.0.0.1:{free_port()}",
           "SKYGRAPH_GRAPH_PASSWORD": "x"}
    cfg = tmp_path / "c.yml"
    cfg.write_text("graph:\n  connect_timeout: 2\n  writer:\n    max_batch: 10\n")
    out = subprocess.run([*SKYGRAPH, "-c", str(cfg), "graph", "export"], env=env,
                         capture_output=True, text=True, timeout=120,
                         )
    assert out.returncode == 1
    assert "does not answer after 2s" in out.stderr


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.slow
def test_analyzer_on_the_embedded_default_serves_health_and_stops_on_sigterm(tmp_path):
    data = tmp_path / f"{RUN_ID}-data"
    listen = f"127.0.0.1:{free_port()}"
    cfg = tmp_path / "analyzer.yml"
    cfg.write_text(f"analyzer:\n  listen: {listen}\n  rpc:\n    listen: 127.0.0.1:{free_port()}\n"
                   f"graph:\n  embedded:\n"
                   f"    data_dir: {data}\n    bolt_port: {free_port()}\n"
                   f"    http_port: {free_port()}\n    heap: 512m\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGRAPH_")}
    proc = subprocess.Popen([*SKYGRAPH, "-c", str(cfg), "analyzer"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline:
            try:
                status = _get(f"http://{listen}/health")
                break
            except OSError:
                time.sleep(0.3)
        assert status == (200, {"status": "ok", "graph": "ok"})
        code, body = _get(f"http://{listen}/api/status")
        assert code == 200 and body["Graph"]["Backend"] == "embedded"
        assert "ArcadeDB" in body["Graph"]["Server"]
        java_pid = int((data / "embedded" / "server.pid").read_text())
        assert _get(f"http://{listen}/nope")[0] == 404
        # Other commands with the same configuration reuse the running server.
        topo = tmp_path / "topo.json"
        topo.write_text(json.dumps(TOPOLOGY))
        out = subprocess.run([*SKYGRAPH, "-c", str(cfg), "graph", "import", str(topo)], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "reusing it" in out.stderr
        out = subprocess.run([*SKYGRAPH, "-c", str(cfg), "query", "G.V().Count()"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert (out.returncode, out.stdout.strip()) == (0, "5"), out.stderr
        assert int((data / "embedded" / "server.pid").read_text()) == java_pid
        assert _get(f"http://{listen}/health")[0] == 200
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "analyzer stopped" in out
        assert not Path(f"/proc/{java_pid}").exists(), "the embedded server must stop too"
        assert (data / "embedded" / "credentials").stat().st_mode & 0o777 == 0o600
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_busy_listen_port_is_a_clear_error(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = {**os.environ, "SKYGRAPH_GRAPH_URI": "bolt://127.0.0.1:1"}
        out = subprocess.run([*SKYGRAPH, "analyzer", "--listen", f"127.0.0.1:{port}"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert f"analyzer.listen 127.0.0.1:{port}: cannot listen: Address already in use" \
        in out.stderr


def test_every_query_in_the_graph_model_doc_runs(bolt_server, tmp_path):
    """The Cypher users paste from docs/graph-model.md runs and finds the imported graph."""
    import re
    import_sample(bolt_server, tmp_path)
    # flows captured on eth0: a VXLAN tunnel flow and the two TCP flows inside it
    vxlan = process_file(PCAPS / "vxlan-src-port.pcap", CaptureOptions(), node_tid="tid-eth0")

    async def write_flows() -> None:
        store = await open_store(bolt_server, clear=False)
        await FlowStore(store).write([write_row(f.to_json(), "agent1", 1) for f in vxlan.flows])
        await store.close()
    run(write_flows())
    doc = (Path(__file__).resolve().parents[3] / "docs" / "graph-model.md").read_text()
    queries = re.findall(r"```cypher\n(.*?)```", doc, re.S)
    assert len(queries) == 12
    now = int(time.time() * 1000)
    with neo4j.GraphDatabase.driver(bolt_server.uri,
                                    auth=(bolt_server.user, bolt_server.password)) as d:
        results = [d.execute_query(q.replace("1795217648540", str(now))).records
                   for q in queries]
    # 7-10 (a flow's metric samples, bytes per minute, raw packets, an interface's
    # counters over time) run here; their answers are checked in test_flowstore.py
    # and the history tests, on data that has samples and packets
    host_paths, bridges, veths, addressed, revisions, at_now, tunnelled = results[:7]
    on_eth0 = results[11]
    assert len(host_paths) == 2  # host->vm1, host->vm1->eth0
    assert [(r["bridge"], r["port"], r["interface"]) for r in bridges] == [
        ("br-int", "tap1", "eth0")]
    assert veths == []  # the sample has no veth pair
    assert [r["i.Name"] for r in addressed] == ["eth0"]
    assert [r["n.Revision"] for r in revisions] == [1]
    assert len(at_now) == 5
    assert [dict(r) for r in tunnelled] == [
        {"inner": "Ethernet/IPv4/TCP", "src": "192.168.0.1", "dst": "192.168.0.2",
         "tunnel": "Ethernet/IPv4/UDP/VXLAN", "vni": 10, "interface": "eth0", "host": "agent1"}
    ] * 2
    assert [(r["f.Application"], r["bytes"]) for r in on_eth0] == [
        ("VXLAN", 208), ("TCP", 54), ("TCP", 54)]
