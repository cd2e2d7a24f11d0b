"""Pure conversions between skygraph's values and the link's protobuf messages
(`agent.proto`): topology elements and mutations, flows (Skydive flow JSON),
capture commands and statistics; plus splitting big payloads into messages
of bounded size (a full sync, a flow tick) so no message nears gRPC's limit.

Metadata and flows are JSON trees and travel as compact UTF-8 JSON bytes.
Decoding never trusts the peer: a malformed element raises `CodecError`
naming it, and the batch decoders return the good elements plus one message
per bad one, so a single bad element does not cost the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from skygraph.rpc import agent_pb2 as pb
from skygraph.rpc.model import CaptureStats, Command, InjectPacket, StartCapture, StopCapture, StopInjection
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

T = TypeVar("T")

# Target size of one chunked message; gRPC's receive limit is raised well above it
# (MAX_MESSAGE_BYTES) so that one very large element still fits on its own.
CHUNK_BYTES = 1 << 20
MAX_MESSAGE_BYTES = 64 << 20


class CodecError(ValueError):
    """A message from the peer cannot be turned into a value; the text names the element."""


# ------------------------------------------------------------------ JSON
def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON; NaN/Infinity are refused (not JSON)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def decode_object(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object from `data`, else CodecError naming `what`."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CodecError(f"{what}: not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CodecError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


# ------------------------------------------------------------------ elements
def node_to_pb(node: Node) -> pb.Node:
    return pb.Node(id=node.ID, metadata=encode_json(dict(node.Metadata)), host=node.Host,
                   origin=node.Origin, created_at=node.CreatedAt, updated_at=node.UpdatedAt,
                   revision=node.Revision, deleted_at=node.DeletedAt or 0)


def node_from_pb(m: pb.Node) -> Node:
    if not m.id:
        raise CodecError("node without an id")
    return Node(ID=m.id, Metadata=decode_object(m.metadata, f"node {m.id}: metadata"), Host=m.host,
                Origin=m.origin, CreatedAt=m.created_at, UpdatedAt=m.updated_at, Revision=m.revision,
                DeletedAt=m.deleted_at or None)


def edge_to_pb(edge: Edge) -> pb.Edge:
    return pb.Edge(id=edge.ID, parent=edge.Parent, child=edge.Child,
                   metadata=encode_json(dict(edge.Metadata)), host=edge.Host, origin=edge.Origin,
                   created_at=edge.CreatedAt, updated_at=edge.UpdatedAt, revision=edge.Revision,
                   deleted_at=edge.DeletedAt or 0)


def edge_from_pb(m: pb.Edge) -> Edge:
    if not m.id:
        raise CodecError("edge without an id")
    return Edge(ID=m.id, Parent=m.parent, Child=m.child,
                Metadata=decode_object(m.metadata, f"edge {m.id}: metadata"), Host=m.host,
                Origin=m.origin, CreatedAt=m.created_at, UpdatedAt=m.updated_at, Revision=m.revision,
                DeletedAt=m.deleted_at or None)


# ------------------------------------------------------------------ mutations
def mutation_to_pb(m: StoreMutation) -> pb.Mutation:
    match m:
        case NodeAdded(node=n):
            return pb.Mutation(node_added=node_to_pb(n))
        case NodeUpdated(node=n):
            return pb.Mutation(node_updated=node_to_pb(n))
        case NodeDeleted(node=n):
            return pb.Mutation(node_deleted=node_to_pb(n))
        case EdgeAdded(edge=e):
            return pb.Mutation(edge_added=edge_to_pb(e))
        case EdgeUpdated(edge=e):
            return pb.Mutation(edge_updated=edge_to_pb(e))
        case EdgeDeleted(edge=e):
            return pb.Mutation(edge_deleted=edge_to_pb(e))
    raise TypeError(f"not a full-state mutation: {m!r}")


def mutation_from_pb(m: pb.Mutation) -> StoreMutation:
    kind = m.WhichOneof("change")
    if kind == "node_added":
        return NodeAdded(node_from_pb(m.node_added))
    if kind == "node_updated":
        return NodeUpdated(node_from_pb(m.node_updated))
    if kind == "node_deleted":
        return NodeDeleted(node_from_pb(m.node_deleted))
    if kind == "edge_added":
        return EdgeAdded(edge_from_pb(m.edge_added))
    if kind == "edge_updated":
        return EdgeUpdated(edge_from_pb(m.edge_updated))
    if kind == "edge_deleted":
        return EdgeDeleted(edge_from_pb(m.edge_deleted))
    raise CodecError("a mutation with no change set")


def mutations_messages(mutations: Iterable[StoreMutation], max_bytes: int = CHUNK_BYTES
                       ) -> Iterator[pb.AgentMessage]:
    """`Mutations` messages of about `max_bytes` each, in order."""
    for chunk in chunks([mutation_to_pb(m) for m in mutations], _framed_size, max_bytes):
        yield pb.AgentMessage(mutations=pb.Mutations(items=chunk))


def decode_mutations(m: pb.Mutations) -> tuple[list[StoreMutation], list[str]]:
    """The mutations, and one problem text per mutation that could not be decoded."""
    out: list[StoreMutation] = []
    problems: list[str] = []
    for item in m.items:
        try:
            out.append(mutation_from_pb(item))
        except CodecError as exc:
            problems.append(str(exc))
    return out, problems


# ------------------------------------------------------------------ full sync
def sync_messages(nodes: Iterable[Node], edges: Iterable[Edge], max_bytes: int = CHUNK_BYTES
                  ) -> Iterator[pb.AgentMessage]:
    """The whole graph as `Sync` chunks of about `max_bytes`; the last has more = false
    (an empty graph is one empty, final chunk)."""
    items: list[pb.Node | pb.Edge] = [node_to_pb(n) for n in nodes]
    items.extend(edge_to_pb(e) for e in edges)
    parts = list(chunks(items, _framed_size, max_bytes)) or [[]]
    for i, part in enumerate(parts):
        yield pb.AgentMessage(sync=pb.Sync(
            nodes=[x for x in part if isinstance(x, pb.Node)],
            edges=[x for x in part if isinstance(x, pb.Edge)], more=i < len(parts) - 1))


def decode_sync(m: pb.Sync) -> tuple[list[Node], list[Edge], list[str]]:
    nodes: list[Node] = []
    edges: list[Edge] = []
    problems: list[str] = []
    for n in m.nodes:
        try:
            nodes.append(node_from_pb(n))
        except CodecError as exc:
            problems.append(str(exc))
    for e in m.edges:
        try:
            edges.append(edge_from_pb(e))
        except CodecError as exc:
            problems.append(str(exc))
    return nodes, edges, problems


# ------------------------------------------------------------------ flows
def encode_flow(flow: Mapping[str, Any]) -> bytes:
    """One flow (Skydive flow JSON) as carried in a `Flows` message."""
    try:
        return encode_json(dict(flow))
    except (TypeError, ValueError) as exc:
        raise CodecError(f"flow {flow.get('UUID', '<no UUID>')}: not JSON-serialisable: {exc}") from None


def flows_message(seq: int, capture_id: str, flows: Sequence[bytes]) -> pb.AgentMessage:
    return pb.AgentMessage(flows=pb.Flows(seq=seq, capture_id=capture_id, flows=flows))


def decode_flows(m: pb.Flows) -> tuple[list[dict[str, Any]], list[str]]:
    out: list[dict[str, Any]] = []
    problems: list[str] = []
    for i, data in enumerate(m.flows):
        try:
            out.append(decode_object(data, f"flow #{i} of capture {m.capture_id or '<none>'}"))
        except CodecError as exc:
            problems.append(str(exc))
    return out, problems


# ------------------------------------------------------------------ stats
def stats_message(s: CaptureStats) -> pb.AgentMessage:
    return pb.AgentMessage(stats=pb.Stats(
        capture_id=s.capture_id, node_id=s.node_id, state=s.state, error=s.error,
        packets_received=s.packets_received, packets_dropped=s.packets_dropped,
        flows_dropped=s.flows_dropped, flows_active=s.flows_active, at=s.at))


def stats_from_pb(m: pb.Stats) -> CaptureStats:
    return CaptureStats(capture_id=m.capture_id, node_id=m.node_id, state=m.state, error=m.error,
                        packets_received=m.packets_received, packets_dropped=m.packets_dropped,
                        flows_dropped=m.flows_dropped, flows_active=m.flows_active, at=m.at)


# ------------------------------------------------------------------ handshake
def hello_message(version: int, host_id: str, token: str, software: str) -> pb.AgentMessage:
    return pb.AgentMessage(hello=pb.Hello(version=version, host_id=host_id, token=token,
                                          software=software))


def welcome_message(version: int, software: str) -> pb.AnalyzerMessage:
    return pb.AnalyzerMessage(welcome=pb.Welcome(version=version, software=software))


def ack_message(seq: int) -> pb.AnalyzerMessage:
    return pb.AnalyzerMessage(flows_ack=pb.FlowsAck(seq=seq))


# ------------------------------------------------------------------ commands
def command_message(c: Command) -> pb.AnalyzerMessage:
    match c:
        case StartCapture(capture=capture, node_id=node_id):
            return pb.AnalyzerMessage(start_capture=pb.StartCapture(
                capture_json=encode_json(dict(capture)), node_id=node_id))
        case StopCapture(capture_id=capture_id, node_id=node_id):
            return pb.AnalyzerMessage(stop_capture=pb.StopCapture(capture_id=capture_id,
                                                                   node_id=node_id))
        case InjectPacket(injection=injection, node_id=node_id):
            return pb.AnalyzerMessage(inject_packet=pb.InjectPacket(
                injection_json=encode_json(dict(injection)), node_id=node_id))
        case StopInjection(injection_id=injection_id, node_id=node_id):
            return pb.AnalyzerMessage(stop_injection=pb.StopInjection(
                injection_id=injection_id, node_id=node_id))
    raise TypeError(f"not a command: {c!r}")


def command_from_pb(m: pb.AnalyzerMessage) -> Command:
    kind = m.WhichOneof("body")
    if kind == "start_capture":
        s = m.start_capture
        return StartCapture(decode_object(s.capture_json, f"StartCapture on node {s.node_id}: capture"),
                            s.node_id)
    if kind == "stop_capture":
        return StopCapture(m.stop_capture.capture_id, m.stop_capture.node_id)
    if kind == "inject_packet":
        i = m.inject_packet
        return InjectPacket(decode_object(i.injection_json,
                                          f"InjectPacket on node {i.node_id}: injection"), i.node_id)
    if kind == "stop_injection":
        return StopInjection(m.stop_injection.injection_id, m.stop_injection.node_id)
    raise CodecError(f"not a command: {kind or 'empty message'}")


# ------------------------------------------------------------------ sizes
def chunks(items: Sequence[T], size: Callable[[T], int], max_bytes: int) -> Iterator[list[T]]:
    """Consecutive runs of `items` whose sizes add up to at most `max_bytes` (a single
    larger item makes a run of its own)."""
    run: list[T] = []
    total = 0
    for item in items:
        n = size(item)
        if run and total + n > max_bytes:
            yield run
            run, total = [], 0
        run.append(item)
        total += n
    if run:
        yield run


def _framed_size(m: pb.Node | pb.Edge | pb.Mutation) -> int:
    return m.ByteSize() + 6   # field tag + length prefix, at most
