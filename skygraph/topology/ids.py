"""Element identifiers: Skydive's GenID (UUIDv4, or UUIDv5 over NamespaceOID) and
the TID (topology ID) rules that bind flows to nodes.

TID rules (SPEC §1a, topology/tid.go): host = UUIDv5(Name); netns =
UUIDv5(hostTID + Path + "netns"); ovsbridge/ovsport = UUIDv5(hostTID + UUID +
Type); `Probe == "fabric"` nodes: TID = node ID; any other node =
UUIDv5(ownership parent TID + Name + Type).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

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


def tid(node_id: str, metadata: Mapping[str, Any], host_tid_: str | None,
        owner_tid: str | None) -> str | None:
    """The TID Skydive's TIDMapper gives a node, or None while it cannot be known.

    `host_tid_` is the TID of the host the node belongs to, `owner_tid` the
    TID of the node's ownership parent (None when it has none yet).
    """
    type_ = str(metadata.get("Type", ""))
    name = str(metadata.get("Name", ""))
    if metadata.get("Probe") == "fabric":
        return node_id
    if type_ == "host":
        return host_tid(name)
    if type_ == "netns" and host_tid_ is not None:
        return netns_tid(host_tid_, str(metadata.get("Path", "")))
    if type_ in ("ovsbridge", "ovsport") and host_tid_ is not None:
        return ovs_tid(host_tid_, str(metadata.get("UUID", "")), type_)
    if type_ in ("netns", "ovsbridge", "ovsport"):
        return None
    return child_tid(owner_tid, name, type_) if owner_tid is not None else None
