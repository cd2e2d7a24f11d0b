"""GraphQL input types and their conversion to the API's values.

Owns the input side of the schema: node/edge/topology filters, time
arguments, page sizes and the capture input, and how each maps to
`skygraph.api.reads` filters or to a capture spec with Skydive's JSON names
(and those names back to input fields, for field errors). Semantics are not
re-implemented here: `reads` and `captures` validate, with errors that name
the field.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from skygraph.api.reads import EdgeFilter, MetadataPredicate, NodeFilter, Slice, When, check_filter
from skygraph.graphql.scalars import Long
from skygraph.gremlin import GremlinError

DEFAULT_PAGE = 100


class UserError(ValueError):
    """An argument the client got wrong; its message is returned as is."""


@strawberry.enum(description="Which edges of a node: OUT from parent to child, IN, or BOTH.")
class Direction(enum.Enum):
    OUT = "out"
    IN = "in"
    BOTH = "both"


@strawberry.enum(description="What happened to an element of the topology.")
class EventKind(enum.Enum):
    NODE_ADDED = "NodeAdded"
    NODE_UPDATED = "NodeUpdated"
    NODE_DELETED = "NodeDeleted"
    EDGE_ADDED = "EdgeAdded"
    EDGE_UPDATED = "EdgeUpdated"
    EDGE_DELETED = "EdgeDeleted"


@strawberry.input(name="MetadataPredicate",
                  description="A test on one key: a dotted metadata path (`IPV4`, `Ovs.DPDK`, "
                              "`Metadata.Name`) or an element field (`@Host`, `@CreatedAt`...). "
                              "Give exactly one operator; it means what the same Has() means in "
                              "Gremlin (a list matches when an item does).")
class MetadataPredicateInput:
    key: str
    eq: JSON | None = strawberry.field(default=None, description="equal to (or contains)")
    ne: JSON | None = strawberry.field(default=None, description="exists and differs")
    in_: list[JSON] | None = strawberry.field(default=None, name="in",
                                              description="one of (or contains one of)")
    regex: str | None = strawberry.field(default=None, description="matches in full")
    lt: float | None = strawberry.field(default=None, description="below (as an integer)")
    gt: float | None = strawberry.field(default=None, description="above (as an integer)")
    exists: bool | None = strawberry.field(default=None, description="the key is set (or not)")


@strawberry.input(name="NodeFilter", description="Nodes to keep; every given field must match.")
class NodeFilterInput:
    type: str | None = None
    types: list[str] | None = None
    name: str | None = None
    name_regex: str | None = None
    host: str | None = None
    metadata: list[MetadataPredicateInput] | None = None


@strawberry.input(name="EdgeFilter", description="Edges to keep; every given field must match.")
class EdgeFilterInput:
    relation_type: str | None = None
    host: str | None = None
    parent: strawberry.ID | None = None
    child: strawberry.ID | None = None
    metadata: list[MetadataPredicateInput] | None = None


@strawberry.input(name="TopologyFilter",
                  description="Which topology events a subscription receives. A node filter "
                              "applies to node events, an edge filter to edge events.")
class TopologyFilterInput:
    nodes: NodeFilterInput | None = None
    edges: EdgeFilterInput | None = None
    kinds: list[EventKind] | None = None


@strawberry.input(name="TimeSlice",
                  description="A time slice: every revision alive at some instant of [from, to]. "
                              "Times as for `at`.")
class TimeSliceInput:
    from_: str = strawberry.field(name="from")
    to: str | None = strawberry.field(default=None, description="default: now")


def predicates(items: Sequence[MetadataPredicateInput] | None) -> tuple[MetadataPredicate, ...]:
    # JSON values may be anything; `reads` rejects non-scalars naming the predicate
    return tuple(MetadataPredicate(
        p.key, eq=cast(Any, p.eq), ne=cast(Any, p.ne),
        in_=tuple(cast(list[Any], p.in_)) if p.in_ is not None else None,
        regex=p.regex, lt=p.lt, gt=p.gt, exists=p.exists) for p in items or ())


def node_filter(f: NodeFilterInput | None) -> NodeFilter | None:
    """A valid node filter (FilterError naming the field otherwise)."""
    if f is None:
        return None
    out = NodeFilter(type=f.type, types=tuple(f.types) if f.types is not None else None,
                     name=f.name, name_regex=f.name_regex, host=f.host,
                     metadata=predicates(f.metadata))
    check_filter(out)  # before it is hashed as a dataloader key: values may be any JSON
    return out


def edge_filter(f: EdgeFilterInput | None, relation_type: str | None = None) -> EdgeFilter | None:
    """An edge filter; `relation_type` (an argument of its own) is added to it."""
    if f is None:
        return EdgeFilter(relation_type=relation_type) if relation_type is not None else None
    if relation_type is not None and f.relation_type not in (None, relation_type):
        raise UserError("relationType is given twice with different values")
    out = EdgeFilter(relation_type=relation_type or f.relation_type, host=f.host,
                     parent=f.parent, child=f.child, metadata=predicates(f.metadata))
    check_filter(out)
    return out


def when(time_point: Callable[[str], int | None], at: str | None,
         during: TimeSliceInput | None = None) -> When:
    """Which revisions to read, from the `at` and `during` arguments (`time_point`
    parses one time: `-1s`, `NOW`, RFC 1123, epoch s or ms)."""
    def parse(arg: str, text: str) -> int:
        try:
            t = time_point(text)
        except GremlinError as exc:
            raise UserError(f"{arg}: {exc.message}") from None
        if t is None:
            raise UserError(f"{arg}: a time point is required")
        return t

    if at is not None and during is not None:
        raise UserError("give either at (a time point) or during (a time slice), not both")
    if during is not None:
        window: Slice = (parse("during.from", during.from_), parse("during.to", during.to or "NOW"))
        if window[0] > window[1]:
            raise UserError("during: from is after to")
        return When(during=window)
    return When(at=parse("at", at) if at else None)


def page_size(first: int | None, max_page: int) -> int:
    size = DEFAULT_PAGE if first is None else first
    if not 0 <= size <= max_page:
        raise UserError(f"first must be between 0 and {max_page}, got {size}")
    return size


# ---------------------------------------------------------------- captures

@strawberry.input(description="A new capture, with Skydive's capture fields.")
class CaptureInput:
    gremlin_query: str = strawberry.field(description="the nodes to capture on")
    name: str | None = None
    description: str | None = None
    type: str | None = strawberry.field(default=None, description="afpacket, pcap, sflow...")
    bpf_filter: str | None = strawberry.field(default=None, name="bpfFilter")
    header_size: int | None = None
    raw_packet_limit: int | None = None
    extra_tcp_metric: bool | None = strawberry.field(default=None, name="extraTCPMetric")
    ip_defrag: bool | None = strawberry.field(default=None, name="ipDefrag")
    reassemble_tcp: bool | None = strawberry.field(default=None, name="reassembleTCP")
    layer_key_mode: str | None = strawberry.field(default=None, description="L2 or L3")
    extra_layers: list[str] | None = strawberry.field(default=None,
                                                      description="DNS, DHCPv4, VRRP")
    target: str | None = strawberry.field(default=None, description="ip:port")
    target_type: str | None = None
    port: int | None = None
    sampling_rate: int | None = None
    polling_interval: int | None = None
    session_id: int | None = strawberry.field(default=None, name="sessionID",
                                              description="ERSPAN session id (default 1)")
    workers: int | None = strawberry.field(
        default=None, description="afpacket readers sharing the packets through PACKET_FANOUT, "
                                  "0..64 (default 0: the agent's agent.capture.workers)")
    ttl: Long | None = strawberry.field(default=None, description="ms; none: kept until deleted")


# (attribute, GraphQL field, Skydive JSON name)
CAPTURE_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("gremlin_query", "gremlinQuery", "GremlinQuery"), ("name", "name", "Name"),
    ("description", "description", "Description"), ("type", "type", "Type"),
    ("bpf_filter", "bpfFilter", "BPFFilter"), ("header_size", "headerSize", "HeaderSize"),
    ("raw_packet_limit", "rawPacketLimit", "RawPacketLimit"),
    ("extra_tcp_metric", "extraTCPMetric", "ExtraTCPMetric"),
    ("ip_defrag", "ipDefrag", "IPDefrag"), ("reassemble_tcp", "reassembleTCP", "ReassembleTCP"),
    ("layer_key_mode", "layerKeyMode", "LayerKeyMode"),
    ("extra_layers", "extraLayers", "ExtraLayers"), ("target", "target", "Target"),
    ("target_type", "targetType", "TargetType"), ("port", "port", "Port"),
    ("sampling_rate", "samplingRate", "SamplingRate"),
    ("polling_interval", "pollingInterval", "PollingInterval"),
    ("session_id", "sessionID", "SessionID"), ("ttl", "ttl", "TTL"),
    ("workers", "workers", "Workers"),
)
GRAPHQL_FIELD = {skydive: gql for _, gql, skydive in CAPTURE_FIELDS}


def capture_spec(c: CaptureInput) -> dict[str, Any]:
    """The input as a Skydive capture spec; fields not given are left to the defaults."""
    return {skydive: getattr(c, attr) for attr, _, skydive in CAPTURE_FIELDS
            if getattr(c, attr) is not None}
