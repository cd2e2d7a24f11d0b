"""A real GraphQL server for the tests: `make_app(Api(...))` served by uvicorn on
a free loopback port, on the session's embedded Bolt server, with the store,
writer, API and server all on one background event loop; the test talks HTTP
(urllib) and graphql-transport-ws (websockets) to it.

The API's clock is a counter the tests move (`served.clock`), so history
reads are exact; every `store.read` is counted (`served.reads`) to check
that dataloaders batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import uvicorn

from skygraph.api.service import Api
from skygraph.graphql.app import make_app
from skygraph.topology.embedded import free_port
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, Mutation, NodeAdded
from skygraph.topology.store import BatchWriter, GraphStore
from tests.conftest import BoltServer, LoopThread, Reply, http

T = TypeVar("T")
T0 = 1_700_000_000_000


@dataclass
class Served:
    loop: LoopThread
    store: GraphStore
    writer: BatchWriter
    api: Api
    url: str
    clock: list[int]
    reads: list[str] = field(default_factory=list)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run(coro)

    def apply(self, mutations: list[Mutation], at: int | None = None) -> None:
        """Apply changes through the API (graph, bus, store) at clock `at`; wait until stored."""
        if at is not None:
            self.clock[0] = at

        async def go() -> None:
            await self.api.apply(mutations)
            await self.writer.flush()
        self.run(go())

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> Reply:
        return http(self.url + path, method, body, headers)

    def gql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST a GraphQL document; the whole response ({data, errors})."""
        reply = self.request("POST", "/graphql", {"query": query, "variables": variables or {}})
        assert reply.status == 200, reply.body
        out: dict[str, Any] = reply.json()
        return out

    def data(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        """POST a document that must succeed; its data."""
        out = self.gql(query, variables)
        assert not out.get("errors"), out["errors"]
        return out["data"]

    def error(self, query: str, variables: dict[str, Any] | None = None) -> str:
        """POST a document that must fail; its first error message."""
        out = self.gql(query, variables)
        assert out.get("errors"), out
        message: str = out["errors"][0]["message"]
        return message

    def count_reads(self, action: Callable[[], T]) -> tuple[T, int]:
        before = len(self.reads)
        result = action()
        return result, len(self.reads) - before


@dataclass
class Uvicorn:
    server: uvicorn.Server
    future: Future[None]
    url: str

    def stop(self) -> None:
        self.server.should_exit = True
        self.future.result(30)


def serve(app: Any, loop: LoopThread) -> Uvicorn:
    """Run `app` with uvicorn on a free loopback port, on `loop`."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", ws="websockets-sansio"))
    future = asyncio.run_coroutine_threadsafe(server.serve(), loop.loop)
    for _ in range(400):
        if server.started or future.done():
            break
        time.sleep(0.025)
    if future.done():
        future.result()
    assert server.started, "uvicorn did not start"
    return Uvicorn(server, future, f"http://127.0.0.1:{port}")


@pytest.fixture(scope="module")
def served(bolt_server: BoltServer) -> Iterator[Served]:
    loop = LoopThread()
    clock = [T0]
    reads: list[str] = []

    async def start() -> tuple[GraphStore, BatchWriter, Api]:
        store = await GraphStore.open(bolt_server.uri, bolt_server.user, bolt_server.password)
        await store.bootstrap()
        await store.clear()
        await store.run("MATCH (c:Capture) DELETE c")
        real_read = store.read

        async def counting_read(cypher: str, params: dict[str, Any],
                                timeout: float | None = None) -> list[dict[str, Any]]:
            reads.append(cypher)
            return await real_read(cypher, params, timeout)
        store.read = counting_read  # type: ignore[method-assign]
        writer = BatchWriter(store)
        await writer.start()
        api = Api(store, writer, clock=lambda: clock[0])
        await api.load()
        return store, writer, api

    store, writer, api = loop.run(start())
    server = serve(make_app(api, max_depth=12, max_page=1000), loop)
    s = Served(loop, store, writer, api, server.url, clock, reads)
    try:
        s.apply(topology(), at=T0)
        yield s
    finally:
        server.stop()

        async def close() -> None:
            await writer.stop()
            await store.clear()
            await store.run("MATCH (c:Capture) DELETE c")
            await store.close()
        loop.run(close())
        loop.close()


# ---------------------------------------------------------------- the test graph

HOSTS = ("agentA", "agentA", "agentB", "agentB")


def topology() -> list[Mutation]:
    """50 nodes: a host, 4 namespaces of 10 interfaces each, an OVS bridge with 4 ports;
    ownership edges, veth pairs between namespaces (layer2), bridge -> ports."""
    nodes = [Node("host", {"Name": "host1", "Type": "host"}, Host="agentA")]
    edges: list[Edge] = []
    for i in range(4):
        ns = f"ns{i}"
        nodes.append(Node(ns, {"Name": ns, "Type": "netns", "Path": f"/var/run/netns/{ns}"},
                          Host=HOSTS[i]))
        edges.append(Edge(f"own-{ns}", "host", ns, {"RelationType": "ownership"}, Host=HOSTS[i]))
        for j in range(10):
            ident = f"if{i}-{j}"
            meta: dict[str, Any] = {"Name": f"eth{j}", "Type": "veth" if j < 5 else "device",
                                    "MTU": 1500 + 100 * j, "State": "UP" if j % 2 else "DOWN"}
            if j % 2 == 0:
                meta["IPV4"] = [f"10.{i}.{j}.1/24", f"fe80::{i}:{j}/64"]
            if j == 9:
                meta["Ovs"] = {"DPDK": True, "Ports": 2}
            nodes.append(Node(ident, meta, Host=HOSTS[i]))
            edges.append(Edge(f"own-{ident}", ns, ident, {"RelationType": "ownership"},
                              Host=HOSTS[i]))
            if j < 5:
                peer = f"if{(i + 1) % 4}-{j}"
                edges.append(Edge(f"l2-{ident}", ident, peer,
                                  {"RelationType": "layer2", "Type": "veth"}, Host=HOSTS[i]))
    nodes.append(Node("br0", {"Name": "br0", "Type": "ovsbridge"}, Host="agentA"))
    edges.append(Edge("own-br0", "host", "br0", {"RelationType": "ownership"}, Host="agentA"))
    for k in range(4):
        port = f"port{k}"
        nodes.append(Node(port, {"Name": port, "Type": "ovsport", "UUID": f"uuid-{k}"},
                          Host="agentA"))
        edges.append(Edge(f"l2-br0-{port}", "br0", port, {"RelationType": "layer2"},
                          Host="agentA"))
    return [*(NodeAdded(n) for n in nodes), *(EdgeAdded(e) for e in edges)]


ALL_NODES = 50
ALL_EDGES = 4 + 40 + 20 + 1 + 4
