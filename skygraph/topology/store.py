"""The graph store: the one module that runs statements on the Bolt database
(neo4j driver).

`GraphStore` owns the connection, the schema bootstrap, applying a batch of
mutations in one transaction (plans from batch.py), and reads of the live
graph and of its history (time point and time slice, see history.py). It
remembers the last written revision of recent elements (cache.py) so updates
need not read them back. The writer in front of it is writer.py (`BatchWriter`,
re-exported here, where its callers import it from); retries are retry.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import neo4j
from neo4j import AsyncGraphDatabase
from neo4j import exceptions as neo_errors

from skygraph.topology import history
from skygraph.topology.batch import (
    ATTACHED_EDGES_QUERY,
    DELETED_EDGES_QUERY,
    DELETED_NODES_QUERY,
    MISSING_ENDS_QUERY,
    STORED_EDGES_QUERY,
    STORED_NODES_QUERY,
    BatchPlan,
    Known,
    Stored,
    assumed_stored,
    compile_batch,
    touched,
)
from skygraph.topology.cache import LRU
from skygraph.topology.dialect import Dialect, detect
from skygraph.topology.errors import StoreError, StoreUnavailable
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, EdgeUpdated, StoreMutation
from skygraph.topology.schema import (
    KNOWN_RELATION_TYPES,
    relationship_index_statement,
    relationship_type,
    schema_statements,
)
from skygraph.topology.writer import BatchWriter, WriterStats

__all__ = ["KNOWN_ELEMENTS", "ApplyResult", "BatchWriter", "GraphStore", "WriterStats"]

# Elements whose last written properties the store remembers (batch.Known).
KNOWN_ELEMENTS = 100_000
Records = list[dict[str, Any]]
# What a read retries, and for how long at most (never past its own timeout): a
# transient error (lock conflict, leader switch) or a connection lost under it.  A
# server that refuses connections is StoreUnavailable at once (the API's 503).
READ_RETRYABLE = (neo_errors.SessionExpired, neo_errors.TransientError)
READ_RETRY_S = 30.0
ReadFn = Callable[[str, dict[str, Any], float | None], Awaitable[Records]]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    statements: int
    missing_edges: tuple[str, ...]  # edges not written: an endpoint is not in the graph
    plan: BatchPlan


class GraphStore:
    def __init__(self, driver: neo4j.AsyncDriver, database: str | None, dialect: Dialect,
                 uri: str) -> None:
        self._driver = driver
        self.database = database
        self.dialect = dialect
        self.uri = uri
        self._rel_indexes: set[str] = set()
        self.known_nodes: LRU[Known] = LRU(KNOWN_ELEMENTS)
        self.known_edges: LRU[Known] = LRU(KNOWN_ELEMENTS)

    @classmethod
    async def open(cls, uri: str, user: str, password: str, database: str | None = None,
                   wait: float = 30.0) -> GraphStore:
        """Connect, waiting up to `wait` seconds for the server to answer."""
        driver = AsyncGraphDatabase.driver(uri, auth=(user, password),
                                           max_transaction_retry_time=1.0)
        deadline = time.monotonic() + wait
        while True:
            try:
                info = await driver.get_server_info()
                await driver.execute_query("RETURN 1", database_=database)
                break
            except neo_errors.AuthError as exc:
                await driver.close()
                raise StoreError(f"graph database {uri}: authentication failed for "
                                 f"user {user!r}: {exc.message}") from exc
            except (neo_errors.ServiceUnavailable, neo_errors.TransientError, OSError) as exc:
                if time.monotonic() > deadline:
                    await driver.close()
                    raise StoreError(f"graph database {uri} does not answer after {wait:.0f}s: "
                                     f"{exc}") from exc
                await asyncio.sleep(0.2)
        return cls(driver, database, detect(info.agent), uri)

    async def close(self) -> None:
        await self._driver.close()

    # ------------------------------------------------------------ schema
    async def bootstrap(self) -> None:
        """Create constraints and indexes (idempotent)."""
        for stmt in schema_statements():
            await self.run(stmt)
        self._rel_indexes.update(relationship_type(r) for r in KNOWN_RELATION_TYPES)

    async def _ensure_relationship_indexes(self, mutations: Sequence[StoreMutation]) -> None:
        for m in mutations:
            if isinstance(m, (EdgeAdded, EdgeUpdated)):
                rel = relationship_type(m.edge.relation_type)
                if rel not in self._rel_indexes:
                    await self.run(relationship_index_statement(rel))
                    self._rel_indexes.add(rel)

    # ------------------------------------------------------------ raw access
    async def run(self, cypher: str, params: dict[str, Any] | None = None,
                  timeout: float | None = None) -> Records:
        """Run one statement in a managed write transaction and return its records.

        Never auto-commit: ArcadeDB's Bolt server commits an auto-commit
        statement row by row (a DETACH DELETE of 6,000 nodes: 29 s, against
        0.5 s in a transaction).
        """
        async def work(tx: neo4j.AsyncManagedTransaction) -> Records:
            return await _fetch(tx, cypher, params or {})
        with self._unavailable():
            async with self._driver.session(database=self.database) as session:
                return await session.execute_write(
                    neo4j.unit_of_work(timeout=timeout)(work) if timeout else work)

    async def run_all(self, statements: Sequence[tuple[str, dict[str, Any]]]) -> list[Records]:
        """Run statements in order in one managed write transaction; their records."""
        async def work(tx: neo4j.AsyncManagedTransaction) -> list[Records]:
            return [await _fetch(tx, cypher, params) for cypher, params in statements]
        with self._unavailable():
            async with self._driver.session(database=self.database) as session:
                return await session.execute_write(work)

    async def read(self, cypher: str, params: dict[str, Any], timeout: float | None = None
                   ) -> Records:
        """Run a read query (the seam the Gremlin translator uses): auto-commit, in a
        read session -- a managed read transaction costs a BEGIN and a COMMIT round
        trip more (0.7 ms of a 2 ms look-up) -- retried as the driver retries its
        managed transactions (`READ_RETRYABLE`), for up to `READ_RETRY_S` or the
        read's `timeout`, with a growing pause."""
        query = neo4j.Query(cypher, timeout=timeout) if timeout else cypher
        deadline = time.monotonic() + min(READ_RETRY_S, timeout or READ_RETRY_S)
        pause = 0.05
        with self._unavailable():
            while True:
                try:
                    async with self._driver.session(
                            database=self.database,
                            default_access_mode=neo4j.READ_ACCESS) as session:
                        return await _rows(await session.run(query, params))
                except READ_RETRYABLE as exc:
                    if isinstance(exc, neo_errors.Neo4jError) and not exc.is_retryable():
                        raise
                    if time.monotonic() + pause > deadline:
                        raise
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 1.0)

    @contextlib.contextmanager
    def _unavailable(self) -> Iterator[None]:
        """The database unreachable (after the driver's retries) -> StoreUnavailable."""
        try:
            yield
        except (neo_errors.ServiceUnavailable, neo_errors.SessionExpired) as exc:
            raise StoreUnavailable(f"graph database {self.uri} is unavailable: "
                                   f"{exc.message or exc}") from exc

    # ------------------------------------------------------------ writes
    async def apply(self, mutations: Sequence[StoreMutation]) -> ApplyResult:
        """Apply `mutations` in one transaction. Raises the driver's errors."""
        await self._ensure_relationship_indexes(mutations)
        try:
            return await self._apply(mutations)
        except _StaleMemory as stale:
            # Another writer changed nodes this store remembered: forget them
            # and apply again, reading their stored state this time.
            for ident in stale.ids:
                self.known_nodes.put(ident, None)
            return await self._apply(mutations)

    async def _apply(self, mutations: Sequence[StoreMutation]) -> ApplyResult:
        node_ids, edge_rows = touched(mutations)
        known_n = {i: k for i in node_ids if (k := self.known_nodes.get(i)) is not None}
        assumed = assumed_stored(mutations, known_n)
        read_ids = [i for i in node_ids if i not in assumed]

        async def work(tx: neo4j.AsyncManagedTransaction) -> ApplyResult:
            stored_nodes = {r["id"]: Stored(r["u"] or 0, r["r"] or 0, frozenset(r["l"]))
                            for r in await _unwind(tx, STORED_NODES_QUERY, "ids", read_ids)}
            stored_nodes.update(assumed)
            stored_edges = {r["id"]: Stored(r["u"] or 0, r["r"] or 0, rel_type=r["t"])
                            for r in await _unwind(tx, STORED_EDGES_QUERY, "rows", edge_rows)}
            for query, ids, stored in (
                    (DELETED_NODES_QUERY, [i for i in node_ids if i not in stored_nodes],
                     stored_nodes),
                    (DELETED_EDGES_QUERY, [r["id"] for r in edge_rows if r["id"] not in
                                           stored_edges], stored_edges)):
                for r in await _unwind(tx, query, "ids", ids):
                    stored[r["id"]] = Stored(0, 0, deleted_at=r["d"])
            known_e = {r["id"]: k for r in edge_rows
                       if (k := self.known_edges.get(r["id"])) is not None}
            plan = compile_batch(mutations, stored_nodes, stored_edges, None, known_n, known_e)
            if plan.needs_attached:
                attached: dict[str, list[dict[str, Any]]] = {i: [] for i in plan.needs_attached}
                for row in await _unwind(tx, ATTACHED_EDGES_QUERY, "ids",
                                          plan.needs_attached):
                    for end in (row["p"], row["c"]):
                        if end in attached:
                            attached[end].append(row)
                plan = compile_batch(mutations, stored_nodes, stored_edges, attached,
                                     known_n, known_e)
            missing = list(plan.deferred_edges)
            for stmt in plan.statements:
                records = await _fetch(tx, stmt.cypher, stmt.params)
                if stmt.guarded and records[0]["updated"] < len(stmt.guarded):
                    raise _StaleMemory(stmt.guarded)
                if stmt.creates_edges and records[0]["created"] < len(stmt.creates_edges):
                    rows = list(stmt.creates_edges)
                    missing.extend(r["id"] for r in await _unwind(tx, MISSING_ENDS_QUERY,
                                                                  "rows", rows))
            for ident in missing:
                plan.written_edges.pop(ident, None)
            return ApplyResult(len(plan.statements), tuple(missing), plan)

        async with self._driver.session(database=self.database) as session:
            result = await session.execute_write(work)
        # Committed: remember what is stored now.
        for cache, written in ((self.known_nodes, result.plan.written_nodes),
                               (self.known_edges, result.plan.written_edges)):
            for ident, known in written.items():
                cache.put(ident, known)
        return result

    async def clear(self) -> None:
        """Delete every element, all history and the flows (tests, `graph import --replace`)."""
        self.known_nodes.clear()
        self.known_edges.clear()
        for label in ("Node", "ArchivedNode", "ArchivedEdge", "Flow", "FlowMetric", "RawPacket"):
            await self.run(f"MATCH (n:{label}) DETACH DELETE n")

    # ------------------------------------------------------------ reads
    async def graph(self, at: int | None = None) -> tuple[list[Node], list[Edge]]:
        """The live graph, or the graph as it was at `at` (ms epoch)."""
        if at is None:
            nodes = await self.read(history.LIVE_NODES, {})
            edges = await self.read(history.LIVE_EDGES, {})
        else:
            nodes = await self.read(history.NODES_AT, {"t": at})
            edges = await self.read(history.EDGES_AT, {"t": at})
        return ([history.node_from_record(r) for r in nodes],
                [history.edge_from_record(r) for r in edges])

    async def revisions(self, start: int, end: int) -> tuple[list[Node], list[Edge]]:
        """Every revision alive at some instant of [start, end] (a time slice)."""
        params = {"start": start, "end": end}
        nodes = await self.read(history.NODES_IN, params)
        edges = await self.read(history.EDGES_IN, params)
        return ([history.node_from_record(r) for r in nodes],
                [history.edge_from_record(r) for r in edges])

    async def node(self, ident: str, at: int | None = None) -> Node | None:
        query = history.NODE_LIVE if at is None else history.NODE_AT
        rows = await self.read(query, {"id": ident, "t": at})
        return history.node_from_record(rows[0]) if rows else None


class _StaleMemory(Exception):
    """Raised inside a transaction (which then rolls back) when nodes were not at
    the revision the store remembered."""

    def __init__(self, ids: tuple[str, ...]) -> None:
        super().__init__(f"{len(ids)} nodes changed by another writer")
        self.ids = ids


async def _unwind(tx: neo4j.AsyncManagedTransaction, cypher: str, name: str,
                  rows: Sequence[Any]) -> Records:
    """Run an `UNWIND $<name>` statement; over no rows there is nothing to send."""
    return await _fetch(tx, cypher, {name: rows}) if rows else []


async def _fetch(tx: neo4j.AsyncManagedTransaction, cypher: str, params: dict[str, Any]
                 ) -> Records:
    return await _rows(await tx.run(cypher, params))


async def _rows(result: neo4j.AsyncResult) -> Records:
    keys = result.keys()
    return [dict(zip(keys, row, strict=True)) for row in await result.values()]
