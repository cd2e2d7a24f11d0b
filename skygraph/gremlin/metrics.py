"""Skydive's metric steps (SPEC §1f): `Metrics([key])` on flows and on nodes,
then `Aggregates([seconds])`, `Sum([key])`, `Count()`, `Keys()`.

A metric is a JSON object of counters plus `Start`/`Last` (ms): a flow's
`LastUpdateMetric` samples (`(:FlowMetric)`, flowschema.py) or an
interface's `LastUpdateMetric` (also `SFlow.` / `Ovs.LastUpdateMetric`) as
its node revisions hold it. `Metrics()` gives `[{id: [metric, ...]}]` (flow
UUID or node ID, metrics by time), or `[]` when there are none:

- on flows, live: each flow's `LastUpdateMetric` (its `Metric` if it was
  never updated); with `At(t)`: every sample with `Last <= t`; with
  `At(t, d)`: the samples inside the slice (`Start >= t - d AND Last <= t`);
- on nodes: each node (revision)'s metric, one per (node, `Start`), sorted by
  `Start`; in a slice only the metrics strictly inside it.

`Aggregates(s)` re-buckets every metric into slices of `s` seconds (30 by
default, at most 10,000 slices) aligned on the slice start (or the earliest
`Start` without a time context); a metric overlapping slices is split in
proportion to time (integer parts, remainder to the later part), and empty
slices are dropped: `[{"Aggregated": [...]}]`. `Sum()` adds every metric
(`Start` the earliest, `Last` the latest); `Sum(key)` totals one counter.
`Count()` is the number of series, `Keys()` the metric fields.

The arithmetic is pure; the step handlers below extend the translator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from skygraph.gremlin import results, shapes
from skygraph.gremlin.ast import Literal, Step
from skygraph.gremlin.errors import GremlinQueryError
from skygraph.gremlin.plan import FLOWS, METRIC_VALUE, METRICS, NODES, Record
from skygraph.gremlin.predicates import integer
from skygraph.gremlin.source import HistorySource
from skygraph.topology import schema
from skygraph.topology.flowschema import METRIC_FIELDS, sample_json

if TYPE_CHECKING:
    from skygraph.gremlin.translator import _Builder

Metric = dict[str, Any]
Series = dict[str, list[Metric]]

TIME_KEYS = ("Start", "Last")
NOT_ADDITIVE = frozenset({"RTT"})  # a flow's round-trip time is not a counter
DEFAULT_SLICE_S = 30
MAX_SLICES = 10_000
# InterfaceMetric (SPEC §1a): the counters a node metric may hold (zeros are omitted).
INTERFACE_FIELDS = (
    "Collisions", "Multicast", "RxBytes", "RxCompressed", "RxCrcErrors", "RxDropped",
    "RxErrors", "RxFifoErrors", "RxFrameErrors", "RxLengthErrors", "RxMissedErrors",
    "RxOverErrors", "RxPackets", "TxAbortedErrors", "TxBytes", "TxCarrierErrors",
    "TxCompressed", "TxDropped", "TxErrors", "TxFifoErrors", "TxHeartbeatErrors",
    "TxPackets", "TxWindowErrors")
FLOW_COUNTERS = tuple(f for f in METRIC_FIELDS if f not in TIME_KEYS and f not in NOT_ADDITIVE)
NODE_KEYS = {"LastUpdateMetric": "LastUpdateMetric", "SFlow": "SFlow.LastUpdateMetric",
             "Ovs": "Ovs.LastUpdateMetric"}


# ---------------------------------------------------------------- arithmetic

def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def counters(m: Mapping[str, Any]) -> list[str]:
    return [k for k, v in m.items() if k not in TIME_KEYS and k not in NOT_ADDITIVE
            and isinstance(v, int) and not isinstance(v, bool)]


def is_zero(m: Mapping[str, Any]) -> bool:
    return sum(_int(m[k]) for k in counters(m)) == 0


def add(a: Mapping[str, Any], b: Mapping[str, Any]) -> Metric:
    """Counters added; `Start`/`Last` of `a`."""
    out: Metric = {k: _int(a.get(k)) + _int(b.get(k)) for k in dict.fromkeys(
        counters(a) + counters(b))}
    out["Start"], out["Last"] = _int(a.get("Start")), _int(a.get("Last"))
    return out


def _part(m: Mapping[str, Any], ratio: float, start: int, last: int) -> Metric:
    # truncated toward zero, as Skydive's int64(float64(v) * ratio)
    out: Metric = {k: int(_int(m[k]) * ratio) for k in counters(m)}
    out["Start"], out["Last"] = start, last
    return out


def split(m: Mapping[str, Any], at: int) -> tuple[Metric | None, Metric | None]:
    """The parts of `m` before and after `at`, in proportion to time (SPEC §2:
    `{100 each, 0..100}` split at 25 = `{25 each, 0..25}` and `{75 each, 25..100}`);
    a metric not straddling `at` is one part, whole."""
    start, last = _int(m.get("Start")), _int(m.get("Last"))
    if at <= start:
        return (dict(m), None) if start == last and at == start else (None, dict(m))
    if at >= last:
        return dict(m), None
    before = _part(m, (at - start) / (last - start), start, at)
    after: Metric = {k: _int(m[k]) - before[k] for k in counters(m)}
    after["Start"], after["Last"] = at, last
    return before, after


def cut(m: Mapping[str, Any], lo: int, hi: int, final: bool = False
        ) -> tuple[Metric | None, Metric | None]:
    """The part of `m` inside the slice [lo, hi) (`final`: [lo, hi]) and the part
    after it. A part that rounds to zero while `m` starts inside the slice is `m`
    whole (Skydive's rule for metrics too small to split)."""
    start, last = _int(m.get("Start")), _int(m.get("Last"))
    if start == last:  # an instant: in the slice that holds it
        if lo <= start < hi or (final and start == hi):
            return dict(m), None
        return None, (dict(m) if start >= hi else None)
    _, rest = split(m, lo)
    if rest is None or is_zero(rest):
        return None, None
    inside, after = split(rest, hi)
    if inside is not None and is_zero(inside) and lo <= start < hi:
        return dict(m), None
    return inside, after


def aggregate(series: Series, start: int, last: int, width_ms: int, column: int) -> Series:
    """Every metric re-bucketed into slices of `width_ms` from `start` to `last`."""
    if width_ms <= 0:
        raise GremlinQueryError("Aggregates() needs a positive number of seconds", column)
    count = max(1, -(-(last - start) // width_ms)) if last >= start else 0
    if count > MAX_SLICES:
        raise GremlinQueryError(
            f"Aggregates(): {count} slices of {width_ms // 1000} s, more than {MAX_SLICES}: "
            f"give a longer slice", column)
    slices: list[Metric | None] = [None] * count
    for metrics in series.values():
        for m in metrics:
            rest: Metric | None = dict(m)
            for j in range(max(0, (_int(m.get("Start")) - start) // width_ms), count):
                if rest is None:
                    break
                lo = start + j * width_ms
                hi = min(lo + width_ms, last)
                inside, rest = cut(rest, lo, hi, final=j == count - 1)
                if inside is not None:
                    current = slices[j]
                    slices[j] = add(current, inside) if current is not None else {
                        **{k: inside[k] for k in counters(inside)}, "Start": lo, "Last": hi}
                if rest is not None and is_zero(rest):
                    rest = None
    return {"Aggregated": [s for s in slices if s is not None]}


def bounds(series: Series) -> tuple[int, int]:
    """The earliest `Start` and the latest `Last` (0, 0 when empty)."""
    metrics = [m for ms in series.values() for m in ms]
    if not metrics:
        return 0, 0
    return (min(_int(m.get("Start")) for m in metrics),
            max(_int(m.get("Last")) for m in metrics))


def total(series: Series) -> Metric | None:
    """Sum(): every metric added, `Start` the earliest, `Last` the latest (None if none)."""
    out: Metric | None = None
    for metrics in series.values():
        for m in metrics:
            out = dict(m) if out is None else add(out, m)
            out["Start"] = min(_int(out.get("Start")), _int(m.get("Start")))
            out["Last"] = max(_int(out.get("Last")), _int(m.get("Last")))
    if out is not None:
        for k in NOT_ADDITIVE:
            out.pop(k, None)
    return out


def total_of(series: Series, key: str, column: int) -> int:
    """Sum(key): one counter over every metric (missing = 0); the key is matched
    case-insensitively, as Skydive does, and must be a counter."""
    fields = {k.lower(): k for ms in series.values() for m in ms for k in counters(m)}
    fields.update((k.lower(), k) for k in (*FLOW_COUNTERS, *INTERFACE_FIELDS))
    name = fields.get(key.lower())
    if name is None:
        raise GremlinQueryError(f"Sum(): metrics have no counter {key!r} (counters: "
                                f"{', '.join(sorted(set(fields.values())))})", column)
    return sum(_int(m.get(name)) for ms in series.values() for m in ms)


# ---------------------------------------------------------------- step handlers

def step_metrics(b: _Builder, step: Step) -> None:
    b.need(step, FLOWS, NODES)
    m = b.flow.metrics
    history = isinstance(b.source, HistorySource)
    if b.kind == FLOWS:
        if step.args:
            key = _key_text(step)
            if key != "LastUpdateMetric":
                raise GremlinQueryError(f"Metrics() on flows takes no key but "
                                        f"LastUpdateMetric, got {key!r}", step.args[0].column)
        m.source = "flows"
        if history:
            assert isinstance(b.source, HistorySource)
            sample = b.fresh("m")
            conds = [f"{sample}.Last <= {b.source.t}"]
            if b.source.frm is not None:
                conds.append(f"{sample}.Start >= {b.source.frm}")
            b.flush()
            b.emit(f"MATCH ({b.cur})-[:{schema.quote(schema.HAS_METRIC)}]->({sample}) "
                   f"WHERE {' AND '.join(conds)}")
            m.sample_var = sample
    else:
        key = _key_text(step) if step.args else "LastUpdateMetric"
        prefix = NODE_KEYS.get(key, key)
        if prefix != "LastUpdateMetric" and not prefix.endswith(".LastUpdateMetric"):
            raise GremlinQueryError(
                f"Metrics() on nodes takes LastUpdateMetric, SFlow, Ovs or a key ending in "
                f".LastUpdateMetric, got {key!r}", step.args[0].column)
        m.source, m.prefix = "nodes", prefix
        start = f"{b.cur}.{schema.quote(prefix + '.Start')}"
        last = f"{b.cur}.{schema.quote(prefix + '.Last')}"
        conds = [f"{start} IS NOT NULL"]
        if isinstance(b.source, HistorySource) and b.source.frm is not None:
            # a slice: only the metrics strictly inside it (Skydive's rule)
            conds += [f"{start} > {b.source.frm}", f"{last} < {b.source.t}"]
        b.filter(" AND ".join(conds))
    b.kind = METRICS


def _key_text(step: Step) -> str:
    arg = step.args[0]
    if not isinstance(arg, Literal) or not isinstance(arg.value, str):
        raise GremlinQueryError(f"{step.name}() takes a key (a string)", arg.column)
    return arg.value


def step_aggregates(b: _Builder, step: Step) -> None:
    b.need(step, METRICS)
    seconds = integer(step.args[0], "Aggregates") if step.args else DEFAULT_SLICE_S
    if seconds <= 0:
        raise GremlinQueryError(f"Aggregates() needs a positive number of seconds, got "
                                f"{seconds}", step.column)
    b.flow.metrics.aggregates.append((seconds * 1000, step.column))


def step_sum(b: _Builder, step: Step) -> None:
    column = step.args[0].column if step.args else step.column
    key = _key_text(step) if step.args else None
    b.flow.metrics.terminal = ("sum", key, column)
    b.kind = METRIC_VALUE


def step_count(b: _Builder, step: Step) -> None:
    b.flow.metrics.terminal = ("count", None, step.column)
    b.kind = METRIC_VALUE


def step_keys(b: _Builder, step: Step) -> None:
    b.flow.metrics.terminal = ("keys", None, step.column)
    b.kind = METRIC_VALUE


ON_METRICS: Mapping[str, Callable[[_Builder, Step], None]] = {
    "Sum": step_sum, "Count": step_count, "Keys": step_keys,
}


# ---------------------------------------------------------------- results

def finish(b: _Builder) -> tuple[str, Callable[[list[Record]], Any]]:
    """The RETURN clause and the finisher of a metrics result (and what follows it)."""
    m = b.flow.metrics
    cap = b.limits.max_results
    window = _window(b)
    if m.source == "nodes":
        ret = f"RETURN {b.cur}.ID AS id, properties({b.cur}) AS props"
        collect = _node_series(m.prefix, cap)
    elif m.sample_var:
        ret = f"RETURN {b.cur}.UUID AS id, properties({m.sample_var}) AS props"
        collect = _sample_series(cap)
    else:
        ret = f"RETURN {b.cur}.UUID AS id, properties({b.cur}) AS props"
        collect = _live_flow_series(cap)
    aggregates, terminal = list(m.aggregates), m.terminal

    def finish_metrics(rows: list[Record]) -> Any:
        series = collect(rows)
        for width, column in aggregates:
            first, latest = bounds(series)
            start = window[0] if window is not None and window[0] is not None else first
            last = window[1] if window is not None else latest
            series = aggregate(series, start, last, width, column)
        if terminal is None:
            return [series] if series else []
        what, key, column = terminal
        if what == "count":
            return len(series)
        if what == "keys":
            return sorted({k for ms in series.values() for x in ms for k in x})
        return total(series) if key is None else total_of(series, key, column)
    return ret + b.cap_clause(), finish_metrics


def _window(b: _Builder) -> tuple[int | None, int] | None:
    """The time context's bounds in ms: (t - d, t) for a slice, (None, t) for a time
    point; None without a time context."""
    if not isinstance(b.source, HistorySource):
        return None
    values = b.params.values
    t = int(values[b.source.t.lstrip("$")])
    frm = int(values[b.source.frm.lstrip("$")]) if b.source.frm is not None else None
    return frm, t


def _grouped(rows: Iterable[Record], metric: Callable[[Mapping[str, Any]], Metric | None],
             cap: int) -> Series:
    rows = list(rows)
    results.check_cap(rows, cap)
    out: Series = {}
    seen: set[tuple[str, int, int]] = set()
    for row in rows:
        m = metric(row["props"])
        if m is None:
            continue
        ident = str(row["id"])
        mark = (ident, _int(m.get("Start")), _int(m.get("Last")))
        if mark in seen:
            continue
        seen.add(mark)
        out.setdefault(ident, []).append(m)
    return out


def _sorted(series: Series, key: str) -> Series:
    for ms in series.values():
        ms.sort(key=lambda x: (_int(x.get(key)), _int(x.get("Start"))))
    return series


def _sample_series(cap: int) -> Callable[[list[Record]], Series]:
    def collect(rows: list[Record]) -> Series:
        return _sorted(_grouped(rows, sample_json, cap), "Last")
    return collect


def _live_flow_series(cap: int) -> Callable[[list[Record]], Series]:
    def metric(props: Mapping[str, Any]) -> Metric | None:
        doc = shapes.flow(props)
        found = doc.get("LastUpdateMetric") or doc.get("Metric")
        return dict(found) if isinstance(found, dict) else None

    def collect(rows: list[Record]) -> Series:
        return _grouped(rows, metric, cap)
    return collect


def _node_series(prefix: str, cap: int) -> Callable[[list[Record]], Series]:
    def metric(props: Mapping[str, Any]) -> Metric | None:
        found = results.lookup(schema.from_properties(props), prefix)
        return dict(found) if isinstance(found, dict) else None

    def collect(rows: list[Record]) -> Series:
        return _sorted(_grouped(rows, metric, cap), "Start")
    return collect


def series_of(items: Sequence[tuple[str, Metric]]) -> Series:
    """(id, metric) pairs as a series (GraphQL builds its results with the same
    arithmetic)."""
    out: Series = {}
    for ident, m in items:
        out.setdefault(ident, []).append(m)
    return out
