"""The graph store: the one module that talks to the Bolt database (neo4j driver).

- `GraphStore`: connection, schema bootstrap, applying a batch of mutations in
  one transaction (plans from batch.py), reads of the live graph and of its
  history (time point and time slice, see history.py).
- `BatchWriter`: the ordered, batched, retrying writer in front of it, with a
  bounded queue (producers wait when it is full; nothing is dropped) and
  deferral of edges whose endpoints are not in the graph yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

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
from skygraph.topology.dialect import Dialect, detect
from skygraph.topology.errors import StoreError, StoreUnavailable
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import (
    EdgeAdded,
    EdgeDeleted,
    EdgeUpdated,
    NodeAdded,
    NodeUpdated,
    StoreMutation,
)
from skygraph.topology.schema import (
    KNOWN_RELATION_TYPES,
    relationship_index_statement,
    relationship_type,
    schema_statements,
)

log = logging.getLogger("skygraph.store")

# Errors after which the same transaction may succeed: the database restarting
# or unreachable, lock conflicts, and (ArcadeDB) MERGE races on a unique key.
RETRYABLE = (neo_errors.ServiceUnavailable, neo_errors.SessionExpired,
             neo_errors.TransientError, neo_errors.ConstraintError,
             neo_errors.IncompleteCommit, ConnectionError, OSError)

# A MERGE race on a unique key (ArcadeDB) clears on retry; more than this is a real violation.
MAX_CONSTRAINT_RETRIES = 10
# Elements whose last written properties the store remembers (batch.Known).
KNOWN_ELEMENTS = 100_000
Records = list[dict[str, Any]]
ReadFn = Callable[[str, dict[str, Any], float | None], Awaitable[Records]]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    statements: int
    missing_edges: tuple[str, ...]  # edges not written: an endpoint is not in the graph
    plan: BatchPlan


T = TypeVar("T")
R = TypeVar("R")


class LRU(Generic[T]):
    """A bounded map that forgets the least recently used key; `put(k, None)` forgets k."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[str, T] = OrderedDict()

    def get(self, key: str) -> T | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: str, value: T | None) -> None:
        if value is None:
            self._data.pop(key, None)
            return
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self.size:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


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
        """Run a read query in a read transaction (the seam the Gremlin translator uses)."""
        async def work(tx: neo4j.AsyncManagedTransaction) -> Records:
            return await _fetch(tx, cypher, params)
        with self._unavailable():
            async with self._driver.session(database=self.database) as session:
                return await session.execute_read(
                    neo4j.unit_of_work(timeout=timeout)(work) if timeout else work)

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
    result = await tx.run(cypher, params)
    keys = result.keys()
    return [dict(zip(keys, row, strict=True)) for row in await result.values()]


class RetryStats(Protocol):
    retries: int
    rejected: int
    last_error: str
    rejected_details: list[str]


async def next_batch(queue: asyncio.Queue[T], max_batch: int, max_delay: float) -> list[T]:
    """Wait for one item, then take up to `max_batch` within `max_delay` seconds
    (without waiting while more are already queued)."""
    batch = [await queue.get()]
    deadline = time.monotonic() + max_delay
    while len(batch) < max_batch:
        try:
            batch.append(queue.get_nowait())
            continue
        except asyncio.QueueEmpty:
            pass
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            break
        try:  # wait for more only when nothing is queued
            batch.append(await asyncio.wait_for(queue.get(), timeout))
        except TimeoutError:
            break
    return batch


async def write_retrying(batch: list[T], write: Callable[[list[T]], Awaitable[R]], *,
                         stats: RetryStats, what: str, describe: Callable[[T], str],
                         merge: Callable[[R, R], R], refused: R,
                         permanent: type[Exception] | tuple[type[Exception], ...],
                         max_backoff: float) -> R:
    """Write `batch` until the database takes it: transient errors and restarts are
    retried with backoff (nothing accepted is lost); a MERGE race on a unique key
    (ArcadeDB) is retried a few times; a `permanent` error is narrowed down by
    halving the batch until the element responsible is found, logged and counted
    (`refused` stands for its result), so the rest is written."""
    backoff = 0.05
    constraint_errors = 0
    while True:
        try:
            return await write(batch)
        except neo_errors.ConstraintError as exc:
            constraint_errors += 1
            if constraint_errors > MAX_CONSTRAINT_RETRIES:
                failure: Exception = exc
                break
            stats.retries += 1
            await asyncio.sleep(backoff)
        except (*RETRYABLE, StoreUnavailable) as exc:
            stats.retries += 1
            stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("%s: batch of %d not written yet (%s); retrying in %.2fs", what,
                        len(batch), stats.last_error, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)
        except permanent as exc:
            failure = exc
            break
    if len(batch) == 1:
        message = getattr(failure, "message", None) or str(failure)
        detail = f"{describe(batch[0])}: {type(failure).__name__}: {message}"
        log.error("%s: rejected by the database: %s", what, detail)
        stats.rejected += 1
        stats.rejected_details = [*stats.rejected_details[-99:], detail]
        return refused
    half = len(batch) // 2

    async def part(sub: list[T]) -> R:
        return await write_retrying(sub, write, stats=stats, what=what, describe=describe,
                                    merge=merge, refused=refused, permanent=permanent,
                                    max_backoff=max_backoff)
    return merge(await part(batch[:half]), await part(batch[half:]))


# ==================================================================== writer

@dataclass
class WriterStats:
    accepted: int = 0
    written: int = 0
    batches: int = 0
    retries: int = 0
    pending_edges: int = 0
    dropped_edges: int = 0
    rejected: int = 0
    last_error: str = ""
    rejected_details: list[str] = field(default_factory=list)


class BatchWriter:
    """Ordered, batched writes with bounded delay and size, retries and backpressure.

    `submit` returns once the mutation is accepted (queued); accepted mutations
    are written in order, retried until the database takes them (it may
    restart meanwhile), and never dropped, except an edge whose endpoints never
    appear within `pending_edge_ttl` seconds (logged and counted).
    """

    def __init__(self, store: GraphStore, max_batch: int = 2000, max_delay: float = 0.05,
                 max_queue: int = 100_000, pending_edge_ttl: float = 300.0,
                 max_pending_edges: int = 100_000, max_backoff: float = 5.0) -> None:
        self.store = store
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.pending_edge_ttl = pending_edge_ttl
        self.max_pending_edges = max_pending_edges
        self.max_backoff = max_backoff
        self.stats = WriterStats()
        self._queue: asyncio.Queue[StoreMutation] = asyncio.Queue(max_queue)
        self._pending: dict[str, tuple[StoreMutation, float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._done = asyncio.Condition()
        self._committed = 0

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="skygraph-writer")

    async def stop(self, timeout: float = 30.0) -> None:
        """Write what was accepted (up to `timeout`), then stop."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            log.error("writer: %d accepted mutations not written at stop (database unreachable: "
                      "%s)", self.stats.accepted - self._committed, self.stats.last_error)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def submit(self, mutation: StoreMutation) -> None:
        """Accept a mutation; waits while the queue is full (backpressure)."""
        await self._queue.put(mutation)
        self.stats.accepted += 1

    async def submit_all(self, mutations: Sequence[StoreMutation]) -> None:
        for m in mutations:
            await self.submit(m)

    async def flush(self) -> None:
        """Return when every mutation accepted so far is in the database."""
        target = self.stats.accepted
        async with self._done:
            await self._done.wait_for(lambda: self._committed >= target)

    # ------------------------------------------------------------ internals
    async def _run(self) -> None:
        while True:
            batch = await next_batch(self._queue, self.max_batch, self.max_delay)
            await self._write(batch)
            async with self._done:
                self._committed += len(batch)
                self._done.notify_all()

    async def _write(self, batch: list[StoreMutation]) -> None:
        retried = self._due_pending(batch)
        full = batch + retried
        missing = await self._apply_retrying(full)
        self.stats.written += len(batch)
        self.stats.batches += 1
        self._track_pending(full, missing)

    async def _apply_retrying(self, batch: list[StoreMutation]) -> set[str]:
        async def apply(part: list[StoreMutation]) -> set[str]:
            return set((await self.store.apply(part)).missing_edges)
        return await write_retrying(batch, apply, stats=self.stats, what="writer",
                                    describe=_describe, merge=set.union, refused=set(),
                                    permanent=neo_errors.Neo4jError,
                                    max_backoff=self.max_backoff)

    def _due_pending(self, batch: list[StoreMutation]) -> list[StoreMutation]:
        """Deferred edges to try again: an endpoint appears in this batch."""
        if not self._pending:
            return []
        added = {m.node.ID for m in batch if isinstance(m, (NodeAdded, NodeUpdated))}
        in_batch = {m.edge.ID for m in batch if isinstance(m, (EdgeAdded, EdgeUpdated, EdgeDeleted))}
        due: list[StoreMutation] = []
        for ident, (m, _) in list(self._pending.items()):
            if ident in in_batch:
                del self._pending[ident]  # superseded by the batch's own event
                continue
            assert isinstance(m, (EdgeAdded, EdgeUpdated))
            if m.edge.Parent in added or m.edge.Child in added:
                due.append(m)
                del self._pending[ident]
        return due

    def _track_pending(self, batch: list[StoreMutation], missing: set[str]) -> None:
        now = time.monotonic()
        for m in batch:
            if isinstance(m, (EdgeAdded, EdgeUpdated)) and m.edge.ID in missing:
                first = self._pending.get(m.edge.ID, (m, now))[1]
                self._pending[m.edge.ID] = (m, first)
        for ident, (m, first) in list(self._pending.items()):
            if now - first > self.pending_edge_ttl or len(self._pending) > self.max_pending_edges:
                del self._pending[ident]
                self.stats.dropped_edges += 1
                log.error("writer: dropped %s: its endpoints did not appear within %.0fs",
                          _describe(m), self.pending_edge_ttl)
        self.stats.pending_edges = len(self._pending)


def _describe(m: StoreMutation) -> str:
    if isinstance(m, (EdgeAdded, EdgeUpdated, EdgeDeleted)):
        return f"{type(m).__name__} edge {m.edge.ID} ({m.edge.Parent} -> {m.edge.Child})"
    return f"{type(m).__name__} node {m.node.ID}"
