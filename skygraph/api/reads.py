"""Graph reads for the API: structured filters, keyset pages and batched loads.

Owns what GraphQL (and anything else that does not speak Gremlin) asks the
store: a node by ID, pages of nodes or edges matching a `NodeFilter` /
`EdgeFilter`, the incident edges or neighbours of many nodes in one query
(for dataloaders), and the interface metrics (`LastUpdateMetric`) every
revision of matching nodes held. Every read can look at the live graph, at a time point
(`at`, the one revision visible then) or at a time slice (`during`, every
revision alive in it), over live and archived revisions (history.py).

A filter means exactly what the same `Has()` means in Gremlin: its predicates
are turned into Gremlin AST values and compiled by `gremlin.predicates`
(list-aware equality, validated and backquoted keys, every value a query
parameter). `matches()` evaluates the same filters in Python, on the
properties the store would hold, for filtering event streams.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, cast

from skygraph.gremlin import GremlinError, LimitExceededError, Limits, Read
from skygraph.gremlin import ast as g
from skygraph.gremlin.predicates import (
    ELEMENT_KEYS,
    Key,
    Params,
    has_key,
    integer,
    negate,
    parse_key,
    regex,
    value_condition,
)
from skygraph.topology import history, schema
from skygraph.topology.model import Edge, Node

T = TypeVar("T")
Direction = Literal["out", "in", "both"]
Slice = tuple[int, int]
Scalar = str | int | float | bool
Element = Node | Edge
OPS = ("eq", "ne", "in_", "regex", "lt", "gt", "exists")
DIRECTIONS = ("out", "in", "both")


class FilterError(ValueError):
    """A filter, cursor or time argument the user got wrong; the message says which and why."""


# ---------------------------------------------------------------- filters

@dataclass(frozen=True, slots=True)
class MetadataPredicate:
    """One test on a key (dotted metadata path like `Ovs.DPDK`, or `@Host`...):
    exactly one of the operators is set."""

    key: str
    eq: Scalar | None = None
    ne: Scalar | None = None
    in_: tuple[Scalar, ...] | None = None
    regex: str | None = None
    lt: float | None = None
    gt: float | None = None
    exists: bool | None = None

    def op(self) -> tuple[str, Any]:
        given = [(name, getattr(self, name)) for name in OPS if getattr(self, name) is not None]
        if len(given) != 1:
            ops = ", ".join(name.rstrip("_") for name in OPS)
            raise FilterError(f"key {self.key!r}: give exactly one of {ops} "
                              f"(got {len(given)})")
        return given[0]


@dataclass(frozen=True, slots=True)
class NodeFilter:
    type: str | None = None
    types: tuple[str, ...] | None = None
    name: str | None = None
    name_regex: str | None = None
    host: str | None = None
    metadata: tuple[MetadataPredicate, ...] = ()


@dataclass(frozen=True, slots=True)
class EdgeFilter:
    relation_type: str | None = None
    host: str | None = None
    parent: str | None = None
    child: str | None = None
    metadata: tuple[MetadataPredicate, ...] = ()


def _lit(value: Any) -> g.Literal:
    if not isinstance(value, (str, int, float, bool)):
        raise FilterError(f"expected a string, number or boolean, got {json.dumps(value)}")
    return g.Literal(value, 1)


def _predicate_arg(op: str, value: Any) -> g.Arg:
    if op == "eq":
        return _lit(value)
    if op == "in_":
        return g.Call("Within", tuple(_lit(v) for v in value), 1)
    name = {"ne": "Ne", "regex": "Regex", "lt": "Lt", "gt": "Gt"}[op]
    return g.Call(name, (_lit(value),), 1)


def _field_predicates(f: NodeFilter | EdgeFilter) -> list[tuple[str, MetadataPredicate]]:
    """The filter's named fields as predicates (with the name errors should show)."""
    out: list[tuple[str, MetadataPredicate]] = []
    if isinstance(f, NodeFilter):
        if f.type is not None:
            out.append(("type", MetadataPredicate("Type", eq=f.type)))
        if f.types is not None:
            out.append(("types", MetadataPredicate("Type", in_=tuple(f.types))))
        if f.name is not None:
            out.append(("name", MetadataPredicate("Name", eq=f.name)))
        if f.name_regex is not None:
            out.append(("nameRegex", MetadataPredicate("Name", regex=f.name_regex)))
    elif f.relation_type is not None:
        out.append(("relationType", MetadataPredicate("RelationType", eq=f.relation_type)))
    if f.host is not None:
        out.append(("host", MetadataPredicate("@Host", eq=f.host)))
    out.extend((f"metadata[{i}]", p) for i, p in enumerate(f.metadata))
    return out


def conditions(f: NodeFilter | EdgeFilter | None, var: str, params: Params) -> list[str]:
    """Cypher conditions on `var` for a filter (values go to `params`).

    Raises FilterError naming the filter field that is wrong."""
    if f is None:
        return []
    conds: list[str] = []
    for where, pred in _field_predicates(f):
        try:
            op, value = pred.op()
            key = parse_key(g.Literal(pred.key, 1))
            if op == "exists":
                cond = has_key(key, var, params)
                conds.append(cond if value else negate(cond))
            else:
                conds.append(value_condition(key, _predicate_arg(op, value), var, params))
        except (GremlinError, FilterError) as exc:
            raise FilterError(f"filter {where}: {_message(exc)}") from None
    if isinstance(f, EdgeFilter):
        for end, value in (("Parent", f.parent), ("Child", f.child)):
            if value is not None:
                conds.append(f"{var}.{end} = {params.add(value)}")
    return conds


def _message(exc: Exception) -> str:
    return exc.message if isinstance(exc, GremlinError) else str(exc)


def check_filter(f: NodeFilter | EdgeFilter | None) -> None:
    """Validate a filter (keys, operators, regexes) without reading anything."""
    conditions(f, "x", Params())


# ---------------------------------------------------------------- cursors

def encode_cursor(element: Element) -> str:
    raw = json.dumps([element.ID, element.UpdatedAt, element.Revision], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ident, updated, revision = json.loads(raw)
        if isinstance(ident, str) and isinstance(updated, int) and isinstance(revision, int):
            return ident, updated, revision
    except (ValueError, TypeError, binascii.Error):
        pass
    raise FilterError(f"invalid cursor {cursor[:64]!r}: pass an endCursor or cursor "
                      f"returned by a previous page")


# ---------------------------------------------------------------- Cypher builders

@dataclass(frozen=True, slots=True)
class When:
    """Which revisions a read sees: live (neither), at a time point, or in a slice."""

    at: int | None = None
    during: Slice | None = None

    def __post_init__(self) -> None:
        if self.at is not None and self.during is not None:
            raise FilterError("give either a time point (at) or a time slice (during), not both")
        if self.during is not None and self.during[0] > self.during[1]:
            raise FilterError("time slice: from is after to")

    @property
    def live(self) -> bool:
        return self.at is None and self.during is None

    def visible(self, x: str) -> str:
        if self.during is not None:
            return history.visible_in(x, "$start", "$end")
        return history.visible_at(x, "$t")

    def params(self) -> dict[str, Any]:
        if self.during is not None:
            return {"start": self.during[0], "end": self.during[1]}
        return {"t": self.at} if self.at is not None else {}


NODE = schema.quote(schema.NODE_LABEL)
ARCHIVED_NODE = schema.quote(schema.ARCHIVED_NODE_LABEL)
ARCHIVED_EDGE = schema.quote(schema.ARCHIVED_EDGE_LABEL)
Query = tuple[str, dict[str, Any]]


def _where(conds: Sequence[str]) -> str:
    return f" WHERE {' AND '.join(conds)}" if conds else ""


def _keyset(var: str, after: str | None, when: When, params: Params) -> list[str]:
    """Rows after the cursor. In a slice one element has several revisions, so
    the order (and the cursor) is (ID, UpdatedAt, Revision)."""
    if after is None:
        return []
    ident, updated, revision = decode_cursor(after)
    a = params.add(ident)
    if when.during is None:
        return [f"{var}.ID > {a}"]
    u, r = params.add(updated), params.add(revision)
    return [f"({var}.ID > {a} OR ({var}.ID = {a} AND ({var}.UpdatedAt > {u} OR "
            f"({var}.UpdatedAt = {u} AND {var}.Revision > {r}))))"]


def _order(var: str, when: When) -> str:
    return f"{var}.ID" if when.during is None else f"{var}.ID, {var}.UpdatedAt, {var}.Revision"


def _rel_types(relation_type: str | None) -> str:
    """A typed relationship pattern for a relation type: cheaper on the live graph.
    The type name is sanitised by the schema (never the raw value); the exact
    RelationType test stays in the WHERE, since the mapping is not one-to-one."""
    return f":{schema.quote(schema.relationship_type(relation_type))}" if relation_type else ""


def nodes_page_query(f: NodeFilter | None, when: When, after: str | None, limit: int) -> Query:
    """One page of nodes. The embedded server computes RETURN expressions before it
    sorts: ordering in a WITH first builds `properties()` for the page only."""
    params = Params()
    conds = [*conditions(f, "n", params), *_keyset("n", after, when, params)]
    lim = params.add(limit)
    tail = f" WITH n ORDER BY {_order('n', when)} LIMIT {lim} RETURN properties(n) AS p"
    if when.live:
        return f"MATCH (n:{NODE}){_where(conds)}{tail}", {**params.values}
    hist = [when.visible("n"), *conds]
    return (f"CALL {{ MATCH (n:{NODE}){_where(hist)} RETURN n UNION ALL "
            f"MATCH (n:{ARCHIVED_NODE}){_where(hist)} RETURN n }}{tail}",
            {**params.values, **when.params()})


def edges_page_query(f: EdgeFilter | None, when: When, after: str | None, limit: int) -> Query:
    params = Params()
    conds = [*conditions(f, "e", params), *_keyset("e", after, when, params)]
    lim = params.add(limit)
    rel = _rel_types(f.relation_type if f else None)
    tail = f" WITH e ORDER BY {_order('e', when)} LIMIT {lim} RETURN properties(e) AS p"
    if when.live:
        return f"MATCH (:{NODE})-[e{rel}]->(:{NODE}){_where(conds)}{tail}", {**params.values}
    hist = [when.visible("e"), *conds]
    return (f"CALL {{ MATCH (:{NODE})-[e{rel}]->(:{NODE}){_where(hist)} RETURN e UNION ALL "
            f"MATCH (e:{ARCHIVED_EDGE}){_where(hist)} RETURN e }}{tail}",
            {**params.values, **when.params()})


def node_metrics_query(f: NodeFilter | None, prefix: str, since: int | None,
                       until: int | None, limit: int) -> Query:
    """The metric `prefix` (`LastUpdateMetric`, `Ovs.LastUpdateMetric`...) of every
    revision (live and archived) of the nodes matching `f`, whose window lies in
    [since, until] (either bound optional)."""
    params = Params()
    start = f"n.{schema.quote(prefix + '.Start')}"
    conds = [*conditions(f, "n", params), f"{start} IS NOT NULL"]
    if since is not None:
        conds.append(f"{start} >= {params.add(since)}")
    if until is not None:
        conds.append(f"n.{schema.quote(prefix + '.Last')} <= {params.add(until)}")
    lim = params.add(limit)
    return (f"CALL {{ MATCH (n:{NODE}){_where(conds)} RETURN n UNION ALL "
            f"MATCH (n:{ARCHIVED_NODE}){_where(conds)} RETURN n }} "
            f"WITH n LIMIT {lim} RETURN n.ID AS id, properties(n) AS p", {**params.values})


def nodes_by_ids_query(when: When) -> str:
    """Nodes by `$ids` (one row per visible revision)."""
    if when.live:
        return f"UNWIND $ids AS _id MATCH (n:{NODE} {{ID: _id}}) RETURN properties(n) AS p"
    vis = when.visible("n")
    return (f"UNWIND $ids AS _id CALL {{ WITH _id MATCH (n:{NODE} {{ID: _id}}) WHERE {vis} "
            f"RETURN n UNION ALL WITH _id MATCH (n:{ARCHIVED_NODE} {{ID: _id}}) WHERE {vis} "
            f"RETURN n }} RETURN properties(n) AS p")


def _incident(direction: str, when: When, rel: str, conds: list[str]) -> str:
    """A clause binding `e` to the edges of node ID `_id` (imported) in `direction`."""
    def live(arrow_in: str, arrow_out: str) -> str:
        hist = [] if when.live else [when.visible("e")]
        return (f"MATCH (_s:{NODE} {{ID: _id}}){arrow_in}[e{rel}]{arrow_out}(_o)"
                f"{_where([*hist, *conds, _is_node('_o')])}")

    if when.live:
        arrows = {"out": ("-", "->"), "in": ("<-", "-"), "both": ("-", "-")}[direction]
        return live(*arrows)
    branches = []
    for d, end in (("out", "Parent"), ("in", "Child")):
        if direction in (d, "both"):
            arch = _where([f"e.{end} = _id", when.visible("e"), *conds])
            branches.append(f"WITH _id {live('-', '->') if d == 'out' else live('<-', '-')} "
                            f"RETURN e UNION ALL WITH _id MATCH (e:{ARCHIVED_EDGE}){arch} RETURN e")
    return "CALL { " + " UNION ALL ".join(branches) + " }"


def _is_node(var: str) -> str:
    # A label on the far end of a hop makes the embedded server scan the label.
    return f"'{schema.NODE_LABEL}' IN labels({var})"


def incident_edges_query(direction: str, when: When, f: EdgeFilter | None) -> Query:
    """Edges of each node in `$ids`: rows (src, p)."""
    params = Params()
    conds = conditions(f, "e", params)
    rel = _rel_types(f.relation_type if f and when.live else None)
    clause = _incident(_direction(direction), when, rel, conds)
    return (f"UNWIND $ids AS _id {clause} RETURN _id AS src, properties(e) AS p",
            {**params.values, **when.params()})


def neighbours_query(direction: str, when: When, f: EdgeFilter | None,
                     nf: NodeFilter | None) -> Query:
    """Nodes across the edges of each node in `$ids`: rows (src, p)."""
    direction = _direction(direction)
    params = Params()
    conds = conditions(f, "e", params)
    nconds = conditions(nf, "m", params)
    if when.live:
        arrows = {"out": ("-", "->"), "in": ("<-", "-"), "both": ("-", "-")}[direction]
        rel = _rel_types(f.relation_type if f else None)
        return (f"UNWIND $ids AS _id MATCH (_s:{NODE} {{ID: _id}}){arrows[0]}[e{rel}]{arrows[1]}(m)"
                f"{_where([*conds, _is_node('m'), *nconds])} RETURN _id AS src, properties(m) AS p",
                {**params.values})
    other = {"out": "e.Child", "in": "e.Parent",
             "both": "CASE WHEN e.Parent = _id THEN e.Child ELSE e.Parent END"}[direction]
    vis = [when.visible("m"), *nconds]
    return (f"UNWIND $ids AS _id {_incident(direction, when, '', conds)} "
            f"WITH _id, {other} AS _oid "
            f"CALL {{ WITH _oid MATCH (m:{NODE} {{ID: _oid}}){_where(vis)} RETURN m UNION ALL "
            f"WITH _oid MATCH (m:{ARCHIVED_NODE} {{ID: _oid}}){_where(vis)} RETURN m }} "
            f"RETURN _id AS src, properties(m) AS p",
            {**params.values, **when.params()})


def _direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise FilterError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    return direction


# ---------------------------------------------------------------- reading

@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a keyset-paginated read; `cursors[i]` is the cursor of `items[i]`."""

    items: tuple[T, ...]
    cursors: tuple[str, ...]
    has_next: bool

    @property
    def end_cursor(self) -> str | None:
        return self.cursors[-1] if self.cursors else None


@dataclass
class Reads:
    """The API's reads, through the injected `read(cypher, params, timeout_s)`."""

    read: Read
    limits: Limits = field(default_factory=Limits)

    async def _rows(self, cypher: str, params: dict[str, Any]) -> Sequence[Mapping[str, Any]]:
        timeout = self.limits.timeout_s
        try:
            # the driver enforces the timeout server-side; wait_for is the backstop
            return await asyncio.wait_for(self.read(cypher, params, timeout), timeout + 1.0)
        except TimeoutError:
            raise LimitExceededError(f"read timed out after {timeout:g} s: narrow the filter") \
                from None

    def _capped(self, rows: Sequence[Mapping[str, Any]], what: str) -> None:
        if len(rows) > self.limits.max_results:
            raise LimitExceededError(f"more than {self.limits.max_results} {what}: "
                                     f"narrow with relationType or a filter")

    async def node(self, ident: str, at: int | None = None) -> Node | None:
        found = await self.nodes_by_ids([ident], at)
        return found.get(ident)

    async def nodes(self, filter: NodeFilter | None = None, at: int | None = None,
                    first: int = 100, after: str | None = None,
                    during: Slice | None = None) -> Page[Node]:
        cypher, params = nodes_page_query(filter, When(at, during), after, first + 1)
        rows = await self._rows(cypher, params)
        return _page([history.node_from_record(r) for r in rows], first)

    async def edges(self, filter: EdgeFilter | None = None, at: int | None = None,
                    first: int = 100, after: str | None = None,
                    during: Slice | None = None) -> Page[Edge]:
        cypher, params = edges_page_query(filter, When(at, during), after, first + 1)
        rows = await self._rows(cypher, params)
        return _page([history.edge_from_record(r) for r in rows], first)

    async def nodes_by_ids(self, ids: Sequence[str], at: int | None = None,
                           during: Slice | None = None) -> dict[str, Node]:
        """Nodes by ID; in a slice, the latest revision alive in it."""
        when = When(at, during)
        if not ids:
            return {}
        rows = await self._rows(nodes_by_ids_query(when),
                                {"ids": list(dict.fromkeys(ids)), **when.params()})
        out: dict[str, Node] = {}
        for row in rows:
            n = history.node_from_record(row)
            old = out.get(n.ID)
            if old is None or (n.UpdatedAt, n.Revision) > (old.UpdatedAt, old.Revision):
                out[n.ID] = n
        return out

    async def incident_edges(self, ids: Sequence[str], direction: str = "both",
                             at: int | None = None, during: Slice | None = None,
                             filter: EdgeFilter | None = None) -> dict[str, list[Edge]]:
        """Edges of every node in `ids` (parent->child is `out`), in one query."""
        when = When(at, during)
        result: dict[str, list[Edge]] = {i: [] for i in ids}
        if not ids:
            return result
        cypher, params = incident_edges_query(direction, when, filter)
        rows = await self._rows(cypher, {**params, "ids": list(result)})
        self._capped(rows, "edges")
        seen: set[tuple[str, str, int, int]] = set()
        for row in rows:
            e = history.edge_from_record(row)
            mark = (row["src"], e.ID, e.UpdatedAt, e.Revision)
            if mark not in seen:  # a self-loop matches both directions
                seen.add(mark)
                result[row["src"]].append(e)
        for edges in result.values():
            edges.sort(key=lambda e: (e.ID, e.UpdatedAt, e.Revision))
        return result

    async def neighbours(self, ids: Sequence[str], direction: str = "both",
                         at: int | None = None, during: Slice | None = None,
                         filter: EdgeFilter | None = None,
                         node_filter: NodeFilter | None = None) -> dict[str, list[Node]]:
        """Nodes one edge away from every node in `ids`, in one query, each once."""
        when = When(at, during)
        result: dict[str, list[Node]] = {i: [] for i in ids}
        if not ids:
            return result
        cypher, params = neighbours_query(direction, when, filter, node_filter)
        rows = await self._rows(cypher, {**params, "ids": list(result)})
        self._capped(rows, "neighbours")
        seen: set[tuple[str, str, int, int]] = set()
        for row in rows:
            n = history.node_from_record(row)
            mark = (row["src"], n.ID, n.UpdatedAt, n.Revision)
            if mark not in seen:
                seen.add(mark)
                result[row["src"]].append(n)
        for nodes in result.values():
            nodes.sort(key=lambda n: (n.ID, n.UpdatedAt, n.Revision))
        return result


    async def node_metrics(self, filter: NodeFilter | None, prefix: str = "LastUpdateMetric",
                           since: int | None = None, until: int | None = None
                           ) -> list[tuple[str, dict[str, Any]]]:
        """(node ID, metric) of every revision of the matching nodes that held the
        metric `prefix` in [since, until]; one per node and `Start`, by `Start`."""
        cypher, params = node_metrics_query(filter, prefix, since, until,
                                            self.limits.max_results + 1)
        rows = await self._rows(cypher, params)
        self._capped(rows, "metrics")
        out: dict[tuple[str, int], dict[str, Any]] = {}
        for row in rows:
            metric = _lookup(schema.from_properties(row["p"]), prefix)
            if isinstance(metric, dict):
                out.setdefault((str(row["id"]), int(metric.get("Start") or 0)), metric)
        return [(ident, m) for (ident, _), m in sorted(out.items(), key=lambda kv: (
            kv[0][1], kv[0][0]))]


def _lookup(meta: Mapping[str, Any], path: str) -> Any:
    cur: Any = meta
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _page(items: list[Any], first: int) -> Page[Any]:
    kept = items[:first]
    return Page(tuple(kept), tuple(encode_cursor(x) for x in kept), len(items) > first)


# ---------------------------------------------------------------- matching in Python

_MISSING = object()


def properties(element: Element | Mapping[str, Any]) -> dict[str, Any]:
    """What the store would hold for an element (or a plain JSON document, e.g. a flow)."""
    if not isinstance(element, (Node, Edge)):
        return schema.to_properties(element)
    props = schema.to_properties(element.Metadata)
    props.update(ID=element.ID, Host=element.Host, Origin=element.Origin,
                 CreatedAt=element.CreatedAt, UpdatedAt=element.UpdatedAt,
                 Revision=element.Revision)
    if element.DeletedAt is not None:
        props["DeletedAt"] = element.DeletedAt
    if isinstance(element, Edge):
        props.update(Parent=element.Parent, Child=element.Child)
    return props


def matches(f: NodeFilter | EdgeFilter | None, element: Element) -> bool:
    """Whether `element` passes `f`, with the semantics of the Cypher `conditions`.

    Raises FilterError for an invalid filter (as the Cypher builder does)."""
    if f is None:
        return True
    if isinstance(f, NodeFilter) != isinstance(element, Node):
        return False
    props = properties(element)
    if isinstance(f, EdgeFilter):
        if f.parent is not None and props.get("Parent") != f.parent:
            return False
        if f.child is not None and props.get("Child") != f.child:
            return False
    return all(_test(pred, props, where) for where, pred in _field_predicates(f))


def matches_predicates(preds: Sequence[MetadataPredicate], doc: Mapping[str, Any]) -> bool:
    """Predicates on a plain JSON document (a flow), keys as dotted paths."""
    props = properties(doc)
    return all(_test(p, props, f"filter[{i}]") for i, p in enumerate(preds))


def _test(pred: MetadataPredicate, props: Mapping[str, Any], where: str) -> bool:
    try:
        op, value = pred.op()
        key = parse_key(g.Literal(pred.key, 1))
        pattern = re.compile(regex(g.Literal(value, 1))) if op == "regex" else None
        if op != "exists":
            _predicate_arg(op, value)  # validates the values as the Cypher path does
        # Skydive casts numeric predicate arguments to int64
        bound = integer(_lit(value), op.capitalize()) if op in ("lt", "gt") else 0
    except (GremlinError, FilterError) as exc:
        raise FilterError(f"filter {where}: {_message(exc)}") from None
    exists = _exists(key, props)
    if op == "exists":
        return exists is bool(value)
    x = props.get(key.prop) if key.prop is not None else None
    if op == "ne":
        return exists and not _term(key, x, value, props)
    if op == "eq":
        return _term(key, x, value, props)
    if op == "in_":
        return any(_term(key, x, v, props) for v in value)
    if pattern is not None:
        items = [x] if key.scalar else _items(x)
        return any(isinstance(y, str) and pattern.fullmatch(y) is not None for y in items)
    if not _number(x):
        return False
    number = cast(float, x)
    return number < bound if op == "lt" else number > bound


def _exists(key: Key, props: Mapping[str, Any]) -> bool:
    if key.prop is None:
        return False
    if key.prop in props:
        return True
    return not key.scalar and any(k.startswith(key.prop + ".") for k in props)


def _term(key: Key, x: Any, value: Any, props: Mapping[str, Any]) -> bool:
    if key.prop is None or x is None:
        return False
    if not key.scalar and key.prop in _json_paths(props) and _reads_as_json(value):
        return False
    if _eq(x, value):
        return True
    return not key.scalar and isinstance(x, list) and any(_eq(y, value) for y in x)


def _items(x: Any) -> list[Any]:
    return x if isinstance(x, list) else [x]


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _eq(a: Any, b: Any) -> bool:
    """Cypher equality on scalars: numbers compare by value, booleans only with booleans."""
    if _number(a) and _number(b):
        return bool(a == b)
    return type(a) is type(b) and a == b


def _json_paths(props: Mapping[str, Any]) -> set[str]:
    return {".".join(json.loads(p)) for p in props.get(schema.JSON_KEYS) or []}


def _reads_as_json(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return not isinstance(json.loads(value), str)
    except ValueError:
        return False


__all__ = [
    "ELEMENT_KEYS", "EdgeFilter", "FilterError", "MetadataPredicate", "NodeFilter", "Page",
    "Reads", "When", "check_filter", "conditions", "decode_cursor", "edges_page_query",
    "encode_cursor", "incident_edges_query", "matches", "matches_predicates",
    "neighbours_query", "nodes_by_ids_query", "nodes_page_query", "properties",
]
