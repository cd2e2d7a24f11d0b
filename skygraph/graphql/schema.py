"""The GraphQL schema: queries, mutations and subscriptions, and its guards.

Owns the operations (each a thin resolver over `skygraph.api`), the limits
every document is checked against (depth, aliases, tokens) and which errors
clients see: user errors (a bad filter, time, cursor or page size, any
Gremlin error) keep their message; everything else is logged with its stack
trace and answered as "internal error".
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from functools import partial

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.scalars import JSON
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from skygraph.api.captures import CaptureDuplicate, CaptureInvalid
from skygraph.api.reads import EdgeFilter, FilterError, NodeFilter, When, check_filter, matches
from skygraph.api.reads import matches_predicates as flow_matches
from skygraph.graphql import filters as f
from skygraph.graphql import injections as inj
from skygraph.graphql.flows import FlowConnection, FlowFilterInput, flow_update_predicates
from skygraph.graphql.flows import flows as flow_page
from skygraph.graphql.metrics import Metrics, RawPackets
from skygraph.graphql.metrics import metrics as metric_series
from skygraph.graphql.metrics import raw_packets as raw_packet_series
from skygraph.graphql.scalars import SCALARS, Long
from skygraph.graphql.types import (
    CapturePayload,
    CaptureType,
    EdgeConnection,
    EdgeType,
    FieldError,
    Info,
    NodeConnection,
    NodeType,
    TopologyEvent,
    edge_connection,
    field,
    mutation,
    node_connection,
    subscription,
)
from skygraph.gremlin import GremlinError
from skygraph.topology.errors import StoreUnavailable
from skygraph.topology.mutations import (
    EdgeAdded,
    EdgeDeleted,
    EdgeUpdated,
    NodeAdded,
    NodeDeleted,
    NodeUpdated,
    StoreMutation,
)

log = logging.getLogger("skygraph.graphql")

# StoreUnavailable: the user must know the database is down, not see "internal error".
USER_ERRORS = (GremlinError, FilterError, f.UserError, StoreUnavailable)
INTERNAL_ERROR = "internal error"
CACHED_DOCUMENTS = 256  # parsed and validated query texts kept (tools repeat theirs)


def _when(info: Info, at: str | None, during: f.TimeSliceInput | None = None) -> When:
    return f.when(info.context.api.time_point, at, during)


@strawberry.type
class Query:
    @field(description="A node by ID, live or as it was at a time point `at` "
                       "('-1h', 'NOW', an RFC 1123 date, epoch s or ms).")
    async def node(self, info: Info, id: strawberry.ID, at: str | None = None) -> NodeType | None:
        when = _when(info, at)
        found = await info.context.loaders.node(when, str(id))
        return NodeType(raw=found, when=when) if found is not None else None

    @field(description="Nodes matching `filter`, by ID, a page at a time; live, at "
                       "a time point `at`, or every revision alive `during` a slice.")
    async def nodes(self, info: Info, filter: f.NodeFilterInput | None = None,
                    at: str | None = None, during: f.TimeSliceInput | None = None,
                    first: int | None = None, after: str | None = None) -> NodeConnection:
        when = _when(info, at, during)
        size = f.page_size(first, info.context.max_page)
        page = await info.context.api.reads.nodes(f.node_filter(filter), when.at, size, after,
                                                  when.during)
        info.context.spend(len(page.items))
        return node_connection(page, when, after)

    @field(description="Edges matching `filter`, by ID, a page at a time (as nodes).")
    async def edges(self, info: Info, filter: f.EdgeFilterInput | None = None,
                    at: str | None = None, during: f.TimeSliceInput | None = None,
                    first: int | None = None, after: str | None = None) -> EdgeConnection:
        when = _when(info, at, during)
        size = f.page_size(first, info.context.max_page)
        page = await info.context.api.reads.edges(f.edge_filter(filter), when.at, size, after,
                                                  when.during)
        info.context.spend(len(page.items))
        return edge_connection(page, when, after)

    @field(description="A Skydive Gremlin query (`G.V().Has('Type', 'netns')`); "
                       "`at` reads the graph as it was then. Skydive's JSON result.")
    async def gremlin(self, info: Info, query: str, at: str | None = None) -> JSON:
        try:
            return JSON(await info.context.api.gremlin(query, at or None))
        except GremlinError as exc:
            # graphql-core shows `exc.message`, which lacks the column
            raise f.UserError(str(exc)) from None

    @field(description="Stored flows matching `filter` that saw packets between `since` "
                       "and `until` (times as for `at`), a page at a time, in UUID order.")
    async def flows(self, info: Info, filter: FlowFilterInput | None = None,
                    since: str | None = None, until: str | None = None,
                    first: int | None = None, after: str | None = None) -> FlowConnection:
        return await flow_page(info, filter, since, until, first, after)

    @field(description="Metric history: the LastUpdateMetric samples of the flows matching "
                       "`flows`, or with `nodes` the interface metric `key` (LastUpdateMetric, "
                       "SFlow, Ovs) of every revision of the matching nodes, whose window lies "
                       "between `since` and `until`; `aggregate` re-buckets them into slices "
                       "of that many seconds (Gremlin's Aggregates).")
    async def metrics(self, info: Info, flows: FlowFilterInput | None = None,
                      nodes: f.NodeFilterInput | None = None, key: str | None = None,
                      since: str | None = None, until: str | None = None,
                      aggregate: int | None = None) -> Metrics:
        return await metric_series(info, flows, nodes, key, since, until, aggregate)

    @field(description="The packets kept with the flows matching `filter` (captures' "
                       "RawPacketLimit) captured between `since` and `until`, optionally "
                       "filtered by a BPF expression; `pcap` gives them as a capture file "
                       "(base64).")
    async def raw_packets(self, info: Info, filter: FlowFilterInput | None = None,
                          since: str | None = None, until: str | None = None,
                          bpf: str | None = None) -> RawPackets:
        return await raw_packet_series(info, filter, since, until, bpf)

    @strawberry.field
    async def captures(self, info: Info) -> list[CaptureType]:
        return [CaptureType(raw=c) for c in await info.context.api.captures.list()]

    @strawberry.field
    async def capture(self, info: Info, id: strawberry.ID) -> CaptureType | None:
        found = await info.context.api.captures.get(str(id))
        return CaptureType(raw=found) if found is not None else None

    @field(description="Packet injections (running ones carry state and packetsSent).")
    def injections(self, info: Info) -> list[inj.Injection]:
        return inj.injections(info)

    @field(description="Version, uptime, graph backend and health, writer "
                       "statistics, connected agents.")
    async def status(self, info: Info) -> JSON:
        return JSON(await info.context.api.status())


@strawberry.type
class Mutation:
    @mutation(description="Create a capture. Invalid fields come back in `errors` "
                          "(one per field); a duplicate (same type and Gremlin query) "
                          "as code DUPLICATE on gremlinQuery with the existing id.")
    async def create_capture(self, info: Info, input: f.CaptureInput) -> CapturePayload:
        try:
            capture = await info.context.api.captures.create(f.capture_spec(input))
        except CaptureInvalid as exc:
            return CapturePayload(capture=None, errors=[
                FieldError(field=f.GRAPHQL_FIELD.get(e.field, e.field), message=e.message)
                for e in exc.errors])
        except CaptureDuplicate as exc:
            return CapturePayload(capture=None, errors=[FieldError(
                field="gremlinQuery", message=str(exc), code="DUPLICATE",
                existing_id=strawberry.ID(exc.existing))])
        return CapturePayload(capture=CaptureType(raw=capture), errors=[])

    @mutation(description="Delete a capture; false when there is none with this id.")
    async def delete_capture(self, info: Info, id: strawberry.ID) -> bool:
        return await info.context.api.captures.delete(str(id))

    @mutation(description="Send packets from the node `src` selects (SPEC: injectpacket). "
                          "Invalid fields come back in `errors`; code UNAVAILABLE when the "
                          "source's agent is not connected.")
    async def inject_packet(self, info: Info, input: inj.InjectionInput) -> inj.InjectionPayload:
        return await inj.inject_packet(info, input)

    @mutation(description="Stop and forget a packet injection; false when there is none.")
    async def delete_injection(self, info: Info, id: strawberry.ID) -> bool:
        return await inj.delete_injection(info, id)


_KINDS = {NodeAdded: f.EventKind.NODE_ADDED, NodeUpdated: f.EventKind.NODE_UPDATED,
          NodeDeleted: f.EventKind.NODE_DELETED, EdgeAdded: f.EventKind.EDGE_ADDED,
          EdgeUpdated: f.EventKind.EDGE_UPDATED, EdgeDeleted: f.EventKind.EDGE_DELETED}


def _event(m: StoreMutation, kinds: set[f.EventKind] | None, nodes: NodeFilter | None,
           edges: EdgeFilter | None) -> TopologyEvent | None:
    kind = _KINDS[type(m)]
    if kinds is not None and kind not in kinds:
        return None
    live = When()
    if isinstance(m, NodeAdded | NodeUpdated | NodeDeleted):
        if not matches(nodes, m.node):
            return None
        return TopologyEvent(kind=kind, revision=Long(m.node.Revision),
                             node=NodeType(raw=m.node, when=live))
    if not matches(edges, m.edge):
        return None
    return TopologyEvent(kind=kind, revision=Long(m.edge.Revision),
                         edge=EdgeType(raw=m.edge, when=live))


@strawberry.type
class Subscription:
    @subscription(description="Topology changes as the analyzer applies them (before "
                              "they are stored), so a client can keep a live copy "
                              "after an initial query.")
    async def topology_events(self, info: Info, filter: f.TopologyFilterInput | None = None
                              ) -> AsyncGenerator[TopologyEvent, None]:
        nodes = f.node_filter(filter.nodes) if filter else None
        edges = f.edge_filter(filter.edges) if filter else None
        kinds = set(filter.kinds) if filter and filter.kinds is not None else None
        sub = info.context.api.subscribe()
        try:
            while True:
                event = _event(await sub.get(), kinds, nodes, edges)
                if event is not None:
                    yield event
        finally:
            sub.close()  # the client left (or the connection closed)

    @subscription(description="Flow updates (Skydive flow JSON) of one capture "
                              "and/or matching predicates on flow keys "
                              "(`Network.A`, `Application`...).")
    async def flow_updates(self, info: Info, capture_id: strawberry.ID | None = None,
                           filter: list[f.MetadataPredicateInput] | None = None,
                           where: FlowFilterInput | None = None
                           ) -> AsyncGenerator[JSON, None]:
        preds = f.predicates(filter) + flow_update_predicates(where)
        check_filter(NodeFilter(metadata=preds))  # validate before subscribing
        sub = info.context.api.flow_bus.subscribe()
        try:
            while True:
                flow = await sub.get()
                if capture_id is not None and flow.get("CaptureID") != str(capture_id):
                    continue
                if flow_matches(preds, flow):
                    yield JSON(flow)
        finally:
            sub.close()


# ---------------------------------------------------------------- errors and limits

def is_user_error(error: GraphQLError) -> bool:
    """Errors before execution (syntax, validation, limits, argument types) and the
    API's own user errors are the client's to read; anything else is ours."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return True
    return isinstance(original, USER_ERRORS)


def _masked(error: GraphQLError) -> bool:
    return not is_user_error(error)


class Schema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        for error in errors:
            if is_user_error(error):
                log.debug("graphql: %s", error.message)
            else:
                log.error("graphql: internal error at %s", error.path,
                          exc_info=error.original_error)


def build_schema(*, max_depth: int = 12, max_aliases: int = 30,
                 max_tokens: int = 5000) -> Schema:
    # The limit rules are built once so that validation results can be cached: the
    # cache is keyed by the document and the rule classes, and each limiter instance
    # makes a class of its own.
    rules = [*QueryDepthLimiter(max_depth=max_depth).validation_rules,
             *MaxAliasesLimiter(max_alias_count=max_aliases).validation_rules]
    # factories, not instances: an extension may keep per-operation state
    extensions: list[Callable[[], SchemaExtension]] = [
        partial(MaxTokensLimiter, max_token_count=max_tokens),
        partial(AddValidationRules, rules),
        partial(ParserCache, maxsize=CACHED_DOCUMENTS),
        partial(ValidationCache, maxsize=CACHED_DOCUMENTS),
        partial(MaskErrors, should_mask_error=_masked, error_message=INTERNAL_ERROR),
    ]
    return Schema(query=Query, mutation=Mutation, subscription=Subscription,
                  extensions=extensions, config=StrawberryConfig(scalar_map=SCALARS))
