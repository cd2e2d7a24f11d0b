"""The agent's packet injections: frames (skygraph.capture.inject) sent from an
interface, inside its namespace, through an AF_PACKET socket, `Interval` ms
apart; and the `PacketInjections` metadata on the source node while they run
(SPEC §1g): one entry per injection with `ID`, `Type`, the addresses and
ports, `ICMPID`, `Count`, `Interval`, `TrackingID` and `PacketsSent`; an
injection that fails keeps an entry with `State` error and the `Error` until
it is deleted. A finished injection's entry is removed.

Runs on the agent's event loop; each injection sends from a thread of its own.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from skygraph.capture.inject import Injection, InjectionError, frames
from skygraph.capture.manager import NamespaceError, namespace_of
from skygraph.topology.graph import Graph
from skygraph.topology.netns import run_in

log = logging.getLogger("skygraph.capture.injector")

SetMetadata = Callable[[str, list[dict[str, Any]]], Awaitable[None]]


@dataclass
class _Running:
    injection: Injection
    node_id: str
    entry: dict[str, Any]
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    sent: int = 0


def _entry(inj: Injection, tracking: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ID": inj.id, "Type": inj.type, "SrcIP": inj.src_ip, "DstIP": inj.dst_ip,
        "SrcMAC": inj.src_mac, "DstMAC": inj.dst_mac, "SrcPort": inj.src_port,
        "DstPort": inj.dst_port, "ICMPID": inj.icmp_id, "Count": inj.count,
        "Interval": inj.interval_ms, "State": "running", "PacketsSent": 0,
    }
    if tracking:
        entry["TrackingID"] = tracking
    return {k: v for k, v in entry.items() if v not in ("", None)}


def open_socket(netns: str | None, if_name: str) -> socket.socket:
    """An AF_PACKET socket bound to `if_name` in the namespace `netns`."""
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.bind((if_name, 0))
        except OSError:
            sock.close()
            raise
        return sock
    return run_in(netns, make)


class InjectionManager:
    def __init__(self, graph: Graph, host_node_id: str, set_metadata: SetMetadata, *,
                 root_path: str | None = None) -> None:
        self.graph = graph
        self.host_node_id = host_node_id
        self.set_metadata = set_metadata
        self.root_path = root_path
        self._running: dict[tuple[str, str], _Running] = {}   # (injection id, node id)
        self._lock = asyncio.Lock()

    def entries(self, node_id: str) -> list[dict[str, Any]]:
        return [dict(r.entry, PacketsSent=r.sent) for (_, n), r in self._running.items()
                if n == node_id]

    async def start(self, data: Mapping[str, Any], node_id: str) -> dict[str, Any]:
        """Start sending; return the node's entry for it (`State` error with the reason
        when it could not start)."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            ident = str(data.get("UUID") or "")
            key = (ident, node_id)
            if key in self._running:
                return dict(self._running[key].entry)
            node = self.graph.nodes.get(node_id)
            name = str(node.Metadata.get("Name") or "") if node else ""
            try:
                inj = Injection.from_json(data)
                if node is None:
                    raise InjectionError(f"Src: node {node_id} is not in this agent's graph")
                if not name:
                    raise InjectionError(f"Src: node {node_id} has no Name")
                rng = random.Random()
                # the analyzer computed it from the same frames (skygraph.api.injections)
                entry = _entry(inj, str(data.get("TrackingID") or ""))
                try:
                    netns = namespace_of(self.graph, self.host_node_id, node_id, self.root_path)
                except NamespaceError as exc:
                    raise InjectionError(f"Src: {exc}") from None
                try:
                    sock = await asyncio.to_thread(open_socket, netns, name)
                except OSError as exc:
                    raise InjectionError(f"Src: cannot send on {name} (node {node_id}): "
                                         f"{exc.strerror or exc}") from None
            except InjectionError as exc:
                entry = {"ID": ident, "State": "error", "Error": str(exc)}
                log.warning("injection %s on %s: %s", ident, node_id, exc)
                self._running[key] = _Running(Injection(ident), node_id, entry)
                await self._publish(node_id)
                return dict(entry)
            run = _Running(inj, node_id, entry)
            self._running[key] = run

            def done() -> None:
                loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._finished(key)))
            run.thread = threading.Thread(target=self._send, args=(run, sock, rng, done),
                                          name=f"inject {ident}", daemon=True)
            run.thread.start()
            log.info("injection %s: %d %s packets from %s (%s)", ident, inj.count, inj.type,
                     node_id, name)
            await self._publish(node_id)
            return dict(entry)

    @staticmethod
    def _send(run: _Running, sock: socket.socket, rng: random.Random,
              done: Callable[[], None]) -> None:
        try:
            for frame in frames(run.injection, rng):
                if run.stop.is_set():
                    break
                if run.sent and run.injection.interval_ms and run.stop.wait(
                        run.injection.interval_ms / 1000):
                    break
                try:
                    sock.send(frame)
                except OSError as exc:
                    run.entry.update(State="error", Error=f"send: {exc.strerror or exc}")
                    log.warning("injection %s: send failed: %s", run.injection.id, exc)
                    return
                run.sent += 1
        finally:
            sock.close()
            done()

    async def _finished(self, key: tuple[str, str]) -> None:
        async with self._lock:
            run = self._running.get(key)
            if run is None or run.entry.get("State") == "error":
                if run is not None:
                    await self._publish(key[1])   # the error stays until deleted
                return
            del self._running[key]
            log.info("injection %s on %s: %d packets sent", key[0], key[1], run.sent)
            await self._publish(key[1])

    async def stop(self, injection_id: str, node_id: str) -> None:
        async with self._lock:
            run = self._running.pop((injection_id, node_id), None)
        if run is None:
            return
        run.stop.set()
        if run.thread is not None:
            await asyncio.to_thread(run.thread.join, 10)
        async with self._lock:
            await self._publish(node_id)

    async def stop_all(self) -> None:
        for injection_id, node_id in list(self._running):
            await self.stop(injection_id, node_id)

    async def _publish(self, node_id: str) -> None:
        if node_id in self.graph.nodes:
            await self.set_metadata(node_id, self.entries(node_id))
