"""The netlink probe's bookkeeping, fed recorded messages (no socket, no root):
ownership, bridge membership, veth pairs, deletes, OVS merges."""

from __future__ import annotations

import asyncio
import copy
import json
import socket
from pathlib import Path
from typing import Any

from skygraph.probes.elements import Writer
from skygraph.probes.netns.netlink import NetlinkProbe
from skygraph.topology.graph import Graph

DUMP: dict[str, list[dict[str, Any]]] = json.loads(
    (Path(__file__).parent / "data" / "netlink_dump.json").read_text())


class NoPeers:
    async def peer(self, probe: NetlinkProbe, nsid: int) -> NetlinkProbe | None:
        return None


def msg(name: str, event: str = "RTM_NEWLINK") -> dict[str, Any]:
    m = copy.deepcopy(next(x for x in DUMP["links"] if x["attrs"]["IFLA_IFNAME"] == name))
    m["event"] = event
    return m


async def probe() -> NetlinkProbe:
    w = Writer(Graph(clock=lambda: 5), "h")
    await w.put("ns", {"Name": "ns1", "Type": "netns", "Path": "/run/netns/ns1"})
    p = NetlinkProbe(w, "ns", "/run/netns/ns1", "ns1", NoPeers(), clock=lambda: 5)
    p._inet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return p


def names(p: NetlinkProbe, relation: str) -> set[tuple[str, str]]:
    g = p.writer.graph
    return {(g.nodes[e.Parent].name, g.nodes[e.Child].name) for e in g.edges.values()
            if e.relation_type == relation}


def test_links_membership_and_veth_pair() -> None:
    async def scenario() -> None:
        p = await probe()
        for name in ("lo", "br0", "veth0", "veth1", "vx0"):
            await p._on_link(msg(name))
        assert names(p, "ownership") == {("ns1", n) for n in ("lo", "br0", "veth0", "veth1",
                                                              "vx0")}
        layer2 = names(p, "layer2")
        assert ("br0", "veth0") in layer2
        assert ("veth1", "veth0") in layer2 or ("veth0", "veth1") in layer2
        veth = [e for e in p.writer.graph.edges.values() if e.Metadata.get("Type") == "veth"]
        assert len(veth) == 1
        veth0 = p.writer.graph.nodes[p.by_index[msg("veth0")["index"]]]
        assert veth0.Metadata["Metric"]["RxBytes"] > 0
        await p._on_link(msg("veth0", "RTM_DELLINK"))
        assert names(p, "layer2") == set()
        assert "veth0" not in {n.name for n in p.writer.graph.nodes.values()}
        p._inet.close()  # type: ignore[union-attr]
    asyncio.run(scenario())


def test_member_seen_before_its_bridge_is_linked_later() -> None:
    async def scenario() -> None:
        p = await probe()
        await p._on_link(msg("veth0"))
        await p._on_link(msg("br0"))
        assert ("br0", "veth0") in names(p, "layer2")
        nomaster = msg("veth0")
        del nomaster["attrs"]["IFLA_MASTER"]
        await p._on_link(nomaster)
        assert ("br0", "veth0") not in names(p, "layer2")
        node = p.writer.graph.nodes[p.by_index[nomaster["index"]]]
        assert "MasterIndex" not in node.Metadata
        p._inet.close()  # type: ignore[union-attr]
    asyncio.run(scenario())


def test_ovs_interface_is_adopted_and_survives_dellink() -> None:
    async def scenario() -> None:
        p = await probe()
        w = p.writer
        await w.put("ovs-intf", {"Name": "veth1", "Type": "internal", "UUID": "u-1",
                                 "Driver": "openvswitch"})
        await p._on_link(msg("veth1"))
        node = w.graph.nodes["ovs-intf"]
        assert node.type == "internal"           # OVS type wins
        assert node.Metadata["IfIndex"] == msg("veth1")["index"]
        assert w.owner("ovs-intf").ID == "ns"    # type: ignore[union-attr]
        assert len(w.named("veth1")) == 1
        await p._on_link(msg("veth1", "RTM_DELLINK"))
        assert "ovs-intf" in w.graph.nodes       # OVS decides when it goes
        assert w.owner("ovs-intf") is None
        p._inet.close()  # type: ignore[union-attr]
    asyncio.run(scenario())


def test_vlan_subinterface_linked_to_its_parent() -> None:
    # This kernel has no 8021q: the message is what `ip link add link veth1 name
    # veth1.10 type vlan id 10` announces, built by hand.
    vlan = {"event": "RTM_NEWLINK", "family": 0, "index": 40, "flags": 0x1003, "ifi_type": 1,
            "attrs": {"IFLA_IFNAME": "veth1.10", "IFLA_LINK": msg("veth1")["index"],
                      "IFLA_MTU": 1500, "IFLA_OPERSTATE": "UP",
                      "IFLA_LINKINFO": {"attrs": {"IFLA_INFO_KIND": "vlan",
                                                  "IFLA_INFO_DATA": {"attrs": {
                                                      "IFLA_VLAN_ID": 10}}}}}}

    async def scenario() -> None:
        p = await probe()
        await p._on_link(vlan)           # before its parent: linked when the parent comes
        await p._on_link(msg("veth1"))
        edges = [e for e in p.writer.graph.edges.values() if e.Metadata.get("Type") == "vlan"]
        assert len(edges) == 1
        g = p.writer.graph
        assert (g.nodes[edges[0].Parent].name, g.nodes[edges[0].Child].name) == (
            "veth1", "veth1.10")
        assert g.nodes[edges[0].Child].Metadata["Vlan"] == 10
        p._inet.close()  # type: ignore[union-attr]
    asyncio.run(scenario())
