"""Element identifiers: Skydive's GenID (UUIDv4, or UUIDv5 over NamespaceOID) and
the TID (topology ID) rules that bind flows to nodes.

TID rules (SPEC §1a, topology/tid.go): host = UUIDv5(Name); netns =
UUIDv5(hostTID + Path + "netns"); ovsbridge/ovsport = UUIDv5(hostTID + UUID +
Type); `Probe == "fabric"` nodes: TID = node ID; any other node =
UUIDv5(ownership parent TID + Name + Type).
"""

from __future__ import annotations

import uuid

NAMESPACE_OID = uuid.NAMESPACE_OID


def gen_id(*parts: str) -> str:
    """A random UUIDv4 without parts, else UUIDv5(NamespaceOID, "/".join(parts))."""
    if not parts:
        return str(uuid.uuid4())
    return str(uuid.uuid5(NAMESPACE_OID, "/".join(parts)))


def uuid5(data: str) -> str:
    return str(uuid.uuid5(NAMESPACE_OID, data))


def edge_id(parent: str, child: str, relation_type: str) -> str:
    """Deterministic edge ID used by probes (topology.go NewLink)."""
    return uuid5(parent + child + relation_type)


def host_tid(name: str) -> str:
    return uuid5(name)


def netns_tid(host_tid_: str, path: str) -> str:
    return uuid5(host_tid_ + path + "netns")


def ovs_tid(host_tid_: str, ovs_uuid: str, type_: str) -> str:
    return uuid5(host_tid_ + ovs_uuid + type_)


def child_tid(parent_tid: str, name: str, type_: str) -> str:
    return uuid5(parent_tid + name + type_)
