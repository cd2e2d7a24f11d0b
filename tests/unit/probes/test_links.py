"""Netlink mapping on messages recorded from a real namespace (see
data/netlink_dump.json: lo, br0, veth0 (in br0) / veth1 with IPv4+IPv6, a
route in table 2, a default route, a permanent neighbour, vxlan vx0)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from skygraph.probes.netns import links
from skygraph.probes.netns.links import Ethtool

DUMP: dict[str, list[dict[str, Any]]] = json.loads(
    (Path(__file__).parent / "data" / "netlink_dump.json").read_text())


def link(name: str) -> dict[str, Any]:
    return next(m for m in DUMP["links"] if m["attrs"]["IFLA_IFNAME"] == name)


def test_loopback() -> None:
    meta = links.link_metadata(link("lo"))
    assert meta["Type"] == "device"
    assert meta["EncapType"] == "loopback"
    assert meta["IfIndex"] == 1
    assert meta["LinkFlags"] == ["UP", "LOOPBACK"]
    assert meta["MTU"] == 65536
    assert "Driver" not in meta and "Speed" not in meta


def test_veth_with_ethtool_facts() -> None:
    meta = links.link_metadata(link("veth1"), Ethtool(driver="veth", speed=10000))
    assert meta["Name"] == "veth1"
    assert meta["Type"] == "veth"
    assert meta["Driver"] == "veth"
    assert meta["Speed"] == 10000
    assert meta["MAC"] == "02:00:00:00:00:02"
    assert meta["State"] == "UP"
    assert meta["PeerIfIndex"] == link("veth0")["index"]
    assert "ParentIndex" not in meta and "LinkNetNsID" not in meta
    assert meta["LinkFlags"] == ["UP", "BROADCAST", "MULTICAST"]


def test_bridge_member_and_bridge_driver() -> None:
    br = links.link_metadata(link("br0"))
    assert br["Type"] == "bridge" and br["Driver"] == "bridge"
    member = links.link_metadata(link("veth0"))
    assert member["MasterIndex"] == br["IfIndex"]


def test_vxlan_parent_and_unknown_speed() -> None:
    meta = links.link_metadata(link("vx0"), Ethtool(driver="vxlan", speed=0xFFFFFFFF))
    assert meta["Type"] == "vxlan"
    assert "Speed" not in meta


def test_metric_counters_omit_zeroes() -> None:
    metric = links.interface_metric(link("veth1"))
    assert metric is not None
    assert metric["RxBytes"] > 0 and metric["TxPackets"] > 0
    assert all(v for v in metric.values())
    assert "Collisions" not in metric


def test_metric_delta() -> None:
    delta = links.metric_delta({"RxBytes": 150, "TxBytes": 10}, {"RxBytes": 100, "TxBytes": 10},
                               1000, 2000)
    assert delta == {"RxBytes": 50, "Start": 1000, "Last": 2000}


def test_addresses() -> None:
    by_index = links.addresses(DUMP["addrs"])
    veth1 = link("veth1")["index"]
    assert by_index[veth1]["IPV4"] == ["10.1.0.1/24"]
    assert "fd00::1/64" in by_index[veth1]["IPV6"]
    assert by_index[1]["IPV4"] == ["127.0.0.1/8"]


def test_routing_tables() -> None:
    tables = links.routing_tables(DUMP["routes"])[link("veth1")["index"]]
    by_id = {t["ID"]: t for t in tables}
    assert [r["Prefix"] for r in by_id[2]["Routes"]] == ["10.9.0.0/16"]
    assert by_id[2]["Routes"][0]["NextHops"][0]["IP"] == "10.1.0.254"
    main = [r["Prefix"] for r in by_id[254]["Routes"]]
    assert "0.0.0.0/0" in main and "10.1.0.0/24" in main and "fd00::/64" in main
    assert [t["ID"] for t in tables] == sorted(by_id)


def test_neighbors() -> None:
    neigh = links.neighbors(DUMP["neighbors"])[link("veth1")["index"]]
    static = next(n for n in neigh if n["IP"] == "10.1.0.7")
    assert static == {"IP": "10.1.0.7", "IfIndex": link("veth1")["index"],
                      "MAC": "02:00:00:00:00:07", "State": ["NUD_PERMANENT"]}


@pytest.mark.parametrize(("ifi_type", "encap"), [(1, "ether"), (772, "loopback"),
                                                  (65534, "none"), (778, "gre"), (4242, "unknown")])
def test_encap_types(ifi_type: int, encap: str) -> None:
    msg = {"index": 7, "ifi_type": ifi_type, "flags": 0, "attrs": {"IFLA_IFNAME": "x"}}
    assert links.link_metadata(msg)["EncapType"] == encap


def test_veth_peer_in_other_namespace_keeps_same_ifindex() -> None:
    msg = {"index": 2, "ifi_type": 1, "flags": 0,
           "attrs": {"IFLA_IFNAME": "xa", "IFLA_LINK": 2, "IFLA_LINK_NETNSID": 0,
                     "IFLA_LINKINFO": {"attrs": {"IFLA_INFO_KIND": "veth"}}}}
    meta = links.link_metadata(msg)
    assert meta["PeerIfIndex"] == 2 and meta["LinkNetNsID"] == 0
