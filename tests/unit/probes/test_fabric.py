"""The fabric probe: Skydive's `analyzer.topology.fabric` lines read (errors name
the line), fabric nodes/edges announced, agents' interfaces linked when they
appear and kept through an agent's resync."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest

from skygraph.api.agents import resync_plan
from skygraph.config import ConfigError, load
from skygraph.probes import fabric
from skygraph.probes.fabric import Fabric, FabricError, FabricProbe, Pattern, node_id, parse
from skygraph.topology import ids
from skygraph.topology.bus import EventBus, Subscription
from skygraph.topology.graph import Graph
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import (
    EdgeAdded,
    MetadataOp,
    Mutation,
    NodeAdded,
    NodeDeleted,
    NodePartiallyUpdated,
    StoreMutation,
)

LAB = [
    "TOR1[Name=tor1] -> TOR1_PORT1[MTU=1500]",
    "TOR1_PORT1 -> *[Type=host, Name=agent1]/eth1",
    "TOR1[Name=tor1] -> TOR1_PORT2",
    "TOR1_PORT2 -> *[Type=host,Name=agent2]/eth1",
]


# ---------------------------------------------------------------- parser
def test_lab_lines() -> None:
    f = parse(LAB)
    assert set(f.nodes) == {"TOR1", "TOR1_PORT1", "TOR1_PORT2"}
    tor = f.nodes["TOR1"]
    # Skydive's ID (UUIDv5 over "fabric" + name), TID = ID, default Type device
    assert tor.id == ids.uuid5("fabricTOR1")
    assert tor.metadata == {"Name": "tor1", "Type": "device", "Probe": "fabric",
                            "TID": tor.id}
    assert f.nodes["TOR1_PORT1"].metadata["MTU"] == "1500"      # strings, as Skydive
    assert f.nodes["TOR1_PORT2"].metadata["Name"] == "TOR1_PORT2"
    wild = f.wildcards
    assert [(n.name, p) for n, p, _ in wild] == [
        ("TOR1_PORT1", Pattern({"Type": "host", "Name": "agent1"}, {"Name": "eth1"})),
        ("TOR1_PORT2", Pattern({"Type": "host", "Name": "agent2"}, {"Name": "eth1"}))]
    assert [k.line for _, _, k in wild] == [2, 4]


def test_layer2_only_link_metadata_and_interface_attributes() -> None:
    f = parse(["SPINE --> LEAF[Type=switch]", "LEAF ->[Speed=10G, Vlan=\"12\"] P1",
               "P1 -> *[Type=host]/*[Type=veth,MTU=9000]"])
    first, second, third = f.links
    assert first.layer2_only and not second.layer2_only
    assert f.nodes["LEAF"].metadata["Type"] == "switch"
    assert second.metadata == {"Type": "fabric", "Speed": "10G", "Vlan": "12"}
    assert third.child == Pattern({"Type": "host"}, {"Type": "veth", "MTU": "9000"})


@pytest.mark.parametrize(("line", "message"), [
    ("TOR1 TOR1_PORT1", r"line 1 \('TOR1 TOR1_PORT1'\): expected two ends joined by '->'"),
    ("A -> B -> C", r"line 1 .*expected two ends"),
    ("*[Type=host]/eth1 -> TOR1", r"line 1 .*the parent cannot be a wildcard"),
    ("TOR1 -> *[Type=host]", r"line 1 .*a wildcard needs a node and an interface"),
    ("TOR1[Name] -> P", r"line 1 .*key=value pairs.*got 'Name'"),
    ("TOR1[Name=a -> P", r"line 1 .*expected NAME\[key=value,...\]"),
    ("TOR1 ->[Speed=1 P", r"line 1 .*'\[' without '\]'"),
    (" -> P", r"line 1 .*the parent node has no name"),
    ("TOR1 ->[RelationType=x] P", r"line 1 .*RelationType is set by the probe"),
    ("TOR1 -> a/b", r"line 1 .*only the child may be a wildcard"),
])
def test_errors_name_the_line(line: str, message: str) -> None:
    with pytest.raises(FabricError, match=message):
        parse([line])


def test_conflicting_attributes_name_both_lines() -> None:
    with pytest.raises(FabricError, match=r"line 3 .*TOR1: Name=b conflicts with Name=a given "
                                          r"on line 1"):
        parse(["TOR1[Name=a] -> P1", "TOR1 -> P2", "TOR1[Name=b] -> P3"])


def test_config_key_is_checked_at_load(tmp_path: Any) -> None:
    ok = tmp_path / "ok.yml"
    ok.write_text("analyzer:\n  topology:\n    fabric:\n      - TOR1 -> TOR1_PORT1\n")
    assert load(str(ok), env={}).analyzer.topology.fabric == ("TOR1 -> TOR1_PORT1",)
    bad = tmp_path / "bad.yml"
    bad.write_text("analyzer:\n  topology:\n    fabric:\n      - TOR1 -> P\n      - TOR1 P\n")
    with pytest.raises(ConfigError, match=r"analyzer.topology.fabric line 2 \('TOR1 P'\)"):
        load(str(bad), env={})
    bad.write_text("analyzer:\n  topology:\n    fabric: TOR1 -> P\n")
    with pytest.raises(ConfigError, match=r"analyzer.topology.fabric: expected a list"):
        load(str(bad), env={})


def test_matching_prints_values() -> None:
    n = Node("x", {"Name": "eth1", "MTU": 1500, "Up": True, "ExtID": {"k": "v"}})
    assert fabric.matches(n, {"Name": "eth1", "MTU": "1500"})
    assert fabric.matches(n, {"Up": "true", "ExtID.k": "v"})
    assert not fabric.matches(n, {"MTU": "9000"})
    assert not fabric.matches(n, {"Missing": "x"})
    assert not fabric.matches(n, {"ExtID": "v"})


# ---------------------------------------------------------------- probe
class Target:
    """The analyzer's API service, as the probe sees it: a graph, apply, events."""

    def __init__(self) -> None:
        self.bus: EventBus[StoreMutation] = EventBus()
        self.graph = Graph(None, clock=lambda: 1000)

    async def apply(self, mutations: Iterable[Mutation]) -> list[StoreMutation]:
        out: list[StoreMutation] = []
        for m in mutations:
            for applied in self.graph.apply_nowait(m):
                await self.bus.publish(applied)
                out.append(applied)
        return out

    def subscribe(self, maxsize: int = 10_000) -> Subscription[StoreMutation]:
        return self.bus.subscribe(maxsize)


def host_and_eth1(host: str) -> tuple[Node, Node, Edge]:
    h = Node(ids.gen_id(host), {"Name": host, "Type": "host"}, Host=host)
    eth1 = Node(ids.gen_id(host, "eth1"), {"Name": "eth1", "Type": "veth", "MTU": 1500},
                Host=host)
    own = Edge(ids.edge_id(h.ID, eth1.ID, "ownership"), h.ID, eth1.ID,
               {"RelationType": "ownership"}, Host=host)
    return h, eth1, own


async def settle(t: Target) -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def fabric_links(t: Target, child: str) -> list[Edge]:
    return [e for e in t.graph.edges.values() if e.Child == child
            and e.Origin == fabric.ORIGIN]


def test_probe_creates_the_fabric_and_links_interfaces_as_they_appear() -> None:
    async def scenario() -> None:
        t = Target()
        h1, eth1, own1 = host_and_eth1("agent1")
        await t.apply([NodeAdded(h1), NodeAdded(eth1), EdgeAdded(own1)])   # before start
        probe = FabricProbe(t, parse(LAB))
        await probe.start()
        try:
            tor = t.graph.nodes[node_id("TOR1")]
            assert tor.Host == "" and tor.Origin == "analyzer.fabric"
            assert tor.Metadata["Probe"] == "fabric" and tor.Metadata["TID"] == tor.ID
            port1 = node_id("TOR1_PORT1")
            rels = sorted(e.Metadata["RelationType"] for e in t.graph.edges_of(port1)
                          if e.Parent == tor.ID)
            assert rels == ["layer2", "ownership"]
            l2 = next(e for e in t.graph.edges_of(port1)
                      if e.Parent == tor.ID and e.relation_type == "layer2")
            assert l2.Metadata == {"RelationType": "layer2", "Type": "fabric"} and l2.Host == ""
            # agent1's eth1 existed before the probe started: linked by the first scan
            [link] = fabric_links(t, eth1.ID)
            assert (link.Parent, link.Metadata["RelationType"], link.Host) == (
                port1, "layer2", "")
            assert ids.edge_id(port1, eth1.ID, "layer2") == link.ID
            # agent2 comes later: its eth1 is linked when the host owns it
            h2, eth2, own2 = host_and_eth1("agent2")
            await t.apply([NodeAdded(h2), NodeAdded(eth2)])
            await settle(t)
            assert fabric_links(t, eth2.ID) == []
            await t.apply([EdgeAdded(own2)])
            await settle(t)
            assert [e.Parent for e in fabric_links(t, eth2.ID)] == [node_id("TOR1_PORT2")]
            # an interface of another name, or on a host no line names, is not linked
            h3, eth3, own3 = host_and_eth1("agent3")
            other = Node("o", {"Name": "eth2", "Type": "veth"}, Host="agent1")
            await t.apply([NodeAdded(h3), NodeAdded(eth3), EdgeAdded(own3), NodeAdded(other),
                           EdgeAdded(Edge("oe", h1.ID, "o", {"RelationType": "ownership"},
                                          Host="agent1"))])
            await settle(t)
            assert fabric_links(t, eth3.ID) == [] and fabric_links(t, "o") == []
            # renamed: no longer the configured interface, unlinked; renamed back: linked
            await t.apply([NodePartiallyUpdated(eth2.ID, (MetadataOp("Name", "eth9"),))])
            await settle(t)
            assert fabric_links(t, eth2.ID) == []
            await t.apply([NodePartiallyUpdated(eth2.ID, (MetadataOp("Name", "eth1"),))])
            await settle(t)
            assert len(fabric_links(t, eth2.ID)) == 1
            # the interface deleted and created again (agent restart): linked again
            await t.apply([NodeDeleted(eth1)])
            await t.apply([NodeAdded(eth1), EdgeAdded(own1)])
            await settle(t)
            assert len(fabric_links(t, eth1.ID)) == 1
        finally:
            await probe.stop()
    asyncio.run(scenario())


def test_links_survive_the_agents_resync() -> None:
    """resync_plan deletes only the agent's own elements: the fabric link (Host "")
    from TOR1_PORT1 to the agent's eth1 stays, the fabric nodes too."""
    async def scenario() -> None:
        t = Target()
        probe = FabricProbe(t, parse(LAB))
        await probe.start()
        h1, eth1, own1 = host_and_eth1("agent1")
        await t.apply([NodeAdded(h1), NodeAdded(eth1), EdgeAdded(own1)])
        await settle(t)
        [link] = fabric_links(t, eth1.ID)
        plan = resync_plan(t.graph.nodes, t.graph.edges, "agent1", [h1, eth1], [own1])
        assert plan.refused == []
        await t.apply(plan.mutations)
        await settle(t)
        assert link.ID in t.graph.edges
        assert node_id("TOR1") in t.graph.nodes
        # an agent may not take a fabric node over
        tor = t.graph.nodes[node_id("TOR1")]
        plan = resync_plan(t.graph.nodes, t.graph.edges, "agent1", [h1, eth1, tor.with_(
            Host="agent1")], [own1])
        assert [r for r in plan.refused if "belongs to host" in r or "exists as" in r]
        await probe.stop()
    asyncio.run(scenario())


def test_a_new_configuration_replaces_the_old_fabric() -> None:
    async def scenario() -> None:
        t = Target()
        h1, eth1, own1 = host_and_eth1("agent1")
        await t.apply([NodeAdded(h1), NodeAdded(eth1), EdgeAdded(own1)])
        first = FabricProbe(t, parse(LAB))
        await first.start()
        await first.stop()
        assert len(fabric_links(t, eth1.ID)) == 1
        # restart with TOR1_PORT2 gone and agent1's eth1 now on TOR1_PORT3
        second = FabricProbe(t, parse(["TOR1[Name=tor1] -> TOR1_PORT1[MTU=1500]",
                                       "TOR1 -> TOR1_PORT3",
                                       "TOR1_PORT3 -> *[Type=host,Name=agent1]/eth1"]))
        await second.start()
        await second.stop()
        names = sorted(n.Metadata["Name"] for n in t.graph.nodes.values()
                       if n.Origin == fabric.ORIGIN)
        assert names == ["TOR1_PORT1", "TOR1_PORT3", "tor1"]
        assert [e.Parent for e in fabric_links(t, eth1.ID)] == [node_id("TOR1_PORT3")]
        # no configuration: nothing of the fabric left
        third = FabricProbe(t, Fabric())
        await third.start()
        await third.stop()
        assert [n for n in t.graph.nodes.values() if n.Origin == fabric.ORIGIN] == []
        assert [e for e in t.graph.edges.values() if e.Origin == fabric.ORIGIN] == []
    asyncio.run(scenario())
