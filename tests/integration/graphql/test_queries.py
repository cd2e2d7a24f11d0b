"""GraphQL queries over HTTP against a real server and graph: filters (each
predicate kind), Relay pagination, node edges/neighbours, Gremlin, status,
argument errors, GraphiQL and its assets."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.graphql.conftest import ALL_EDGES, ALL_NODES, Served

pytestmark = pytest.mark.bolt

NODES = """query($f: NodeFilter, $first: Int, $after: String, $at: String) {
  nodes(filter: $f, first: $first, after: $after, at: $at) {
    edges { cursor node { id name type } }
    pageInfo { hasNextPage endCursor }
  }
}"""


def ids(served: Served, f: dict[str, Any] | None = None, **args: Any) -> list[str]:
    data = served.data(NODES, {"f": f, "first": 1000, **args})
    assert not data["nodes"]["pageInfo"]["hasNextPage"]
    return [e["node"]["id"] for e in data["nodes"]["edges"]]


def ifs(*pairs: tuple[int, int]) -> list[str]:
    return sorted(f"if{i}-{j}" for i, j in pairs)


@pytest.mark.parametrize(("f", "expected"), [
    ({}, None),
    ({"type": "netns"}, ["ns0", "ns1", "ns2", "ns3"]),
    ({"types": ["ovsbridge", "host"]}, ["br0", "host"]),
    ({"name": "eth3"}, ifs(*((i, 3) for i in range(4)))),
    ({"nameRegex": "eth[0-1]"}, ifs(*((i, j) for i in range(4) for j in (0, 1)))),
    ({"nameRegex": "eth"}, []),                    # a regex matches the whole value
    ({"host": "agentB", "type": "netns"}, ["ns2", "ns3"]),
    ({"type": "veth", "host": "agentB", "name": "eth0"}, ifs((2, 0), (3, 0))),
    # metadata predicates, one of each kind
    ({"metadata": [{"key": "IPV4", "eq": "10.1.2.1/24"}]}, ["if1-2"]),  # an item of a list
    ({"metadata": [{"key": "MTU", "eq": 1500}]}, ifs(*((i, 0) for i in range(4)))),
    ({"type": "veth", "metadata": [{"key": "State", "ne": "UP"}]},
     ifs(*((i, j) for i in range(4) for j in (0, 2, 4)))),
    ({"metadata": [{"key": "MTU", "in": [1600, 2400]}]},
     ifs(*((i, j) for i in range(4) for j in (1, 9)))),
    ({"metadata": [{"key": "IPV4", "regex": "10\\.0\\..*"}]}, ifs(*((0, j) for j in (0, 2, 4, 6, 8)))),
    ({"metadata": [{"key": "MTU", "lt": 1650}]}, ifs(*((i, j) for i in range(4) for j in (0, 1)))),
    ({"metadata": [{"key": "MTU", "gt": 2300}]}, ifs(*((i, 9) for i in range(4)))),
    ({"metadata": [{"key": "Ovs", "exists": True}]}, ifs(*((i, 9) for i in range(4)))),
    ({"metadata": [{"key": "Ovs.DPDK", "eq": True}]}, ifs(*((i, 9) for i in range(4)))),
    ({"metadata": [{"key": "Metadata.Ovs.Ports", "gt": 1}]}, ifs(*((i, 9) for i in range(4)))),
    ({"type": "device", "metadata": [{"key": "IPV4", "exists": False}]},
     ifs(*((i, j) for i in range(4) for j in (5, 7, 9)))),
    ({"metadata": [{"key": "@Host", "eq": "agentB"}, {"key": "Type", "eq": "netns"}]},
     ["ns2", "ns3"]),
])
def test_node_filters(served: Served, f: dict[str, Any], expected: list[str] | None) -> None:
    got = ids(served, f)
    assert got == sorted(got)  # pages are ordered by ID
    if expected is None:
        assert len(got) == ALL_NODES
    else:
        assert got == expected


def test_walking_every_page_sees_every_node_once(served: Served) -> None:
    for f, total in (({}, ALL_NODES), ({"types": ["veth", "device"]}, 40)):
        seen: list[str] = []
        after = None
        pages = 0
        while True:
            conn = served.data(NODES, {"f": f, "first": 7, "after": after})["nodes"]
            seen += [e["node"]["id"] for e in conn["edges"]]
            pages += 1
            if not conn["pageInfo"]["hasNextPage"]:
                break
            assert conn["edges"][-1]["cursor"] == conn["pageInfo"]["endCursor"]
            after = conn["pageInfo"]["endCursor"]
        assert len(seen) == len(set(seen)) == total
        assert seen == sorted(seen)
        assert pages == -(-total // 7)


def test_edges_filters_and_pages(served: Served) -> None:
    query = """query($f: EdgeFilter, $after: String) {
      edges(filter: $f, first: 10, after: $after) {
        edges { node { id relationType parentId childId parent { id } child { name } } }
        pageInfo { hasNextPage endCursor } } }"""
    seen: list[dict[str, Any]] = []
    after = None
    while True:
        conn = served.data(query, {"after": after})["edges"]
        seen += [e["node"] for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert len(seen) == len({e["id"] for e in seen}) == ALL_EDGES
    assert all(e["parent"]["id"] == e["parentId"] for e in seen)
    layer2 = served.data(query, {"f": {"relationType": "layer2", "metadata": [
        {"key": "Type", "eq": "veth"}], "parent": "if0-1"}})["edges"]["edges"]
    assert [e["node"]["childId"] for e in layer2] == ["if1-1"]
    assert layer2[0]["node"]["child"]["name"] == "eth1"
    by_host = served.data(query, {"f": {"host": "agentB", "relationType": "ownership"}})
    assert len(by_host["edges"]["edges"]) == 10  # first: 10 of 22
    assert by_host["edges"]["pageInfo"]["hasNextPage"]


def test_node_edges_and_neighbours(served: Served) -> None:
    data = served.data("""{ node(id: "ns1") {
        name
        children: neighbors(direction: OUT, relationType: "ownership") { id }
        parents: neighbors(direction: IN) { id }
        devices: neighbors(direction: OUT, filter: {type: "device"}) { name }
        out: edges(direction: OUT) { id }
        all: edges { id relationType }
        mine: edges(filter: {host: "agentA", relationType: "ownership"}) { id }
      } }""")["node"]
    assert data["name"] == "ns1"
    assert data["children"] == [{"id": f"if1-{j}"} for j in range(10)]
    assert data["parents"] == [{"id": "host"}]
    assert sorted(d["name"] for d in data["devices"]) == [f"eth{j}" for j in range(5, 10)]
    assert len(data["out"]) == 10 and len(data["all"]) == 11
    assert len(data["mine"]) == 11  # ns1 is on agentA
    veth = served.data("""{ node(id: "if1-3") {
        peers: neighbors(relationType: "layer2") { id }
        l2: edges(relationType: "layer2", direction: BOTH) { id parent { id } child { id } } } }""")
    assert veth["node"]["peers"] == [{"id": "if0-3"}, {"id": "if2-3"}]
    assert {e["id"] for e in veth["node"]["l2"]} == {"l2-if0-3", "l2-if1-3"}
    assert served.data('{ node(id: "nope") { id } }') == {"node": None}


def test_neighbours_are_batched_per_level(served: Served) -> None:
    """One store read per level and argument set, whatever the number of nodes."""
    query = """{ nodes(filter: {types: ["veth", "device"]}, first: 40) { edges { node {
        id
        neighbors(direction: BOTH) { id neighbors(relationType: "ownership") { id } }
        edges(direction: IN) { id parent { id name } child { id } } } } } }"""
    data, reads = served.count_reads(lambda: served.data(query))
    nodes = [e["node"] for e in data["nodes"]["edges"]]
    assert len(nodes) == 40
    assert all(any(n["id"].startswith("ns") for n in x["neighbors"]) for x in nodes)
    assert all(any(e["parent"]["name"].startswith("ns") for e in x["edges"]) for x in nodes)
    assert all(e["child"]["id"] == x["id"] for x in nodes for e in x["edges"])
    # page, neighbours, neighbours of neighbours, edges, edge parents and children (the
    # children are the page's nodes: same loader, same batch as the parents)
    assert reads == 5
    _, reads_at = served.count_reads(
        lambda: served.data(query.replace("first: 40", f'first: 40, at: "{served.clock[0]}"')))
    assert reads_at == 5


def test_first_is_bounded(served: Served) -> None:
    message = served.error("{ nodes(first: 1001) { edges { cursor } } }")
    assert message == "first must be between 0 and 1000, got 1001"
    assert "first must be between" in served.error("{ edges(first: -1) { edges { cursor } } }")
    empty = served.data("{ nodes(first: 0) { edges { cursor } pageInfo { hasNextPage } } }")
    assert empty["nodes"] == {"edges": [], "pageInfo": {"hasNextPage": True}}


@pytest.mark.parametrize(("query", "expected"), [
    ('{ nodes(filter: {nameRegex: "eth[0-"}) { edges { cursor } } }',
     "filter nameRegex: invalid regex 'eth[0-'"),
    ('{ nodes(filter: {metadata: [{key: "IPV4", regex: "("}]}) { edges { cursor } } }',
     "filter metadata[0]: invalid regex '('"),
    ('{ nodes(filter: {metadata: [{key: "MTU"}]}) { edges { cursor } } }',
     "filter metadata[0]: key 'MTU': give exactly one of eq, ne, in, regex, lt, gt, exists"),
    ('{ nodes(filter: {metadata: [{key: "MTU", eq: 1, gt: 2}]}) { edges { cursor } } }',
     "give exactly one of"),
    ('{ nodes(filter: {metadata: [{key: "a..b", exists: true}]}) { edges { cursor } } }',
     "filter metadata[0]: invalid key 'a..b'"),
    ('{ nodes(filter: {metadata: [{key: "MTU", eq: {a: 1}}]}) { edges { cursor } } }',
     "filter metadata[0]: expected a string, number or boolean"),
    ('{ nodes(at: "yesterday") { edges { cursor } } }', "at: "),
    ('{ nodes(at: "-1s", during: {from: "-1h"}) { edges { cursor } } }', "not both"),
    ('{ edges(during: {from: "-1s", to: "-1h"}) { edges { cursor } } }', "from is after to"),
    ('{ nodes(after: "bm90IGEgY3Vyc29y") { edges { cursor } } }', "invalid cursor"),
    ('{ node(id: "ns0") { neighbors(filter: {nameRegex: "["}) { id } } }',
     "filter nameRegex: invalid regex '['"),
    ('{ node(id: "ns0") { edges(filter: {metadata: [{key: "x", in: [[1]]}]}) { id } } }',
     "filter metadata[0]: expected a string, number or boolean, got [1]"),
    ('{ node(id: "ns0") { edges(relationType: "a", filter: {relationType: "b"}) { id } } }',
     "relationType is given twice"),
    ('{ gremlin(query: "G.V().Has(") }', "found end of query"),
    ('{ gremlin(query: "G.V().Has(1 2)") }', "column 13: expected ')'"),
    ('{ gremlin(query: "G.V().Foo()") }', "Foo"),
    ('{ gremlin(query: "G.At(\'-1s\').V()", at: "-1s") }', "its own At/Context"),
])
def test_user_errors_are_precise(served: Served, query: str, expected: str) -> None:
    message = served.error(query)
    assert expected in message
    assert "internal error" not in message


def test_gremlin_and_status(served: Served) -> None:
    assert served.data('{ gremlin(query: "G.V().Has(\'Type\', \'netns\').Count()") }') == \
        {"gremlin": 4}
    nodes = served.data('{ gremlin(query: "G.V(\'ns0\')") }')["gremlin"]
    assert nodes[0]["ID"] == "ns0" and nodes[0]["Metadata"]["Type"] == "netns"
    status = served.data("{ status }")["status"]
    assert status["Graph"]["Healthy"] is True
    assert status["Graph"]["Nodes"] == ALL_NODES
    assert "Version" in status and "Agents" in status


def test_get_requests_run_queries_but_not_mutations(served: Served) -> None:
    reply = served.request("GET", "/graphql?query=%7Bstatus%7D", headers={"Accept": "application/json"})
    assert reply.status == 200 and reply.json()["data"]["status"]["Graph"]["Healthy"]
    mutation = "mutation%7BdeleteCapture(id:%22x%22)%7D"
    assert served.request("GET", f"/graphql?query={mutation}").status in (400, 405)


def test_depth_limit(served: Served) -> None:
    deep = '{ node(id: "if0-1") { ' + "neighbors(direction: OUT) { " * 12 + "id" + " }" * 12 + " } }"
    assert "exceeds maximum operation depth of 12" in served.error(deep)
    # 11 levels pass: a chain of veth peers through the four namespaces
    ok = '{ node(id: "if0-1") { ' + "neighbors(direction: OUT) { " * 10 + "id" + " }" * 10 + " } }"
    level = served.data(ok)["node"]
    for _ in range(10):
        (level,) = level["neighbors"]
    assert level == {"id": "if2-1"}


def test_response_size_limit(served: Served) -> None:
    """Fan-out over nested neighbours is bounded (default: the API's result limit)."""
    wide = '{ node(id: "ns0") { ' + "neighbors { " * 10 + "id" + " }" * 10 + " } }"
    assert served.error(wide) == ("the response would hold more than 10000 nodes and edges: "
                                  "narrow it (first, relationType, filter) or nest fewer levels")


def test_alias_and_token_limits(served: Served) -> None:
    aliases = "{ " + " ".join(f"a{i}: status" for i in range(40)) + " }"
    assert "aliases" in served.error(aliases).lower()
    tokens = "{ status " + "__typename " * 6000 + "}"
    assert "token" in served.error(tokens).lower()


def test_internal_errors_are_masked_and_logged(served: Served,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """An unexpected failure below the API (here: the store's connection is gone)
    reaches the client as "internal error" only; the log has the stack trace."""
    from skygraph.api.reads import Reads

    async def broken(cypher: str, params: dict[str, Any], timeout: float | None = None) -> Any:
        raise RuntimeError("secret detail /srv/skygraph/store.py")

    real = served.api.reads
    served.api.reads = Reads(broken, served.api.limits)
    try:
        with caplog.at_level("ERROR", logger="skygraph.graphql"):
            out = served.gql('{ nodes { edges { cursor } } node(id: "ns0") { id } }')
    finally:
        served.api.reads = real
    assert out["errors"] and all(e["message"] == "internal error" for e in out["errors"])
    assert "secret" not in str(out) and "Traceback" not in str(out)
    logged = [r for r in caplog.records if r.name == "skygraph.graphql"]
    assert logged and logged[0].exc_info is not None
    assert "secret detail" in str(logged[0].exc_info[1])


def test_graphiql_page_and_assets(served: Served) -> None:
    page = served.request("GET", "/graphql", headers={"Accept": "text/html"})
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    html = page.body.decode()
    assert "/graphql/static/graphiql.min.js" in html
    assert "unpkg.com" not in html and "cdn.jsdelivr" not in html
    js = served.request("GET", "/graphql/static/graphiql.min.js")
    assert js.status == 200 and "javascript" in js.headers["content-type"]
    assert len(js.body) > 100_000
    css = served.request("GET", "/graphql/static/graphiql.min.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    assert served.request("GET", "/graphql/static/../app.py").status == 404
    assert served.request("GET", "/graphql/static/nope.js").status == 404
    assert served.request("GET", "/elsewhere").status == 404


def test_the_schema_document_matches_the_server() -> None:
    """docs/schema.graphql is what the server serves (regenerate it when the schema changes)."""
    from pathlib import Path

    from skygraph.graphql.schema import build_schema
    doc = Path(__file__).resolve().parents[3] / "docs" / "schema.graphql"
    served = build_schema(max_depth=12, max_aliases=30, max_tokens=5000).as_str()
    assert doc.read_text().strip() == served.strip()
