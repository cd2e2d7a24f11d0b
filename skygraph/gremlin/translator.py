"""Gremlin AST -> Cypher plan (the pure half of `execute`).

Gremlin is a stream of elements that keeps duplicates; Cypher rows behave
the same when every step is its own clause. So each step appends one
clause (a separate MATCH per hop, so one edge may be walked twice in a
chain) and `Has`-like filters are folded into the clause that found the
element, where indexes apply. Sets saved by `As` and subgraph scopes are
lists carried through every `WITH`. What Cypher cannot express (steps after
`Values`, result shaping) is done by the plan's pure `finish`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from skygraph.gremlin import flows, results
from skygraph.gremlin.ast import Arg, Call, Literal, Query, Step, describe
from skygraph.gremlin.errors import GremlinQueryError, LimitExceededError
from skygraph.gremlin.plan import (
    COUNT,
    EDGES,
    FLOWS,
    GRAPH,
    KEYS,
    MAPS,
    NODES,
    PATHS,
    SUBGRAPH,
    SUM,
    VALUES,
    Check,
    Limits,
    Plan,
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
from skygraph.gremlin.source import NODE, HistorySource, LiveSource, Pending, is_node
from skygraph.gremlin.timeparse import duration_ms, time_point_ms
from skygraph.topology import schema

_NEIGHBOURS = {"Out": "out", "In": "in", "Both": "both"}
_INCIDENT = {"OutE": "out", "InE": "in", "BothE": "both"}
# Skydive's naming: OutV is the edge's child, InV its parent.
_ENDPOINTS = {"OutV": "child", "InV": "parent", "BothV": "both"}
_WALKS = {"Descendants": "->", "Ascendants": "<-", "Neighbors": "-"}


def translate(query: Query, now_ms: int, limits: Limits | None = None) -> Plan:
    """Translate a parsed query; raise a GremlinError naming the step's column."""
    return _Builder(now_ms, limits or Limits()).build(query)


class _Builder:
    def __init__(self, now_ms: int, limits: Limits) -> None:
        self.now_ms = now_ms
        self.limits = limits
        self.params = Params()
        self.clauses: list[str] = []
        self.pending: list[Pending] = []
        self.kind = GRAPH
        self.cur = ""
        self.carried: list[str] = []
        self.saved: dict[str, str] = {}
        self.scope: tuple[str, str] | None = None
        self.source: LiveSource | HistorySource = LiveSource()
        self.checks: list[tuple[str, str]] = []
        self.post: list[results.Post] = []
        self.prev = "G"
        self.counter = 0
        self.values_key: Key | None = None
        self.map_keys: list[Key] = []
        self.counted = False
        self.flow = flows.FlowState()

    # ------------------------------------------------------------ plumbing

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def keep(self) -> str:
        return "".join(f"{v}, " for v in self.carried)

    def flush(self) -> None:
        self.clauses.extend(p.text() for p in self.pending)
        self.pending = []

    def push(self, pendings: list[Pending], kind: str) -> None:
        self.flush()
        self.pending = pendings
        self.cur = pendings[-1].var
        self.kind = kind
        if self.scope is not None:
            self.filter(f"{self.cur} IN {self.scope[0] if kind == NODES else self.scope[1]}")

    def filter(self, cond: str) -> None:
        if self.pending and self.pending[-1].var == self.cur:
            self.pending[-1].conds.append(cond)
        else:
            self.emit(f"WITH {self.keep()}{self.cur} WHERE {cond}")

    def emit(self, clause: str) -> None:
        self.flush()
        self.clauses.append(clause)

    def need(self, step: Step, *kinds: str) -> None:
        if self.kind not in kinds or self.counted:
            after = "G" if self.prev == "G" else f"{self.prev}()"
            raise GremlinQueryError(f"{step.name}() cannot follow {after}", step.column)

    # ------------------------------------------------------------ entry

    def build(self, query: Query) -> Plan:
        for step in query.steps:
            if not flows.dispatch(self, step):
                getattr(self, "step_" + step.name)(step)
            self.prev = step.name
        return self.finish_plan(len(query.text) + 1)

    # ------------------------------------------------------------ G-level

    def step_Context(self, step: Step) -> None:
        if self.prev != "G" or self.source.history:
            raise GremlinQueryError("Context() must come right after G", step.column)
        at = time_point_ms(step.args[0], self.now_ms)
        frm = None
        if len(step.args) == 2:
            frm = self.params.add(at - duration_ms(step.args[1], at))
        self.source = HistorySource(self.params.add(at), frm)

    def step_V(self, step: Step) -> None:
        self.need(step, GRAPH, SUBGRAPH)
        if self.kind == SUBGRAPH:
            self.from_scope(step, NODES)
        else:
            self.push([self.source.nodes(self.fresh("n"))], NODES)
        if step.args:
            self.by_id(step, "Node")

    def step_E(self, step: Step) -> None:
        self.need(step, GRAPH, SUBGRAPH)
        if self.kind == SUBGRAPH:
            self.from_scope(step, EDGES)
        else:
            self.push([self.source.edges(self.fresh("e"))], EDGES)
        if step.args:
            self.by_id(step, "Edge")

    def from_scope(self, step: Step, kind: str) -> None:
        assert self.scope is not None
        var = self.fresh("n" if kind == NODES else "e")
        name = self.scope[0] if kind == NODES else self.scope[1]
        self.emit(f"UNWIND {name} AS {var}")
        self.cur, self.kind = var, kind

    def by_id(self, step: Step, what: str) -> None:
        arg = step.args[0]
        if not isinstance(arg, Literal) or not isinstance(arg.value, str):
            raise GremlinQueryError(f"{step.name}() takes an element ID (a string)", arg.column)
        p = self.params.add(arg.value)
        self.filter(f"{self.cur}.ID = {p}")
        probe = self.source.nodes("x") if what == "Node" else self.source.edges("x")
        probe.conds.append(f"x.ID = {p}")
        self.checks.append((probe.text() + " RETURN 1 AS found LIMIT 1",
                            f"{what} '{arg.value}' does not exist"))

    # ------------------------------------------------------------ filters

    def step_Has(self, step: Step) -> None:
        self.need(step, NODES, EDGES)
        self.filter(pairs_condition(step.args, self.cur, self.params, either=False,
                                    step="Has", column=step.column))

    def step_HasEither(self, step: Step) -> None:
        self.need(step, NODES, EDGES)
        self.filter(pairs_condition(step.args, self.cur, self.params, either=True,
                                    step="HasEither", column=step.column))

    def step_HasKey(self, step: Step) -> None:
        self.need(step, NODES, EDGES)
        self.filter(has_key(parse_key(step.args[0]), self.cur, self.params))

    def step_HasNot(self, step: Step) -> None:
        self.need(step, NODES, EDGES)
        self.filter(negate(has_key(parse_key(step.args[0]), self.cur, self.params)))

    def filter_args(self, step: Step) -> None:
        if step.args:
            self.filter(pairs_condition(step.args, self.cur, self.params, either=False,
                                        step=step.name, column=step.column))

    # ------------------------------------------------------------ hops

    def step_Out(self, step: Step) -> None:
        self.neighbours(step)

    def step_In(self, step: Step) -> None:
        self.neighbours(step)

    def step_Both(self, step: Step) -> None:
        self.neighbours(step)

    def neighbours(self, step: Step) -> None:
        self.need(step, NODES)
        src = self.cur
        self.push(self.source.neighbours(src, self.fresh("n"), _NEIGHBOURS[step.name],
                                         self.fresh("e")), NODES)
        self.filter_args(step)

    def step_OutE(self, step: Step) -> None:
        self.incident(step)

    def step_InE(self, step: Step) -> None:
        self.incident(step)

    def step_BothE(self, step: Step) -> None:
        self.incident(step)

    def incident(self, step: Step) -> None:
        self.need(step, NODES)
        # `OutE('RelationType', 'layer2')`: a typed pattern, exact for the store's
        # known relation types (each has its own relationship type).
        types = relation_types(step.args, either=False) if len(step.args) == 2 else None
        self.push([self.source.incident(self.cur, self.fresh("e"), _INCIDENT[step.name],
                                        types or "")], EDGES)
        if types is None or self.source.history:
            self.filter_args(step)

    def step_OutV(self, step: Step) -> None:
        self.endpoints(step)

    def step_InV(self, step: Step) -> None:
        self.endpoints(step)

    def step_BothV(self, step: Step) -> None:
        self.endpoints(step)

    def endpoints(self, step: Step) -> None:
        self.need(step, EDGES)
        self.flush()
        self.push(self.source.endpoints(self.cur, self.fresh("n"), _ENDPOINTS[step.name],
                                        self.keep()), NODES)
        self.filter_args(step)

    def step_Descendants(self, step: Step) -> None:
        self.walk(step)

    def step_Ascendants(self, step: Step) -> None:
        self.walk(step)

    def step_Neighbors(self, step: Step) -> None:
        self.walk(step)

    def walk(self, step: Step) -> None:
        self.need(step, NODES)
        args = list(step.args)
        depth = 1
        if len(args) % 2 == 1:
            depth_arg = args.pop()
            depth = integer(depth_arg, step.name)
            if depth < 0:
                raise GremlinQueryError(f"{step.name}() depth must be >= 0", depth_arg.column)
        max_depth = self.limits.max_depth
        if depth > max_depth:
            raise LimitExceededError(
                f"{step.name}() depth {depth} exceeds the limit of {max_depth}", step.column)
        depth = depth or max_depth
        if not args:
            args = [Literal("RelationType", step.column), Literal("ownership", step.column)]
        left, right = {"->": ("-", "->"), "<-": ("<-", "-"), "-": ("-", "-")}[
            _WALKS[step.name]]
        dst, path = self.fresh("n"), self.fresh("p")
        if isinstance(self.source, HistorySource):
            self.walk_history(step, args, depth, dst)
            return
        types = relation_types(args, either=True)
        if types is not None:
            self.emit(f"MATCH ({self.cur}){left}[:{types}*0..{depth}]{right}({dst}) "
                      f"WHERE {is_node(dst)}")
        else:
            cond = pairs_condition(args, "_r", self.params, either=True, step=step.name,
                                   column=step.column)
            self.emit(f"MATCH {path} = ({self.cur}){left}[*0..{depth}]{right}({dst}) "
                      f"WHERE {is_node(dst)} AND all(_r IN relationships({path}) WHERE {cond})")
        self.emit(f"WITH DISTINCT {self.keep()}{dst}")
        self.cur, self.kind = dst, NODES

    def walk_history(self, step: Step, args: list[Arg], depth: int, dst: str) -> None:
        # No variable-length pattern over archived edges (they are nodes joined
        # by ID), so the walk is unrolled level by level, never revisiting a node.
        assert isinstance(self.source, HistorySource)
        cond = pairs_condition(args, "_we", self.params, either=True, step=step.name,
                               column=step.column)
        direction = {"->": "out", "<-": "in", "-": "both"}[_WALKS[step.name]]
        levels = [self.fresh("lv")]
        self.emit(f"WITH {self.keep()}collect(DISTINCT {self.cur}) AS {levels[0]}")
        seen = self.fresh("seen")
        self.emit(f"WITH {self.keep()}{levels[0]}, {levels[0]} AS {seen}")
        # each level expands only what the previous one found first
        for _ in range(depth):
            found, nxt = self.fresh("hop"), self.fresh("lv")
            self.emit(self.source.hop(levels[-1], found, direction, cond))
            self.emit(f"WITH {self.keep()}{seen}, "
                      f"[_x IN {found} WHERE NOT _x IN {seen}] AS {nxt}")
            levels.append(nxt)
            self.emit(f"WITH {self.keep()}{nxt}, {seen} + {nxt} AS {seen}")
        self.emit(f"UNWIND {seen} AS {dst}")
        self.emit(f"WITH {self.keep()}{dst}")
        self.cur, self.kind = dst, NODES

    def step_ShortestPathTo(self, step: Step) -> None:
        self.need(step, NODES)
        target = metadata_arg(step.args[0], step)
        edge_filter = metadata_arg(step.args[1], step) if len(step.args) > 1 else None
        if isinstance(self.source, HistorySource):
            self.shortest_history(target, edge_filter)
            return
        src, dst, path = self.cur, self.fresh("d"), self.fresh("p")
        conds = [f"{dst} <> {src}"]
        if target.args:
            conds.append(pairs_condition(target.args, dst, self.params, either=False,
                                         step="Metadata", column=target.column))
        self.emit(f"MATCH ({dst}:{NODE}) WHERE {' AND '.join(conds)}")
        depth = self.limits.max_depth
        types = relation_types(edge_filter.args, either=False) if edge_filter else ""
        if edge_filter is None or types is not None:
            rel = f":{types}" if types else ""
            self.emit(f"MATCH {path} = shortestPath(({src})-[{rel}*..{depth}]-({dst}))")
        else:
            cond = pairs_condition(edge_filter.args, "_r", self.params, either=False,
                                   step="Metadata", column=edge_filter.column)
            self.emit(f"MATCH {path} = ({src})-[*1..{depth}]-({dst}) "
                      f"WHERE all(_r IN relationships({path}) WHERE {cond})")
        best = self.fresh("p")
        self.emit(f"WITH {self.keep()}{src}, {path} ORDER BY length({path})")
        self.emit(f"WITH {self.keep()}{src}, head(collect({path})) AS {best}")
        self.cur, self.kind = best, PATHS

    def shortest_history(self, target: Call, edge_filter: Call | None) -> None:
        # Breadth-first, unrolled level by level over history (no variable-length
        # patterns across archived edges); a path is a list of node revisions.
        assert isinstance(self.source, HistorySource)
        src, keep = self.cur, self.keep()
        hit = "true"
        if target.args:
            hit = pairs_condition(target.args, "_t", self.params, either=False,
                                  step="Metadata", column=target.column)
        edge_cond = "true"
        if edge_filter is not None and edge_filter.args:
            edge_cond = pairs_condition(edge_filter.args, "_we", self.params, either=False,
                                        step="Metadata", column=edge_filter.column)
        front, seen, found = self.fresh("fr"), self.fresh("seen"), self.fresh("found")
        self.emit(f"WITH {keep}{src}, [[{src}]] AS {front}, [{src}.ID] AS {seen}, "
                  f"null AS {found}")
        for _ in range(self.limits.max_depth):
            reached, nxt = self.fresh("hop"), self.fresh("fr")
            self.emit(self.source.path_hop(front, found, reached, edge_cond))
            self.emit(f"WITH {keep}{src}, {seen}, {found}, "
                      f"[_q IN {reached} WHERE NOT last(_q).ID IN {seen}] AS {nxt}")
            self.emit(f"WITH {keep}{src}, {nxt}, {seen} + [_q IN {nxt} | last(_q).ID] AS {seen},"
                      f" coalesce({found}, head([_q IN {nxt} WHERE "
                      f"any(_t IN [last(_q)] WHERE {hit})])) AS {found}")
            front = nxt
        path = self.fresh("p")
        self.emit(f"WITH {keep}{src}, {found} AS {path} WHERE {found} IS NOT NULL")
        self.cur, self.kind = path, PATHS

    # ------------------------------------------------------------ stream shaping

    def step_Dedup(self, step: Step) -> None:
        self.need(step, NODES, EDGES, PATHS, VALUES)
        if self.kind == VALUES:
            if step.args:
                raise GremlinQueryError("Dedup() after Values() takes no keys", step.column)
            self.post.append(results.dedup_values)
            return
        if not step.args:
            if self.source.history and self.kind != PATHS:
                # a time slice holds several revisions of one element: one per ID
                new = self.fresh("n" if self.kind == NODES else "e")
                self.emit(f"WITH {self.keep()}{self.cur}.ID AS _dk, "
                          f"head(collect({self.cur})) AS {new}")
                self.cur = new
            else:
                self.emit(f"WITH DISTINCT {self.keep()}{self.cur}")
            return
        if self.kind == PATHS:
            raise GremlinQueryError("Dedup() on paths takes no keys", step.column)
        exprs = [parse_key(a).expr(self.cur) for a in step.args]
        missing = " AND ".join(f"{x} IS NULL" for x in exprs)
        key = f"CASE WHEN {missing} THEN [0, {self.cur}.ID] ELSE [1, {', '.join(exprs)}] END"
        new = self.fresh("n" if self.kind == NODES else "e")
        self.emit(f"WITH {self.keep()}{key} AS _dk, head(collect({self.cur})) AS {new}")
        self.cur = new

    def step_Range(self, step: Step) -> None:
        self.slice(step, integer(step.args[0], "Range"), integer(step.args[1], "Range"))

    def step_Limit(self, step: Step) -> None:
        self.slice(step, 0, integer(step.args[0], "Limit"))

    def slice(self, step: Step, start: int, stop: int) -> None:
        self.need(step, NODES, EDGES, PATHS, VALUES, FLOWS)
        if start < 0 or stop < start:
            raise GremlinQueryError(
                f"{step.name}() needs 0 <= from <= to, got {start}, {stop}", step.column)
        if self.kind == VALUES:
            self.post.append(lambda items: items[start:stop])
            return
        self.emit(f"WITH {self.keep()}{self.cur} SKIP {self.params.add(start)} "
                  f"LIMIT {self.params.add(stop - start)}")

    def step_Sort(self, step: Step) -> None:
        self.need(step, NODES, EDGES)
        order, key_arg = sort_args(step)
        key = parse_key(key_arg) if key_arg is not None else Key("@CreatedAt", "CreatedAt")
        self.emit(f"WITH {self.keep()}{self.cur} ORDER BY {key.expr(self.cur)} {order}")

    def step_As(self, step: Step) -> None:
        self.need(step, NODES, EDGES)
        arg = step.args[0]
        if not isinstance(arg, Literal) or not isinstance(arg.value, str):
            raise GremlinQueryError("As() takes a name (a string)", arg.column)
        saved, new = self.fresh("as"), self.fresh("n")
        self.emit(f"WITH {self.keep()}collect({self.cur}) AS {saved}")
        self.carried.append(saved)
        self.saved[arg.value] = saved
        self.emit(f"UNWIND {saved} AS {new}")
        self.cur = new

    def step_Select(self, step: Step) -> None:
        self.need(step, NODES, EDGES)
        names = []
        for arg in step.args:
            if not isinstance(arg, Literal) or arg.value not in self.saved:
                raise GremlinQueryError(f"Select(): no set saved by As({describe(arg)})",
                                        arg.column)
            names.append(self.saved[str(arg.value)])
        new = self.fresh("n")
        self.emit(f"WITH {', '.join(self.carried)} LIMIT 1")
        self.emit(f"UNWIND {' + '.join(names)} AS {new}")
        self.emit(f"WITH DISTINCT {self.keep()}{new}")
        self.cur, self.kind = new, NODES

    def step_SubGraph(self, step: Step) -> None:
        self.need(step, NODES, EDGES, PATHS)
        sgn, sge = self.fresh("sgn"), self.fresh("sge")
        cur = self.cur
        edge_cond = ""
        if step.args:
            edge_cond = " AND " + pairs_condition(step.args, "_r", self.params, either=False,
                                                  step="SubGraph", column=step.column)
        if self.kind == PATHS and self.source.history:
            # paths over history are lists of node revisions
            cur = self.fresh("n")
            self.emit(f"UNWIND {self.cur} AS {cur}")
            self.kind = NODES
        if self.kind == NODES:
            self.emit(f"WITH {self.keep()}collect(DISTINCT {cur}) AS {sgn}")
            if self.source.history:
                src = self.source
                assert isinstance(src, HistorySource)
                edges = src.edges("_r", imported=sgn)
                edges.conds.append(f"_r.Parent IN [_x IN {sgn} | _x.ID] AND "
                                   f"_r.Child IN [_x IN {sgn} | _x.ID]{edge_cond}")
                self.emit(f"CALL {{ WITH {sgn} {edges.text()} RETURN collect(_r) AS {sge} }}")
            else:
                self.emit(f"CALL {{ WITH {sgn} UNWIND {sgn} AS _a MATCH (_a)-[_r]->(_b) "
                          f"WHERE _b IN {sgn}{edge_cond} RETURN collect(_r) AS {sge} }}")
        elif self.kind == EDGES:
            self.emit(f"WITH {self.keep()}collect(DISTINCT {cur}) AS _all")
            self.emit(f"WITH {self.keep()}[_r IN _all WHERE true{edge_cond}] AS {sge}")
            if isinstance(self.source, HistorySource):
                ends = self.source.node_by_id("_id", "_id", "_n")
                self.emit(f"CALL {{ WITH {sge} UNWIND {sge} AS _r UNWIND [_r.Parent, _r.Child] "
                          f"AS _id {ends.text()} RETURN collect(DISTINCT _n) AS {sgn} }}")
            else:
                self.emit(f"CALL {{ WITH {sge} UNWIND {sge} AS _r UNWIND [startNode(_r), "
                          f"endNode(_r)] AS _n RETURN collect(DISTINCT _n) AS {sgn} }}")
        else:
            self.emit(f"WITH {self.keep()}collect({cur}) AS _paths")
            self.emit(f"CALL {{ WITH _paths UNWIND _paths AS _p UNWIND nodes(_p) AS _n "
                      f"RETURN collect(DISTINCT _n) AS {sgn} }}")
            self.emit(f"CALL {{ WITH _paths UNWIND _paths AS _p UNWIND relationships(_p) AS _r "
                      f"WITH _r WHERE true{edge_cond} RETURN collect(DISTINCT _r) AS {sge} }}")
        self.carried += [sgn, sge]
        self.scope = (sgn, sge)
        self.kind = SUBGRAPH

    # ------------------------------------------------------------ terminal steps

    def step_Count(self, step: Step) -> None:
        self.need(step, NODES, EDGES, PATHS, VALUES)
        if self.kind == VALUES:
            self.post.append(len)
            self.counted = True
        else:
            self.kind = COUNT

    def step_Values(self, step: Step) -> None:
        self.need(step, NODES, EDGES)
        self.values_key = parse_key(step.args[0])
        self.kind = VALUES

    def step_ValueMap(self, step: Step) -> None:
        self.need(step, NODES, EDGES)
        self.map_keys = [parse_key(a) for a in step.args]
        self.kind = MAPS

    def step_Keys(self, step: Step) -> None:
        self.need(step, NODES, EDGES)
        self.kind = KEYS

    def step_Sum(self, step: Step) -> None:
        self.need(step, NODES, EDGES)
        if not step.args:
            raise GremlinQueryError("Sum() on nodes needs a key", step.column)
        self.values_key = parse_key(step.args[0])
        self.kind = SUM

    # ------------------------------------------------------------ RETURN + finish

    def cap_clause(self) -> str:
        if not self.limits.cap_in_query:
            return ""
        return f" LIMIT {self.params.add(self.limits.max_results + 1)}"

    def finish_plan(self, end_column: int) -> Plan:
        if self.kind == VALUES and self.values_key is not None:
            # elements without the key give no value: filter where they are found
            self.filter(has_key(self.values_key, self.cur, self.params))
        self.flush()
        if self.kind == GRAPH:
            raise GremlinQueryError("expected a step after G, like V() or E()", end_column)
        cap = self.limits.max_results
        cur = self.cur
        finish: Callable[[list[Record]], Any]
        if self.kind in (NODES, EDGES, PATHS):
            if self.kind == PATHS:
                nodes = cur if self.source.history else f"nodes({cur})"
                ret = f"RETURN [_x IN {nodes} | properties(_x)] AS path"
            else:
                ret = f"RETURN properties({cur}) AS element"
            conv = {NODES: results.node_json, EDGES: results.edge_json}.get(self.kind)
            finish = results.elements(conv, cap)
            ret += self.cap_clause()
        elif self.kind == SUBGRAPH:
            assert self.scope is not None
            sgn, sge = self.scope
            ret = (f"RETURN [_x IN {sgn} | properties(_x)] AS nodes, "
                   f"[_x IN {sge} | properties(_x)] AS edges")
            finish = results.subgraph
        elif self.kind == COUNT:
            ret, finish = "RETURN count(*) AS count", results.count
        elif self.kind in flows.FLOW_KINDS:
            ret, finish = flows.finish(self)
        elif self.kind == VALUES:
            assert self.values_key is not None
            key = self.values_key
            x = key.expr(cur)
            if key.scalar:
                # never a map nor JSON text: the value alone
                ret = f"RETURN {x} AS value, null AS props, null AS json{self.cap_clause()}"
            else:
                ret = (f"RETURN {x} AS value, CASE WHEN {x} IS NULL THEN properties({cur}) END "
                       f"AS props, {cur}.{schema.quote(schema.JSON_KEYS)} AS json"
                       f"{self.cap_clause()}")
            finish = results.values(key, cap, list(self.post))
        elif self.kind == MAPS:
            ret = f"RETURN properties({cur}) AS props{self.cap_clause()}"
            finish = results.value_maps(self.map_keys, cap)
        elif self.kind == KEYS:
            ret = f"UNWIND keys({cur}) AS _k RETURN DISTINCT _k AS key"
            finish = results.keys
        else:
            assert self.values_key is not None
            x = self.values_key.expr(cur)
            ret = (f"RETURN sum(CASE WHEN {x} IS :: INTEGER NOT NULL THEN {x} "
                   f"WHEN {x} IS :: FLOAT NOT NULL THEN toInteger({x}) ELSE 0 END) AS total")
            finish = results.total
        cypher = " ".join([*self.clauses, ret])
        params = dict(self.params.values)
        checks = tuple(Check(text, params, message) for text, message in self.checks)
        return Plan(cypher, params, finish, checks, self.kind,
                    tuple(self.flow.packet_filters))


# ---------------------------------------------------------------- helpers

def metadata_arg(arg: Arg, step: Step) -> Call:
    if not isinstance(arg, Call) or arg.name != "Metadata":
        raise GremlinQueryError(f"{step.name}() expects Metadata(...), got {describe(arg)}",
                                arg.column)
    return arg


def relation_types(args: list[Arg] | tuple[Arg, ...], *, either: bool) -> str | None:
    """Relationship types for an edge filter on `RelationType` alone with known
    values (typed patterns are far cheaper); None when the filter is anything else.
    The names come from the schema's table, never from the query text."""
    if not args or len(args) % 2:
        return None
    if not either and len(args) > 2:
        return None
    names: list[str] = []
    for i in range(0, len(args), 2):
        key, value = args[i], args[i + 1]
        if not (isinstance(key, Literal) and key.value == "RelationType"):
            return None
        values: list[Arg] = [value]
        if isinstance(value, Call) and value.name == "Within":
            values = list(value.args)
        for v in values:
            if not (isinstance(v, Literal) and v.value in schema.KNOWN_RELATION_TYPES):
                return None
            names.append(schema.quote(schema.relationship_type(str(v.value))))
    return "|".join(dict.fromkeys(names))

