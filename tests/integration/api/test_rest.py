"""Skydive's REST API on a real analyzer: status codes and bodies as Skydive
clients expect them (SPEC §1g), captures stored in the graph."""

from __future__ import annotations

import time

import pytest

from skygraph.topology.embedded import EmbeddedConfig, EmbeddedServer
from tests.conftest import RUN_ID, BoltServer, LoopThread, free_port
from tests.integration.api.conftest import analyzer_config, running

HOST = {"ID": f"{RUN_ID}-host", "Host": "h1", "Metadata": {"Name": "h1", "Type": "host"}}
ETH0 = {"ID": f"{RUN_ID}-eth0", "Host": "h1",
        "Metadata": {"Name": "eth0", "Type": "veth", "MTU": 1500}}
OWN = {"ID": f"{RUN_ID}-own", "Host": "h1", "Parent": HOST["ID"], "Child": ETH0["ID"],
       "Metadata": {"RelationType": "ownership"}}


def test_service_topology_and_gremlin(analyzer_at):
    with analyzer_at() as a:
        info = a.request("GET", "/api")
        assert info.status == 200 and info.json()["Service"] == "analyzer"
        status = a.request("GET", "/api/status").json()
        assert status["Graph"]["Healthy"] is True and "Version" in status
        for path, body in (("/api/node", HOST), ("/api/node", ETH0), ("/api/edge", OWN)):
            r = a.request("POST", path, body)
            assert r.status == 201, r.body
        assert r.json()["Revision"] == 1
        assert a.request("POST", "/api/node", HOST).status == 409
        missing = a.request("POST", "/api/edge", {**OWN, "ID": "e2", "Child": "nope"})
        assert missing.status == 400 and b"nope does not exist" in missing.body

        q = a.request("POST", "/api/topology",
                      {"GremlinQuery": "G.V().Has('Name', 'h1').Out().Values('MTU')"})
        assert (q.status, q.json()) == (200, [1500])
        topo = a.request("GET", "/api/topology").json()
        assert {n["ID"] for n in topo["Nodes"]} == {HOST["ID"], ETH0["ID"]}
        assert [e["ID"] for e in topo["Edges"]] == [OWN["ID"]]

        dot = a.request("POST", "/api/topology", {"GremlinQuery": "G.V()"},
                        {"Accept": "text/vnd.graphviz"})
        assert dot.status == 200 and dot.headers["content-type"].startswith("text/vnd.graphviz")
        assert dot.body.startswith(b"digraph") and b'"eth0' in dot.body
        assert a.request("POST", "/api/topology", {"GremlinQuery": "G.V().Count()"},
                         {"Accept": "text/vnd.graphviz"}).status == 406
        assert a.request("POST", "/api/topology", {"GremlinQuery": ""}).status == 204
        bad = a.request("POST", "/api/topology", {"GremlinQuery": "G.V().Hsa('Name')"})
        assert bad.status == 400 and "column" in bad.json()["error"]
        assert a.request("POST", "/api/topology", raw=b"{nope").status == 400
        yaml_body = a.request("POST", "/api/topology", raw=b"GremlinQuery: G.V().Count()\n",
                              headers={"Content-Type": "application/yaml"})
        assert yaml_body.json() == 2

        patched = a.request("PATCH", f"/api/node/{ETH0['ID']}",
                            [{"op": "add", "path": "/Metadata/MTU", "value": 9000}])
        assert patched.status == 200 and patched.json()["Revision"] == 2
        assert a.request("PATCH", f"/api/node/{ETH0['ID']}",
                         [{"op": "add", "path": "/Metadata/MTU", "value": 9000}]).status == 304
        was = a.request("POST", "/api/topology",
                        {"GremlinQuery": "G.V().Has('Name', 'eth0').Values('MTU')"}).json()
        assert was == [9000]
        assert a.request("DELETE", f"/api/node/{ETH0['ID']}").status == 200
        assert a.request("GET", f"/api/node/{ETH0['ID']}").status == 404
        assert a.request("GET", f"/api/edge/{OWN['ID']}").status == 404  # deleted with it
        assert a.request("DELETE", f"/api/node/{ETH0['ID']}").status == 404


CAPTURE = {"GremlinQuery": "G.V().Has('Name', 'eth0')", "Name": "c1", "BPFFilter": "icmp",
           "Type": "afpacket", "RawPacketLimit": 5, "ExtraLayers": ["DNS", "VRRP"]}


def test_capture_resource_lifecycle(analyzer_at):
    with analyzer_at() as a:
        created = a.request("POST", "/api/capture", CAPTURE)
        assert created.status == 201, created.body
        c = created.json()
        assert c["State"] == "pending" and c["Count"] == 0 and c["ExtraLayers"] == 3
        assert c["LayerKeyMode"] == "L2" and c["HeaderSize"] == 0 and len(c["UUID"]) == 36
        assert c["Workers"] == 0  # skygraph extension: 0 = the agent's agent.capture.workers
        assert a.request("GET", "/api/capture").json() == {c["UUID"]: c}
        assert a.request("GET", f"/api/capture/{c['UUID']}").json() == c
        dup = a.request("POST", "/api/capture", CAPTURE)
        assert dup.status == 409 and dup.json()["existing"] == c["UUID"]
        # afpacket allows several captures per node when the BPF differs
        other = a.request("POST", "/api/capture", {**CAPTURE, "BPFFilter": "udp", "Workers": 4})
        assert other.status == 201 and other.json()["Workers"] == 4
        workers = other.json()["UUID"]
        assert a.request("GET", f"/api/capture/{workers}").json()["Workers"] == 4
        # pcapsocket does not
        ps = {**CAPTURE, "Type": "pcapsocket"}
        assert a.request("POST", "/api/capture", ps).status == 201
        assert a.request("POST", "/api/capture", {**ps, "BPFFilter": "udp"}).status == 409
        assert a.request("PATCH", f"/api/capture/{c['UUID']}", []).status == 405
        assert a.request("DELETE", f"/api/capture/{c['UUID']}").status == 200
        assert a.request("GET", f"/api/capture/{c['UUID']}").status == 404
        assert a.request("DELETE", f"/api/capture/{c['UUID']}").status == 404
        kept = set(a.request("GET", "/api/capture").json())
    # Captures are in the graph: a new analyzer has them.
    with analyzer_at() as b:
        assert set(b.request("GET", "/api/capture").json()) == kept
        assert b.request("GET", f"/api/capture/{workers}").json()["Workers"] == 4


def test_each_invalid_capture_field_gets_its_own_error(analyzer_at):
    spec = {"GremlinQuery": "G.V(.", "BPFFilter": "not a filter ((", "Type": "nope",
            "HeaderSize": 5, "RawPacketLimit": 11, "LayerKeyMode": "L4",
            "ExtraLayers": ["SMTP"], "Target": "host-without-port", "TargetType": "netflowv5",
            "Port": 70000, "SamplingRate": -1, "Colour": "red", "ExtraTCPMetric": "yes",
            "Workers": 65}
    with analyzer_at() as a:
        r = a.request("POST", "/api/capture", spec)
        assert r.status == 400
        errors = {e["field"]: e["message"] for e in r.json()["errors"]}
        assert set(errors) == {"GremlinQuery", "BPFFilter", "Type", "HeaderSize",
                               "RawPacketLimit", "LayerKeyMode", "ExtraLayers", "Target",
                               "Port", "SamplingRate", "Colour", "ExtraTCPMetric", "Workers"}
        assert "column" in errors["GremlinQuery"]
        assert "0..10" in errors["RawPacketLimit"]
        assert "0..64" in errors["Workers"]
        assert errors["Colour"] == "unknown field"
        # capability table: ebpf has no BPF and keeps no raw packets
        r = a.request("POST", "/api/capture", {"GremlinQuery": "G.V()", "Type": "ebpf",
                                               "BPFFilter": "icmp", "RawPacketLimit": 1})
        assert {e["field"] for e in r.json()["errors"]} == {"BPFFilter", "RawPacketLimit"}
        assert a.request("POST", "/api/capture", {"Name": "x"}).json()["errors"] == [
            {"field": "GremlinQuery", "message": "required"}]
        assert a.request("GET", "/api/capture").json() == {}


def test_capture_ttl_header_deletes_it(analyzer_at):
    with analyzer_at() as a:
        c = a.request("POST", "/api/capture", CAPTURE, {"X-Resource-TTL": "1s"}).json()
        assert c["TTL"] == 1000
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and \
                a.request("GET", f"/api/capture/{c['UUID']}").status == 200:
            time.sleep(0.2)
        assert a.request("GET", f"/api/capture/{c['UUID']}").status == 404
        assert a.request("POST", "/api/capture", CAPTURE,
                         {"X-Resource-TTL": "soon"}).status == 400


@pytest.mark.slow
def test_database_down_is_a_clear_503_without_internals(tmp_path):
    """A database of its own, stopped (not restarted by a supervisor) under the analyzer."""
    config = EmbeddedConfig(data_dir=tmp_path / "db", bolt_port=free_port(),
                            http_port=free_port(), heap="512m", database="skygraph")
    server = EmbeddedServer(config)
    loop = LoopThread()
    loop.run(server.start())
    try:
        cfg = analyzer_config(BoltServer(server, loop), tmp_path)
        with running(cfg) as a:
            query = {"GremlinQuery": "G.V().Count()"}
            assert a.request("POST", "/api/topology", query).status == 200
            loop.run(server.stop())
            for path, body in (("/api/topology", query), ("/api/capture", None)):
                r = a.request("POST" if body else "GET", path, body)
                assert r.status == 503, r.body
                assert "unavailable" in r.json()["error"] and b"Traceback" not in r.body
            assert a.request("GET", "/health").status == 503
            gql = a.request("POST", "/graphql", {"query": "{ nodes { edges { node { id } } } }"})
            assert b"Traceback" not in gql.body
            assert "unavailable" in gql.json()["errors"][0]["message"]
            loop.run(server.start())
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and a.request("GET", "/health").status != 200:
                time.sleep(0.5)
            assert a.request("POST", "/api/topology", query).json() == 0
    finally:
        loop.run(server.stop())
        loop.close()


def test_unknown_paths_and_methods_answer_json(analyzer_at):
    with analyzer_at() as a:
        r = a.request("GET", "/api/nope")
        assert (r.status, r.json()) == (404, {"error": "no such resource: /api/nope"})
        r = a.request("PUT", "/api/status", {})
        assert r.status == 405 and "PUT is not allowed" in r.json()["error"]


def test_listening_socket_lets_asyncio_disable_nagle():
    """asyncio sets TCP_NODELAY only on sockets whose proto is TCP; without it every
    keep-alive response waited 40 ms (found by benchmarks/api.py)."""
    import socket

    from skygraph import analyzer
    sock = analyzer.bind(f"127.0.0.1:{free_port()}")
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_the_readme_curl_line_works(analyzer_at):
    """`curl -XPOST localhost:8082/api/topology -d '{"GremlinQuery": ...}'` (form content type)."""
    import subprocess
    with analyzer_at() as a:
        out = subprocess.run(["curl", "-s", "-XPOST", f"{a.url}/api/topology", "-d",
                              '{"GremlinQuery": "G.V().Count()"}'], capture_output=True,
                             text=True, timeout=30)
        assert (out.returncode, out.stdout) == (0, "0")
