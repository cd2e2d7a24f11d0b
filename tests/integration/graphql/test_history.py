"""`at` and `during` over GraphQL: after an update and a delete, reads at an
earlier time point see the graph as it was (nodes, edges, neighbours), and a
time slice sees every revision alive in it."""

from __future__ import annotations

from typing import Any

import pytest

from skygraph.topology.model import Node
from skygraph.topology.mutations import NodeDeleted, NodeUpdated
from tests.integration.graphql.conftest import T0, Served

pytestmark = pytest.mark.bolt

T1 = T0 + 10_000   # if0-0 goes UP
T2 = T0 + 20_000   # if0-1 is deleted
BEFORE, BETWEEN = str(T0 + 5_000), str(T0 + 15_000)


@pytest.fixture(scope="module", autouse=True)
def changes(served: Served) -> None:
    up = {"Name": "eth0", "Type": "veth", "MTU": 1500, "State": "UP",
          "IPV4": ["10.0.0.1/24", "fe80::0:0/64"]}
    served.apply([NodeUpdated(Node("if0-0", up, UpdatedAt=T1))], at=T1)
    served.apply([NodeDeleted(Node("if0-1", {}, DeletedAt=T2))], at=T2)
    served.clock[0] = T2 + 1_000


NODE = """query($id: ID!, $at: String) { node(id: $id, at: $at) {
    id revision updatedAt deletedAt metadata
    neighbors { id }
    edges { id parent { id } child { id } } } }"""


def node(served: Served, ident: str, at: str | None = None) -> Any:
    return served.data(NODE, {"id": ident, "at": at})["node"]


def test_a_node_as_it_was(served: Served) -> None:
    assert node(served, "if0-0")["metadata"]["State"] == "UP"
    old = node(served, "if0-0", BEFORE)
    assert old["metadata"]["State"] == "DOWN"
    assert old["updatedAt"] == T0 and old["revision"] < node(served, "if0-0")["revision"]
    assert node(served, "if0-0", "-15s")["metadata"]["State"] == "DOWN"  # relative to now
    assert node(served, "if0-0", str((T0 + 5_000) // 1000))["metadata"]["State"] == "DOWN"


def test_a_deleted_node_and_its_edges_in_the_past(served: Served) -> None:
    assert node(served, "if0-1") is None
    gone = node(served, "if0-1", BETWEEN)
    assert gone["id"] == "if0-1" and gone["deletedAt"] == T2
    assert [n["id"] for n in gone["neighbors"]] == ["if1-1", "if3-1", "ns0"]
    assert {(e["id"], e["parent"]["id"], e["child"]["id"]) for e in gone["edges"]} == {
        ("own-if0-1", "ns0", "if0-1"), ("l2-if0-1", "if0-1", "if1-1"),
        ("l2-if3-1", "if3-1", "if0-1")}
    assert node(served, "if0-1", str(T2)) is None  # deleted at T2: gone at T2
    ns0_now = [n["id"] for n in node(served, "ns0")["neighbors"]]
    ns0_then = [n["id"] for n in node(served, "ns0", BETWEEN)["neighbors"]]
    assert "if0-1" not in ns0_now and "if0-1" in ns0_then
    assert len(ns0_then) == len(ns0_now) + 1


def test_pages_at_a_time_point(served: Served) -> None:
    query = """query($at: String) {
      nodes(filter: {name: "eth1"}, at: $at) { edges { node { id deletedAt } } }
      edges(filter: {parent: "ns0"}, at: $at, first: 100) { edges { node { id } } }
      netns: nodes(filter: {metadata: [{key: "State", eq: "UP"}], host: "agentA"}, at: $at,
                   first: 100) { edges { node { id } } } }"""
    now = served.data(query)
    then = served.data(query, {"at": BETWEEN})
    before = served.data(query, {"at": BEFORE})
    ids = [e["node"]["id"] for e in then["nodes"]["edges"]]
    assert ids == ["if0-1", "if1-1", "if2-1", "if3-1"]
    assert [e["node"]["id"] for e in now["nodes"]["edges"]] == ["if1-1", "if2-1", "if3-1"]
    assert len(then["edges"]["edges"]) == len(now["edges"]["edges"]) + 1 == 10
    up = {e["node"]["id"] for e in now["netns"]["edges"]}
    assert "if0-0" in up and "if0-1" not in up
    assert "if0-0" not in {e["node"]["id"] for e in before["netns"]["edges"]}
    assert served.data(query, {"at": str(T0 - 1)})["nodes"]["edges"] == []


def test_a_time_slice_sees_every_revision(served: Served) -> None:
    query = """query($from: String!, $to: String, $after: String) {
      nodes(filter: {host: "agentA", nameRegex: "eth[01]"}, during: {from: $from, to: $to},
            first: 2, after: $after) {
        edges { node { id revision metadata deletedAt } } pageInfo { hasNextPage endCursor } } }"""
    seen: list[dict[str, Any]] = []
    after = None
    while True:
        conn = served.data(query, {"from": BEFORE, "after": after})["nodes"]
        seen += [e["node"] for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    revisions = [(n["id"], n["metadata"]["State"]) for n in seen]
    # agentA holds ns0 and ns1: if0-0 twice (DOWN then UP), if0-1 (deleted), if1-0, if1-1
    assert revisions == [("if0-0", "DOWN"), ("if0-0", "UP"), ("if0-1", "UP"),
                         ("if1-0", "DOWN"), ("if1-1", "UP")]
    assert seen[2]["deletedAt"] == T2
    before_update = served.data(query, {"from": str(T0), "to": BEFORE})["nodes"]["edges"]
    assert [e["node"]["id"] for e in before_update] == ["if0-0", "if0-1"]  # first: 2
    slice_neighbours = served.data("""query($from: String!) { node(id: "ns0") { id } nodes(
        filter: {name: "ns0"}, during: {from: $from}) { edges { node {
          neighbors(filter: {name: "eth0"}) { id metadata } } } } }""", {"from": BEFORE})
    (ns0,) = slice_neighbours["nodes"]["edges"]
    states = [n["metadata"]["State"] for n in ns0["node"]["neighbors"]]
    assert states == ["DOWN", "UP"]  # both revisions of if0-0 were alive in the slice
