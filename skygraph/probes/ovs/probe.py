"""The ovsdb probe: applies what OVSDB says (`mapping.desired`) to the graph,
merging each OVS interface with the netlink node of the same netdev
(SPEC §1a): an internal or system port is one node that carries both the
netlink keys and the OVS keys, whichever probe saw it first.

Ownership: host -> ovsbridge -> ovsport; an interface is owned by the bridge
only while nothing else owns it (netlink takes internal and system ports into
their namespace). layer2: bridge -> port, port -> interface, patch peers
(`Type: patch`). Every snapshot is diffed against the last one applied, so a
reconnection to a restarted ovsdb-server resyncs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from skygraph.probes.elements import Writer
from skygraph.probes.ovs import mapping
from skygraph.probes.ovs.mapping import InterfaceFacts, Snapshot
from skygraph.probes.ovs.monitor import Monitor
from skygraph.topology import ids
from skygraph.topology.graph import wall_clock_ms
from skygraph.topology.model import LAYER2, OWNERSHIP

MIRRORING = "mirroring"

log = logging.getLogger("skygraph.probes.ovs")

Link = tuple[str, str, str, str]  # parent, child, relation, Type ("" for none)


class OvsProbe:
    def __init__(self, writer: Writer, host_node_id: str,
                 address: str = "unix:///var/run/openvswitch/db.sock", statistics: bool = False,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self.writer = writer
        self.statistics = statistics
        self.clock = clock
        # interface uuid -> (Metric, when it was read, LastUpdateMetric)
        self._metrics: dict[str, tuple[dict[str, int], int, dict[str, int]]] = {}
        self.host_node_id = host_node_id
        self.address = address
        self.interfaces: dict[str, str] = {}       # interface uuid -> node id
        self._nodes: set[str] = set()              # bridge and port node ids
        self._links: set[Link] = set()
        self._latest: Snapshot | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._monitor: Monitor | None = None
        self.applied = 0                           # snapshots applied (tests, status)

    async def start(self) -> None:
        self._monitor = Monitor(self.address, self._offer, asyncio.get_running_loop(),
                                self.statistics)
        self._task = asyncio.create_task(self._apply_loop(), name="ovsdb probe")
        self._monitor.start()

    async def stop(self) -> None:
        if self._monitor is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._monitor.stop)
            self._monitor = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _offer(self, snap: Snapshot) -> None:
        self._latest = snap  # only the newest state matters
        self._wake.set()

    async def _apply_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            snap, self._latest = self._latest, None
            if snap is None:
                continue
            try:
                await self.apply(snap)
            except Exception:
                log.exception("ovsdb %s: snapshot not applied", self.address)

    # ------------------------------------------------------------ apply
    def node_id(self, ovs_uuid: str) -> str:
        return ids.gen_id(self.writer.host_id, "ovs", ovs_uuid)

    async def apply(self, snap: Snapshot) -> None:
        want = mapping.desired(snap)
        links: set[Link] = set()
        nodes: set[str] = set()
        for u, meta in want.bridges.items():
            nid = self.node_id(u)
            await self.writer.put(nid, meta, mapping.BRIDGE_KEYS - meta.keys())
            nodes.add(nid)
            links.add((self.host_node_id, nid, OWNERSHIP, ""))
        for u, (bridge, meta) in want.ports.items():
            nid = self.node_id(u)
            await self.writer.put(nid, meta, mapping.PORT_KEYS - meta.keys())
            nodes.add(nid)
            links.add((self.node_id(bridge), nid, OWNERSHIP, ""))
            links.add((self.node_id(bridge), nid, LAYER2, ""))
        interfaces: dict[str, str] = {}
        for u, (facts, meta) in want.interfaces.items():
            nid = await self._put_interface(facts, meta)
            interfaces[u] = nid
            if facts.port is not None and facts.port in want.ports:
                links.add((self.node_id(facts.port), nid, LAYER2, ""))
        for a, b in want.patches:
            links.add((interfaces[a], interfaces[b], LAYER2, "patch"))
        for mirror, mirrored in want.mirrors:  # an ovsmirror capture's output port
            links.add((self.node_id(mirror), self.node_id(mirrored), MIRRORING, ""))
        for u, nid in interfaces.items():
            br = want.interfaces[u][0].bridge
            owner = self.writer.owner(nid)
            if br is not None and br in want.bridges and (
                    owner is None or self.node_id(br) == owner.ID):
                links.add((self.node_id(br), nid, OWNERSHIP, ""))  # nothing else owns it
        # Every desired link, not only new ones: a node netlink deleted and OVS
        # brought back (its namespace went) needs its links again. Unchanged
        # links cost a lookup.
        for link in sorted(links):
            parent, child, relation, type_ = link
            if relation == OWNERSHIP and self.writer.owner(child) is not None \
                    and parent != self.writer.owner(child).ID:  # type: ignore[union-attr]
                continue
            await self.writer.link(parent, child, relation, {"Type": type_} if type_ else None)
        for parent, child, relation, _ in sorted(self._links - links):
            await self.writer.unlink(parent, child, relation)
        for u, nid in self.interfaces.items():
            if u not in interfaces:
                self._metrics.pop(u, None)
                await self._drop_interface(nid)
        for nid in self._nodes - nodes:
            await self.writer.delete(nid)
        self._links, self._nodes, self.interfaces = links, nodes, interfaces
        self.applied += 1

    def _last_update(self, facts: InterfaceFacts, meta: dict[str, Any]) -> None:
        """Add Ovs.LastUpdateMetric: the counters' growth since they last changed."""
        if not self.statistics:
            return
        metric = meta.get("Ovs", {}).get("Metric", {})  # {}: all counters still zero
        now = self.clock()
        old = self._metrics.get(facts.uuid)
        if old is None:
            self._metrics[facts.uuid] = (metric, now, {})
            return
        prev, at, last = old
        if metric != prev:
            last = {k: v - prev.get(k, 0) for k, v in metric.items() if v - prev.get(k, 0)}
            last.update(Start=at, Last=now)
            self._metrics[facts.uuid] = (metric, now, last)
        if last:
            meta["Ovs"] = {**meta.get("Ovs", {}), "LastUpdateMetric": last}

    async def _put_interface(self, facts: InterfaceFacts, meta: dict[str, Any]) -> str:
        nid = self.interfaces.get(facts.uuid) or self._merge_target(facts) \
            or self.node_id(facts.uuid)
        node = self.writer.node(nid)
        netlink = node is not None and "IfIndex" in node.Metadata and "EncapType" in node.Metadata
        keys = dict(meta)
        self._last_update(facts, keys)
        keys["Name"] = facts.name
        if facts.type:
            keys["Type"] = facts.type
        elif node is None or "Type" not in node.Metadata:
            keys["Type"] = "device"  # a system port whose netdev netlink has not shown
        if not netlink:
            if facts.mac_in_use and facts.type != "internal":
                keys["MAC"] = facts.mac_in_use
            if facts.ifindex and (node is None or "IfIndex" not in node.Metadata):
                keys["IfIndex"] = facts.ifindex
        if node is None or "Driver" not in node.Metadata:
            keys["Driver"] = facts.driver
        await self.writer.put(nid, keys, mapping.INTERFACE_KEYS - keys.keys())
        return nid

    def _merge_target(self, facts: InterfaceFacts) -> str | None:
        """The netlink node of this interface's netdev: same Name, no other UUID,
        and the same MAC when OVS knows it (SPEC §1a merge rule)."""
        if facts.type in mapping.VIRTUAL_TYPES:
            return None
        candidates = [n for n in self.writer.named(facts.name)
                      if "EncapType" in n.Metadata and n.Metadata.get("UUID") in (None, facts.uuid)]
        if facts.mac_in_use:
            same = [n for n in candidates if n.Metadata.get("MAC") == facts.mac_in_use]
            if same:
                return same[0].ID
        return candidates[0].ID if len(candidates) == 1 else None

    async def _drop_interface(self, nid: str) -> None:
        node = self.writer.node(nid)
        if node is None:
            return
        owner = self.writer.owner(nid)
        if owner is not None and owner.type in ("host", "netns"):
            # netlink still shows the netdev: the node stays, without OVS keys.
            keep = {k for k in ("Name",) if k in node.Metadata}
            drop = mapping.INTERFACE_KEYS - keep
            await self.writer.put(nid, {}, drop)
            return
        await self.writer.delete(nid)

