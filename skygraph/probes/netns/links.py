"""Pure mapping from netlink messages to interface metadata (SPEC §1a,
netlink probe). No I/O: the watcher turns pyroute2 messages into plain
dicts (`netlink.plain`) and passes ethtool facts in, so every function here
is tested with recorded messages.

A plain message is `{"event", "family", "index", "flags", "ifi_type",
"attrs": {NAME: value}}`; nested attributes are dicts of the same shape.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Msg = Mapping[str, Any]

# ifinfomsg.ifi_type (ARPHRD_*) -> EncapType, as vishvananda/netlink names it.
ENCAP_TYPES: Mapping[int, str] = {
    1: "ether", 24: "ieee1394", 32: "infiniband", 768: "ipip", 769: "tunnel6", 772: "loopback",
    776: "sit", 778: "gre", 823: "gre6", 65534: "none", 65535: "void",
}
# net_device flags Skydive reports in LinkFlags, in its order.
LINK_FLAGS: tuple[tuple[int, str], ...] = (
    (0x1, "UP"), (0x2, "BROADCAST"), (0x8, "LOOPBACK"), (0x10, "POINTTOPOINT"),
    (0x1000, "MULTICAST"),
)
# IFLA_STATS64 field -> InterfaceMetric key (topology/metrics.go).
METRIC_FIELDS: Mapping[str, str] = {
    "collisions": "Collisions", "multicast": "Multicast", "rx_bytes": "RxBytes",
    "rx_compressed": "RxCompressed", "rx_crc_errors": "RxCrcErrors",
    "rx_dropped": "RxDropped", "rx_errors": "RxErrors", "rx_fifo_errors": "RxFifoErrors",
    "rx_frame_errors": "RxFrameErrors", "rx_length_errors": "RxLengthErrors",
    "rx_missed_errors": "RxMissedErrors", "rx_over_errors": "RxOverErrors",
    "rx_packets": "RxPackets", "tx_aborted_errors": "TxAbortedErrors", "tx_bytes": "TxBytes",
    "tx_carrier_errors": "TxCarrierErrors", "tx_compressed": "TxCompressed",
    "tx_dropped": "TxDropped", "tx_errors": "TxErrors", "tx_fifo_errors": "TxFifoErrors",
    "tx_heartbeat_errors": "TxHeartbeatErrors", "tx_packets": "TxPackets",
    "tx_window_errors": "TxWindowErrors",
}
# Neighbour states and flags (linux/neighbour.h), names as Skydive reports them.
NUD_STATES: tuple[tuple[int, str], ...] = (
    (0x01, "NUD_INCOMPLETE"), (0x02, "NUD_REACHABLE"), (0x04, "NUD_STALE"),
    (0x08, "NUD_DELAY"), (0x10, "NUD_PROBE"), (0x20, "NUD_FAILED"), (0x40, "NUD_NOARP"),
    (0x80, "NUD_PERMANENT"),
)
NTF_FLAGS: tuple[tuple[int, str], ...] = (
    (0x01, "NTF_USE"), (0x02, "NTF_SELF"), (0x04, "NTF_MASTER"), (0x08, "NTF_PROXY"),
    (0x10, "NTF_EXT_LEARNED"), (0x20, "NTF_OFFLOADED"), (0x80, "NTF_ROUTER"),
)
AF_INET, AF_INET6, AF_BRIDGE = 2, 10, 7

# Every key the netlink probe manages on an interface node: the probe removes
# those a new message no longer yields and leaves every other key alone.
NETLINK_KEYS = frozenset({
    "Name", "Type", "EncapType", "IfIndex", "MAC", "MTU", "State", "LinkFlags", "Driver",
    "Speed", "MasterIndex", "ParentIndex", "PeerIfIndex", "LinkNetNsID", "LinkNetNsName",
    "Vlan", "BusInfo",
})
# OVS interface types without a netdev of their own: never merged with a link.
OVS_VIRTUAL_TYPES = frozenset({"patch", "gre", "vxlan", "geneve", "stt", "erspan", "ip6erspan",
                               "ip6gre", "lisp", "gtpu", "bareudp", "srv6"})
# Types set by OVS that win over the netlink type (SPEC §1a "OVS type wins").
OVS_TYPES = frozenset({"internal", "patch", "gre", "vxlan", "geneve", "stt", "erspan",
                       "ip6erspan", "ip6gre", "lisp", "dpdk", "dpdkvhostuser",
                       "dpdkvhostuserclient", "tap"})


@dataclass(frozen=True, slots=True)
class Ethtool:
    """What ethtool says about a link (None when it cannot tell)."""

    driver: str | None = None
    speed: int | None = None
    bus_info: str | None = None


def attr(msg: Msg, name: str, default: Any = None) -> Any:
    return msg.get("attrs", {}).get(name, default)


def link_kind(msg: Msg) -> str | None:
    info = attr(msg, "IFLA_LINKINFO")
    if isinstance(info, Mapping):
        kind = attr(info, "IFLA_INFO_KIND")
        return str(kind) if kind else None
    return None


def link_metadata(msg: Msg, ethtool: Ethtool = Ethtool()) -> dict[str, Any]:
    """Interface metadata from an RTM_NEWLINK message (without L3 keys and metrics)."""
    index = int(msg["index"])
    kind = link_kind(msg)
    driver = ethtool.driver
    if kind == "bridge":
        driver = "bridge"
    type_ = kind or "device"
    if driver == "veth":
        type_ = "veth"
    meta: dict[str, Any] = {
        "Name": str(attr(msg, "IFLA_IFNAME", "")),
        "Type": type_,
        "EncapType": ENCAP_TYPES.get(int(msg.get("ifi_type", 0)), "unknown"),
        "IfIndex": index,
        "State": str(attr(msg, "IFLA_OPERSTATE", "UNKNOWN")).upper(),
        "LinkFlags": [name for bit, name in LINK_FLAGS if int(msg.get("flags", 0)) & bit],
    }
    mtu = attr(msg, "IFLA_MTU")
    if mtu:
        meta["MTU"] = int(mtu)
    mac = attr(msg, "IFLA_ADDRESS")
    if mac:
        meta["MAC"] = str(mac)
    if driver:
        meta["Driver"] = driver
    if ethtool.speed is not None and ethtool.speed not in (0, 0xFFFF, 0xFFFFFFFF):
        meta["Speed"] = ethtool.speed
    if ethtool.bus_info:
        meta["BusInfo"] = ethtool.bus_info
    master = attr(msg, "IFLA_MASTER")
    if master:
        meta["MasterIndex"] = int(master)
    link = attr(msg, "IFLA_LINK")
    nsid = attr(msg, "IFLA_LINK_NETNSID")
    if type_ == "veth" and link:
        # IFLA_LINK of a veth is its peer's ifindex (ethtool's peer_ifindex),
        # equal to ours when the peer lives in another namespace.
        meta["PeerIfIndex"] = int(link)
    elif link and (int(link) != index or nsid is not None):
        meta["ParentIndex"] = int(link)
    if nsid is not None and int(nsid) >= 0:
        meta["LinkNetNsID"] = int(nsid)
    if type_ == "vlan":
        data = attr(attr(msg, "IFLA_LINKINFO", {}), "IFLA_INFO_DATA")
        if isinstance(data, Mapping) and attr(data, "IFLA_VLAN_ID") is not None:
            meta["Vlan"] = int(attr(data, "IFLA_VLAN_ID"))
    return meta


def interface_metric(msg: Msg) -> dict[str, int] | None:
    """InterfaceMetric counters from IFLA_STATS64 (RTM_NEWLINK) or IFLA_STATS_LINK_64
    (RTM_NEWSTATS); zero counters omitted, as Go's omitempty does."""
    stats = attr(msg, "IFLA_STATS64", attr(msg, "IFLA_STATS_LINK_64"))
    if not isinstance(stats, Mapping):
        return None
    return {key: int(stats[f]) for f, key in METRIC_FIELDS.items() if stats.get(f)}


def metric_delta(new: Mapping[str, int], old: Mapping[str, int], start: int, last: int
                 ) -> dict[str, int]:
    """LastUpdateMetric: counters' growth since the previous poll, with Start/Last (ms)."""
    out = {k: v - int(old.get(k, 0)) for k, v in new.items()
           if k not in ("Start", "Last") and v - int(old.get(k, 0))}
    out["Start"], out["Last"] = start, last
    return out


def addresses(msgs: Iterable[Msg]) -> dict[int, dict[str, list[str]]]:
    """ifindex -> {"IPV4": [cidr...], "IPV6": [...]} from an address dump."""
    out: dict[int, dict[str, list[str]]] = {}
    for m in msgs:
        family = int(m.get("family", 0))
        addr = attr(m, "IFA_ADDRESS")
        if addr is None or family not in (AF_INET, AF_INET6):
            continue
        if family == AF_INET and attr(m, "IFA_LOCAL"):
            addr = attr(m, "IFA_LOCAL")  # point-to-point: IFA_ADDRESS is the peer
        key = "IPV4" if family == AF_INET else "IPV6"
        cidr = f"{addr}/{int(m.get('prefixlen', 0))}"
        lst = out.setdefault(int(m["index"]), {}).setdefault(key, [])
        if cidr not in lst:
            lst.append(cidr)
    return out


def routing_tables(msgs: Iterable[Msg]) -> dict[int, list[dict[str, Any]]]:
    """ifindex -> RoutingTables: `[{ID, Src, Routes: [{Protocol, Prefix, NextHops}]}]`,
    for the routes that leave through that interface (its own or a multipath hop)."""
    tables: dict[int, dict[int, dict[str, Any]]] = {}
    for m in msgs:
        family = int(m.get("family", 0))
        if family not in (AF_INET, AF_INET6):
            continue
        table = int(attr(m, "RTA_TABLE", m.get("table", 0)))
        dst = attr(m, "RTA_DST")
        plen = int(m.get("dst_len", 0))
        if dst is None:
            dst = "0.0.0.0" if family == AF_INET else "::"
        prefix = str(ipaddress.ip_network(f"{dst}/{plen}", strict=False))
        hops: list[tuple[int, dict[str, Any]]] = []
        prio = int(attr(m, "RTA_PRIORITY", 0))
        if attr(m, "RTA_OIF") is not None:
            hops.append((int(attr(m, "RTA_OIF")), _hop(prio, attr(m, "RTA_GATEWAY"),
                                                        int(attr(m, "RTA_OIF")))))
        for nh in attr(m, "RTA_MULTIPATH", None) or []:
            oif = int(nh.get("oif", 0))
            hops.append((oif, _hop(prio, attr(nh, "RTA_GATEWAY"), oif)))
        src = attr(m, "RTA_PREFSRC")
        for oif, hop in hops:
            entry = tables.setdefault(oif, {}).setdefault(table, {"ID": table, "Routes": []})
            if src and "Src" not in entry:
                entry["Src"] = str(src)
            route = {"Protocol": int(m.get("proto", 0)), "Prefix": prefix, "NextHops": [hop]}
            entry["Routes"].append(route)
    return {oif: [t for _, t in sorted(ts.items())] for oif, ts in tables.items()}


def _hop(priority: int, gateway: Any, oif: int) -> dict[str, Any]:
    hop: dict[str, Any] = {"IfIndex": oif}
    if priority:
        hop["Priority"] = priority
    if gateway:
        hop["IP"] = str(gateway)
    return hop


def neighbors(msgs: Iterable[Msg]) -> dict[int, list[dict[str, Any]]]:
    """ifindex -> Neighbors `[{Flags, MAC, IP, State, IfIndex}]` (ARP and NDP entries)."""
    out: dict[int, list[dict[str, Any]]] = {}
    for m in msgs:
        if int(m.get("family", 0)) not in (AF_INET, AF_INET6):
            continue
        ip = attr(m, "NDA_DST")
        if ip is None:
            continue
        state, flags, index = int(m.get("state", 0)), int(m.get("flags", 0)), int(m["ifindex"])
        entry: dict[str, Any] = {
            "IP": str(ip), "IfIndex": index,
            "State": [n for bit, n in NUD_STATES if state & bit] or ["NUD_NONE"],
        }
        if attr(m, "NDA_LLADDR"):
            entry["MAC"] = str(attr(m, "NDA_LLADDR"))
        fl = [n for bit, n in NTF_FLAGS if flags & bit]
        if fl:
            entry["Flags"] = fl
        out.setdefault(index, []).append(entry)
    for lst in out.values():
        lst.sort(key=lambda e: (e["IP"], e.get("MAC", "")))
    return out
