"""Skydive's ID and TID rules (UUIDv5 over NamespaceOID)."""

import uuid

from skygraph.topology import ids


def v5(text: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, text))


def test_gen_id():
    assert uuid.UUID(ids.gen_id()).version == 4
    assert ids.gen_id("a", "b") == v5("a/b")
    assert ids.edge_id("p", "c", "ownership") == v5("pcownership")


def test_tid_rules():
    h = ids.tid("x", {"Type": "host", "Name": "agent1"}, None, None)
    assert h == v5("agent1")
    assert ids.tid("n", {"Type": "netns", "Name": "vm1", "Path": "/run/netns/vm1"}, h, h) == \
        v5(h + "/run/netns/vm1" + "netns")
    assert ids.tid("b", {"Type": "ovsbridge", "Name": "br", "UUID": "u1"}, h, h) == \
        v5(h + "u1" + "ovsbridge")
    assert ids.tid("f", {"Type": "fabric", "Name": "TOR1", "Probe": "fabric"}, None, None) == "f"
    owner = v5("owner")
    assert ids.tid("i", {"Type": "veth", "Name": "eth0"}, h, owner) == v5(owner + "eth0" + "veth")
    assert ids.tid("i", {"Type": "veth", "Name": "eth0"}, h, None) is None
    assert ids.tid("n", {"Type": "netns", "Name": "vm1", "Path": "/p"}, None, None) is None
