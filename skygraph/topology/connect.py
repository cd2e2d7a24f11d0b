"""Open the graph database: an external Bolt server (Neo4j 5) when a URI is
given, else the embedded server (started here, or reused when another
skygraph process already runs it for the same data directory)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from skygraph.topology.embedded import USER, EmbeddedConfig, EmbeddedServer
from skygraph.topology.store import GraphStore


@dataclass
class GraphHandle:
    store: GraphStore
    backend: str                       # "embedded" or "bolt"
    embedded: EmbeddedServer | None


@contextlib.asynccontextmanager
async def connect_graph(uri: str, user: str, password: str, database: str | None,
                        embedded: EmbeddedConfig, wait: float = 30.0
                        ) -> AsyncIterator[GraphHandle]:
    server: EmbeddedServer | None = None
    if not uri:
        server = EmbeddedServer(embedded)
        await server.start()
        uri, user, password = server.uri, USER, server.password
    try:
        store = await GraphStore.open(uri, user, password, database or None, wait=wait)
        try:
            await store.bootstrap()
            yield GraphHandle(store, "embedded" if server else "bolt", server)
        finally:
            await store.close()
    finally:
        if server is not None and not server.reused:
            await server.stop()
