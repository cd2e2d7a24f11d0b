"""Pure mapping from an OVSDB snapshot (plain dicts, see `monitor.snapshot`)
to the metadata and links Skydive's ovsdb probe gives them (SPEC §1a).

No I/O and no graph access: `desired(snapshot)` says what OVS wants in the
graph; the probe merges interfaces with netlink nodes and applies it.
A row is `{column: value}` with sets as lists, maps as dicts and references
as UUID strings; every row has `_uuid`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Snapshot:
    open_vswitch: tuple[Row, ...] = ()
    bridges: Mapping[str, Row] = field(default_factory=dict)
    ports: Mapping[str, Row] = field(default_factory=dict)
    interfaces: Mapping[str, Row] = field(default_factory=dict)


TUNNEL_TYPES = frozenset({"gre", "vxlan", "geneve", "stt", "erspan", "ip6erspan", "ip6gre",
                          "lisp", "gtpu", "bareudp", "srv6"})
# Interfaces with no netdev of their own on the host: netlink never sees them.
VIRTUAL_TYPES = TUNNEL_TYPES | {"patch"}
# Keys the OVS probe manages on an interface node (it leaves the others alone).
INTERFACE_KEYS = frozenset({"UUID", "OfPort", "ExtID", "Ovs", "LocalIP", "RemoteIP",
                            "TunEgressIface", "TunEgressIfaceCarrier"})
# Interface.statistics -> InterfaceMetric key (Ovs.Metric, with `ovs.enable_stats`).
STATISTICS: Mapping[str, str] = {
    "collisions": "Collisions", "rx_bytes": "RxBytes", "rx_crc_err": "RxCrcErrors",
    "rx_dropped": "RxDropped", "rx_errors": "RxErrors", "rx_frame_err": "RxFrameErrors",
    "rx_over_err": "RxOverErrors", "rx_packets": "RxPackets", "tx_bytes": "TxBytes",
    "tx_dropped": "TxDropped", "tx_errors": "TxErrors", "tx_packets": "TxPackets",
}
# external_ids key of a mirror port an ovsmirror capture made: the mirrored port's
# UUID (skygraph.capture.ovsdb.MIRROR_OF; capture and probes share no module).
MIRROR_OF = "skygraph-mirror-of"
BRIDGE_KEYS = frozenset({"Name", "UUID", "Type", "Ovs", "ExtID"})
PORT_KEYS = frozenset({"Name", "UUID", "Type", "Ovs", "ExtID", "BondMode", "LACP", "Vlans"})


@dataclass(frozen=True)
class InterfaceFacts:
    """What the probe needs to merge an OVS interface with a netlink node."""

    uuid: str
    name: str
    type: str                 # OVS type; "" for a system port
    mac_in_use: str | None
    ifindex: int | None
    port: str | None          # UUID of the port it belongs to
    bridge: str | None        # UUID of that port's bridge
    driver: str = "openvswitch"   # status:driver_name


@dataclass(frozen=True)
class Desired:
    bridges: dict[str, dict[str, Any]]             # uuid -> metadata
    ports: dict[str, tuple[str, dict[str, Any]]]   # uuid -> (bridge uuid, metadata)
    interfaces: dict[str, tuple[InterfaceFacts, dict[str, Any]]]
    patches: list[tuple[str, str]]                 # (interface uuid, peer uuid), once per pair
    mirrors: list[tuple[str, str]] = field(default_factory=list)  # (mirror port, mirrored port)


def _one(value: Any) -> Any:
    """An optional OVSDB column (a set of at most one value) as the value or None."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _ovs_map(**maps: Any) -> dict[str, Any]:
    return {k: dict(v) for k, v in maps.items() if v}


def bridge_metadata(row: Row) -> dict[str, Any]:
    meta: dict[str, Any] = {"Name": row["name"], "UUID": row["_uuid"], "Type": "ovsbridge"}
    ovs: dict[str, Any] = _ovs_map(OtherConfig=row.get("other_config"))
    if row.get("protocols"):
        ovs["Protocols"] = sorted(row["protocols"])
    if ovs:
        meta["Ovs"] = ovs
    if row.get("external_ids"):
        meta["ExtID"] = dict(row["external_ids"])
    return meta


def port_metadata(row: Row) -> dict[str, Any]:
    meta: dict[str, Any] = {"Name": row["name"], "UUID": row["_uuid"], "Type": "ovsport"}
    if _one(row.get("bond_mode")):
        meta["BondMode"] = _one(row["bond_mode"])
    if _one(row.get("lacp")):
        meta["LACP"] = _one(row["lacp"])
    tag, trunks = _one(row.get("tag")), row.get("trunks") or []
    if trunks:
        meta["Vlans"] = sorted(int(t) for t in trunks)
    elif tag is not None:
        meta["Vlans"] = int(tag)
    ovs = _ovs_map(OtherConfig=row.get("other_config"))
    if ovs:
        meta["Ovs"] = ovs
    if row.get("external_ids"):
        meta["ExtID"] = dict(row["external_ids"])
    return meta


def interface_metadata(row: Row) -> dict[str, Any]:
    """OVS keys of an interface node. `Name`, `Type`, `MAC`, `IfIndex` and `Driver`
    are facts (InterfaceFacts): the probe sets them only where netlink does not."""
    meta: dict[str, Any] = {"UUID": row["_uuid"]}
    ofport = _one(row.get("ofport"))
    if ofport is not None:
        meta["OfPort"] = int(ofport)
    if row.get("external_ids"):
        meta["ExtID"] = dict(row["external_ids"])
    ovs = _ovs_map(Options=row.get("options"), OtherConfig=row.get("other_config"))
    error = _one(row.get("error"))
    if error:
        ovs["Error"] = error
    metric = interface_metric(row)
    if metric:
        ovs["Metric"] = metric
    if ovs:
        meta["Ovs"] = ovs
    options, status = row.get("options") or {}, row.get("status") or {}
    if row.get("type") in TUNNEL_TYPES:
        for key, opt in (("LocalIP", "local_ip"), ("RemoteIP", "remote_ip")):
            if options.get(opt):
                meta[key] = options[opt]
        if status.get("tunnel_egress_iface"):
            meta["TunEgressIface"] = status["tunnel_egress_iface"]
        if status.get("tunnel_egress_iface_carrier"):
            meta["TunEgressIfaceCarrier"] = status["tunnel_egress_iface_carrier"]
    return meta


def interface_metric(row: Row) -> dict[str, int]:
    """Ovs.Metric from the statistics column (zero counters omitted)."""
    stats = row.get("statistics") or {}
    return {key: int(stats[name]) for name, key in STATISTICS.items() if stats.get(name)}


def desired(snap: Snapshot) -> Desired:
    bridges = {u: bridge_metadata(r) for u, r in snap.bridges.items()}
    port_bridge: dict[str, str] = {}
    for u, b in snap.bridges.items():
        for p in b.get("ports") or []:
            port_bridge[p] = u
    ports = {u: (port_bridge[u], port_metadata(r)) for u, r in snap.ports.items()
             if u in port_bridge}
    intf_port: dict[str, str] = {}
    for u, p in snap.ports.items():
        for i in p.get("interfaces") or []:
            intf_port[i] = u
    interfaces: dict[str, tuple[InterfaceFacts, dict[str, Any]]] = {}
    by_name: dict[str, str] = {}
    for u, r in snap.interfaces.items():
        port = intf_port.get(u)
        ifindex = _one(r.get("ifindex"))
        facts = InterfaceFacts(u, str(r["name"]), str(r.get("type") or ""),
                               _one(r.get("mac_in_use")) or None,
                               int(ifindex) if ifindex else None, port,
                               port_bridge.get(port) if port else None,
                               str((r.get("status") or {}).get("driver_name") or "openvswitch"))
        interfaces[u] = (facts, interface_metadata(r))
        by_name[facts.name] = u
    patches: list[tuple[str, str]] = []
    for u, (facts, _) in interfaces.items():
        if facts.type != "patch":
            continue
        peer = by_name.get((snap.interfaces[u].get("options") or {}).get("peer", ""))
        if peer is not None and interfaces[peer][0].type == "patch" and u < peer:
            patches.append((u, peer))
    mirrors = sorted((u, str((r.get("external_ids") or {}).get(MIRROR_OF)))
                     for u, r in snap.ports.items() if u in ports
                     and (r.get("external_ids") or {}).get(MIRROR_OF) in ports)
    return Desired(bridges, ports, interfaces, sorted(patches), mirrors)
