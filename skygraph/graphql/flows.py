"""The GraphQL `flows` query: stored flows (`(:Flow)`, docs/graph-model.md),
filtered, in a time range, a page at a time.

Owns the `FlowFilter` input, the `Flow` type and its Relay connection, and
the Cypher of a page. A filter means what the same `Has()` means after
Gremlin's `Flows()` (gremlin/flows.py): dotted flow keys (`Network.A`,
`Metric.ABBytes`), the `IPV4.*`/`TCP.*`/`ETHERNET.*` aliases, and `Network`,
`Link` or `Transport` alone for its A or its B. `since`/`until` keep the
flows that saw packets in that range (`Last >= since`, `Start <= until`).
Pages are in UUID order (stable while flows are updated); the cursor is the
last UUID of the page. Reads go through `api.store.read`. The flows are found
through an index as Gremlin's are (gremlin/lookups.py: one indexed condition
finds them, the others test them).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from skygraph.api.reads import FilterError, MetadataPredicate
from skygraph.graphql import filters as f
from skygraph.graphql.scalars import Long
from skygraph.graphql.types import Info, PageInfo, field
from skygraph.gremlin import GremlinError, LimitExceededError, lookups
from skygraph.gremlin import ast as g
from skygraph.gremlin.flows import flow_key, flow_terms
from skygraph.gremlin.lookups import Term
from skygraph.gremlin.predicates import Params, has_key, negate
from skygraph.topology import schema
from skygraph.topology.flowschema import HOST, flow_json

FLOW = schema.quote(schema.FLOW_LABEL)
_CURSOR = "flow:"


@strawberry.input(name="FlowFilter",
                  description="Flows to keep; every given field must match. `metadata` "
                              "predicates take flow keys as Gremlin's flow Has() does: "
                              "`Network.A`, `ICMP.ID`, `Metric.ABBytes`, aliases `IPV4.A`, "
                              "`TCP.B`..., and `Network`, `Link`, `Transport` alone for A or B.")
class FlowFilterInput:
    application: str | None = strawberry.field(default=None,
                                               description="`ICMPv4`, `TCP`, `DNS`, `VXLAN`...")
    node_tid: str | None = strawberry.field(default=None, name="nodeTID",
                                            description="TID of the capture node")
    capture_id: strawberry.ID | None = None
    tracking_id: str | None = strawberry.field(default=None, name="trackingID")
    l3_tracking_id: str | None = strawberry.field(default=None, name="l3TrackingID")
    parent_uuid: str | None = strawberry.field(
        default=None, name="parentUUID", description="the tunnel flow's UUID")
    layers_path: str | None = strawberry.field(default=None,
                                               description="`Ethernet/IPv4/ICMPv4`...")
    host: str | None = strawberry.field(default=None, description="the agent that sent the flow")
    metadata: list[f.MetadataPredicateInput] | None = None


# (attribute, GraphQL field, flow key)
FILTER_FIELDS = (("application", "application", "Application"),
                 ("node_tid", "nodeTID", "NodeTID"), ("capture_id", "captureId", "CaptureID"),
                 ("tracking_id", "trackingID", "TrackingID"),
                 ("l3_tracking_id", "l3TrackingID", "L3TrackingID"),
                 ("parent_uuid", "parentUUID", "ParentUUID"),
                 ("layers_path", "layersPath", "LayersPath"), ("host", "host", "@Host"))


def flow_update_predicates(where: FlowFilterInput | None) -> tuple[MetadataPredicate, ...]:
    """The `flows` query's filter as predicates on a flow update's JSON (`flowUpdates`),
    so one filter means the same in both; `host` is not in an update's JSON: refused."""
    if where is None:
        return ()
    if where.host is not None:
        raise FilterError("where.host: flow updates do not carry the agent; filter on nodeTID")
    out = [MetadataPredicate(key, eq=str(getattr(where, attr)))
           for attr, _, key in FILTER_FIELDS if key != "@Host" and getattr(where, attr) is not None]
    return (*out, *f.predicates(where.metadata))


@strawberry.type(name="Flow", description="A flow as an agent last sent it; `json` is "
                                          "Skydive's flow JSON.")
class FlowType:
    raw: strawberry.Private[dict[str, Any]]
    props: strawberry.Private[dict[str, Any]]

    @field(description="the flow's UUID")
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.raw.get("UUID", "")))

    @strawberry.field
    def application(self) -> str:
        return str(self.raw.get("Application", ""))

    @strawberry.field
    def layers_path(self) -> str:
        return str(self.raw.get("LayersPath", ""))

    @field(name="nodeTID", description="TID of the capture node")
    def node_tid(self) -> str:
        return str(self.raw.get("NodeTID", ""))

    @strawberry.field
    def capture_id(self) -> str:
        return str(self.raw.get("CaptureID", ""))

    @field(name="trackingID")
    def tracking_id(self) -> str:
        return str(self.raw.get("TrackingID", ""))

    @field(name="l3TrackingID")
    def l3_tracking_id(self) -> str:
        return str(self.raw.get("L3TrackingID", ""))

    @field(name="parentUUID", description="the tunnel flow's UUID; empty for an outer flow")
    def parent_uuid(self) -> str:
        return str(self.raw.get("ParentUUID", ""))

    @field(description="ms since the epoch: first packet")
    def start(self) -> Long:
        return Long(int(self.raw.get("Start", 0)))

    @field(description="ms since the epoch: last packet")
    def last(self) -> Long:
        return Long(int(self.raw.get("Last", 0)))

    @field(description="NOT_FINISHED, TIMEOUT, TCP_FIN or TCP_RST")
    def finish_type(self) -> str:
        return str(self.raw.get("FinishType", "NOT_FINISHED"))

    @field(description="the agent that sent it")
    def host(self) -> str:
        return str(self.props.get(HOST) or "")

    @field(description="Skydive's flow JSON (Link, Network, Transport, ICMP, Metric...)")
    def json(self) -> JSON:
        return JSON(self.raw)


@strawberry.type
class FlowConnectionEdge:
    cursor: str
    node: FlowType


@strawberry.type
class FlowConnection:
    edges: list[FlowConnectionEdge]
    page_info: PageInfo


# ---------------------------------------------------------------- query

def encode_cursor(uuid: str) -> str:
    return base64.urlsafe_b64encode((_CURSOR + uuid).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error):
        raw = ""
    if not raw.startswith(_CURSOR):
        raise f.UserError(f"invalid cursor {cursor[:64]!r}: pass an endCursor or cursor "
                          f"returned by a previous page of flows")
    return raw[len(_CURSOR):]


def _predicate_arg(pred: MetadataPredicate, op: str, value: Any) -> g.Arg:
    def lit(v: Any) -> g.Literal:
        if not isinstance(v, (str, int, float, bool)):
            raise FilterError(f"key {pred.key!r}: expected a string, number or boolean")
        return g.Literal(v, 1)
    if op == "eq":
        return lit(value)
    if op == "in_":
        return g.Call("Within", tuple(lit(v) for v in value), 1)
    return g.Call({"ne": "Ne", "regex": "Regex", "lt": "Lt", "gt": "Gt"}[op], (lit(value),), 1)


def conditions(filt: FlowFilterInput | None, var: str, params: Params) -> list[str]:
    """Cypher conditions on flow `var`; a UserError names the filter field that is wrong."""
    return [t.text for t in terms(filt, var, params)]


def terms(filt: FlowFilterInput | None, var: str, params: Params) -> list[Term]:
    """`conditions`, each with its rank when an index serves it."""
    if filt is None:
        return []
    preds: list[tuple[str, MetadataPredicate]] = [
        (gql, MetadataPredicate(key, eq=getattr(filt, attr)))
        for attr, gql, key in FILTER_FIELDS if getattr(filt, attr) is not None]
    preds += [(f"metadata[{i}]", p) for i, p in enumerate(f.predicates(filt.metadata))]
    out: list[Term] = []
    for where, pred in preds:
        try:
            op, value = pred.op()
            key = g.Literal(pred.key, 1)
            if op == "exists":
                cond = has_key(flow_key(key), var, params)
                out.append(Term(cond if value else negate(cond)))
            else:
                out += flow_terms([key, _predicate_arg(pred, op, value)], var, params,
                                  either=False, step="filter", column=1)
        except (GremlinError, FilterError) as exc:
            message = exc.message if isinstance(exc, GremlinError) else str(exc)
            raise f.UserError(f"filter {where}: {message}") from None
    return out


def page_query(filt: FlowFilterInput | None, since: int | None, until: int | None,
               after: str | None, limit: int) -> tuple[str, dict[str, Any]]:
    params = Params()
    cursor = [Term(f"f.UUID > {params.add(decode_cursor(after))}")] if after is not None else []
    # ordered in a WITH: the embedded server builds properties() for the page only
    return (f"{flows_match(filt, since, until, params, cursor)} WITH f ORDER BY f.UUID "
            f"LIMIT {params.add(limit)} RETURN properties(f) AS p", dict(params.values))


def flows_match(filt: FlowFilterInput | None, since: int | None, until: int | None,
                params: Params, extra: list[Term] | None = None) -> str:
    """The clauses binding `f` to the flows of the filter and time range: one
    indexed condition finds them, the other indexed ones test them after a WITH."""
    found = terms(filt, "f", params)
    if since is not None:
        found.append(Term(f"f.Last >= {params.add(since)}", lookups.RANGE_RANK))
    if until is not None:
        found.append(Term(f"f.Start <= {params.add(until)}", lookups.RANGE_RANK))
    found += extra or []
    first, later = lookups.split([t.text for t in found],
                                 {t.text: t.rank for t in found if t.rank is not None})
    where = f" WHERE {' AND '.join(first)}" if first else ""
    then = f" WITH f WHERE {' AND '.join(later)}" if later else ""
    return f"MATCH (f:{FLOW}){where}{then}"


def time_arg(info: Info, arg: str, text: str | None) -> int | None:
    if text is None or text == "":
        return None
    try:
        return info.context.api.time_point(text)
    except GremlinError as exc:
        raise f.UserError(f"{arg}: {exc.message}") from None


async def flows(info: Info, filter: FlowFilterInput | None, since: str | None,
                until: str | None, first: int | None, after: str | None) -> FlowConnection:
    api = info.context.api
    size = f.page_size(first, info.context.max_page)
    start, end = time_arg(info, "since", since), time_arg(info, "until", until)
    if start is not None and end is not None and start > end:
        raise f.UserError("since is after until")
    cypher, params = page_query(filter, start, end, after, size + 1)
    timeout = api.limits.timeout_s
    try:
        rows = await asyncio.wait_for(api.store.read(cypher, params, timeout), timeout + 1.0)
    except TimeoutError:
        raise LimitExceededError(f"read timed out after {timeout:g} s: narrow the filter") \
            from None
    page = [cast(dict[str, Any], r["p"]) for r in rows]
    kept = page[:size]
    info.context.spend(len(kept))
    cursors = [encode_cursor(str(p["UUID"])) for p in kept]
    return FlowConnection(
        edges=[FlowConnectionEdge(cursor=c, node=FlowType(raw=flow_json(p), props=p))
               for p, c in zip(kept, cursors, strict=True)],
        page_info=PageInfo(has_next_page=len(page) > size, has_previous_page=after is not None,
                           start_cursor=cursors[0] if cursors else None,
                           end_cursor=cursors[-1] if cursors else None))
