"""OVSDB rows -> graph, on a snapshot recorded from a real ovsdb-server
(data/ovsdb_snapshot.json): br0 (protocols, hwaddr, external id) with the
internal port int1 (tag 10, iface-id), patch0 <-> patch1 to br1, vxlan vx0;
br1 with bond0 (ve0 + ve2, balance-slb, LACP, trunks 20,30)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from skygraph.probes.elements import Writer
from skygraph.probes.ovs import mapping
from skygraph.probes.ovs.mapping import Snapshot
from skygraph.probes.ovs.monitor import remote
from skygraph.probes.ovs.probe import OvsProbe
from skygraph.topology.graph import Graph
from skygraph.topology.model import Node

RAW: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "ovsdb_snapshot.json")
                                 .read_text())


def snapshot(drop_ports: tuple[str, ...] = ()) -> Snapshot:
    ports = {u: r for u, r in RAW["ports"].items() if r["name"] not in drop_ports}
    bridges = {u: {**r, "ports": [p for p in r["ports"] if p in ports]}
               for u, r in RAW["bridges"].items()}
    gone = {i for u, r in RAW["ports"].items() if u not in ports for i in r["interfaces"]}
    interfaces = {u: r for u, r in RAW["interfaces"].items() if u not in gone}
    return Snapshot(tuple(RAW["open_vswitch"]), bridges, ports, interfaces)


def test_bridge_metadata() -> None:
    want = mapping.desired(snapshot())
    br0 = next(m for m in want.bridges.values() if m["Name"] == "br0")
    assert br0["Type"] == "ovsbridge" and br0["UUID"]
    assert br0["Ovs"] == {"OtherConfig": {"hwaddr": "02:00:00:00:aa:01"},
                          "Protocols": ["OpenFlow10", "OpenFlow13"]}
    assert br0["ExtID"] == {"team": "net"}


def test_port_metadata() -> None:
    want = mapping.desired(snapshot())
    ports = {m["Name"]: m for _, m in want.ports.values()}
    assert ports["int1"]["Vlans"] == 10
    assert ports["bond0"]["Vlans"] == [20, 30]
    assert ports["bond0"]["BondMode"] == "balance-slb" and ports["bond0"]["LACP"] == "active"
    assert all(m["Type"] == "ovsport" for m in ports.values())


def test_interface_metadata_and_patches() -> None:
    want = mapping.desired(snapshot())
    intfs = {f.name: (f, m) for f, m in want.interfaces.values()}
    vx_facts, vx = intfs["vx0"]
    assert vx_facts.type == "vxlan"
    assert vx["LocalIP"] == "10.99.0.1" and vx["RemoteIP"] == "10.99.0.2"
    assert vx["Ovs"]["Options"]["key"] == "42" and vx["OfPort"] == 3
    int1_facts, int1 = intfs["int1"]
    assert int1_facts.type == "internal" and int1_facts.driver == "tun"
    assert int1["ExtID"] == {"attached-mac": "02:00:00:00:00:11", "iface-id": "vm1"}
    assert intfs["ve0"][0].type == "" and intfs["ve0"][0].ifindex == 7
    assert "LocalIP" not in int1
    [(a, b)] = want.patches
    assert {want.interfaces[a][0].name, want.interfaces[b][0].name} == {"patch0", "patch1"}


def test_remote_address_forms() -> None:
    assert remote("unix:///var/run/openvswitch/db.sock") == "unix:/var/run/openvswitch/db.sock"
    assert remote("tcp://127.0.0.1:6640") == "tcp:127.0.0.1:6640"
    assert remote("127.0.0.1:6640") == "tcp:127.0.0.1:6640"
    assert remote("unix:/tmp/db.sock") == "unix:/tmp/db.sock"


def _graph_with_netlink_ve0() -> tuple[Writer, OvsProbe]:
    w = Writer(Graph(clock=lambda: 1), "h")
    probe = OvsProbe(w, "host")

    async def seed() -> None:
        await w.put("host", {"Name": "h", "Type": "host"})
        await w.put("nl-ve0", {"Name": "ve0", "Type": "veth", "EncapType": "ether",
                               "IfIndex": 7, "MAC": "52:e2:15:01:d5:05", "Driver": "veth"})
        await w.own("host", "nl-ve0")
    asyncio.run(seed())
    return w, probe


def test_apply_merges_system_port_and_owns_virtual_ones() -> None:
    w, probe = _graph_with_netlink_ve0()

    async def scenario() -> None:
        await probe.apply(snapshot())
        g = w.graph
        ve0 = g.nodes["nl-ve0"]
        assert ve0.Metadata["Type"] == "veth" and ve0.Metadata["Driver"] == "veth"
        assert ve0.Metadata["UUID"] and ve0.Metadata["OfPort"] == 3
        assert len(w.named("ve0")) == 1
        assert w.owner("nl-ve0").ID == "host"  # type: ignore[union-attr]
        br0 = next(n for n in w.named("br0") if n.type == "ovsbridge")
        br1 = next(n for n in w.named("br1") if n.type == "ovsbridge")
        for name, bridge in (("patch0", br0), ("patch1", br1), ("vx0", br0)):
            [n] = [x for x in w.named(name) if x.type != "ovsport"]
            assert w.owner(n.ID) == bridge, name
        p0 = next(n for n in w.named("patch0") if n.type == "patch")
        p1 = next(n for n in w.named("patch1") if n.type == "patch")
        patch = [e for e in g.edges.values() if {e.Parent, e.Child} == {p0.ID, p1.ID}]
        assert [e.Metadata.get("Type") for e in patch] == ["patch"]
        port = next(n for n in w.named("bond0") if n.type == "ovsport")
        assert w.owner(port.ID) == br1
        assert sum(1 for e in g.edges.values() if e.Parent == br1.ID and e.Child == port.ID) == 2
        assert {g.nodes[e.Child].name for e in w.links(port.ID) if e.Parent == port.ID} == {
            "ve0", "ve2"}
        ve2 = next(n for n in w.named("ve2"))
        assert ve2.Metadata["Type"] == "device"  # no netlink node: OVS alone
        assert ve2.Metadata["MAC"] == "7a:9e:3c:48:e0:67" and ve2.Metadata["IfIndex"] == 9
        revisions = {n.ID: n.Revision for n in g.nodes.values()}
        await probe.apply(snapshot())  # same state: nothing changes
        assert {n.ID: n.Revision for n in g.nodes.values()} == revisions
    asyncio.run(scenario())


def test_removed_ports_leave_the_graph_but_netlink_nodes_stay() -> None:
    w, probe = _graph_with_netlink_ve0()

    async def scenario() -> None:
        await probe.apply(snapshot())
        await probe.apply(snapshot(drop_ports=("bond0", "vx0")))
        assert w.named("bond0") == [] and w.named("vx0") == [] and w.named("ve2") == []
        ve0: Node = w.graph.nodes["nl-ve0"]
        assert "UUID" not in ve0.Metadata and "OfPort" not in ve0.Metadata
        assert w.owner("nl-ve0").ID == "host"  # type: ignore[union-attr]
        await probe.apply(Snapshot())
        assert [n.type for n in w.graph.nodes.values()] == ["host", "veth"]
    asyncio.run(scenario())


def test_statistics_become_ovs_metric() -> None:
    row = {**next(iter(RAW["interfaces"].values())),
           "statistics": {"rx_packets": 5, "rx_bytes": 420, "tx_packets": 0, "rx_crc_err": 1,
                          "ovs_tx_qos_drops": 9}}
    assert mapping.interface_metadata(row)["Ovs"]["Metric"] == {
        "RxPackets": 5, "RxBytes": 420, "RxCrcErrors": 1}


def test_last_update_metric_is_the_growth_between_readings() -> None:
    ticks = iter(range(1000, 10**6, 1000))
    w = Writer(Graph(clock=lambda: 1), "h")
    probe = OvsProbe(w, "host", statistics=True, clock=lambda: next(ticks))

    def with_stats(rx: int) -> Snapshot:
        snap = snapshot()
        intfs = {u: ({**r, "statistics": {"rx_packets": rx}} if r["name"] == "vx0" else r)
                 for u, r in snap.interfaces.items()}
        return Snapshot(snap.open_vswitch, snap.bridges, snap.ports, intfs)

    async def scenario() -> dict[str, Any]:
        await w.put("host", {"Name": "h", "Type": "host"})
        await probe.apply(with_stats(0))
        await probe.apply(with_stats(7))
        [vx] = [n for n in w.named("vx0") if n.type == "vxlan"]
        return dict(vx.Metadata["Ovs"])
    ovs_md = asyncio.run(scenario())
    assert ovs_md["Metric"] == {"RxPackets": 7}
    last = ovs_md["LastUpdateMetric"]
    assert last["RxPackets"] == 7 and last["Start"] < last["Last"]
