"""Flows in the graph (docs/graph-model.md "Flows") on the real embedded Bolt
server: flows made by the flow table from real packets (pcaps, scapy frames),
written by the flow store and the flow sink."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether

from skygraph.capture.offline import process_file
from skygraph.capture.options import CaptureOptions
from skygraph.capture.table import FlowTable
from skygraph.topology.flowschema import write_row
from skygraph.topology.flowstore import FlowSink, FlowStore, Pruned
from skygraph.topology.graph import Graph, wall_clock_ms
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, NodeAdded, NodeDeleted, NodeUpdated
from skygraph.topology.store import GraphStore
from tests.conftest import PCAPS, open_store, run

pytestmark = pytest.mark.bolt

T = 1_700_000_000_000
MS = 1_000_000
A_MAC, B_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def pcap_flows(name: str, tid: str) -> list[dict[str, Any]]:
    return [f.to_json() for f in process_file(PCAPS / name, CaptureOptions(), node_tid=tid).flows]


def rows(flows: list[dict[str, Any]], host: str = "agent1", at: int = T) -> list[dict[str, Any]]:
    return [write_row(f, host, at) for f in flows]


class Topology:
    """Topology changes written through the store (as the analyzer's writer does)."""

    def __init__(self, store: GraphStore) -> None:
        self.store = store
        self.clock = [T]
        self.graph = Graph(clock=lambda: self.clock[0])

    async def apply(self, *mutations: Any) -> None:
        self.clock[0] += 1
        await self.store.apply([m for x in mutations for m in self.graph.apply_nowait(x)])

    async def host_with(self, *interfaces: tuple[str, str]) -> None:
        """A host owning interfaces (ID, TID)."""
        await self.apply(NodeAdded(Node("host", {"Name": "agent1", "Type": "host"})))
        for ident, tid in interfaces:
            await self.apply(NodeAdded(Node(ident, {"Name": ident, "Type": "veth", "TID": tid})),
                             EdgeAdded(Edge(f"own-{ident}", "host", ident,
                                            {"RelationType": "ownership"})))


async def links(store: GraphStore) -> list[tuple[str, str, str]]:
    """(flow LayersPath, relationship type, target: node ID or flow LayersPath), sorted."""
    records = await store.read(
        "MATCH (f:Flow)-[r]->(x) RETURN f.LayersPath AS f, type(r) AS t, "
        "coalesce(x.ID, x.LayersPath) AS x", {})
    return sorted((r["f"], r["t"], r["x"]) for r in records)


async def count(store: GraphStore, pattern: str, **params: Any) -> int:
    return int((await store.read(f"MATCH {pattern} RETURN count(*) AS c", params))[0]["c"])


def test_tunnelled_flows_are_linked_to_their_interface_and_tunnel_flow(bolt_server):
    """GRE in GRE (3 flows) and VXLAN (1 outer, 2 inner) from the reference pcaps."""
    gre = pcap_flows("gre-gre-icmpv4.pcap", "tid-gre0")
    vxlan = pcap_flows("vxlan-src-port.pcap", "tid-vxlan0")

    async def scenario() -> None:
        store = await open_store(bolt_server)
        topo = Topology(store)
        await topo.host_with(("gre0", "tid-gre0"), ("vxlan0", "tid-vxlan0"))
        flows = FlowStore(store)
        assert await flows.write(rows(gre + vxlan)) == 6
        assert await links(store) == [
            ("Ethernet/IPv4/GRE", "CAPTURED_ON", "gre0"),
            ("Ethernet/IPv4/TCP", "CAPTURED_ON", "vxlan0"),
            ("Ethernet/IPv4/TCP", "CAPTURED_ON", "vxlan0"),
            ("Ethernet/IPv4/TCP", "INSIDE", "Ethernet/IPv4/UDP/VXLAN"),
            ("Ethernet/IPv4/TCP", "INSIDE", "Ethernet/IPv4/UDP/VXLAN"),
            ("Ethernet/IPv4/UDP/VXLAN", "CAPTURED_ON", "vxlan0"),
            ("IPv4/GRE", "CAPTURED_ON", "gre0"),
            ("IPv4/GRE", "INSIDE", "Ethernet/IPv4/GRE"),
            ("IPv4/ICMPv4", "CAPTURED_ON", "gre0"),
            ("IPv4/ICMPv4", "INSIDE", "IPv4/GRE"),
        ]
        # the chain inner -> middle -> outer, and the properties Browser users see
        chain = await store.read(
            "MATCH (i:Flow {Application: 'ICMPv4'})-[:INSIDE]->(m:Flow)-[:INSIDE]->(o:Flow)"
            "-[:CAPTURED_ON]->(n:Node)<-[:OWNERSHIP]-(h:Host) "
            "RETURN i.`Network.A` AS ia, m.`Network.A` AS ma, o.`Network.A` AS oa, "
            "i.`Metric.ABBytes` AS ib, o.`Metric.ABBytes` AS ob, n.Name AS n, h.Name AS h, "
            "i.Host AS agent", {})
        assert chain == [{"ia": "10.10.25.1", "ma": "10.10.11.2", "oa": "72.205.54.70",
                          "ib": 500, "ob": 810, "n": "gre0", "h": "agent1", "agent": "agent1"}]
        [outer] = await store.read("MATCH (f:Flow {LayersPath: 'Ethernet/IPv4/UDP/VXLAN'}) "
                                   "RETURN f.`Network.ID` AS vni, f.UUID AS u", {})
        assert outer["vni"] == 10
        inner = await store.read("MATCH (f:Flow {ParentUUID: $u}) RETURN f.UUID AS u",
                                 {"u": outer["u"]})
        assert len(inner) == 2
        # exactly the JSON that was sent, key order included
        for sent in gre + vxlan:
            got = await flows.flow(sent["UUID"])
            assert got == sent and list(got or {}) == list(sent)
        assert await flows.flow("nope") is None
        # writing the same batch again adds nothing
        await flows.write(rows(gre + vxlan))
        assert await count(store, "(f:Flow)") == 6
        assert await count(store, "(:Flow)-[r]->()") == 10
        await store.close()
    run(scenario())


def test_updates_overwrite_one_node_per_flow_and_old_updates_change_nothing(bolt_server):
    table = FlowTable(node_tid="tid-eth0")
    updates = []
    for tick in range(1, 4):
        for i in range(tick):  # 1, then 2, then 3 pings per update window
            at = T + tick * 10_000 + i * 100
            table.feed(bytes(Ether(src=A_MAC, dst=B_MAC) / IP(src="10.0.0.1", dst="10.0.0.2")
                             / ICMP(type=8, id=7, seq=i)), at * MS)
            table.feed(bytes(Ether(src=B_MAC, dst=A_MAC) / IP(src="10.0.0.2", dst="10.0.0.1")
                             / ICMP(type=0, id=7, seq=i)), (at + 1) * MS)
        (sent,) = table.update_at(T + tick * 10_000 + 5_000)
        updates.append(sent.to_json())
    assert len({u["UUID"] for u in updates}) == 1

    async def scenario() -> None:
        store = await open_store(bolt_server)
        await Topology(store).host_with(("eth0", "tid-eth0"))
        flows = FlowStore(store)
        uuid = updates[0]["UUID"]
        for u in updates[:2]:
            await flows.write(rows([u]))
        got = await flows.flow(uuid)
        assert got is not None and got["Metric"]["ABPackets"] == 3
        assert got["LastUpdateMetric"]["ABPackets"] == 2
        # the last update and, in the same batch, a replay of the first one
        await flows.write(rows([updates[2], updates[0]]))
        got = await flows.flow(uuid)
        assert got == updates[2] and got["Metric"]["ABPackets"] == 6
        # a late (older) update in a batch of its own changes nothing either
        await flows.write(rows([updates[1]]))
        assert await flows.flow(uuid) == updates[2]
        assert await count(store, "(f:Flow)") == 1
        assert await count(store, "(:Flow)-[:CAPTURED_ON]->(:Node)") == 1
        await store.close()
    run(scenario())


def test_links_are_made_when_the_interface_or_the_tunnel_flow_comes_later(bolt_server):
    outer, inner_a, inner_b = pcap_flows("vxlan-src-port.pcap", "tid-late")

    async def scenario() -> None:
        store = await open_store(bolt_server)
        topo = Topology(store)
        await topo.host_with()
        flows = FlowStore(store)
        # inner flows first: no interface, no tunnel flow yet
        await flows.write(rows([inner_a, inner_b]))
        assert await links(store) == []
        # the tunnel flow arrives: its children are linked to it
        await flows.write(rows([outer]))
        assert await count(store, "(:Flow)-[:INSIDE]->(:Flow {UUID: $u})", u=outer["UUID"]) == 2
        # the interface appears (the topology writer links the flows captured on it)
        await topo.apply(NodeAdded(Node("late0", {"Name": "late0", "Type": "vxlan",
                                                  "TID": "tid-late"})))
        assert await count(store, "(:Flow)-[:CAPTURED_ON]->(:Node {ID: 'late0'})") == 3
        # its kind changes (the node is re-created): the links follow
        await topo.apply(NodeUpdated(Node("late0", {"Name": "late0", "Type": "unknown",
                                                    "TID": "tid-late"})))
        assert await count(store, "(:Flow)-[:CAPTURED_ON]->(:Interface)") == 0
        assert await count(store, "(:Flow)-[:CAPTURED_ON]->(:Node {ID: 'late0'})") == 3
        # it goes away: the flows stay (history), their links go, the topology
        # history gets no edge for them
        await topo.apply(NodeDeleted(Node("late0", {})))
        assert await count(store, "(f:Flow)") == 3
        assert await count(store, "(:Flow)-[:CAPTURED_ON]->()") == 0
        assert await count(store, "(a:ArchivedEdge)") == 0
        assert await count(store, "(a:ArchivedNode {ID: 'late0'})") == 2
        await store.close()
    run(scenario())


def test_a_flow_not_linked_yet_is_linked_on_its_next_update(bolt_server):
    """A node that appears behind the topology writer's back (or in a race with
    the flow's first write) is linked by the flow's next update, and only then."""
    table = FlowTable(node_tid="tid-x")
    frame = bytes(Ether(src=A_MAC, dst=B_MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(id=9))
    table.feed(frame, T * MS)
    first = table.update_at(T + 1000)[0].to_json()
    table.feed(frame, (T + 1500) * MS)
    second = table.update_at(T + 2000)[0].to_json()

    async def scenario() -> None:
        store = await open_store(bolt_server)
        flows = FlowStore(store)
        await flows.write(rows([first]))
        await store.run("CREATE (:Node:Interface {ID: 'x', TID: 'tid-x', Name: 'x'})")
        assert await count(store, "(:Flow)-[:CAPTURED_ON]->()") == 0
        await flows.write(rows([second]))
        assert await count(store, "(:Flow)-[:CAPTURED_ON]->(:Node {ID: 'x'})") == 1
        await flows.write(rows([second]))  # linked once: nothing more
        assert await count(store, "(:Flow)-[:CAPTURED_ON]->()") == 1
        await store.close()
    run(scenario())


def test_retention_prunes_flows_not_written_within_it_with_their_links(bolt_server):
    gre = pcap_flows("gre-gre-icmpv4.pcap", "tid-gre0")  # captured in 2017
    recent = pcap_flows("vxlan-src-port.pcap", "tid-gre0")  # 2017 too: packet times do not count
    clock = [T - 3600_000 - 1]

    async def scenario() -> None:
        store = await open_store(bolt_server)
        await Topology(store).host_with(("gre0", "tid-gre0"))
        flows = FlowStore(store, retention_s=3600, clock=lambda: clock[0])
        await flows.write(rows(gre))  # written just over an hour before T
        for i, f in enumerate(recent):
            clock[0] = T - 1000 * i
            await flows.write(rows([f]))
        assert await count(store, "(:Flow)-[r]->()") == 10
        assert await flows.prune(T) == Pruned(flows=3)
        assert sorted(f["UUID"] for f in await flows.flows([f["UUID"] for f in gre + recent])) \
            == sorted(f["UUID"] for f in recent)
        assert await count(store, "(:Flow)-[r]->()") == 5
        assert await flows.prune(T) == Pruned()
        # an hour later the others go too (written more than the retention before)
        assert await flows.prune(T + 3600_000 - 500) == Pruned(flows=2)
        assert await count(store, "(f:Flow)") == 1
        assert await count(store, "(:Node {ID: 'gre0'})") == 1  # topology untouched
        await store.close()
    run(scenario())


def test_sink_batches_publishes_and_counts(bolt_server):
    flows_in = pcap_flows("eth-ip4-arp-dns-req-http-google.pcap", "tid-eth0") \
        + pcap_flows("dns.pcap", "tid-eth0")

    async def scenario() -> None:
        store = await open_store(bolt_server)
        published: list[dict[str, Any]] = []

        async def publish(flow: dict[str, Any]) -> None:
            published.append(flow)

        sink = FlowSink(FlowStore(store), max_batch=5, max_delay=0.05, publish=publish,
                        prune_interval=0)
        await sink.start()
        assert await sink.put("agent1", flows_in[:6]) == 6
        assert await sink.put("agent1", [*flows_in[6:], {"UUID": ""}]) == len(flows_in) - 6
        assert published == flows_in  # at once, before they are written
        await sink.flush()
        assert await count(store, "(f:Flow {Host: 'agent1'})") == len(flows_in) == 12
        status = sink.status()
        assert status["accepted"] == 12 and status["written"] == 12 and status["invalid"] == 1
        assert status["batches"] >= 3 and status["queued"] == 0 and status["rejected"] == 0
        await sink.stop()
        await store.close()
    run(scenario())


def test_sink_prunes_on_its_own_and_counts_it(bolt_server):
    table = FlowTable(node_tid="t")
    table.feed(bytes(Ether(src=A_MAC, dst=B_MAC) / IP(src="10.0.0.1", dst="10.0.0.2")
                     / ICMP(id=3)), T * MS)
    update = table.update_at(T + 1000)[0].to_json()  # with a LastUpdateMetric sample

    async def scenario() -> None:
        store = await open_store(bolt_server)
        # the sink's clock two minutes ahead: what is written now is past a 60 s retention
        sink = FlowSink(FlowStore(store, retention_s=60), max_delay=0.01, prune_interval=0.2,
                        clock=lambda: wall_clock_ms() + 120_000)
        await sink.start()
        await sink.put("agent1", [*pcap_flows("simple-tcpv4.pcap", "t"), update])
        await sink.flush()
        deadline = time.monotonic() + 30
        while sink.stats.pruned < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert (sink.stats.pruned, sink.stats.pruned_samples) == (2, 1)
        status = sink.status()
        assert (status["pruned"], status["pruned_samples"], status["retention"]) == (2, 1, 60)
        assert await count(store, "(f:Flow)") == 0
        assert await count(store, "(m:FlowMetric)") == 0
        await sink.stop()
        await store.close()
    run(scenario())


def test_sink_database_down_producers_wait_and_nothing_is_lost(bolt_server):
    """Backpressure and retries: while the database is stopped, `put` blocks once
    the queue is full; when it is back, every accepted flow is in the graph."""
    table = FlowTable(node_tid="tid-q")
    for i in range(150):
        table.feed(bytes(Ether(src=A_MAC, dst=B_MAC) / IP(src="10.0.0.1", dst="10.0.0.2")
                         / ICMP(id=i)), (T + i) * MS)
    docs = [f.to_json() for f in table.update_at(T + 1000)]
    assert len(docs) == 150

    async def scenario() -> None:
        store = await open_store(bolt_server)
        sink = FlowSink(FlowStore(store), max_batch=10, max_delay=0.01, max_queue=20,
                        max_backoff=0.2, prune_interval=0)
        await sink.start()
        bolt_server.loop.run(bolt_server.server.stop())
        try:
            async def produce() -> None:
                for i in range(0, len(docs), 3):
                    await sink.put("agent1", docs[i:i + 3])
            producer = asyncio.create_task(produce())
            deadline = time.monotonic() + 30
            while sink.stats.retries == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert sink.stats.retries > 0, "the sink must retry while the database is down"
            assert not producer.done(), "producers must wait while the database is down"
            assert sink.stats.accepted <= 20 + 10 + 1  # queue + the batch being retried
        finally:
            bolt_server.loop.run(bolt_server.server.start())
        await asyncio.wait_for(producer, 120)
        await asyncio.wait_for(sink.flush(), 120)
        assert await count(store, "(f:Flow {NodeTID: 'tid-q'})") == 150
        assert sink.stats.rejected == 0 and sink.stats.written == 150
        await sink.stop()
        await store.close()
    run(scenario())


def test_samples_and_raw_packets_kept_once_and_pruned_with_the_retention(bolt_server):
    """Two update ticks of one flow (packets kept): two samples, the packets once even
    when an update is sent again; the retention prunes old samples, then the flow with
    what it still has."""
    from skygraph.capture.options import CaptureOptions as Options
    from skygraph.topology.flowschema import wire_json
    table = FlowTable(Options(raw_packet_limit=3), node_tid="tid-r")
    frame = bytes(Ether(src=A_MAC, dst=B_MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(id=7))
    table.feed(frame, T * MS)
    table.feed(frame, (T + 10) * MS)
    first = wire_json(table.update_at(T + 1000)[0])
    table.feed(frame, (T + 60_000) * MS)
    table.feed(frame, (T + 60_010) * MS)   # over the limit of 3: not kept
    second = wire_json(table.update_at(T + 61_000)[0])
    assert [len(u["LastRawPackets"]) for u in (first, second)] == [2, 1]

    async def scenario() -> None:
        store = await open_store(bolt_server)
        published: list[dict[str, Any]] = []

        async def publish(flow: dict[str, Any]) -> None:
            published.append(flow)
        clock = [T + 1000]
        flows = FlowStore(store, retention_s=3600, clock=lambda: clock[0])
        sink = FlowSink(flows, max_delay=0.01, prune_interval=0, publish=publish)
        await sink.start()
        await sink.put("agent1", [first])
        await sink.flush()
        clock[0] = T + 61_000  # each update written when it is sent
        await sink.put("agent1", [second, first])   # the first one replayed
        await sink.stop()
        assert all("LastRawPackets" not in f for f in published)  # Skydive's JSON
        uuid = first["UUID"]
        samples = (await flows.metrics([uuid]))[uuid]
        assert [(m["Start"], m["Last"], m["ABPackets"] + m["BAPackets"]) for m in samples] == [
            (T, T + 1000, 2), (T + 1000, T + 61_000, 2)]
        packets = (await flows.raw_packets([uuid]))[uuid]
        assert [(p["Index"], p["Timestamp"]) for p in packets] == [
            (1, T), (2, T + 10), (3, T + 60_000)]
        assert base64.b64decode(packets[0]["Data"]) == frame
        assert await count(store, "(:Flow)-[:HAS_METRIC]->(:FlowMetric)") == 2
        assert await count(store, "(:Flow)-[:HAS_PACKET]->(:RawPacket)") == 3
        # an hour after the first sample was written: it goes (its replay did not
        # renew it), the flow (written again later) stays
        assert await flows.prune(T + 1000 + 3600_000 + 1) == Pruned(samples=1)
        assert await count(store, "(m:FlowMetric)") == 1
        assert await count(store, "(p:RawPacket)") == 3
        # an hour after the flow's last write: the flow, its sample and packets go
        assert await flows.prune(T + 61_000 + 3600_000 + 1) == Pruned(flows=1, samples=1)
        for label in ("Flow", "FlowMetric", "RawPacket"):
            assert await count(store, f"(x:{label})") == 0, label
        # clear() removes all three kinds too
        await flows.write(rows([first]))
        assert await flows.clear() == 1
        for label in ("Flow", "FlowMetric", "RawPacket"):
            assert await count(store, f"(x:{label})") == 0, label
        await store.close()
    run(scenario())
