"""Round trips through the link's messages, chunking, and decoding errors that
name the element."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skygraph.rpc import agent_pb2 as pb
from skygraph.rpc import codec
from skygraph.rpc.model import CaptureStats, StartCapture, StopCapture
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import (
    EdgeAdded,
    EdgeDeleted,
    EdgeUpdated,
    NodeAdded,
    NodeDeleted,
    NodeUpdated,
    StoreMutation,
)

text = st.text(min_size=1, max_size=12)
scalars = st.none() | st.booleans() | st.integers(-2**53, 2**53) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
json_trees = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(text, inner, max_size=4), max_leaves=12)
metadata = st.dictionaries(text, json_trees, max_size=5)
times = st.integers(0, 2**50)
deleted = st.none() | st.integers(1, 2**50)

nodes = st.builds(Node, ID=text, Metadata=metadata, Host=st.text(max_size=8),
                  Origin=st.text(max_size=8), CreatedAt=times, UpdatedAt=times, Revision=times,
                  DeletedAt=deleted)
edges = st.builds(Edge, ID=text, Parent=text, Child=text, Metadata=metadata,
                  Host=st.text(max_size=8), Origin=st.text(max_size=8), CreatedAt=times,
                  UpdatedAt=times, Revision=times, DeletedAt=deleted)
mutations: st.SearchStrategy[StoreMutation] = st.one_of(
    nodes.map(NodeAdded), nodes.map(NodeUpdated), nodes.map(NodeDeleted),
    edges.map(EdgeAdded), edges.map(EdgeUpdated), edges.map(EdgeDeleted))


def wire(m: Any) -> Any:
    """Through bytes, as on the network."""
    return type(m).FromString(m.SerializeToString())


@given(mutations)
@settings(max_examples=300)
def test_every_mutation_kind_round_trips(m: StoreMutation) -> None:
    assert codec.mutation_from_pb(wire(codec.mutation_to_pb(m))) == m


@given(st.lists(nodes, max_size=30), st.lists(edges, max_size=30), st.integers(200, 5000))
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])  # big lists, slow CI
def test_sync_chunks_reassemble(ns: list[Node], es: list[Edge], max_bytes: int) -> None:
    msgs = [wire(m) for m in codec.sync_messages(ns, es, max_bytes)]
    assert [m.sync.more for m in msgs] == [True] * (len(msgs) - 1) + [False]
    got_n: list[Node] = []
    got_e: list[Edge] = []
    for m in msgs:
        n, e, problems = codec.decode_sync(m.sync)
        assert problems == []
        got_n += n
        got_e += e
    assert (got_n, got_e) == (ns, es)


def test_big_sync_is_split_and_each_chunk_stays_near_the_bound() -> None:
    ns = [Node(f"n{i}", {"Name": f"eth{i}", "Type": "veth", "Blob": "x" * 500}) for i in range(100)]
    msgs = list(codec.sync_messages(ns, [], max_bytes=5000))
    assert len(msgs) > 10
    assert all(m.ByteSize() < 5000 + 600 for m in msgs)
    assert list(codec.sync_messages([], [])) == [pb.AgentMessage(sync=pb.Sync(more=False))]


@given(st.lists(mutations, max_size=40))
@settings(max_examples=40)
def test_mutation_batches_keep_order(ms: list[StoreMutation]) -> None:
    out: list[StoreMutation] = []
    for m in codec.mutations_messages(ms, max_bytes=400):
        decoded, problems = codec.decode_mutations(wire(m).mutations)
        assert problems == []
        out += decoded
    assert out == ms


flow_dicts = st.dictionaries(text, json_trees, max_size=6)


@given(st.lists(flow_dicts, max_size=10), st.integers(1, 2**40), text)
def test_flows_round_trip(flows: list[dict[str, Any]], seq: int, capture: str) -> None:
    msg = wire(codec.flows_message(seq, capture, [codec.encode_flow(f) for f in flows]))
    got, problems = codec.decode_flows(msg.flows)
    assert (msg.flows.seq, msg.flows.capture_id, got, problems) == (seq, capture, flows, [])


def test_a_real_flow_round_trips() -> None:
    from skygraph.topology.flow import Flow, FlowLayer, FlowProtocol
    f = Flow(uuid="u1", layers_path="Ethernet/IPv4/ICMPv4", start=1, last=2, node_tid="t",
             network=FlowLayer(FlowProtocol.IPV4, "10.0.0.1", "10.0.0.2"), capture_id="c")
    msg = wire(codec.flows_message(1, "c", [codec.encode_flow(f.to_json())]))
    assert codec.decode_flows(msg.flows)[0] == [f.to_json()]


def test_flow_that_is_not_json_is_refused_naming_it() -> None:
    with pytest.raises(codec.CodecError, match="flow f9: not JSON"):
        codec.encode_flow({"UUID": "f9", "Bad": float("nan")})


def test_stats_and_commands_round_trip() -> None:
    s = CaptureStats("c1", "n1", "error", "interface is down", 10, 2, 3, 4, 1234)
    assert codec.stats_from_pb(wire(codec.stats_message(s)).stats) == s
    start = StartCapture({"UUID": "c1", "GremlinQuery": "G.V()", "HeaderSize": 0}, "n1")
    stop = StopCapture("c1", "n1")
    assert codec.command_from_pb(wire(codec.command_message(start))) == start
    assert codec.command_from_pb(wire(codec.command_message(stop))) == stop
    assert start.capture_id == "c1"


def test_bad_elements_are_named_and_skipped() -> None:
    sync = pb.Sync(nodes=[codec.node_to_pb(Node("good", {"Name": "a", "Type": "veth"})),
                          pb.Node(id="bad", metadata=b"{nope"), pb.Node(id="list", metadata=b"[1]"),
                          pb.Node(metadata=b"{}")],
                   edges=[pb.Edge(id="e", parent="a", child="b", metadata=b"\xff")])
    ns, es, problems = codec.decode_sync(sync)
    assert [n.ID for n in ns] == ["good"] and es == []
    assert problems[0].startswith("node bad: metadata: not JSON")
    assert problems[1] == "node list: metadata: expected a JSON object, got list"
    assert problems[2] == "node without an id"
    assert problems[3].startswith("edge e: metadata: not JSON")
    muts, problems = codec.decode_mutations(pb.Mutations(items=[pb.Mutation()]))
    assert muts == [] and problems == ["a mutation with no change set"]
    with pytest.raises(codec.CodecError, match="not a command: welcome"):
        codec.command_from_pb(codec.welcome_message(1, "x"))


def test_chunks() -> None:
    assert list(codec.chunks([1, 2, 3, 10, 1], lambda x: x, 5)) == [[1, 2], [3], [10], [1]]
    assert list(codec.chunks([], lambda x: x, 5)) == []
