"""Which flow conditions an index serves, and which one finds the flows.

Stored flows are many (500,000 is an ordinary day of a busy host), so every
filter of Gremlin's `Flows()` steps and of the GraphQL `flows` query must
reach its flows through an index. The fields it may use are ranked here by
how few flows one value usually selects (`LOOKUP_RANK`); each is indexed
(`schema.FLOW_INDEXED`, and the unique `UUID`).

What the embedded server's planner does (ArcadeDB 26.10, seen with EXPLAIN
through Bolt; docs/benchmarks.md "Flow queries at scale"):

- `f.k = $v` and `f.k IN $list` on an indexed key: NodeIndexSeek.
- An OR of those (`f.`Network.A` = $ip OR f.`Network.B` = $ip`, a flow of
  this address): NodeIndexUnionSeek, two seeks -- but only when no plain
  indexed equality stands next to it in the same WHERE: then it seeks that
  one and tests the OR on every flow it finds (`Has('Network', ip)
  .Has('Application', 'UDP')`: 400 ms at 500,000 flows, against 1 ms).
- A range on an indexed integer: NodeIndexRangeScan; the planner prefers an
  equality seek to it. Fast only when the index keys are typed LONG
  (`schema.INTEGER_INDEXED`).
- `<>`, `NOT ... IN`, regular expressions and CIDR ranges: a label scan.
- A MATCH after a WITH (the flows of `G.V()...Flows()`: after the nodes'
  TIDs) runs without that planner ("Traditional Execution"): there only a
  plain equality is sought; an OR, an IN list or a range scans the label
  (2 s at 500,000 flows). Such a look-up is written as a UNION of one
  equality per branch (`Term.eqs`), else the capture nodes' flows are the
  look-up (`NodeTID`).
- An index seek compares a value of the other type by its text
  (`Transport.A = '80'` finds port 80, `Network.A = 5` the address '5'),
  which Cypher never does; a type test next to such a comparison keeps the
  answer exact and the seek (an OR of such tests is still a union seek).

So a flow MATCH keeps one indexed condition, the best ranked (`split`), with
the conditions no index serves and the ranges; the other indexed equalities
follow in a `WITH ... WHERE`, where they cannot steal the look-up. Neo4j
plans either form from its statistics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skygraph.gremlin.ast import Arg, Call, Literal
from skygraph.gremlin.predicates import Key, Params, integer, literal, value_condition
from skygraph.topology import schema

# Indexed flow fields, by how many flows a value usually selects (lower: fewer).
LOOKUP_RANK: Mapping[str, int] = {
    "UUID": 0, "TrackingID": 0, "L3TrackingID": 0, "ParentUUID": 0,
    "Network.A": 1, "Network.B": 1, "Link.A": 1, "Link.B": 1, "Start": 1, "Last": 1,
    "Transport.A": 2, "Transport.B": 2,
    "NodeTID": 3, "CaptureID": 3, "Host": 3,
    "Application": 4, "LayersPath": 4,
}
RANGE_RANK = 5  # a range on an indexed integer: a seek is always preferred
MAX_UNION = 8  # an IN list of up to this many values may become a UNION of seeks
INTEGER_FIELDS = frozenset(schema.INTEGER_INDEXED[schema.FLOW_LABEL])
_RANGES = frozenset({"Lt", "Gt", "Lte", "Gte", "Inside", "Between"})
_TYPE_TESTS = {"string": "{x} IS :: STRING", "boolean": "{x} IS :: BOOLEAN",
               "number": "({x} IS :: INTEGER OR {x} IS :: FLOAT)"}


@dataclass(frozen=True, slots=True)
class Term:
    """A condition and, when an index serves it, its rank (None: a scan)."""

    text: str
    rank: int | None = None
    eqs: tuple[str, ...] = ()  # equalities whose union it is (each one index seek)


def indexed(key: Key) -> bool:
    """An indexed flow field (of the element keys only `@Host`, the flow's agent)."""
    return key.prop in LOOKUP_RANK and (not key.text.startswith("@") or key.text == "@Host")


def value_term(key: Key, arg: Arg, var: str, params: Params) -> Term:
    """`key` compared with a literal or a predicate; ranked when an index serves it."""
    if not indexed(key):
        return Term(value_condition(key, arg, var, params))
    assert key.prop is not None
    single = Key(key.text, key.prop, True)  # every indexed field holds one scalar
    x, rank = single.expr(var), LOOKUP_RANK[key.prop]
    if isinstance(arg, Literal):
        eq = _typed(f"{x} = {params.add(arg.value)}", x, key.prop, [arg.value])
        return Term(eq, rank, (eq,))
    if isinstance(arg, Call) and arg.name == "Within":
        values = [literal(a, arg.name) for a in arg.args]
        groups: dict[str, list[Any]] = {}
        for v in values:
            groups.setdefault(_kind(v), []).append(v)
        alts = [_typed(f"{x} IN {params.add(vs)}", x, key.prop, vs) for vs in groups.values()]
        if not alts:
            return Term("false")
        eqs = tuple(_typed(f"{x} = {params.add(v)}", x, key.prop, [v]) for v in values) \
            if len(values) <= MAX_UNION else ()
        return Term(alts[0] if len(alts) == 1 else "(" + " OR ".join(alts) + ")", rank, eqs)
    if isinstance(arg, Call) and arg.name in _RANGES and key.prop in INTEGER_FIELDS:
        for a in arg.args:
            integer(a, arg.name)  # the same errors as value_condition's
        return Term(value_condition(single, arg, var, params), RANGE_RANK)
    return Term(value_condition(single, arg, var, params))


def any_of(terms: Sequence[Term]) -> Term:
    """The OR of terms: served by the union of their seeks when each is indexed."""
    if len(terms) == 1:
        return terms[0]
    ranks = [t.rank for t in terms]
    rank = None if any(r is None for r in ranks) else max(r for r in ranks if r is not None)
    eqs = sum((t.eqs for t in terms), ()) if all(t.eqs for t in terms) else ()
    return Term("(" + " OR ".join(t.text for t in terms) + ")", rank, eqs)


def all_of(terms: Sequence[Term]) -> Term:
    """The AND of terms as one (its best rank: the look-up it can use)."""
    if len(terms) == 1:
        return terms[0]
    ranks = [t.rank for t in terms if t.rank is not None]
    return Term("(" + " AND ".join(t.text for t in terms) + ")", min(ranks) if ranks else None)


def split(conds: Sequence[str], ranks: Mapping[str, int]) -> tuple[list[str], list[str]]:
    """(the MATCH's conditions, those to test after it): the best-ranked indexed
    condition first, then the unindexed ones and the ranges; the other indexed
    equalities later, where the planner cannot pick them instead."""
    ranked = [c for c in conds if c in ranks]
    if not ranked:
        return list(conds), []
    best = min(ranked, key=lambda c: ranks[c])  # the first one on a tie
    later = [c for c in ranked if c != best and ranks[c] < RANGE_RANK]
    return [best, *(c for c in conds if c != best and c not in later)], later


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, (int, float)) else "string"


def _typed(cond: str, x: str, prop: str, values: Sequence[Any]) -> str:
    """`cond` with a type test when its values are not of the field's type (the
    index would compare them by text)."""
    kind = _kind(values[0]) if values else "string"
    if kind == ("number" if prop in INTEGER_FIELDS else "string"):
        return cond
    return f"({cond} AND {_TYPE_TESTS[kind].format(x=x)})"
