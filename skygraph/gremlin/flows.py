"""Skydive's flow steps (SPEC §1f "Extension steps") over the stored flows.

Flows are `(:Flow)` nodes (topology/flowschema.py). `Flows([k, v...])`
starts a flow stream: from G every stored flow (with `At`/`Context`, the
flows alive in the window: `Start <= t AND Last >= t - d - flow.expire`),
from nodes or shortest paths the flows whose `NodeTID` is the `TID` of one
of them. On flows: `Has`/`HasEither`/`HasKey`/`HasNot`, `Dedup` (default
key `TrackingID`), `Sort` (default `Last`), `Range`/`Limit`, `Count`,
`Values`, `Keys`, `Sum('Metric.X')`; back to graph nodes with
`Hops`/`CaptureNode` (node whose TID is NodeTID), `Nodes` (that node plus
the nodes whose MAC is `Link.A` / `Link.B`), `In`/`Out`/`Both` (node whose
MAC or PeerIntfMAC is `Link.A` / `Link.B` / either); `Group([key])` and
`MoreThan([n])` (n honoured, SPEC §3 fix 2); `Metrics()` (metrics.py) and
`RawPackets()`/`BPF()` (packets.py) after them.

Flow keys: `ETHERNET.x` is `Link.x`, `IPV4.x`/`IPV6.x` `Network.x`,
`TCP.x`/`UDP.x`/`SCTP.x` `Transport.x`; in a filter `Network`, `Link` or
`Transport` alone means its `A` or its `B`. Flow fields are single scalars,
so filters on them are plain comparisons that the indexes serve; of those,
one finds the flows and the others test them (lookups.py).

The translator calls `dispatch` for every step and `finish` for the result
kinds defined here; the steps write into its clause list like its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from skygraph.gremlin import lookups, metrics, packets, results, shapes
from skygraph.gremlin.ast import Arg, Literal, Step
from skygraph.gremlin.errors import GremlinQueryError, NotAvailableError
from skygraph.gremlin.lookups import Term
from skygraph.gremlin.parser import FLOW_STEPS
from skygraph.gremlin.plan import (
    COUNT,
    FLOW_KEYS,
    FLOW_SUM,
    FLOWS,
    GRAPH,
    GROUPS,
    METRIC_VALUE,
    METRICS,
    NODES,
    PATHS,
    RAW_PACKETS,
    VALUES,
    Record,
)
from skygraph.gremlin.predicates import (
    Key,
    Params,
    has_key,
    integer,
    negate,
    pairs_condition,
    parse_key,
    sort_args,
)
from skygraph.gremlin.source import HistorySource, Pending, where
from skygraph.topology import schema
from skygraph.topology.flowschema import METRIC_FIELDS, PARENT_UUID, is_scalar_field

if TYPE_CHECKING:
    from skygraph.gremlin.translator import _Builder

# results shaped by `finish` (and the modules it delegates to)
FLOW_KINDS = frozenset({FLOWS, GROUPS, FLOW_KEYS, FLOW_SUM, METRICS, METRIC_VALUE, RAW_PACKETS})
# what the translator's own steps cannot follow
STREAMS = frozenset({FLOWS, GROUPS, METRICS, METRIC_VALUE, RAW_PACKETS})

FLOW = schema.quote(schema.FLOW_LABEL)
NODE = schema.quote(schema.NODE_LABEL)
ARCHIVED_NODE = schema.quote(schema.ARCHIVED_NODE_LABEL)
ALIASES = {"ETHERNET": "Link", "IPV4": "Network", "IPV6": "Network",
           "TCP": "Transport", "UDP": "Transport", "SCTP": "Transport"}
ENDPOINTS = ("Link", "Network", "Transport")
TRACKING_ID = Key("TrackingID", "TrackingID", True)
LAST = Key("Last", "Last", True)

UNAVAILABLE = {
    "Sockets": "no socket information (Skydive's socketinfo probe) is collected",
    "NextHop": "routing tables are not evaluated yet",
    "Workflow": "workflows are not supported",
}

# How a node is found from a flow: by TID, by MAC, by MAC or PeerIntfMAC.
BY_TID, BY_MAC, BY_MAC_OR_PEER = 0, 1, 2


@dataclass
class MetricState:
    """What `Metrics()` selected and the steps after it."""

    source: str = ""  # "flows" or "nodes"
    prefix: str = "LastUpdateMetric"  # nodes: the metric's key
    sample_var: str = ""  # flows in a time context: the stored samples
    aggregates: list[tuple[int, int]] = field(default_factory=list)  # (slice ms, column)
    terminal: tuple[str, str | None, int] | None = None  # (sum|count|keys, key, column)


@dataclass
class FlowState:
    """What the flow steps of one query remember between steps."""

    ordered: bool = False  # a Sort() set the order Dedup() must keep
    group_key: Key = TRACKING_ID
    more_than: list[int] = field(default_factory=list)
    metrics: MetricState = field(default_factory=MetricState)
    packet_var: str = ""  # RawPackets(): the stored packets
    packet_filters: list[tuple[str, int]] = field(default_factory=list)  # BPF(): (filter, column)
    ranks: dict[str, int] = field(default_factory=dict)  # indexed conditions: their rank
    lookups: dict[str, Term] = field(default_factory=dict)  # indexed conditions' terms


# ---------------------------------------------------------------- keys and filters

def flow_key(arg: Arg) -> Key:
    """A flow key with its alias resolved (`IPV4.A` -> `Network.A`)."""
    key = parse_key(arg)
    if key.prop is None or key.text.startswith("@"):
        return key
    head, dot, rest = key.prop.partition(".")
    prop = ALIASES.get(head, head) + dot + rest
    return Key(key.text, prop, is_scalar_field(prop))


def filter_keys(arg: Arg) -> list[Key]:
    """The keys a filter term tests: `Network` alone is `Network.A` or `Network.B`."""
    key = flow_key(arg)
    if key.prop in ENDPOINTS:
        return [Key(key.text, f"{key.prop}.{end}", True) for end in ("A", "B")]
    return [key]


def flow_terms(args: Sequence[Arg], var: str, params: Params, *, either: bool,
               step: str, column: int) -> list[Term]:
    """`Has(k, v, …)` (terms to AND) or `HasEither(k, v, …)` (one OR term) on
    flows; `Has(k)` = exists. Indexed terms carry their rank (lookups.py)."""
    if len(args) == 1 and not either:
        return [Term(has_key(flow_key(args[0]), var, params))]
    if len(args) % 2:
        raise GremlinQueryError(
            f"{step}() takes a key alone or key, value pairs; got {len(args)} arguments",
            column)
    terms = [lookups.any_of([_value_term(k, args[i + 1], var, params)
                             for k in filter_keys(args[i])])
             for i in range(0, len(args), 2)]
    if not terms:
        return [Term("true")]
    return [lookups.any_of(terms)] if either else terms


def flow_condition(args: Sequence[Arg], var: str, params: Params, *, either: bool,
                   step: str, column: int) -> str:
    """The terms of `flow_terms` as one condition."""
    return lookups.all_of(flow_terms(args, var, params, either=either, step=step,
                                     column=column)).text


def _value_term(key: Key, arg: Arg, var: str, params: Params) -> Term:
    # An outer flow has no ParentUUID property (flowschema.py): '' means missing.
    if key.prop == PARENT_UUID and isinstance(arg, Literal) and arg.value == "":
        return Term(f"{key.expr(var)} IS NULL")
    return lookups.value_term(key, arg, var, params)


def filter_terms(b: _Builder, terms: Sequence[Term]) -> None:
    """Add the terms to the flows' clause, remembering which an index serves."""
    for term in terms:
        if term.rank is not None:
            b.flow.ranks[term.text] = term.rank
            b.flow.lookups[term.text] = term
        b.filter(term.text)


# ---------------------------------------------------------------- dispatch

def dispatch(b: _Builder, step: Step) -> bool:
    """Handle `step` if it is a flow step or follows one; False to let the
    translator handle it (which refuses what cannot follow flows)."""
    reason = UNAVAILABLE.get(step.name)
    if reason is not None:
        raise NotAvailableError(f"{step.name}() is not available: {reason}", step.column)
    handler = _FLOW_STEPS.get(step.name)
    if handler is None:
        handler = _BY_KIND.get(b.kind, {}).get(step.name)
    if handler is None:
        if b.kind in STREAMS or step.name in FLOW_STEPS:
            b.need(step)  # raises: "<step>() cannot follow <previous>()"
        return False
    handler(b, step)
    return True


# ---------------------------------------------------------------- Flows()

def step_flows(b: _Builder, step: Step) -> None:
    b.need(step, GRAPH, NODES, PATHS)
    v, keep, ranks = b.fresh("f"), b.keep(), b.flow.ranks

    def then(later: list[str]) -> str:
        return f" WITH {keep}{v}{where(later)}" if later else ""

    if b.kind == GRAPH:
        def render(c: list[str]) -> str:
            first, later = lookups.split(c, ranks)
            return f"MATCH ({v}:{FLOW}){where(first)}{then(later)}"
    else:
        tids, t = b.fresh("tids"), b.fresh("t")
        if b.kind == PATHS:
            x = b.fresh("x")
            b.emit(f"UNWIND {b.cur if b.source.history else f'nodes({b.cur})'} AS {x}")
            b.emit(f"WITH {keep}collect(DISTINCT {x}.TID) AS {tids}")
        else:
            b.emit(f"WITH {keep}collect(DISTINCT {b.cur}.TID) AS {tids}")

        def render(c: list[str]) -> str:
            # after a WITH: only plain equalities are sought (lookups.py)
            first, later = lookups.split(c, ranks)
            best = b.flow.lookups.get(first[0]) if first else None
            if best is not None and best.eqs and best.rank is not None \
                    and best.rank < lookups.LOOKUP_RANK["NodeTID"]:
                # a better look-up than the capture nodes' flows
                rest = [*first[1:], *later]
                mine = f"{v}.NodeTID IN {tids}"
                if len(best.eqs) == 1:
                    return f"MATCH ({v}:{FLOW}){where([best.eqs[0], mine])}{then(rest)}"
                branches = " UNION ".join(f"WITH {tids} MATCH ({v}:{FLOW}){where([eq, mine])} "
                                          f"RETURN {v}" for eq in best.eqs)
                return f"CALL {{ {branches} }}{then(rest)}"
            return (f"UNWIND {tids} AS {t} MATCH ({v}:{FLOW} {{NodeTID: {t}}})"
                    f"{where([x for x in c if x not in ranks])}"
                    f"{then([x for x in c if x in ranks])}")
    pending = Pending(v, render)
    if isinstance(b.source, HistorySource):
        # alive in the window, or ended less than flow.expire before it (SPEC §1h);
        # `Last` first: of the two ranges, the one a recent window narrows
        start = b.source.frm or b.source.t
        low = b.params.add(b.params.values[start[1:]] - int(b.limits.flow_expire_s * 1000))
        window = [f"{v}.Last >= {low}", f"{v}.Start <= {b.source.t}"]
        pending.conds += window
        ranks.update(dict.fromkeys(window, lookups.RANGE_RANK))
    b.flush()
    b.pending = [pending]
    b.cur, b.kind = v, FLOWS
    if step.args:
        filter_terms(b, flow_terms(step.args, v, b.params, either=False, step=step.name,
                                   column=step.column))


# ---------------------------------------------------------------- filters, order, slices

def step_has(b: _Builder, step: Step) -> None:
    filter_terms(b, flow_terms(step.args, b.cur, b.params, either=step.name == "HasEither",
                               step=step.name, column=step.column))


def step_has_key(b: _Builder, step: Step) -> None:
    cond = has_key(flow_key(step.args[0]), b.cur, b.params)
    b.filter(cond if step.name == "HasKey" else negate(cond))


def step_dedup(b: _Builder, step: Step) -> None:
    keys = [flow_key(a) for a in step.args] or [TRACKING_ID]

    def dedup_key(x: str) -> str:
        exprs = [k.expr(x) for k in keys]
        missing = " AND ".join(f"{e} IS NULL" for e in exprs)
        return f"CASE WHEN {missing} THEN [0, {x}.UUID] ELSE [1, {', '.join(exprs)}] END"

    keep, new = b.keep(), b.fresh("f")
    if not b.flow.ordered:
        b.emit(f"WITH {keep}{dedup_key(b.cur)} AS _dk, head(collect({b.cur})) AS {new}")
    else:
        # keep the first flow of each key in the sorted order, and that order
        flows, i, first, x = b.fresh("fl"), b.fresh("i"), b.fresh("i"), b.fresh("f")
        b.emit(f"WITH {keep}collect({b.cur}) AS {flows}")
        b.emit(f"UNWIND range(0, size({flows}) - 1) AS {i}")
        b.emit(f"WITH {keep}{i}, {flows}[{i}] AS {x} ORDER BY {i}")
        b.emit(f"WITH {keep}{dedup_key(x)} AS _dk, min({i}) AS {first}, "
               f"head(collect({x})) AS {new} ORDER BY {first}")
    b.cur = new


def step_sort(b: _Builder, step: Step) -> None:
    order, key_arg = sort_args(step)
    key = flow_key(key_arg) if key_arg is not None else LAST
    b.emit(f"WITH {b.keep()}{b.cur} ORDER BY {key.expr(b.cur)} {order}")
    b.flow.ordered = True


def step_range(b: _Builder, step: Step) -> None:
    start = integer(step.args[0], step.name) if step.name == "Range" else 0
    stop = integer(step.args[-1], step.name)
    b.slice(step, start, stop)


# ---------------------------------------------------------------- terminal steps

def step_count(b: _Builder, step: Step) -> None:
    b.kind = COUNT


def step_values(b: _Builder, step: Step) -> None:
    b.values_key = flow_key(step.args[0])
    b.kind = VALUES


def step_keys(b: _Builder, step: Step) -> None:
    b.kind = FLOW_KEYS


def step_sum(b: _Builder, step: Step) -> None:
    """Sum('Metric.X' | 'LastUpdateMetric.X'): a float, flows without it count 0."""
    if not step.args:
        raise GremlinQueryError("Sum() on flows needs a key: Metric.X or LastUpdateMetric.X",
                                step.column)
    key = flow_key(step.args[0])
    head, _, rest = (key.prop or "").partition(".")
    if head not in ("Metric", "LastUpdateMetric"):
        raise GremlinQueryError(
            f"Sum() on flows accepts only fields of Metric and LastUpdateMetric, got {key.text!r}",
            step.args[0].column)
    if rest not in METRIC_FIELDS:
        raise GremlinQueryError(f"Sum(): {head} has no field {rest!r} (fields: "
                                f"{', '.join(METRIC_FIELDS)})", step.args[0].column)
    b.values_key = key
    b.kind = FLOW_SUM


def step_group(b: _Builder, step: Step) -> None:
    b.flow.group_key = flow_key(step.args[0]) if step.args else TRACKING_ID
    b.kind = GROUPS


def step_more_than(b: _Builder, step: Step) -> None:
    n = integer(step.args[0], "MoreThan") if step.args else 1
    if n < 0:
        raise GremlinQueryError(f"MoreThan() needs a count >= 0, got {n}", step.column)
    b.flow.more_than.append(n)


# ---------------------------------------------------------------- back to graph nodes

def step_capture_node(b: _Builder, step: Step) -> None:
    nodes_of(b, step, [(BY_TID, "NodeTID")])


def step_nodes(b: _Builder, step: Step) -> None:
    nodes_of(b, step, [(BY_TID, "NodeTID"), (BY_MAC, "Link.A"), (BY_MAC, "Link.B")])


def step_in_out(b: _Builder, step: Step) -> None:
    ends = {"In": ["Link.A"], "Out": ["Link.B"], "Both": ["Link.A", "Link.B"]}[step.name]
    nodes_of(b, step, [(BY_MAC_OR_PEER, end) for end in ends])


def nodes_of(b: _Builder, step: Step, lookups: list[tuple[int, str]]) -> None:
    """For each flow and lookup in order, the first node found (flows without the
    field, e.g. without Link, give none: SPEC §3 fix 10), filtered by the step's
    arguments."""
    b.flush()
    keep, cur = b.keep(), b.cur
    lk, how, value, node = b.fresh("lk"), b.fresh("how"), b.fresh("val"), b.fresh("n")
    items = ", ".join(f"[{code}, {cur}.{schema.quote(prop)}]" for code, prop in lookups)
    b.emit(f"UNWIND [{items}] AS {lk}")
    b.emit(f"WITH {keep}{lk}[0] AS {how}, {lk}[1] AS {value} "
           f"WHERE {value} IS NOT NULL AND {value} <> ''")
    codes = {code for code, _ in lookups}
    tests = []  # (property, which lookups search it)
    if BY_TID in codes:
        tests.append(("TID", f"{how} = {BY_TID}"))
    if codes & {BY_MAC, BY_MAC_OR_PEER}:
        tests.append(("MAC", f"{how} IN [{BY_MAC}, {BY_MAC_OR_PEER}]"))
    if BY_MAC_OR_PEER in codes:
        tests.append(("PeerIntfMAC", f"{how} = {BY_MAC_OR_PEER}"))
    branches = [f"WITH {how}, {value} WITH {how}, {value} WHERE {test} {match} RETURN _lx"
                for prop, test in tests for match in _find(b, prop, value)]
    cond = "true"
    if step.args:
        cond = pairs_condition(step.args, "_lx", b.params, either=False, step=step.name,
                               column=step.column)
    b.emit(f"CALL {{ WITH {how}, {value} CALL {{ {' UNION ALL '.join(branches)} }} "
           f"WITH _lx WHERE {cond} RETURN head(collect(_lx)) AS {node} }}")
    b.emit(f"WITH {keep}{node} WHERE {node} IS NOT NULL")
    b.cur, b.kind = node, NODES


def _find(b: _Builder, prop: str, value: str) -> list[str]:
    """MATCH clauses binding `_lx` to nodes whose `prop` is `value` (in the time context)."""
    p = schema.quote(prop)
    if not isinstance(b.source, HistorySource):
        return [f"MATCH (_lx:{NODE} {{{p}: {value}}})"]
    visible = b.source.visible("_lx")
    return [f"MATCH (_lx:{NODE} {{{p}: {value}}}) WHERE {visible}",
            f"MATCH (_lx:{ARCHIVED_NODE}) WHERE _lx.{p} = {value} AND {visible}"]


# ---------------------------------------------------------------- results

def finish(b: _Builder) -> tuple[str, Callable[[list[Record]], Any]]:
    """The RETURN clause and result shaping of a flow result kind."""
    cur, cap = b.cur, b.limits.max_results
    if b.kind in (METRICS, METRIC_VALUE):
        return metrics.finish(b)
    if b.kind == RAW_PACKETS:
        return packets.finish(b)
    if b.kind == FLOWS:
        return f"RETURN properties({cur}) AS element{b.cap_clause()}", \
            results.elements(shapes.flow, cap)
    if b.kind == GROUPS:
        return f"RETURN properties({cur}) AS element{b.cap_clause()}", \
            groups(b.flow.group_key, list(b.flow.more_than), cap)
    if b.kind == FLOW_KEYS:
        return f"UNWIND keys({cur}) AS _k RETURN DISTINCT _k AS key", flow_keys
    assert b.values_key is not None
    x = b.values_key.expr(cur)
    return f"RETURN sum(coalesce(toFloat({x}), 0.0)) AS total", total


def groups(key: Key, more_than: list[int], cap: int) -> Callable[[list[Record]], Any]:
    """Group(): `[{key value: [flows]}]` (`[]` when empty); flows without the key
    are left out; MoreThan(n) keeps groups of more than n flows."""
    def finish_groups(rows: list[Record]) -> list[dict[str, list[dict[str, Any]]]]:
        results.check_cap(rows, cap)
        out: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            props: Mapping[str, Any] = row["element"]
            value = results.field_value(props, key.text, key.prop)
            if value is None or isinstance(value, (dict, list)):
                continue
            out.setdefault(value if isinstance(value, str) else str(value), []).append(
                shapes.flow(props))
        for n in more_than:
            out = {k: v for k, v in out.items() if len(v) > n}
        return [out] if out else []
    return finish_groups


def flow_keys(rows: list[Record]) -> list[str]:
    """Keys() on flows: every flow key stored (dotted: `Network.A`), sorted."""
    return sorted(str(r["key"]) for r in rows if r["key"] not in schema.INTERNAL_PROPERTIES)


def total(rows: list[Record]) -> float:
    return float(rows[0]["total"] or 0) if rows else 0.0


_FLOW_STEPS: Mapping[str, Callable[[_Builder, Step], None]] = {
    "Flows": step_flows, "Metrics": metrics.step_metrics, "Aggregates": metrics.step_aggregates,
    "RawPackets": packets.step_raw_packets, "BPF": packets.step_bpf,
}
_ON_FLOWS: Mapping[str, Callable[[_Builder, Step], None]] = {
    "Has": step_has, "HasEither": step_has, "HasKey": step_has_key, "HasNot": step_has_key,
    "Dedup": step_dedup, "Sort": step_sort, "Range": step_range, "Limit": step_range,
    "Count": step_count, "Values": step_values, "Keys": step_keys, "Sum": step_sum,
    "Hops": step_capture_node, "CaptureNode": step_capture_node, "Nodes": step_nodes,
    "In": step_in_out, "Out": step_in_out, "Both": step_in_out, "Group": step_group,
}
_ON_GROUPS: Mapping[str, Callable[[_Builder, Step], None]] = {"MoreThan": step_more_than}
_BY_KIND: Mapping[str, Mapping[str, Callable[[_Builder, Step], None]]] = {
    FLOWS: _ON_FLOWS, GROUPS: _ON_GROUPS, METRICS: metrics.ON_METRICS,
}
