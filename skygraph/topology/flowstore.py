"""Flows in the graph: the flow store and the analyzer's flow sink.

- `FlowStore` writes batches of flows as `(:Flow)` nodes with their links
  (flowschema.py), made once: the store remembers which flows are fully
  linked and only tries again for the others, on their next update. Each
  update's `LastUpdateMetric` sample and the raw packets sent with it are
  written in the same transaction (every update's, not only the newest's).
  Every write stamps the flow and its new samples with the store's wall clock
  (`UpdatedAt`). It reads flows, samples and packets by flow UUID, and prunes
  what was not written within the retention: samples first, then flows, with
  their links, samples and packets. The retention counts from the write, not
  from the packets' times, so an old trace imported today stays for the
  retention like live traffic; a retention <= 0 keeps everything.
- `FlowSink` sits in front of it in the analyzer: agents' flow updates are
  validated and accepted into a bounded queue (`put` waits while it is full:
  backpressure), passed at once to an optional `publish` hook (GraphQL
  `flowUpdates`), and written in batches (at most `max_batch` flows, at most
  `max_delay` s after they arrive). Transient errors and a database restart
  are retried until the database takes the batch, so an accepted flow is
  never lost; a flow the database refuses for good is isolated (the batch is
  halved until it is found), logged and counted. Every `prune_interval`
  seconds it prunes what is past the retention (flows and samples pruned are
  counted in its status; with no retention it does not run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from skygraph.topology.cache import LRU
from skygraph.topology.flowschema import (
    AGENT_DISCONNECTED_AT,
    BACKFILL,
    BY_UUIDS,
    CLEAR,
    DEFAULT_MAX_RAW_PACKETS,
    LINK_CHILDREN,
    LINK_NODES,
    LINK_PARENTS,
    MARK_AGENT_GONE,
    PACKETS_OF,
    PRUNE,
    PRUNE_SAMPLES,
    SAMPLES_OF,
    WRITE_PACKETS,
    FlowError,
    flow_json,
    newest,
    packet_json,
    sample_json,
    without_packets,
    write_row,
)
from skygraph.topology.flowwrite import UPSERT, WRITE_SAMPLES, sample_rows, upsert_rows
from skygraph.topology.graph import wall_clock_ms
from skygraph.topology.retry import next_batch, write_retrying
from skygraph.topology.store import GraphStore

log = logging.getLogger("skygraph.flows")

DEFAULT_RETENTION_S = 3600.0
LINKED_MEMORY = 200_000  # flows the store remembers as fully linked
PRUNE_CHUNK = 2_000  # flows deleted per transaction
PUT_YIELD = 100  # flows validated by `FlowSink.put` between two turns of the writer
Row = dict[str, Any]
Publish = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one prune deleted: flows (with their links, packets and any samples
    left) and samples past the retention."""
    flows: int = 0
    samples: int = 0


class FlowStore:
    """Flow reads and writes over a `GraphStore` (which owns the connection)."""

    def __init__(self, store: GraphStore, retention_s: float = DEFAULT_RETENTION_S,
                 linked_memory: int = LINKED_MEMORY,
                 max_raw_packets: int = DEFAULT_MAX_RAW_PACKETS,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self.store = store
        self.retention_s = retention_s  # <= 0: keep everything
        self.max_raw_packets = max_raw_packets  # kept per flow (a larger Index is dropped)
        self.clock = clock  # ms epoch: the write time stamped on flows and samples
        self._linked: LRU[bool] = LRU(linked_memory)
        self._backfilled = False

    async def write(self, rows: Sequence[Row]) -> int:
        """Write rows of `flowschema.write_row` in one transaction: the newest
        update of each flow (an update older than the stored one is skipped),
        then the links not made yet, the metric sample and raw packets of every
        update; the flows written and their new samples get `clock()` as
        `UpdatedAt`, where their retention starts. Returns how many flows were
        in the batch. Raises the driver's errors (the sink retries them)."""
        samples = [r["sample"] for r in rows if r.get("sample") is not None]
        packets = [p for r in rows for p in r.get("packets") or ()]
        rows = newest(rows)
        if not rows:
            return 0
        need = [r for r in rows if self._linked.get(r["UUID"]) is None]
        nodes = [{"UUID": r["UUID"], "tid": r["tid"]} for r in need if r["tid"]]
        parents = [{"UUID": r["UUID"], "parent": r["parent"]} for r in need if r["parent"]]
        now = self.clock()
        statements: list[tuple[str, dict[str, Any]]] = [
            (UPSERT, {"rows": upsert_rows(rows, now)})]
        if nodes:
            statements.append((LINK_NODES, {"rows": nodes}))
        if parents:
            statements.append((LINK_PARENTS, {"rows": parents}))
        if need:
            statements.append((LINK_CHILDREN, {"uuids": [r["UUID"] for r in need]}))
        if samples:
            statements.append((WRITE_SAMPLES, {"rows": sample_rows(samples, now)}))
        if packets:
            statements.append((WRITE_PACKETS, {"rows": packets}))
        results = iter((await self.store.run_all(statements))[1:])
        on_node = {rec["uuid"] for rec in next(results)} if nodes else set()
        in_parent = {rec["uuid"] for rec in next(results)} if parents else set()
        for r in need:
            if (not r["tid"] or r["UUID"] in on_node) and (not r["parent"] or r["UUID"] in in_parent):
                self._linked.put(r["UUID"], True)
        return len(rows)

    async def flows(self, uuids: Sequence[str]) -> list[dict[str, Any]]:
        """Flows by UUID, in Skydive's JSON shape (missing ones are left out)."""
        if not uuids:
            return []
        records = await self.store.read(BY_UUIDS, {"uuids": list(dict.fromkeys(uuids))})
        return [flow_json(r["p"]) for r in records]

    async def flow(self, uuid: str) -> dict[str, Any] | None:
        found = await self.flows([uuid])
        return found[0] if found else None

    async def metrics(self, uuids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The stored LastUpdateMetric samples of flows (FlowMetric JSON, by `Last`)."""
        records = await self.store.read(SAMPLES_OF, {"uuids": list(dict.fromkeys(uuids))})
        out: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            out.setdefault(r["uuid"], []).append(sample_json(r["p"]))
        for samples in out.values():
            samples.sort(key=lambda m: (m["Last"], m["Start"]))
        return out

    async def raw_packets(self, uuids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The stored raw packets of flows (RawPacket JSON, by `Index`)."""
        records = await self.store.read(PACKETS_OF, {"uuids": list(dict.fromkeys(uuids))})
        out: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            out.setdefault(r["uuid"], []).append(packet_json(r["p"]))
        for packets in out.values():
            packets.sort(key=lambda p: p["Index"])
        return out

    async def mark_agent_gone(self, host: str, since_ms: int, now_ms: int) -> int:
        """Mark the flows of `host` seen since `since_ms` with `AgentDisconnectedAt`;
        return how many were marked."""
        records = await self.store.run(MARK_AGENT_GONE, {"host": host, "since": since_ms,
                                                         "now": now_ms})
        return int(records[0]["marked"]) if records else 0

    async def prune(self, now_ms: int) -> Pruned:
        """Delete the metric samples, then the flows, last written more than
        `retention_s` before `now_ms` (a flow's links, samples and raw packets go
        with it), whatever their packet times. A retention <= 0 keeps all."""
        if self.retention_s <= 0:
            return Pruned()
        if not self._backfilled:
            for cypher in BACKFILL:
                if done := await self._chunks(cypher, {}):
                    log.info("flows: %d rows written without a write time get their Last "
                             "as one", done)
            self._backfilled = True
        cutoff = now_ms - int(self.retention_s * 1000)
        samples = await self._chunks(PRUNE_SAMPLES, {"cutoff": cutoff})
        if samples:
            log.info("flows: pruned %d metric samples not written since %d (retention %gs)",
                     samples, cutoff, self.retention_s)
        total = await self._chunks(PRUNE, {"cutoff": cutoff})
        if total:
            # a pruned flow that comes back (an old update replayed) is new again
            self._linked.clear()
            log.info("flows: pruned %d flows not written since %d (retention %gs)", total,
                     cutoff, self.retention_s)
        return Pruned(total, samples)

    async def clear(self) -> int:
        """Delete every flow, sample and raw packet (tests, `graph import --replace`);
        returns how many flows."""
        self._linked.clear()
        counts = [await self._chunks(cypher, {}) for cypher in CLEAR]
        return counts[-1]

    async def _chunks(self, cypher: str, params: dict[str, Any]) -> int:
        """Run a statement doing at most $chunk rows (it returns how many, `n`) until
        it does fewer; returns the total."""
        total = 0
        while True:
            records = await self.store.run(cypher, {**params, "chunk": PRUNE_CHUNK})
            done = int(records[0]["n"]) if records else 0
            total += done
            if done < PRUNE_CHUNK:
                return total


# ==================================================================== sink

@dataclass
class FlowSinkStats:
    accepted: int = 0  # flows taken into the queue
    written: int = 0  # flows the database took (an update older than the stored one included)
    batches: int = 0
    retries: int = 0
    invalid: int = 0  # documents refused at `put` (no UUID, reserved or mistyped field)
    raw_packets_dropped: int = 0  # raw packets past the store's per-flow bound
    rejected: int = 0  # flows the database refused for good
    pruned: int = 0  # flows the retention removed (not written within flow.retention)
    pruned_samples: int = 0  # metric samples the retention removed
    last_error: str = ""
    rejected_details: list[str] = field(default_factory=list)


class FlowSink:
    """Accepts agents' flow updates, publishes them, writes them in batches."""

    def __init__(self, flows: FlowStore, *, max_batch: int = 1000, max_delay: float = 1.0,
                 max_queue: int = 100_000, max_backoff: float = 5.0,
                 prune_interval: float = 60.0, publish: Publish | None = None,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self.flows = flows
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.max_backoff = max_backoff
        self.prune_interval = prune_interval
        self.publish = publish
        self.clock = clock
        self.stats = FlowSinkStats()
        self._queue: asyncio.Queue[Row] = asyncio.Queue(max_queue)
        self._tasks: list[asyncio.Task[None]] = []
        self._done = asyncio.Condition()
        self._committed = 0

    async def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run(), name="skygraph-flow-sink")]
            if self.prune_interval > 0 and self.flows.retention_s > 0:
                self._tasks.append(asyncio.create_task(self._prune_loop(),
                                                       name="skygraph-flow-prune"))

    async def stop(self, timeout: float = 30.0) -> None:
        """Write what was accepted (up to `timeout`), then stop."""
        if not self._tasks:
            return
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            log.error("flows: %d accepted flows not written at stop (database unreachable: %s)",
                      self.stats.accepted - self._committed, self.stats.last_error)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def put(self, host_id: str, flows: Sequence[Mapping[str, Any]]) -> int:
        """Accept flow updates (Skydive flow JSON) from agent `host_id`; waits while
        the queue is full. Invalid documents are logged and counted, not raised.
        Returns how many were accepted."""
        now = self.clock()
        accepted = 0
        for flow in flows:
            try:
                row = write_row(flow, host_id, now, self.flows.max_raw_packets)
            except FlowError as exc:
                self.stats.invalid += 1
                log.error("flows: from %s: %s", host_id, exc)
                continue
            if row["dropped"]:
                self.stats.raw_packets_dropped += row["dropped"]
                log.warning("flows: from %s: flow %s: %d raw packets past the limit of %d "
                            "per flow dropped", host_id, row["UUID"], row["dropped"],
                            self.flows.max_raw_packets)
            if self.publish is not None:
                await self.publish(without_packets(flow))
            await self._queue.put(row)
            self.stats.accepted += 1
            accepted += 1
            if accepted % PUT_YIELD == 0:
                # A large put (a pcap import) lets the writer send what is queued,
                # so validation here overlaps the database's work on the last batch.
                await asyncio.sleep(0)
        return accepted

    async def flush(self) -> None:
        """Return when every flow accepted so far is written (or refused for good)."""
        target = self.stats.accepted
        async with self._done:
            await self._done.wait_for(lambda: self._committed >= target)

    async def agent_gone(self, host: str, active_ms: int) -> int:
        """The agent of `host` went away: once what it sent is written, mark its flows
        seen within the last `active_ms` (flow.expire) as possibly cut short."""
        await self.flush()
        now = self.clock()
        marked = await self.flows.mark_agent_gone(host, now - active_ms, now)
        if marked:
            log.info("flows: agent %s gone: %d flows marked %s", host, marked,
                     AGENT_DISCONNECTED_AT)
        return marked

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def status(self) -> dict[str, Any]:
        """Counters for `/api/status`, and the retention in force (s, 0: keep all)."""
        doc: dict[str, Any] = {k: v for k, v in vars(self.stats).items()
                               if k != "rejected_details"}
        doc["queued"] = self.queued
        doc["retention"] = max(self.flows.retention_s, 0)
        return doc

    # ------------------------------------------------------------ internals
    async def _run(self) -> None:
        while True:
            batch = await next_batch(self._queue, self.max_batch, self.max_delay)
            await self._write(batch)
            self.stats.batches += 1
            async with self._done:
                self._committed += len(batch)
                self._done.notify_all()

    async def _write(self, batch: list[Row]) -> None:
        async def write(part: list[Row]) -> int:
            await self.flows.write(part)
            return len(part)
        self.stats.written += await write_retrying(
            batch, write, stats=self.stats, what="flows", describe=lambda r: f"flow {r['UUID']}",
            merge=int.__add__, refused=0, permanent=Exception, max_backoff=self.max_backoff)

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(self.prune_interval)
            try:
                pruned = await self.flows.prune(self.clock())
                self.stats.pruned += pruned.flows
                self.stats.pruned_samples += pruned.samples
            except Exception as exc:  # the next round tries again
                self.stats.last_error = f"prune: {type(exc).__name__}: {exc}"
                log.warning("flows: prune failed (%s); next in %.0fs", self.stats.last_error,
                            self.prune_interval)
