"""The topology writer: `BatchWriter`, the ordered, batched, retrying writer in
front of the graph store, with a bounded queue (producers wait when it is
full; nothing is dropped) and deferral of edges whose endpoints are not in the
graph yet. What a batch turns into is the store's business (store.py, batch.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from skygraph.topology.mutations import (
    EdgeAdded,
    EdgeDeleted,
    EdgeUpdated,
    NodeAdded,
    NodeUpdated,
    StoreMutation,
)
from skygraph.topology.retry import DATABASE_ERROR, next_batch, write_retrying

log = logging.getLogger("skygraph.store")


class Applied(Protocol):
    @property
    def missing_edges(self) -> tuple[str, ...]:
        """Edges not written: an endpoint is not in the graph."""
        ...


class Applier(Protocol):
    """What the writer writes through (`GraphStore`): one transaction per call."""

    async def apply(self, mutations: Sequence[StoreMutation]) -> Applied: ...


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

    def __init__(self, store: Applier, max_batch: int = 2000, max_delay: float = 0.05,
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
                                    describe=describe, merge=set.union, refused=set(),
                                    permanent=DATABASE_ERROR, max_backoff=self.max_backoff)

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
                          describe(m), self.pending_edge_ttl)
        self.stats.pending_edges = len(self._pending)


def describe(m: StoreMutation) -> str:
    """A mutation as the writer's log lines name it."""
    if isinstance(m, (EdgeAdded, EdgeUpdated, EdgeDeleted)):
        return f"{type(m).__name__} edge {m.edge.ID} ({m.edge.Parent} -> {m.edge.Child})"
    return f"{type(m).__name__} node {m.node.ID}"
