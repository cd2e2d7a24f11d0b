"""The agent's live captures: which capture runs on which node, and what the
node says about it.

Owns starting and stopping capture sources (`skygraph.capture.sources`, one
per capture type, chosen from the capture's `Type`) on nodes of the agent's
graph, the
namespace a node lives in (the netns node nearest to it on the shortest
ownership path from the host node, its `Path`; the host's namespace when no
netns node is on the way), and the `Captures` metadata list Skydive puts on
captured nodes (SPEC §1b): one entry per capture with `ID`, `State`
(`active`/`error`), `Name`, `Description`, `BPFFilter`, `Type`, `Error`,
the packet counters, refreshed every `stats_update` seconds, and what the
type adds (`PCAPSocket`, `SFlowSocket`, ...).  A start
that fails leaves an `error` entry with the reason; a node that leaves the
graph has its captures stopped.

Runs on the agent's event loop; the blocking parts (BPF compilation, opening
the ring in a namespace, joining a reader thread) go to worker threads.
`on_flows(capture_id, flows)` is called from capture reader threads.
`set_captures_metadata(node_id, entries)` is awaited on the loop; an empty
list means the node has no capture left (delete its `Captures` key).
`set_node_metadata(node_id, key, value)` (value None: delete the key) is
how a capture type sets other metadata of its node (`SFlow` counters); the
manager calls it on the loop, in the order the capture asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skygraph.capture.afpacket import RingGeometry
from skygraph.capture.options import CaptureOptions, OptionError, TableSettings
from skygraph.capture.sources import source_for
from skygraph.capture.sources.base import (
    AgentCaptureSettings,
    CaptureError,
    CaptureSource,
    CaptureSpec,
    CaptureStats,
    SourceContext,
    TargetFactory,
)
from skygraph.topology.flow import Flow
from skygraph.topology.graph import Graph
from skygraph.topology.model import OWNERSHIP

log = logging.getLogger("skygraph.capture.manager")

ACTIVE, ERROR = "active", "error"

OnFlows = Callable[[str, list[Flow]], None]
SetCapturesMetadata = Callable[[str, list[dict[str, Any]]], Awaitable[None]]
SetNodeMetadata = Callable[[str, str, Any], Awaitable[None]]  # node id, key, value (None: delete)


class NamespaceError(LookupError):
    """The node's namespace cannot be determined from the graph."""


def ownership_path(graph: Graph, source: str, target: str) -> list[str] | None:
    """Node ids of the shortest `ownership` path from `source` down to `target`."""
    if source not in graph.nodes or target not in graph.nodes:
        return None
    previous: dict[str, str | None] = {source: None}
    todo = deque([source])
    while todo:
        current = todo.popleft()
        if current == target:
            path = [current]
            while (parent := previous[path[-1]]) is not None:
                path.append(parent)
            return path[::-1]
        for edge in graph.edges_of(current):
            if edge.relation_type == OWNERSHIP and edge.Parent == current \
                    and edge.Child not in previous:
                previous[edge.Child] = current
                todo.append(edge.Child)
    return None


def namespace_of(graph: Graph, host_node_id: str, node_id: str,
                 root_path: str | None = None) -> str | None:
    """The namespace file of a node (SPEC §1b `NamespaceFromNode`): the `Path` of the
    netns node nearest to it on its ownership path from the host; `root_path` (the
    namespace mapped to the host node, None: the agent's own) when there is none."""
    path = ownership_path(graph, host_node_id, node_id)
    if path is None:
        raise NamespaceError(f"node {node_id} is not owned (directly or not) by host node "
                             f"{host_node_id}")
    for ident in reversed(path[:-1]):
        meta = graph.nodes[ident].Metadata
        if meta.get("Type") == "netns":
            ns_path = meta.get("Path")
            if not ns_path:
                raise NamespaceError(f"namespace node {ident} has no Path")
            return str(ns_path)
    return root_path


@dataclass
class _Capture:
    capture_id: str
    node_id: str
    entry: dict[str, Any]
    live: CaptureSource | None = None
    capture: Mapping[str, Any] | None = None  # kept on a failed start, to retry it
    seen: dict[str, Any] | None = None  # node metadata (but Captures) at the failure


def _node_state(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if k != "Captures"}


def _entry(capture: Mapping[str, Any], state: str, error: str = "",
           stats: CaptureStats | None = None,
           extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A `Captures` list entry (Skydive CaptureMetadata: empty strings left out,
    counters always present)."""
    stats = stats or CaptureStats()
    entry: dict[str, Any] = {
        "ID": str(capture.get("UUID") or capture.get("ID") or ""), "State": state,
        "Name": str(capture.get("Name") or ""),
        "Description": str(capture.get("Description") or ""),
        "BPFFilter": str(capture.get("BPFFilter") or ""),
        "Type": str(capture.get("Type") or "afpacket"), "Error": error,
    }
    entry = {k: v for k, v in entry.items() if v}
    entry.update(extra or {})
    entry.update(PacketsReceived=stats.packets_received, PacketsDropped=stats.packets_dropped,
                 PacketsIfDropped=stats.packets_if_dropped)
    return entry


class CaptureManager:
    def __init__(self, graph: Graph, host_node_id: str, settings: TableSettings,
                 exclude: Sequence[tuple[str, int]], on_flows: OnFlows,
                 set_captures_metadata: SetCapturesMetadata, *, root_path: str | None = None,
                 stats_update: float = 1.0, options: CaptureOptions | None = None,
                 geometry: RingGeometry | None = None,
                 agent: AgentCaptureSettings | None = None,
                 set_node_metadata: SetNodeMetadata | None = None,
                 make_target: TargetFactory | None = None) -> None:
        self.graph = graph
        self.host_node_id = host_node_id
        self.settings = settings
        self.exclude = list(exclude)
        self.on_flows = on_flows
        self.set_captures_metadata = set_captures_metadata
        self.root_path = root_path
        self.stats_update = stats_update
        self.options = options or CaptureOptions()
        self.geometry = geometry
        self.agent = agent or AgentCaptureSettings()
        self.set_node_metadata = set_node_metadata
        self.make_target = make_target
        self._loop: asyncio.AbstractEventLoop | None = None
        self._metadata_writes: asyncio.Queue[tuple[str, str, Any]] | None = None
        self._metadata_writer: asyncio.Task[None] | None = None
        # node id -> capture id -> capture, in start order (the metadata list order)
        self._nodes: dict[str, dict[str, _Capture]] = {}
        self._published: dict[str, list[dict[str, Any]]] = {}  # node id -> last written list
        self._lock = asyncio.Lock()
        self._refresher: asyncio.Task[None] | None = None

    # ---- queries -----------------------------------------------------------
    def captures(self, node_id: str | None = None) -> list[dict[str, Any]]:
        """Current `Captures` entries (of one node, or of all)."""
        nodes = [node_id] if node_id is not None else list(self._nodes)
        return [dict(c.entry) for n in nodes for c in self._nodes.get(n, {}).values()]

    def stats(self) -> dict[tuple[str, str], CaptureStats]:
        """(capture id, node id) -> counters of every running capture."""
        return {(c.capture_id, c.node_id): c.live.stats()
                for caps in self._nodes.values() for c in caps.values() if c.live is not None}

    # ---- commands --------------------------------------------------------------
    async def start(self, capture: Mapping[str, Any], node_id: str) -> dict[str, Any]:
        """Start `capture` (Skydive Capture JSON) on `node_id`; return its `Captures`
        entry (`State` error with the reason when it could not start)."""
        async with self._lock:
            self._ensure_refresher()
            self._loop = asyncio.get_running_loop()
            capture_id = str(capture.get("UUID") or capture.get("ID") or "")
            current = self._nodes.get(node_id, {}).get(capture_id)
            if current is not None and current.entry["State"] == ACTIVE:
                return dict(current.entry)
            node = self.graph.nodes.get(node_id)
            if node is None:  # nothing to write the entry on: only returned
                return _entry(capture, ERROR, str(CaptureError(
                    node_id, "", "no such node in the agent's graph")))
            live: CaptureSource | None = None
            try:
                if not capture_id:
                    raise CaptureError(node_id, node.name, "the capture has no UUID")
                try:
                    spec = CaptureSpec.from_json(capture, self.options)
                except (OptionError, TypeError, ValueError) as exc:
                    raise CaptureError(node_id, node.name, str(exc)) from exc
                try:
                    netns = namespace_of(self.graph, self.host_node_id, node_id, self.root_path)
                except NamespaceError as exc:
                    raise CaptureError(node_id, node.name, str(exc)) from exc
                live = source_for(self._context(spec, node_id, node.Metadata, netns))
                await asyncio.to_thread(live.start)
                entry = _entry(capture, ACTIVE, extra=live.metadata())
                log.info("capture %s started on %s (%s)", capture_id, node_id, node.name)
            except (CaptureError, OptionError) as exc:
                live = None
                entry = _entry(capture, ERROR, str(exc))
                log.warning("capture %s on %s: %s", capture_id, node_id, exc)
            except Exception as exc:  # a bug: still an error entry, not a dead command loop
                log.exception("capture %s on %s: not started", capture_id, node_id)
                live = None
                entry = _entry(capture, ERROR, str(CaptureError(node_id, node.name, repr(exc))))
            cap = _Capture(capture_id, node_id, entry, live)
            if live is None:
                cap.capture, cap.seen = dict(capture), _node_state(node.Metadata)
            self._nodes.setdefault(node_id, {})[capture_id] = cap
            await self._publish(node_id)
            return dict(entry)

    async def stop(self, capture_id: str, node_id: str) -> bool:
        """Stop a capture on a node (final flows go to `on_flows`) and remove its entry."""
        async with self._lock:
            found = await self._remove(capture_id, node_id)
            if found:
                await self._publish(node_id)
            return found

    async def stop_all(self) -> None:
        """Stop every capture and clear the `Captures` of the nodes still present."""
        async with self._lock:
            for node_id in list(self._nodes):
                for capture_id in list(self._nodes.get(node_id, {})):
                    await self._remove(capture_id, node_id)
                await self._publish(node_id)
            if self._refresher is not None:
                self._refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._refresher
                self._refresher = None
        await self.flush_metadata()
        if self._metadata_writer is not None:
            self._metadata_writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._metadata_writer
            self._metadata_writer = None

    async def node_removed(self, node_id: str) -> None:
        """Stop the captures of a node that left the graph (nothing is published)."""
        async with self._lock:
            for capture_id in list(self._nodes.get(node_id, {})):
                await self._remove(capture_id, node_id)

    async def refresh(self) -> None:
        """One statistics round: counters into the entries, readers that ended
        into `error` entries, captures of vanished nodes stopped, and failed
        starts retried on nodes that changed since (e.g. came up)."""
        retry: list[tuple[Mapping[str, Any], str]] = []
        async with self._lock:
            for node_id in list(self._nodes):
                node = self.graph.nodes.get(node_id)
                if node is None:
                    for capture_id in list(self._nodes[node_id]):
                        await self._remove(capture_id, node_id)
                    continue
                retry += [(c.capture, node_id) for c in self._nodes[node_id].values()
                          if c.capture is not None and c.seen != _node_state(node.Metadata)]
                for cap in self._nodes[node_id].values():
                    live = cap.live
                    if live is None:
                        continue
                    stats = live.stats()
                    cap.entry.update(live.metadata())
                    cap.entry.update(PacketsReceived=stats.packets_received,
                                     PacketsDropped=stats.packets_dropped,
                                     PacketsIfDropped=stats.packets_if_dropped)
                    if not live.running and cap.entry["State"] == ACTIVE:
                        cap.entry["State"] = ERROR
                        cap.entry["Error"] = live.error or "capture ended"
                await self._publish(node_id)
        for capture, node_id in retry:
            await self.start(capture, node_id)

    # ---- internals -----------------------------------------------------------------
    def _context(self, spec: CaptureSpec, node_id: str, metadata: Mapping[str, Any],
                 netns: str | None) -> SourceContext:
        extra = {"geometry": self.geometry} if self.geometry is not None else {}
        return SourceContext(spec, node_id, dict(metadata), netns, self.settings, self.exclude,
                             self._sink(spec.id), agent=self.agent,
                             set_metadata=self._metadata_setter(node_id),
                             make_target=self.make_target, extra=extra)

    def _metadata_setter(self, node_id: str) -> Callable[[str, Any], None]:
        """A thread-safe `set_metadata` for the captures of `node_id`: writes are
        queued to the loop and applied in order by one task."""
        loop = self._loop

        def put(key: str, value: Any) -> None:
            if loop is None or loop.is_closed():
                return
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._queue_metadata, node_id, key, value)
        return put

    def _queue_metadata(self, node_id: str, key: str, value: Any) -> None:
        if self.set_node_metadata is None:
            return
        if self._metadata_writes is None:
            self._metadata_writes = asyncio.Queue()
        if self._metadata_writer is None or self._metadata_writer.done():
            self._metadata_writer = asyncio.create_task(self._write_metadata(),
                                                        name="capture node metadata")
        self._metadata_writes.put_nowait((node_id, key, value))

    async def _write_metadata(self) -> None:
        queue = self._metadata_writes
        assert queue is not None and self.set_node_metadata is not None
        while True:
            node_id, key, value = await queue.get()
            try:
                if node_id in self.graph.nodes:
                    await self.set_node_metadata(node_id, key, value)
            except Exception:
                log.exception("metadata %s of node %s not written", key, node_id)
            finally:
                queue.task_done()

    async def flush_metadata(self) -> None:
        """Wait until the node metadata the captures asked for is written."""
        await asyncio.sleep(0)  # writes queued from threads just before this call
        if self._metadata_writes is not None and self._metadata_writer is not None \
                and not self._metadata_writer.done():
            await self._metadata_writes.join()

    def _sink(self, capture_id: str) -> Callable[[list[Flow]], None]:
        on_flows = self.on_flows

        def sink(flows: list[Flow]) -> None:
            on_flows(capture_id, flows)
        return sink

    async def _remove(self, capture_id: str, node_id: str) -> bool:
        caps = self._nodes.get(node_id)
        if caps is None or capture_id not in caps:
            return False
        cap = caps.pop(capture_id)
        if cap.live is not None:
            await asyncio.to_thread(cap.live.stop)
            log.info("capture %s stopped on %s", capture_id, node_id)
        if not caps:
            self._nodes.pop(node_id, None)
        return True

    async def _publish(self, node_id: str) -> None:
        """Write the node's `Captures` if they changed since the last write."""
        caps = self._nodes.get(node_id, {})
        entries = [dict(c.entry) for c in caps.values()]
        previous = self._published.get(node_id)
        if entries == previous or (not entries and previous is None):
            return
        if node_id not in self.graph.nodes:
            self._published.pop(node_id, None)
            return
        try:
            await self.set_captures_metadata(node_id, entries)
        except Exception:
            log.exception("Captures metadata of node %s not written", node_id)
            return
        if entries:
            self._published[node_id] = entries
        else:
            self._published.pop(node_id, None)

    def _ensure_refresher(self) -> None:
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh_loop(), name="capture stats")

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.stats_update)
            try:
                await self.refresh()
            except Exception:
                log.exception("capture statistics round failed")
