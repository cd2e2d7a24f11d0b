"""The netns probe: watches the namespace run directory with inotify and
keeps one `netns` node (owned by the host) and one netlink probe per network
namespace; the root namespace maps to the host node (SPEC §1a).

Bind mounts of one namespace under several names count once (by device and
inode of the nsfs file); the node goes when its last name does, with
everything it owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from skygraph.probes.elements import Writer
from skygraph.probes.netns import inotify, namespace
from skygraph.probes.netns.namespace import NsId
from skygraph.probes.netns.netlink import NetlinkProbe
from skygraph.topology import ids
from skygraph.topology.graph import wall_clock_ms

log = logging.getLogger("skygraph.probes.netns")

# How long a new file in the run directory may take to become a namespace
# (`ip netns add` creates the file, then bind-mounts the namespace on it).
MOUNT_WAIT = 2.0


@dataclass
class Registered:
    node_id: str
    probe: NetlinkProbe
    paths: list[str] = field(default_factory=list)


class NetnsProbe:
    def __init__(self, writer: Writer, host_node_id: str, run_path: str = "/var/run/netns",
                 root_path: str | None = None, metrics_update: float = 30.0,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self.writer = writer
        self.host_node_id = host_node_id
        self.run_path = run_path
        self.root_path = root_path      # the namespace mapped to the host (None: ours)
        self.metrics_update = metrics_update
        self.clock = clock
        self.root = NetlinkProbe(writer, host_node_id, root_path, None, self,
                                 metrics_update, clock)
        self.namespaces: dict[NsId, Registered] = {}
        self._by_path: dict[str, NsId] = {}
        self._watch: inotify.DirectoryWatch | None = None
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()

    @property
    def root_id(self) -> NsId:
        return namespace.ns_id(self.root_path or namespace.self_ns_path())

    async def start(self) -> None:
        await self.root.start()
        os.makedirs(self.run_path, exist_ok=True)
        self._watch = inotify.DirectoryWatch(self.run_path, self._on_event)
        self._watch.start()
        for name in sorted(os.listdir(self.run_path)):
            await self.register(os.path.join(self.run_path, name), wait=0)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        for t in list(self._pending.values()):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for reg in list(self.namespaces.values()):
            await reg.probe.stop()
        await self.root.stop()

    def probes(self) -> list[NetlinkProbe]:
        return [self.root, *(r.probe for r in self.namespaces.values())]

    # ------------------------------------------------------------ events
    def _on_event(self, event: inotify.Event) -> None:
        path = os.path.join(self.run_path, event.name)
        if event.mask & (inotify.IN_CREATE | inotify.IN_MOVED_TO):
            self._spawn(path, self.register(path))
        elif event.mask & (inotify.IN_DELETE | inotify.IN_MOVED_FROM):
            self._spawn(path, self.unregister(path))

    def _spawn(self, path: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` after the previous event of the same path (in order per path)."""
        prev = self._pending.get(path)

        async def chained() -> None:
            if prev is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await prev
            try:
                await coro
            except Exception:
                log.exception("netns %s: not applied", path)
            finally:
                if self._pending.get(path) is task:
                    del self._pending[path]
        task = asyncio.create_task(chained(), name=f"netns {path}")
        self._pending[path] = task

    # ------------------------------------------------------------ registry
    async def register(self, path: str, wait: float = MOUNT_WAIT) -> None:
        """Add the namespace bind-mounted at `path` (waiting up to `wait` s for the mount)."""
        ident = await self._mounted(path, wait)
        if ident is None or ident == self.root_id:
            return
        async with self._lock:
            if path in self._by_path:
                return
            reg = self.namespaces.get(ident)
            if reg is not None:
                reg.paths.append(path)
                self._by_path[path] = ident
                return
            name = os.path.basename(path)
            node_id = ids.gen_id(self.writer.host_id, "netns", path)
            await self.writer.put(node_id, {"Name": name, "Type": "netns", "Path": path,
                                            "Inode": ident.ino, "Device": ident.dev})
            await self.writer.own(self.host_node_id, node_id)
            probe = NetlinkProbe(self.writer, node_id, path, name, self, self.metrics_update,
                                 self.clock)
            self.namespaces[ident] = Registered(node_id, probe, [path])
            self._by_path[path] = ident
            try:
                await probe.start()
            except OSError as exc:
                log.warning("netns %s: netlink probe not started: %s", path, exc)
            log.info("netns %s registered", path)

    async def _mounted(self, path: str, wait: float) -> NsId | None:
        deadline = asyncio.get_running_loop().time() + wait
        parent = os.path.dirname(path)
        while True:
            try:
                if os.stat(path).st_dev != os.stat(parent).st_dev:
                    return namespace.ns_id(path)
            except OSError:
                return None  # gone already
            if asyncio.get_running_loop().time() >= deadline:
                return None
            await asyncio.sleep(0.01)

    async def unregister(self, path: str) -> None:
        async with self._lock:
            ident = self._by_path.pop(path, None)
            if ident is None:
                return
            reg = self.namespaces[ident]
            reg.paths.remove(path)
            for p in self.probes():
                p.forget_nsid(path)
            if reg.paths:
                return
            del self.namespaces[ident]
            await reg.probe.stop()
            await self.writer.delete_tree(reg.node_id)
            log.info("netns %s unregistered", path)

    # ------------------------------------------------------------ peers
    async def peer(self, probe: NetlinkProbe, nsid: int) -> NetlinkProbe | None:
        """The probe of the namespace that `probe`'s namespace calls `nsid`."""
        candidates: list[tuple[str, NetlinkProbe]] = [
            (self.root_path or namespace.self_ns_path(), self.root)]
        candidates += [(r.paths[0], r.probe) for r in self.namespaces.values()]
        for path, other in candidates:
            if other is probe:
                continue
            if await probe.nsid_of(path) == nsid:
                return other
        return None
