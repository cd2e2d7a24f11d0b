"""The `mirroring` edge the OVS probe draws from an ovsmirror capture's mirror port
(external_ids `skygraph-mirror-of` = the mirrored port's UUID) to the mirrored port,
and removes with the mirror port."""

from __future__ import annotations

import asyncio

from skygraph.capture import ovsdb
from skygraph.probes.elements import Writer
from skygraph.probes.ovs import mapping
from skygraph.probes.ovs.mapping import Snapshot
from skygraph.probes.ovs.probe import MIRRORING, OvsProbe
from skygraph.topology.graph import Graph

BR, P1, MIR, I1, IMIR = "b" * 8, "1" * 8, "2" * 8, "3" * 8, "4" * 8


def snap(mirror: bool = True, mirrored: str = P1) -> Snapshot:
    ext = {ovsdb.MARK: "cap-1", mapping.MIRROR_OF: mirrored}
    ports = {P1: {"_uuid": P1, "name": "p1", "interfaces": [I1]}}
    interfaces = {I1: {"_uuid": I1, "name": "p1", "type": "internal"}}
    if mirror:
        ports[MIR] = {"_uuid": MIR, "name": "mir11111", "interfaces": [IMIR], "external_ids": ext}
        interfaces[IMIR] = {"_uuid": IMIR, "name": "mir11111", "type": "internal",
                            "external_ids": ext}
    bridge = {"_uuid": BR, "name": "br", "ports": list(ports)}
    return Snapshot((), {BR: bridge}, ports, interfaces)


def test_capture_and_probe_agree_on_the_key() -> None:
    assert mapping.MIRROR_OF == ovsdb.MIRROR_OF


def test_mirror_pairs_only_for_ports_on_a_bridge() -> None:
    assert mapping.desired(snap()).mirrors == [(MIR, P1)]
    assert mapping.desired(snap(mirrored="no-such-port")).mirrors == []
    assert mapping.desired(snap(mirror=False)).mirrors == []


def test_mirroring_edge_follows_the_mirror_port() -> None:
    w = Writer(Graph(clock=lambda: 1), "h")
    probe = OvsProbe(w, "host")

    async def scenario() -> list[list[tuple[str, str]]]:
        await w.put("host", {"Name": "h", "Type": "host"})
        seen = []
        for state in (snap(), snap(mirror=False)):
            await probe.apply(state)
            seen.append([(w.graph.nodes[e.Parent].name, w.graph.nodes[e.Child].name)
                         for e in w.graph.edges.values() if e.relation_type == MIRRORING])
        return seen

    with_mirror, without = asyncio.run(scenario())
    assert with_mirror == [("mir11111", "p1")]
    assert without == []
    port = next(n for n in w.named("p1") if n.type == "ovsport")
    assert "ExtID" not in port.Metadata
