"""Where graph elements come from: the live graph or its history (SPEC §1h).

Each method returns a `Pending` clause that binds one new variable and
accepts extra WHERE conditions on it, so filters land in the clause that
finds the element (where the database can use its indexes).

- `LiveSource` touches only `:Node` and relationships between them.
- `HistorySource` reads the revisions visible at a time point, or every
  revision inside a time slice, over live ∪ archived elements; edges are
  followed through their `Parent`/`Child` ID properties, since archived
  revisions are plain nodes without relationships.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from skygraph.topology import history, schema

NODE = schema.quote(schema.NODE_LABEL)
ARCHIVED_NODE = schema.quote(schema.ARCHIVED_NODE_LABEL)
ARCHIVED_EDGE = schema.quote(schema.ARCHIVED_EDGE_LABEL)


@dataclass
class Pending:
    """A clause binding `var`; `render(conds)` yields its text with the conditions."""

    var: str
    render: Callable[[list[str]], str]
    conds: list[str] = field(default_factory=list)

    def text(self) -> str:
        return self.render(self.conds)


def is_node(var: str) -> str:
    """A label test written as a predicate: on the embedded server a label in the
    pattern at the far end of a hop makes the planner scan the whole label."""
    return f"'{schema.NODE_LABEL}' IN labels({var})"


def where(conds: list[str], extra: list[str] | None = None) -> str:
    allc = [*(extra or []), *conds]
    return f" WHERE {' AND '.join(allc)}" if allc else ""


class LiveSource:
    """The current graph: `(:Node)` and the relationships between them."""

    history = False

    def nodes(self, v: str) -> Pending:
        return Pending(v, lambda c: f"MATCH ({v}:{NODE}){where(c)}")

    def edges(self, e: str) -> Pending:
        return Pending(e, lambda c: f"MATCH (:{NODE})-[{e}]->(:{NODE}){where(c)}")

    def neighbours(self, src: str, dst: str, direction: str, edge_var: str) -> list[Pending]:
        left, right = _arrows(direction)
        return [Pending(dst, lambda c: f"MATCH ({src}){left}{right}({dst})"
                                       f"{where([*c, is_node(dst)])}")]

    def incident(self, src: str, e: str, direction: str, types: str = "") -> Pending:
        left, right = _arrows(direction)
        far = f"_o{e}"
        rel = f"{e}:{types}" if types else e
        return Pending(e, lambda c: f"MATCH ({src}){left}[{rel}]{right}({far})"
                                    f"{where([*c, is_node(far)])}")

    def endpoints(self, e: str, dst: str, which: str, keep: str) -> list[Pending]:
        if which == "both":
            return [Pending(dst, lambda c: f"UNWIND [startNode({e}), endNode({e})] AS {dst}"
                                           + (f" WITH {keep}{dst}{where(c)}" if c else ""))]
        fn = "endNode" if which == "child" else "startNode"
        return [Pending(dst, lambda c: f"WITH {keep}{fn}({e}) AS {dst}{where(c)}")]


class HistorySource:
    """Revisions visible at `$t` (time point) or inside `[$from, $t]` (time slice)."""

    history = True

    def __init__(self, t_param: str, from_param: str | None) -> None:
        self.t = t_param
        self.frm = from_param

    def visible(self, x: str) -> str:
        if self.frm is None:
            return history.visible_at(x, self.t)
        return history.visible_in(x, self.frm, self.t)

    def _live_edge_visible(self, e: str) -> str:
        # A live relationship has no DeletedAt/ArchivedAt: only its start matters.
        return f"{e}.CreatedAt <= {self.t} AND {e}.UpdatedAt <= {self.t}"

    def nodes(self, v: str) -> Pending:
        def render(c: list[str]) -> str:
            return (f"CALL {{ MATCH ({v}:{NODE}){where(c, [self.visible(v)])} RETURN {v} "
                    f"UNION ALL MATCH ({v}:{ARCHIVED_NODE}){where(c, [self.visible(v)])} "
                    f"RETURN {v} }}")
        return Pending(v, render)

    def node_by_id(self, imported: str, id_expr: str, v: str) -> Pending:
        def render(c: list[str]) -> str:
            ident = [f"{v}.ID = {id_expr}", self.visible(v)]
            return (f"CALL {{ WITH {imported} MATCH ({v}:{NODE}){where(c, ident)} RETURN {v} "
                    f"UNION ALL WITH {imported} MATCH ({v}:{ARCHIVED_NODE}){where(c, ident)} "
                    f"RETURN {v} }}")
        return Pending(v, render)

    def edges(self, e: str, imported: str = "") -> Pending:
        head = f"WITH {imported} " if imported else ""

        def render(c: list[str]) -> str:
            return (f"CALL {{ {head}MATCH (:{NODE})-[{e}]->(:{NODE})"
                    f"{where(c, [self._live_edge_visible(e)])} RETURN {e} "
                    f"UNION ALL {head}MATCH ({e}:{ARCHIVED_EDGE}){where(c, [self.visible(e)])} "
                    f"RETURN {e} }}")
        return Pending(e, render)

    def incident(self, src: str, e: str, direction: str, types: str = "") -> Pending:
        # `types` is an optimisation of the live graph only; callers filter on
        # RelationType as well, which archived edges need.
        def branch(end: str, c: list[str]) -> str:
            pattern = (f"(_h:{NODE})-[{e}]->(_f)" if end == "Parent"
                       else f"(_f)-[{e}]->(_h:{NODE})")
            live = where([*c, is_node("_f")], [f"_h.ID = {src}.ID", self._live_edge_visible(e)])
            arch = where(c, [f"{e}.{end} = {src}.ID", self.visible(e)])
            return (f"WITH {src} MATCH {pattern}{live} RETURN {e} UNION ALL "
                    f"WITH {src} MATCH ({e}:{ARCHIVED_EDGE}){arch} RETURN {e}")

        def render(c: list[str]) -> str:
            if direction != "both":
                return "CALL { " + branch("Parent" if direction == "out" else "Child", c) + " }"
            # a self-loop is one incident edge, as in the live graph's undirected match
            once = [*c, f"{e}.Parent <> {src}.ID"]
            return f"CALL {{ {branch('Parent', c)} UNION ALL {branch('Child', once)} }}"
        return Pending(e, render)

    def neighbours(self, src: str, dst: str, direction: str, edge_var: str) -> list[Pending]:
        """Edges then nodes: the caller renders both (the edge clause has no filter)."""
        first = self.incident(src, edge_var, direction)
        if direction == "both":
            other = f"CASE WHEN {edge_var}.Parent = {src}.ID THEN {edge_var}.Child " \
                    f"ELSE {edge_var}.Parent END"
        else:
            other = f"{edge_var}.{'Child' if direction == 'out' else 'Parent'}"
        return [first, self.node_by_id(f"{edge_var}, {src}", other, dst)]

    def hop(self, frontier: str, out: str, direction: str, edge_cond: str) -> str:
        """One level of a walk: the neighbours of every node in list `frontier`
        over edges matching `edge_cond` (on `_we`), as list `out` (one row, even
        when there are none: the aggregate has no grouping key)."""
        edges = self.incident("_s", "_we", direction)
        edges.conds.append(edge_cond)
        if direction == "both":
            other = "CASE WHEN _we.Parent = _s.ID THEN _we.Child ELSE _we.Parent END"
        else:
            other = f"_we.{'Child' if direction == 'out' else 'Parent'}"
        node = self.node_by_id("_we, _s", other, "_wm")
        return (f"CALL {{ WITH {frontier} UNWIND {frontier} AS _s {edges.text()} "
                f"{node.text()} RETURN collect(DISTINCT _wm) AS {out} }}")

    def path_hop(self, paths: str, found: str, out: str, edge_cond: str) -> str:
        """One breadth-first level of ShortestPathTo: every path in list `paths`
        extended by one neighbour (either direction, edges matching `edge_cond`
        on `_we`), as list `out`; nothing once `found` is set."""
        edges = self.incident("_s", "_we", "both")
        edges.conds.append(edge_cond)
        other = "CASE WHEN _we.Parent = _s.ID THEN _we.Child ELSE _we.Parent END"
        node = self.node_by_id("_we, _s", other, "_wm")
        return (f"CALL {{ WITH {paths}, {found} UNWIND (CASE WHEN {found} IS NULL THEN {paths} "
                f"ELSE [] END) AS _p WITH _p, last(_p) AS _s {edges.text()} {node.text()} "
                f"RETURN collect(_p + [_wm]) AS {out} }}")

    def endpoints(self, e: str, dst: str, which: str, keep: str) -> list[Pending]:
        if which == "both":
            ident = f"_id_{dst}"
            unwind = Pending(ident, lambda c: f"UNWIND [{e}.Parent, {e}.Child] AS {ident}")
            return [unwind, self.node_by_id(ident, ident, dst)]
        return [self.node_by_id(e, f"{e}.{'Child' if which == 'child' else 'Parent'}", dst)]


def _arrows(direction: str) -> tuple[str, str]:
    return {"out": ("-", "->"), "in": ("<-", "-"), "both": ("-", "-")}[direction]
