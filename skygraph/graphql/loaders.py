"""The per-request context and its dataloaders.

Owns batching: every `Node.edges`, `Node.neighbors` and `Edge.parent/child`
resolved at one level of a query with the same arguments is collected by a
DataLoader and read in ONE store query (`Reads.incident_edges`,
`Reads.neighbours`, `Reads.nodes_by_ids`), so a page of 100 nodes with their
neighbours costs two reads, not 101.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader

from skygraph.api.reads import EdgeFilter, NodeFilter, Reads, When
from skygraph.api.service import Api
from skygraph.gremlin import LimitExceededError
from skygraph.topology.model import Edge, Node

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Hop:
    """What a batch of edge/neighbour loads shares (everything but the node IDs)."""

    direction: str
    when: When
    edges: EdgeFilter | None = None
    nodes: NodeFilter | None = None


class Loaders:
    """DataLoaders by batch key. `cache=False` for websocket contexts, which
    outlive one query (a subscription must not see cached neighbours)."""

    def __init__(self, reads: Callable[[], Reads], cache: bool = True) -> None:
        self._reads = reads
        self._cache = cache
        self._loaders: dict[tuple[str, Hashable], DataLoader[Any, Any]] = {}

    def _loader(self, kind: str, key: Hashable,
                load: Callable[[list[str]], Awaitable[list[V]]]) -> DataLoader[str, V]:
        loader = self._loaders.get((kind, key))
        if loader is None:
            loader = DataLoader(load, cache=self._cache)
            self._loaders[(kind, key)] = loader
        return loader

    # Loads are shielded: many resolvers await one cached future, and when graphql-core
    # cancels one of them (a sibling failed), the shared future must not be cancelled
    # under the others.
    async def node(self, when: When, ident: str) -> Node | None:
        async def load(ids: list[str]) -> list[Node | None]:
            found = await self._reads().nodes_by_ids(ids, when.at, when.during)
            return [found.get(i) for i in ids]
        return await asyncio.shield(self._loader("node", when, load).load(ident))

    async def edges(self, hop: Hop, ident: str) -> list[Edge]:
        async def load(ids: list[str]) -> list[list[Edge]]:
            found = await self._reads().incident_edges(ids, hop.direction, hop.when.at,
                                                       hop.when.during, hop.edges)
            return [found[i] for i in ids]
        return await asyncio.shield(self._loader("edges", hop, load).load(ident))

    async def neighbours(self, hop: Hop, ident: str) -> list[Node]:
        async def load(ids: list[str]) -> list[list[Node]]:
            found = await self._reads().neighbours(ids, hop.direction, hop.when.at,
                                                   hop.when.during, hop.edges, hop.nodes)
            return [found[i] for i in ids]
        return await asyncio.shield(self._loader("neighbours", hop, load).load(ident))


@dataclass
class Context:
    """What every resolver gets as `info.context`.

    `budget` bounds the nodes and edges one HTTP request returns: dataloaders
    make each level cheap to read, but nested `neighbors` multiply what the
    response holds (a fan-out of 3 over 10 levels is 59,049 nodes)."""

    api: Api
    max_page: int
    loaders: Loaders
    request: Any = None
    response: Any = None
    budget: int | None = None
    spent: int = 0
    # set by strawberry from a websocket's connection_init payload
    connection_params: dict[str, object] | None = field(default=None)

    def spend(self, elements: int) -> None:
        self.spent += elements
        if self.budget is not None and self.spent > self.budget:
            raise LimitExceededError(
                f"the response would hold more than {self.budget} nodes and edges: narrow it "
                f"(first, relationType, filter) or nest fewer levels")
