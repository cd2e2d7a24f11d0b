"""The `skydive-client` package from PyPI, unchanged, against the analyzer:
topology lookups and captures, with and without authentication."""

from __future__ import annotations

import pytest
from skydive.rest.client import BadRequest, RESTClient

from skygraph.api.auth import add_user
from tests.conftest import RUN_ID


def exercise(client: RESTClient) -> None:
    host = client.node_create(f"{RUN_ID}-h", "h1", {"Name": "h1", "Type": "host"})
    eth = client.node_create(f"{RUN_ID}-e", "h1", {"Name": "eth0", "Type": "veth"})
    client.edge_create(host.id, eth.id, f"{RUN_ID}-o", "h1", {"RelationType": "ownership"})
    nodes = client.lookup_nodes("G.V().Has('Name', 'h1').Out('Type', 'veth')")
    assert [(n.id, n.host, n.metadata["Name"]) for n in nodes] == [(eth.id, "h1", "eth0")]
    edges = client.lookup_edges("G.E().Has('RelationType', 'ownership')")
    assert [(e.parent, e.child) for e in edges] == [(host.id, eth.id)]
    assert client.lookup("G.V().Count()") == 2

    capture = client.capture_create("G.V().Has('Name', 'eth0')", name="icmp",
                                    bpf_filter="icmp", capture_type="afpacket",
                                    raw_pkt_limit=3, header_size=128)
    assert capture.uuid and capture.bpf_filter == "icmp" and capture.header_size == 128
    listed = client.capture_list()
    assert [(c.uuid, c.query, c.name) for c in listed] == [
        (capture.uuid, "G.V().Has('Name', 'eth0')", "icmp")]
    with pytest.raises(BadRequest, match="same Type and GremlinQuery"):
        client.capture_create("G.V().Has('Name', 'eth0')", bpf_filter="icmp",
                              capture_type="afpacket")
    with pytest.raises(BadRequest, match="BPFFilter"):
        client.capture_create("G.V()", bpf_filter="tcp port ((")
    client.capture_delete(capture.uuid)
    assert client.capture_list() == []
    client.edge_delete(f"{RUN_ID}-o")
    client.node_delete(eth.id)
    assert [n.id for n in client.node_list()] == [host.id]


def test_skydive_client_without_auth(analyzer_at):
    with analyzer_at() as a:
        exercise(RESTClient(a.endpoint))


def test_skydive_client_logs_in(analyzer_at, tmp_path):
    users = tmp_path / "users"
    add_user(str(users), "admin", "pa55")
    with analyzer_at(f"analyzer:\n  auth:\n    users_file: {users}\n") as a:
        with pytest.raises(BadRequest):
            RESTClient(a.endpoint).lookup("G.V().Count()")
        with pytest.raises(Exception, match="401"):
            RESTClient(a.endpoint, username="admin", password="wrong").lookup("G.V()")
        exercise(RESTClient(a.endpoint, username="admin", password="pa55"))
