"""GraphQL output types: Node, Edge, their Relay connections, topology events,
captures and the createCapture payload.

A `Node`/`Edge` wraps a topology element with the time scope it was read in
(`When`), so its edges, neighbours and endpoints are read in the same scope:
a node read `at` a time point has the edges and neighbours of that time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar, cast

import strawberry
from strawberry.scalars import JSON

from skygraph.api.captures import Capture
from skygraph.api.reads import Page, When
from skygraph.capture.options import EXTRA_LAYERS
from skygraph.graphql.filters import (
    Direction,
    EdgeFilterInput,
    EventKind,
    NodeFilterInput,
    edge_filter,
    node_filter,
)
from skygraph.graphql.loaders import Context, Hop
from skygraph.graphql.scalars import Long
from skygraph.topology.model import Edge, Node

Info = strawberry.Info[Context, None]
F = TypeVar("F", bound=Callable[..., Any])


# strawberry's decorators return Any when given options; these keep the resolver's type.
def field(description: str | None = None, *, name: str | None = None) -> Callable[[F], F]:
    return cast(Callable[[F], F], strawberry.field(description=description, name=name))


def mutation(description: str) -> Callable[[F], F]:
    return cast(Callable[[F], F], strawberry.mutation(description=description))


def subscription(description: str) -> Callable[[F], F]:
    return cast(Callable[[F], F], strawberry.subscription(description=description))


@strawberry.type(name="Node", description="A topology node (host, namespace, interface, "
                                          "OVS bridge or port...).")
class NodeType:
    raw: strawberry.Private[Node]
    when: strawberry.Private[When]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.raw.ID)

    @strawberry.field
    def host(self) -> str:
        return self.raw.Host

    @strawberry.field
    def origin(self) -> str:
        return self.raw.Origin

    @field(description="ms since the epoch")
    def created_at(self) -> Long:
        return Long(self.raw.CreatedAt)

    @field(description="ms since the epoch")
    def updated_at(self) -> Long:
        return Long(self.raw.UpdatedAt)

    @field(description="ms since the epoch; set on a revision that ended with a delete")
    def deleted_at(self) -> Long | None:
        return Long(self.raw.DeletedAt) if self.raw.DeletedAt is not None else None

    @strawberry.field
    def revision(self) -> Long:
        return Long(self.raw.Revision)

    @field(description="Metadata.Type")
    def type(self) -> str:
        return self.raw.type

    @field(description="Metadata.Name")
    def name(self) -> str:
        return self.raw.name

    @field(description="all of the node's metadata")
    def metadata(self) -> JSON:
        return JSON(dict(self.raw.Metadata))

    @field(description="The node's edges (OUT: this node is the parent), at the node's "
                       "time (read during a slice: every revision alive in it).")
    async def edges(self, info: Info, relation_type: str | None = None,
                    direction: Direction = Direction.BOTH,
                    filter: EdgeFilterInput | None = None) -> list[EdgeType]:
        hop = Hop(direction.value, self.when, edge_filter(filter, relation_type))
        edges = await info.context.loaders.edges(hop, self.raw.ID)
        info.context.spend(len(edges))
        return [EdgeType(raw=e, when=self.when) for e in edges]

    @field(description="The nodes one edge away (each revision once), at the node's "
                       "time; `filter` keeps some of them, `edgeFilter` some edges.")
    async def neighbors(self, info: Info, relation_type: str | None = None,
                        direction: Direction = Direction.BOTH,
                        filter: NodeFilterInput | None = None,
                        edge_filter_: Annotated[EdgeFilterInput | None,
                                                strawberry.argument(name="edgeFilter")] = None,
                        ) -> list[NodeType]:
        hop = Hop(direction.value, self.when, edge_filter(edge_filter_, relation_type),
                  node_filter(filter))
        nodes = await info.context.loaders.neighbours(hop, self.raw.ID)
        info.context.spend(len(nodes))
        return [NodeType(raw=n, when=self.when) for n in nodes]


@strawberry.type(name="Edge", description="A topology edge, from its parent to its child.")
class EdgeType:
    raw: strawberry.Private[Edge]
    when: strawberry.Private[When]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.raw.ID)

    @strawberry.field
    def parent_id(self) -> strawberry.ID:
        return strawberry.ID(self.raw.Parent)

    @strawberry.field
    def child_id(self) -> strawberry.ID:
        return strawberry.ID(self.raw.Child)

    @strawberry.field
    async def parent(self, info: Info) -> NodeType | None:
        return await _endpoint(info, self.raw.Parent, self.when)

    @strawberry.field
    async def child(self, info: Info) -> NodeType | None:
        return await _endpoint(info, self.raw.Child, self.when)

    @field(description="Metadata.RelationType: ownership, layer2...")
    def relation_type(self) -> str:
        return self.raw.relation_type

    @strawberry.field
    def host(self) -> str:
        return self.raw.Host

    @strawberry.field
    def origin(self) -> str:
        return self.raw.Origin

    @strawberry.field
    def created_at(self) -> Long:
        return Long(self.raw.CreatedAt)

    @strawberry.field
    def updated_at(self) -> Long:
        return Long(self.raw.UpdatedAt)

    @strawberry.field
    def deleted_at(self) -> Long | None:
        return Long(self.raw.DeletedAt) if self.raw.DeletedAt is not None else None

    @strawberry.field
    def revision(self) -> Long:
        return Long(self.raw.Revision)

    @strawberry.field
    def metadata(self) -> JSON:
        return JSON(dict(self.raw.Metadata))


async def _endpoint(info: Info, ident: str, when: When) -> NodeType | None:
    node = await info.context.loaders.node(when, ident)
    return NodeType(raw=node, when=when) if node is not None else None


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class NodeConnectionEdge:
    cursor: str
    node: NodeType


@strawberry.type
class NodeConnection:
    edges: list[NodeConnectionEdge]
    page_info: PageInfo


@strawberry.type
class EdgeConnectionEdge:
    cursor: str
    node: EdgeType


@strawberry.type
class EdgeConnection:
    edges: list[EdgeConnectionEdge]
    page_info: PageInfo


def _page_info(page: Page[Any], after: str | None) -> PageInfo:
    return PageInfo(has_next_page=page.has_next, has_previous_page=after is not None,
                    start_cursor=page.cursors[0] if page.cursors else None,
                    end_cursor=page.end_cursor)


def node_connection(page: Page[Node], when: When, after: str | None) -> NodeConnection:
    return NodeConnection(
        edges=[NodeConnectionEdge(cursor=c, node=NodeType(raw=n, when=when))
               for n, c in zip(page.items, page.cursors, strict=True)],
        page_info=_page_info(page, after))


def edge_connection(page: Page[Edge], when: When, after: str | None) -> EdgeConnection:
    return EdgeConnection(
        edges=[EdgeConnectionEdge(cursor=c, node=EdgeType(raw=e, when=when))
               for e, c in zip(page.items, page.cursors, strict=True)],
        page_info=_page_info(page, after))


@strawberry.type(description="A change of the topology, as the analyzer applied it.")
class TopologyEvent:
    kind: EventKind
    revision: Long
    node: NodeType | None = None
    edge: EdgeType | None = None


# ---------------------------------------------------------------- captures

@strawberry.type(name="Capture", description="A packet capture on the nodes a Gremlin "
                                             "query selects.")
class CaptureType:
    raw: strawberry.Private[Capture]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.raw.uuid)

    @strawberry.field
    def gremlin_query(self) -> str:
        return self.raw.gremlin_query

    @strawberry.field
    def name(self) -> str:
        return self.raw.name

    @strawberry.field
    def description(self) -> str:
        return self.raw.description

    @strawberry.field
    def type(self) -> str:
        return self.raw.type

    @field(name="bpfFilter")
    def bpf_filter(self) -> str:
        return self.raw.bpf_filter

    @strawberry.field
    def header_size(self) -> int:
        return self.raw.header_size

    @strawberry.field
    def raw_packet_limit(self) -> int:
        return self.raw.raw_packet_limit

    @field(name="extraTCPMetric")
    def extra_tcp_metric(self) -> bool:
        return self.raw.extra_tcp_metric

    @field(name="ipDefrag")
    def ip_defrag(self) -> bool:
        return self.raw.ip_defrag

    @field(name="reassembleTCP")
    def reassemble_tcp(self) -> bool:
        return self.raw.reassemble_tcp

    @strawberry.field
    def layer_key_mode(self) -> str:
        return self.raw.layer_key_mode

    @strawberry.field
    def extra_layers(self) -> list[str]:
        return [name for name, bit in EXTRA_LAYERS.items() if self.raw.extra_layers & bit]

    @strawberry.field
    def target(self) -> str:
        return self.raw.target

    @strawberry.field
    def target_type(self) -> str:
        return self.raw.target_type

    @strawberry.field
    def port(self) -> int:
        return self.raw.port

    @strawberry.field
    def sampling_rate(self) -> int:
        return self.raw.sampling_rate

    @strawberry.field
    def polling_interval(self) -> int:
        return self.raw.polling_interval

    @field(name="sessionID", description="ERSPAN session id")
    def session_id(self) -> int:
        return self.raw.session_id

    @field(description="afpacket readers (PACKET_FANOUT); 0: the agent's default")
    def workers(self) -> int:
        return self.raw.workers

    @field(description="ms; 0: kept until deleted")
    def ttl(self) -> Long:
        return Long(self.raw.ttl)

    @field(description="nodes where the capture is active")
    def count(self) -> int:
        return self.raw.count

    @field(description="pending until an agent starts it")
    def state(self) -> str:
        return self.raw.state

    @field(description="ms since the epoch")
    def created_at(self) -> Long:
        return Long(self.raw.created_at)


@strawberry.type(description="A problem with one input field (field: its GraphQL name).")
class FieldError:
    field: str
    message: str
    code: str = strawberry.field(default="INVALID", description="INVALID, DUPLICATE or UNAVAILABLE")
    existing_id: strawberry.ID | None = strawberry.field(
        default=None, description="DUPLICATE: the capture that already exists")


@strawberry.type
class CapturePayload:
    capture: CaptureType | None
    errors: list[FieldError]
