"""Fixtures for Gremlin queries against the real embedded Bolt server.

One `GraphStore` per test module on the session's background loop; each
module loads its own graph through the store's writer (`store.apply`), so
the translator is exercised on exactly what the store writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from skygraph.gremlin import Limits, execute, prepare
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, NodeAdded, StoreMutation
from skygraph.topology.store import GraphStore
from tests.conftest import BoltServer, LoopThread

NOW = 1_700_000_000_000


@dataclass
class GremlinDB:
    loop: LoopThread
    store: GraphStore

    def load(self, nodes: Sequence[Node], edges: Sequence[Edge] = ()) -> None:
        muts: list[StoreMutation] = [NodeAdded(n) for n in nodes]
        muts += [EdgeAdded(e) for e in edges]
        self.loop.run(self.store.clear())
        self.loop.run(self.store.apply(muts))

    def apply(self, mutations: Sequence[StoreMutation]) -> None:
        self.loop.run(self.store.apply(list(mutations)))

    def clear(self) -> None:
        self.loop.run(self.store.clear())

    def query(self, text: str, now_ms: int = NOW, limits: Limits | None = None) -> Any:
        return self.loop.run(execute(text, self.store.read, now_ms, limits))

    def cypher(self, text: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.loop.run(self.store.read(text, params or {}, 10.0))

    def explain(self, text: str, now_ms: int = NOW) -> str:
        return prepare(text, now_ms).cypher


@pytest.fixture(scope="module")
def gdb(bolt_server: BoltServer) -> Iterator[GremlinDB]:
    loop = bolt_server.loop

    async def open_() -> GraphStore:
        store = await GraphStore.open(bolt_server.uri, bolt_server.user, bolt_server.password)
        await store.bootstrap()
        return store

    store = loop.run(open_())
    try:
        yield GremlinDB(loop, store)
    finally:
        loop.run(store.clear())
        loop.run(store.close())


def node(ident: str, t: int = 1000, **meta: Any) -> Node:
    return Node(ident, meta, Host="host1", Origin="test", CreatedAt=t, UpdatedAt=t)


def edge(ident: str, parent: str, child: str, t: int = 1000, **meta: Any) -> Edge:
    return Edge(ident, parent, child, meta, Host="host1", Origin="test", CreatedAt=t,
                UpdatedAt=t)
