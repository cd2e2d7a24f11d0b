"""Differential fuzz: random filter queries answered by the server must equal
a plain-Python evaluation of Skydive's filter semantics (SPEC §1f) on the
same metadata. Catches wrong answers, not just crashes."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.gremlin.conftest import GremlinDB, edge, node

pytestmark = pytest.mark.bolt

NODES: dict[str, dict[str, Any]] = {
    "n1": {"Value": 1, "Type": "intf", "Bytes": 1024, "List": ["111", "222"], "Map": {"a": 1},
           "Flag": True},
    "n2": {"Value": 2, "Type": "intf", "Bytes": 2024, "IPV4": ["10.0.0.1", "10.0.1.2"],
           "Flag": False},
    "n3": {"Value": 3, "IPV4": "192.168.0.34/24", "Map": {}, "MTU": 1500, "Text": "null"},
    "n4": {"Value": 4, "Name": "Node4", "Bytes": 4024, "IPV4": "192.168.1.34",
           "Indexes": [5, 6], "Nothing": None},
    "n5": {"Value": 2.5, "Name": "eth0", "Type": "veth", "Text": "x", "MTU": "1500",
           "Routes": [{"p": 1}]},
}
EDGES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "e1": ("n1", "n2", {"RelationType": "layer2", "Direction": "Left"}),
    "e2": ("n2", "n3", {"RelationType": "layer2", "Direction": "Left"}),
    "e3": ("n3", "n4", {"RelationType": "ownership"}),
    "e4": ("n1", "n4", {"RelationType": "layer2", "Mode": "Direct"}),
    "e5": ("n1", "n3", {"RelationType": "layer2"}),
    "e6": ("n1", "n3", {"RelationType": "ownership", "Mode": "Direct"}),
    "e7": ("n5", "n5", {"RelationType": "layer2"}),
}
MISSING = object()


@pytest.fixture(scope="module", autouse=True)
def graph(gdb: GremlinDB) -> None:
    gdb.load([node(i, **meta) for i, meta in NODES.items()],
             [edge(i, p, c, **meta) for i, (p, c, meta) in EDGES.items()])


# ------------------------------------------------------------ reference semantics

def get(meta: dict[str, Any], path: str) -> Any:
    cur: Any = meta
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return MISSING
        cur = cur[part]
    return cur


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_num(a) and is_num(b):
        return bool(a == b)
    return isinstance(a, str) and isinstance(b, str) and a == b


def items(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def term(v: Any, lit: Any) -> bool:
    return any(eq(x, lit) for x in items(v))


def pred(v: Any, p: tuple[Any, ...]) -> bool:
    name, *args = p
    if name == "lit":
        return v is not MISSING and term(v, args[0])
    if name == "Within":
        return v is not MISSING and any(term(v, a) for a in args)
    if name == "Without":
        return v is MISSING or not any(term(v, a) for a in args)
    if name == "Ne":
        return v is not MISSING and not term(v, args[0])
    if name == "Nee":
        return v is MISSING or not term(v, args[0])
    if not is_num(v) and name in ("Lt", "Gt", "Lte", "Gte", "Inside", "Between", "Outside"):
        return False
    ints = [int(a) for a in args] if name != "Regex" and name != "Ipv4Range" else []
    if name == "Lt":
        return bool(v < ints[0])
    if name == "Gt":
        return bool(v > ints[0])
    if name == "Lte":
        return bool(v <= ints[0])
    if name == "Gte":
        return bool(v >= ints[0])
    if name == "Inside":
        return bool(ints[0] < v < ints[1])
    if name == "Between":
        return bool(ints[0] <= v < ints[1])
    if name == "Outside":
        return bool(v < ints[0] or v > ints[1])
    if name == "Regex":
        return any(isinstance(x, str) and re.fullmatch(args[0], x) for x in items(v))
    if name == "Ipv4Range":
        net = ipaddress.IPv4Network(args[0], strict=False)
        for x in items(v):
            if isinstance(x, str):
                try:
                    if ipaddress.IPv4Address(x.split("/")[0]) in net:
                        return True
                except ValueError:
                    pass
        return False
    raise AssertionError(name)


def has_key(meta: dict[str, Any], key: str) -> bool:
    return get(meta, key) is not MISSING


# ------------------------------------------------------------ query generation

KEYS = ["Value", "Name", "Type", "IPV4", "List", "Indexes", "Map", "Map.a", "MTU", "Nothing",
        "Text", "Bytes", "Missing", "Flag", "Routes"]
LITS: list[Any] = [-1, 0, 1, 2, 3, 4, 5, 6, 1500, 1.0, 2.5, "Node4", "intf", "111", "10.0.0.1",
                   "null", "{}", "", "1500", "x", True, False]
REGEXES = ["N.*", ".*ode.*", "1.*", "eth[0-9]", "i.t.", "x"]
CIDRS = ["10.0.0.0/8", "192.168.0.0/24", "192.168.0.0/16", "10.0.1.0/24"]


def show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(v)


NUM = st.integers(-1, 6)
PRED = st.one_of(
    st.sampled_from(LITS).map(lambda v: ("lit", v)),
    st.tuples(st.sampled_from(["Within", "Without"]), st.sampled_from(LITS),
              st.sampled_from(LITS)),
    st.tuples(st.sampled_from(["Ne", "Nee"]), st.sampled_from(LITS)),
    st.tuples(st.sampled_from(["Lt", "Gt", "Lte", "Gte"]), NUM),
    st.tuples(st.sampled_from(["Inside", "Between", "Outside"]), NUM, NUM),
    st.tuples(st.just("Regex"), st.sampled_from(REGEXES)),
    st.tuples(st.just("Ipv4Range"), st.sampled_from(CIDRS)),
)


def pred_text(p: tuple[Any, ...]) -> str:
    if p[0] == "lit":
        return show(p[1])
    return f"{p[0]}({', '.join(show(a) for a in p[1:])})"


FILTER = st.one_of(
    st.tuples(st.just("Has"), st.sampled_from(KEYS), PRED),
    st.tuples(st.just("HasEither"), st.sampled_from(KEYS), PRED, st.sampled_from(KEYS), PRED),
    st.tuples(st.just("HasKey"), st.sampled_from(KEYS)),
    st.tuples(st.just("HasNot"), st.sampled_from(KEYS)),
)


def step_text(f: tuple[Any, ...]) -> str:
    if f[0] == "Has":
        return f".Has({show(f[1])}, {pred_text(f[2])})"
    if f[0] == "HasEither":
        return f".HasEither({show(f[1])}, {pred_text(f[2])}, {show(f[3])}, {pred_text(f[4])})"
    return f".{f[0]}({show(f[1])})"


def matches(meta: dict[str, Any], f: tuple[Any, ...]) -> bool:
    if f[0] == "Has":
        return pred(get(meta, f[1]), f[2])
    if f[0] == "HasEither":
        return pred(get(meta, f[1]), f[2]) or pred(get(meta, f[3]), f[4])
    if f[0] == "HasKey":
        return has_key(meta, f[1])
    return not has_key(meta, f[1])


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(filters=st.lists(FILTER, min_size=1, max_size=2))
def test_filters_match_the_reference(gdb: GremlinDB, filters: list[tuple[Any, ...]]) -> None:
    query = "G.V()" + "".join(step_text(f) for f in filters)
    expected = sorted(i for i, meta in NODES.items() if all(matches(meta, f) for f in filters))
    got = sorted(n["ID"] for n in gdb.query(query))
    assert got == expected, query


# ------------------------------------------------------------ traversals

def hop(kind: str, items: list[str], name: str) -> tuple[str, list[str]]:
    """The reference stream: Gremlin keeps duplicates, every edge is walked
    (a self-loop is walked once by Both/BothE)."""
    out: list[str] = []
    for x in items:
        for eid, (p, c, _) in EDGES.items():
            if name == "Out" and p == x:
                out.append(c)
            elif name == "In" and c == x:
                out.append(p)
            elif name == "Both" and x in (p, c):
                out.append(c if p == x else p)  # a self-loop is one incident edge
            elif ((name == "OutE" and p == x) or (name == "InE" and c == x)
                  or (name == "BothE" and x in (p, c))):
                out.append(eid)
            elif kind == "edges" and eid == x:
                p_c = {"OutV": [c], "InV": [p], "BothV": [p, c]}.get(name, [])
                out.extend(p_c)
    new_kind = "edges" if name.endswith("E") else "nodes"
    return new_kind, out


NODE_STEPS = ["Out", "In", "Both", "OutE", "InE", "BothE"]
EDGE_STEPS = ["OutV", "InV", "BothV"]
EDGE_FILTERS = [("Has", "Direction", ("lit", "Left")), ("Has", "Mode", ("lit", "Direct")),
                ("HasKey", "Mode"), ("HasNot", "Direction"),
                ("Has", "RelationType", ("lit", "layer2"))]


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(start=st.sampled_from(["V", "E"]), at=st.sampled_from(["", ".At(NOW)", ".At(NOW, 60)"]),
       data=st.data())
def test_traversals_match_the_reference(gdb: GremlinDB, start: str, at: str,
                                        data: st.DataObject) -> None:
    # the graph has no history: live, a time point and a time slice agree
    kind = "nodes" if start == "V" else "edges"
    items = sorted(NODES) if kind == "nodes" else sorted(EDGES)
    query = f"G{at}.{start}()"
    for _ in range(data.draw(st.integers(1, 4))):
        choice = data.draw(st.sampled_from(
            (NODE_STEPS if kind == "nodes" else EDGE_STEPS) + ["Filter", "Dedup"]))
        if choice == "Dedup":
            query += ".Dedup()"
            items = list(dict.fromkeys(items))
        elif choice == "Filter":
            if kind == "nodes":
                f = data.draw(FILTER)
                items = [i for i in items if matches(NODES[i], f)]
            else:
                f = data.draw(st.sampled_from(EDGE_FILTERS))
                items = [i for i in items if matches(EDGES[i][2], f)]
            query += step_text(f)
        else:
            kind, items = hop(kind, items, choice)
            query += f".{choice}()"
    got = sorted(r["ID"] for r in gdb.query(query))
    assert got == sorted(items), query
