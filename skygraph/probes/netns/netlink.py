"""The netlink probe of one network namespace (root included): interfaces,
addresses, routes, neighbours and counters, kept live from RTNL multicast
groups (no polling, except the counters every `metrics_update` seconds).

Mapping lives in `links.py`; this module owns the socket, the per-namespace
state (ifindex -> node) and the links between nodes: ownership from the
namespace root, `layer2` for bridge membership and veth pairs (across
namespaces through `LinkNetNsID`, resolved by `Namespaces.peer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any, Protocol

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.rtnl import (
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK,
    RTMGRP_NEIGH,
)

from skygraph.probes.elements import Writer
from skygraph.probes.netns import ethtool, links, namespace, stats
from skygraph.topology import ids
from skygraph.topology.graph import wall_clock_ms
from skygraph.topology.model import LAYER2, OWNERSHIP

log = logging.getLogger("skygraph.probes.netlink")

GROUPS = (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE
          | RTMGRP_IPV6_ROUTE | RTMGRP_NEIGH)
L3_KEYS = frozenset({"IPV4", "IPV6", "RoutingTables", "Neighbors"})
# The attributes the mapping reads; plain() leaves the others undecoded
# (pyroute2 decodes lazily, and decoding is most of a link's cost).
KEPT_ATTRS = frozenset({
    "IFLA_IFNAME", "IFLA_MTU", "IFLA_ADDRESS", "IFLA_OPERSTATE", "IFLA_MASTER", "IFLA_LINK",
    "IFLA_LINK_NETNSID", "IFLA_LINKINFO", "IFLA_STATS64", "IFLA_INFO_KIND", "IFLA_INFO_DATA",
    "IFLA_VLAN_ID", "IFA_ADDRESS", "IFA_LOCAL", "RTA_TABLE", "RTA_DST", "RTA_OIF",
    "RTA_GATEWAY", "RTA_PRIORITY", "RTA_PREFSRC", "RTA_MULTIPATH", "NDA_DST", "NDA_LLADDR",
})
L3_DEBOUNCE = 0.02
NSID_NOT_ASSIGNED = 2**31 - 1
SO_RCVBUFFORCE = 33
RCVBUF = 8 << 20  # the kernel's -1, read unsigned
# A veth announced while its pair is half made has no peer yet: ask again.
VETH_RECHECKS = (0.05, 0.2, 1.0)


class Namespaces(Protocol):
    """What a netlink probe asks of the netns probe: the probe of a peer namespace."""

    async def peer(self, probe: NetlinkProbe, nsid: int) -> NetlinkProbe | None: ...


def plain(msg: Any) -> dict[str, Any]:
    """A pyroute2 message as plain dicts (the input `links.py` maps)."""
    out: dict[str, Any] = {}
    for key, value in msg.items():
        if key in ("attrs", "header", "__align", "value"):
            continue
        if isinstance(value, (int, str)):
            out[key] = value
    attrs: dict[str, Any] = {}
    for item in msg.get("attrs", ()):
        name = item[0]
        if name in KEPT_ATTRS:
            attrs[name] = _plain_value(item[1])
    out["attrs"] = attrs
    return out


def _plain_value(value: Any) -> Any:
    if hasattr(value, "get") and "attrs" in value:
        return plain(value)
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if isinstance(v, (int, str))}
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    return value


class NetlinkProbe:
    def __init__(self, writer: Writer, root_id: str, path: str | None, name: str | None,
                 namespaces: Namespaces, metrics_update: float = 30.0,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self.writer = writer
        self.root_id = root_id        # host node (root namespace) or netns node
        self.path = path              # None: the agent's own namespace
        self.name = name              # netns name; None for the root namespace
        self.namespaces = namespaces
        self.metrics_update = metrics_update
        self.clock = clock
        self.by_index: dict[int, str] = {}
        self._meta: dict[int, dict[str, Any]] = {}
        self._l3: dict[int, dict[str, Any]] = {}
        self._master: dict[int, str] = {}        # member ifindex -> master node linked
        # ("master" | "parent", ifindex) -> links that name it (members, vlans), so a
        # master or parent seen after them links them without a scan.
        self._waiting: dict[tuple[str, int], set[int]] = {}
        self._refs: dict[int, set[tuple[str, int]]] = {}
        self._nsids: dict[str, int] = {}
        self._metric_at: dict[int, int] = {}
        self._ipr: Any = None
        self._inet: socket.socket | None = None
        self._stats: socket.socket | None = None   # raw RTNL socket for counter dumps
        self._stats_seq = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._l3_task: asyncio.Task[None] | None = None
        self._l3_dirty = False
        self._rechecks: dict[int, asyncio.Task[None]] = {}

    @property
    def where(self) -> str:
        return f"netns {self.name}" if self.name else "root namespace"

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._inet = namespace.inet_socket(self.path)
        await self._open()
        await self.sync()
        self._tasks = [asyncio.create_task(self._read(), name=f"netlink {self.where}")]
        if self.metrics_update > 0:
            self._tasks.append(asyncio.create_task(self._metrics(),
                                                   name=f"metrics {self.where}"))

    async def _open(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
        nl = namespace.netlink_socket(self.path)
        # A burst of changes (thousands of links at once) must not overflow the
        # socket: root may go beyond net.core.rmem_max.
        with contextlib.suppress(OSError):
            nl.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        self._ipr = AsyncIPRoute(fileno=os.dup(nl.fileno()), rcvbuf=RCVBUF)
        nl.close()
        await self._ipr.bind(groups=GROUPS)

    async def stop(self) -> None:
        for t in [*self._tasks, *([self._l3_task] if self._l3_task else []),
                  *self._rechecks.values()]:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        for sock in (self._inet, self._stats):
            if sock is not None:
                sock.close()
        self._inet = self._stats = None

    async def sync(self) -> None:
        """Dump links and L3 state; remove nodes of links that are gone."""
        seen: set[int] = set()
        async for msg in await self._ipr.link("dump"):
            m = plain(msg)
            seen.add(int(m["index"]))
            await self._on_link(m)
        for idx in [i for i in self.by_index if i not in seen]:
            await self._del_link(idx)
        await self._refresh_l3()

    async def _read(self) -> None:
        while True:
            try:
                async for msg in self._ipr.get():
                    await self._dispatch(plain(msg))
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                # ENOBUFS: events were lost, and pyroute2's socket stays in error:
                # a new socket and a dump put the graph right again.
                log.warning("netlink %s: %s; resyncing", self.where, exc.strerror or exc)
                try:
                    await self._open()
                    await self.sync()
                except Exception:
                    log.exception("netlink %s: resync failed", self.where)
                    await asyncio.sleep(1.0)
            except Exception:
                log.exception("netlink %s: event not applied", self.where)

    async def _dispatch(self, m: dict[str, Any]) -> None:
        event = m.get("event", "")
        if event in ("RTM_NEWLINK", "RTM_DELLINK"):
            await self._on_link(m)
        elif event[4:] in ("NEWADDR", "DELADDR", "NEWROUTE", "DELROUTE", "NEWNEIGH", "DELNEIGH"):
            self._schedule_l3()

    # ------------------------------------------------------------ links
    async def _on_link(self, m: dict[str, Any]) -> None:
        if int(m.get("family", 0)) == links.AF_BRIDGE:
            return  # per-port bridge notifications repeat what RTM_NEWLINK said
        idx = int(m["index"])
        if m.get("event") == "RTM_DELLINK":
            await self._del_link(idx)
            return
        name = str(links.attr(m, "IFLA_IFNAME", ""))
        assert self._inet is not None
        meta = links.link_metadata(m, ethtool.query(self._inet, name))
        node_id = self.by_index.get(idx)
        first = node_id is None
        if node_id is None:
            node_id = self._adopt(meta) or ids.gen_id(self.root_id, "interface", str(idx))
            self.by_index[idx] = node_id
        node = self.writer.node(node_id)
        if node is not None and "UUID" in node.Metadata and node.type in links.OVS_TYPES:
            meta.pop("Type")  # OVS type wins (SPEC §1a)
        if "LinkNetNsID" in meta:
            peer = await self.namespaces.peer(self, meta["LinkNetNsID"])
            if peer is not None and peer.name:
                meta["LinkNetNsName"] = peer.name
            if self.by_index.get(idx) != node_id:
                return  # deleted while we looked for its peer
        self._meta[idx] = meta
        self._reference(idx, meta)
        keys: dict[str, Any] = {**meta, **self._l3.get(idx, {})}
        if first:
            metric = links.interface_metric(m)
            if metric:
                keys["Metric"] = metric
                self._metric_at[idx] = self.clock()
        drop = (links.NETLINK_KEYS | L3_KEYS) - keys.keys()
        if "Type" not in meta:
            drop -= {"Type"}
        await self.writer.put(node_id, keys, drop)
        await self.writer.own(self.root_id, node_id)
        await self._relink(idx)

    def _adopt(self, meta: dict[str, Any]) -> str | None:
        """An OVS interface node this link is (SPEC §1a merge rule): same Name, with a
        UUID, and a MAC that is unknown or the same. It may still be owned by the
        namespace the link left, whose RTM_DELLINK can come later."""
        for node in self.writer.named(str(meta.get("Name", ""))):
            md = node.Metadata
            if "UUID" not in md or node.type in ("ovsbridge", "ovsport") \
                    or node.type in links.OVS_VIRTUAL_TYPES:
                continue
            if md.get("MAC") in (None, meta.get("MAC")):
                return node.ID
        return None

    async def _del_link(self, idx: int) -> None:
        node_id = self.by_index.pop(idx, None)
        self._meta.pop(idx, None)
        self._l3.pop(idx, None)
        self._metric_at.pop(idx, None)
        master = self._master.pop(idx, None)
        self._reference(idx, None)
        if node_id is None:
            return
        node = self.writer.node(node_id)
        if node is None:
            return
        if "UUID" in node.Metadata:
            # An OVS interface: OVS decides when it goes; only this namespace lets go.
            owner = self.writer.owner(node_id)
            if owner is not None and self.root_id == owner.ID:
                await self.writer.unlink(self.root_id, node_id, OWNERSHIP)
            if master is not None:
                await self.writer.unlink(master, node_id, LAYER2)
            return
        await self.writer.delete(node_id)

    def _reference(self, idx: int, meta: dict[str, Any] | None) -> None:
        refs: set[tuple[str, int]] = set()
        if meta is not None and "MasterIndex" in meta:
            refs.add(("master", meta["MasterIndex"]))
        if meta is not None and "Vlan" in meta and "ParentIndex" in meta:
            refs.add(("parent", meta["ParentIndex"]))
        for key in self._refs.pop(idx, set()) - refs:
            self._waiting.get(key, set()).discard(idx)
            if not self._waiting.get(key, True):
                del self._waiting[key]
        for key in refs:
            self._waiting.setdefault(key, set()).add(idx)
        if refs:
            self._refs[idx] = refs

    async def _relink(self, idx: int) -> None:
        meta = self._meta[idx]
        node_id = self.by_index[idx]
        # Bridge membership: master -> member.
        master_id = self.by_index.get(meta.get("MasterIndex", -1))
        if master_id is not None and self._meta.get(meta["MasterIndex"], {}).get(
                "Type") == "openvswitch":
            master_id = None
        old = self._master.get(idx)
        if old is not None and old != master_id:
            await self.writer.unlink(old, node_id, LAYER2)
            del self._master[idx]
        if master_id is not None:
            await self.writer.link(master_id, node_id, LAYER2)
            self._master[idx] = master_id
        for j in sorted(self._waiting.get(("master", idx), ())):
            if self._master.get(j) != node_id and meta.get("Type") != "openvswitch" \
                    and j in self.by_index:
                await self.writer.link(node_id, self.by_index[j], LAYER2)
                self._master[j] = node_id
        parent_id = self.by_index.get(meta.get("ParentIndex", -1))
        if "Vlan" in meta and parent_id is not None:
            await self.writer.link(parent_id, node_id, LAYER2, {"Type": "vlan"})
        for j in sorted(self._waiting.get(("parent", idx), ())):
            if j in self.by_index:
                await self.writer.link(node_id, self.by_index[j], LAYER2, {"Type": "vlan"})
        if meta.get("Type") == "veth":
            if "PeerIfIndex" in meta:
                await self._link_veth(idx, meta)
            elif idx not in self._rechecks:
                self._rechecks[idx] = asyncio.create_task(self._recheck(idx))

    async def _recheck(self, idx: int) -> None:
        try:
            for delay in VETH_RECHECKS:
                await asyncio.sleep(delay)
                if idx not in self.by_index:
                    return
                try:
                    msgs = [plain(m) for m in await self._ipr.link("get", index=idx)]
                except Exception:
                    return  # gone meanwhile
                for m in msgs:
                    m["event"] = "RTM_NEWLINK"
                    await self._on_link(m)
                if "PeerIfIndex" in self._meta.get(idx, {}):
                    return
        finally:
            self._rechecks.pop(idx, None)

    async def _link_veth(self, idx: int, meta: dict[str, Any]) -> None:
        peer_probe: NetlinkProbe | None = self
        if "LinkNetNsID" in meta:
            peer_probe = await self.namespaces.peer(self, meta["LinkNetNsID"])
        if peer_probe is None:
            return  # the peer's namespace is not known yet: its probe links us later
        peer_idx = int(meta["PeerIfIndex"])
        peer_id = peer_probe.by_index.get(peer_idx)
        if peer_id is None or self.writer.node(peer_id) is None:
            return
        node_id = self.by_index[idx]
        # Skydive links from the side whose PeerIfIndex > IfIndex: peer -> intf.
        if (peer_idx, peer_id) > (idx, node_id):
            parent, child = peer_id, node_id
        else:
            parent, child = node_id, peer_id
        await self.writer.link(parent, child, LAYER2, {"Type": "veth"})
        # The side registered first could not name our namespace: tell it now.
        peer_meta = peer_probe._meta.get(peer_idx, {})
        if self.name and "LinkNetNsID" in peer_meta and "LinkNetNsName" not in peer_meta:
            peer_meta["LinkNetNsName"] = self.name
            await self.writer.put(peer_id, {"LinkNetNsName": self.name})

    # ------------------------------------------------------------ namespaces ids
    async def nsid_of(self, path: str) -> int | None:
        """The id this namespace gives the namespace at `path` (None if none)."""
        if path in self._nsids:
            return self._nsids[path]
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            reply = await self._ipr.get_netnsid(fd=fd)
        finally:
            os.close(fd)
        nsid = reply.get("nsid") if reply else None
        if nsid is None or not 0 <= int(nsid) < NSID_NOT_ASSIGNED:
            return None
        self._nsids[path] = int(nsid)
        return int(nsid)

    def forget_nsid(self, path: str) -> None:
        self._nsids.pop(path, None)

    # ------------------------------------------------------------ L3
    def _schedule_l3(self) -> None:
        if self._l3_task is not None and not self._l3_task.done():
            self._l3_dirty = True
            return
        self._l3_task = asyncio.create_task(self._l3_later(), name=f"l3 {self.where}")

    async def _l3_later(self) -> None:
        while True:
            await asyncio.sleep(L3_DEBOUNCE)
            self._l3_dirty = False
            try:
                await self._refresh_l3()
            except Exception:
                log.exception("netlink %s: addresses/routes/neighbours not refreshed", self.where)
            if not self._l3_dirty:
                return

    async def _refresh_l3(self) -> None:
        addrs = links.addresses([plain(m) async for m in await self._ipr.addr("dump")])
        routes = links.routing_tables([plain(m) async for m in await self._ipr.route("dump")])
        neigh = links.neighbors([plain(m) async for m in await self._ipr.neigh("dump")])
        for idx, node_id in list(self.by_index.items()):
            l3: dict[str, Any] = dict(addrs.get(idx, {}))
            if idx in routes:
                l3["RoutingTables"] = routes[idx]
            if idx in neigh:
                l3["Neighbors"] = neigh[idx]
            if l3 == self._l3.get(idx, {}) and idx in self._l3:
                continue
            self._l3[idx] = l3
            if self.writer.node(node_id) is not None:
                await self.writer.put(node_id, l3, L3_KEYS - l3.keys())

    # ------------------------------------------------------------ metrics
    async def _metrics(self) -> None:
        while True:
            await asyncio.sleep(self.metrics_update)
            try:
                await self.refresh_metrics()
            except Exception:
                log.exception("netlink %s: counters not refreshed", self.where)

    async def refresh_metrics(self) -> None:
        """Set `Metric` and `LastUpdateMetric` on interfaces whose counters changed."""
        now = self.clock()
        if self._stats is None:
            self._stats = namespace.netlink_socket(self.path)
            self._stats.setblocking(False)
        self._stats_seq += 1
        counters = await stats.dump(self._stats, self._stats_seq)
        for idx, raw in counters.items():
            node_id = self.by_index.get(idx)
            node = self.writer.node(node_id) if node_id else None
            if node is None:
                continue
            metric = links.interface_metric({"attrs": {"IFLA_STATS64": raw}})
            assert metric is not None
            old = node.Metadata.get("Metric") or {}
            if metric == old:
                continue
            start = self._metric_at.get(idx, now)
            self._metric_at[idx] = now
            await self.writer.put(node.ID, {
                "Metric": metric,
                "LastUpdateMetric": links.metric_delta(metric, old, start, now)})
