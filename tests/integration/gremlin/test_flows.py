"""Skydive's flow steps (SPEC §1f) on flows stored in the graph: flows built
by the flow table from real (scapy-crafted) packets, written by the flow
store, queried through Gremlin on the embedded Bolt server."""

from __future__ import annotations

from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from skygraph.capture.offline import process_file
from skygraph.capture.options import CaptureOptions
from skygraph.capture.table import FlowTable
from skygraph.gremlin import GremlinQueryError, Limits, NotAvailableError
from skygraph.topology.flow import Flow, FlowLayer, FlowMetric, FlowProtocol, ICMPLayer, ICMPType
from skygraph.topology.flowschema import write_row
from skygraph.topology.flowstore import FlowStore
from tests.conftest import PCAPS
from tests.integration.gremlin.conftest import NOW, GremlinDB, edge, node

pytestmark = pytest.mark.bolt

A_MAC, B_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
T = NOW - 60_000  # the pings happen a minute before the queries
MS = 1_000_000


def ab(p: Packet) -> Packet:
    return Ether(src=A_MAC, dst=B_MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / p


def ba(p: Packet) -> Packet:
    return Ether(src=B_MAC, dst=A_MAC) / IP(src="10.0.0.2", dst="10.0.0.1") / p


def captured(tid: str, packets: list[tuple[int, Packet]]) -> list[dict[str, Any]]:
    """The flows a capture on node `tid` makes of `packets` (ms offset from T, packet)."""
    table = FlowTable(node_tid=tid)
    for at, p in packets:
        table.feed(bytes(p), (T + at) * MS)
    flows = table.update_at(T + 10_000)
    return [f.to_json() for f in sorted(flows, key=lambda f: f.start)]


def ping(icmp_id: int, at: int, count: int = 1) -> list[tuple[int, Packet]]:
    out: list[tuple[int, Packet]] = []
    for i in range(count):
        out += [(at + 10 * i, ab(ICMP(type=8, id=icmp_id, seq=i))),
                (at + 10 * i + 1, ba(ICMP(type=0, id=icmp_id, seq=i)))]
    return out


def topology() -> tuple[list[Any], list[Any]]:
    nodes = [node("host", Name="host1", Type="host", TID="tid-host"),
             node("eth0", Name="eth0", Type="veth", TID="node1", MAC=A_MAC),
             node("eth1", Name="eth1", Type="veth", TID="node2", PeerIntfMAC=B_MAC),
             node("lo", Name="lo", Type="device", TID="node3")]
    edges = [edge("h-eth0", "host", "eth0", RelationType="ownership"),
             edge("h-eth1", "host", "eth1", RelationType="ownership"),
             edge("veth", "eth0", "eth1", RelationType="layer2", Type="veth")]
    return nodes, edges


def load(gdb: GremlinDB, flows: list[dict[str, Any]]) -> None:
    gdb.load(*topology())
    n = gdb.loop.run(FlowStore(gdb.store).write([write_row(f, "host1", NOW) for f in flows]))
    assert n == len(flows)


# node1 sees pings 222 and 444; node2 sees ping 222 again and a TCP SYN.
NODE1 = captured("node1", ping(222, 0, count=2) + ping(444, 1000))
NODE2 = captured("node2", [*ping(222, 0, count=2), (3000, ab(TCP(sport=1234, dport=80)))])


def uuids(result: list[dict[str, Any]]) -> list[str]:
    return [f["UUID"] for f in result]


def names(result: list[dict[str, Any]]) -> list[str]:
    return [n["Metadata"]["Name"] for n in result]


@pytest.fixture
def spec(gdb: GremlinDB) -> GremlinDB:
    """SPEC's flow_test.go setup: two ICMP flows, ids 222 and 444, on node1."""
    load(gdb, NODE1)
    return gdb


@pytest.fixture
def both(gdb: GremlinDB) -> GremlinDB:
    load(gdb, NODE1 + NODE2)
    return gdb


def test_spec_flow_facts(spec: GremlinDB) -> None:
    q = spec.query
    assert [f["ICMP"]["ID"] for f in q("G.Flows().Has('ICMP.ID', 222)")] == [222]
    assert len(q("G.Flows().Has('ICMP.ID', NE(555))")) == 2
    assert len(q("G.Flows().Has('ICMP.ID', NE(555)).Limit(1)")) == 1
    assert len(q("G.Flows().HasEither('ICMP.ID', 222, 'ICMP.ID', 444)")) == 2
    assert len(q("G.Flows().Has('NodeTID', 'node1').Has('ICMP.ID', 222)")) == 1
    assert len(q("G.Flows('ICMP.ID', 444)")) == 1
    assert q("G.Flows().Count()") == 2
    assert q("G.Flows().Has('ICMP.ID', Within(222, 444)).Count()") == 2
    assert q("G.Flows().Has('ICMP.ID', Gt(300)).Values('ICMP.ID')") == [444]
    assert q("G.Flows().HasKey('Transport')") == []
    assert len(q("G.Flows().HasNot('Transport')")) == 2


def test_flows_come_back_as_the_agent_sent_them(spec: GremlinDB) -> None:
    got = {f["UUID"]: f for f in spec.query("G.Flows()")}
    assert got == {f["UUID"]: f for f in NODE1}
    for f in NODE1:
        assert list(got[f["UUID"]]) == list(f)  # Skydive's key order too
    flow = got[NODE1[0]["UUID"]]
    assert flow["Metric"]["ABPackets"] == 2 and flow["Metric"]["BAPackets"] == 2
    assert flow["ParentUUID"] == "" and flow["Application"] == "ICMPv4"


def test_dedup(both: GremlinDB) -> None:
    q = both.query
    assert len(q("G.Flows().Has('ICMP.ID', 222)")) == 2  # one per capture point
    assert len(q("G.Flows().Has('ICMP.ID', 222).Dedup('ICMP.ID')")) == 1
    # default key TrackingID: the same ping seen on node1 and node2 is one
    assert len(q("G.Flows().Dedup()")) == 3
    assert len(q("G.Flows().Dedup('NodeTID')")) == 2
    assert len(q("G.Flows().Dedup('NodeTID', 'Application')")) == 3
    # after a sort, Dedup keeps the first of each key and the order
    got = q("G.Flows().Sort(DESC, 'Last').Dedup('NodeTID')")
    assert [f["NodeTID"] for f in got] == ["node2", "node1"]
    assert got[0]["Last"] == max(f["Last"] for f in NODE2)
    assert got[1]["Last"] == max(f["Last"] for f in NODE1)


def test_sort_and_range(both: GremlinDB) -> None:
    q = both.query
    lasts = sorted(f["Last"] for f in NODE1 + NODE2)
    assert [f["Last"] for f in q("G.Flows().Sort()")] == lasts
    assert [f["Last"] for f in q("G.Flows().Sort(DESC)")] == lasts[::-1]
    assert [f["Last"] for f in q("G.Flows().Sort(DESC, 'Last').Range(1, 3)")] == lasts[::-1][1:3]
    assert [f["ICMP"]["ID"] for f in q("G.Flows().Has('Application', 'ICMPv4')"
                                       ".Sort(DESC, 'ICMP.ID').Limit(1)")] == [444]
    starts = sorted(f["Start"] for f in NODE1 + NODE2)
    assert [f["Start"] for f in q("G.Flows().Sort('Start')")] == starts


def test_capture_node_hops_node(both: GremlinDB) -> None:
    q = both.query
    assert names(q("G.Flows().Has('ICMP.ID', 444).CaptureNode()")) == ["eth0"]
    assert names(q("G.Flows().Has('ICMP.ID', 444).Node()")) == ["eth0"]
    assert names(q("G.Flows().Has('ICMP.ID', 444).Hops()")) == ["eth0"]
    assert sorted(names(q("G.Flows().Has('ICMP.ID', 222).Hops()"))) == ["eth0", "eth1"]
    assert names(q("G.Flows().Has('ICMP.ID', 222).CaptureNode('Name', 'eth1')")) == ["eth1"]
    assert names(q("G.Flows().Has('ICMP.ID', 444).CaptureNode('Name', 'eth1')")) == []
    # back on nodes, topology steps continue
    assert names(q("G.Flows().Has('ICMP.ID', 444).CaptureNode().In()")) == ["host1"]
    assert q("G.Flows().CaptureNode().Dedup().Count()") == 2


def test_in_out_both_by_mac_or_peer_mac(both: GremlinDB) -> None:
    q = both.query
    icmp444 = "G.Flows().Has('ICMP.ID', 444)"
    assert names(q(icmp444 + ".In()")) == ["eth0"]  # Link.A = eth0's MAC
    assert names(q(icmp444 + ".Out()")) == ["eth1"]  # Link.B = eth1's PeerIntfMAC
    assert names(q(icmp444 + ".Both()")) == ["eth0", "eth1"]
    assert names(q(icmp444 + ".Both('Name', 'eth1')")) == ["eth1"]
    # Nodes: capture node, MAC == Link.A, MAC == Link.B (MAC only)
    assert names(q(icmp444 + ".Nodes()")) == ["eth0", "eth0"]
    assert names(q("G.Flows().Has('NodeTID', 'node2').Has('ICMP.ID', 222).Nodes()")) == [
        "eth1", "eth0"]


def test_flows_without_link_give_the_capture_node_only(gdb: GremlinDB) -> None:
    ip_only = Flow(uuid="ip-only", layers_path="IPv4/ICMPv4", application="ICMPv4",
                   network=FlowLayer(FlowProtocol.IPV4, "10.0.0.1", "10.0.0.2"),
                   icmp=ICMPLayer(ICMPType.ECHO, 0, 7), metric=FlowMetric(1, 84, 0, 0, T, T),
                   start=T, last=T, tracking_id="t1", l3_tracking_id="t1", node_tid="node3")
    load(gdb, [ip_only.to_json()])
    assert gdb.query("G.Flows().In()") == []
    assert gdb.query("G.Flows().Both()") == []
    assert names(gdb.query("G.Flows().Nodes()")) == ["lo"]


def test_flows_of_nodes_and_paths(both: GremlinDB) -> None:
    q = both.query
    got = q("G.V().Has('Name', 'eth0').Flows().Has('Application', 'ICMPv4')")
    assert sorted(uuids(got)) == sorted(uuids(NODE1))
    assert {f["Application"] for f in q("G.V().Has('Name', 'eth1').Flows()")} == {"ICMPv4", "TCP"}
    assert q("G.V().Has('Type', 'veth').Flows().Count()") == 4
    assert q("G.V().Has('Name', 'lo').Flows()") == []  # no flow on it
    assert q("G.V().Has('Name', 'nothing').Flows()") == []
    assert q("G.V().Has('Type', 'host').Flows()") == []  # not a capture point
    # node steps fold into the flow stream: Flows(k, v) filters at once
    assert len(q("G.V().Has('Name', 'eth0').Flows('ICMP.ID', 222)")) == 1
    # a shortest path: the flows of every node on it
    path = "G.V().Has('Name', 'eth0').ShortestPathTo(Metadata('Name', 'eth1'))"
    assert len(q(path)) == 1
    assert q(path + ".Flows().Count()") == 4
    assert q(path + ".Flows().Has('Application', 'TCP').Count()") == 1


def test_endpoint_expansion_and_aliases(both: GremlinDB) -> None:
    q = both.query
    count = "G.Flows().{}.Count()".format
    assert q(count("Has('Network', '10.0.0.2')")) == 4  # A or B
    assert q(count("Has('Network.A', '10.0.0.2')")) == 0  # the first packet's source
    assert q(count("Has('IPV4.A', '10.0.0.1')")) == 4
    assert q(count("Has('IPV6', '10.0.0.1')")) == 4
    assert q(count(f"Has('Link', '{B_MAC}')")) == 4
    assert q(count(f"Has('ETHERNET.B', '{B_MAC}')")) == 4
    assert q(count("Has('Transport', 80)")) == 1
    assert q(count("Has('Transport', 1234)")) == 1
    assert q(count("Has('TCP.B', 80)")) == 1
    assert q(count("Has('UDP.A', 1234)")) == 1  # an alias, no protocol test (Skydive)
    assert q(count("Has('Transport.A', 80)")) == 0
    assert q(count("Has('Network', Ipv4Range('10.0.0.0/24'))")) == 4
    assert q(count("Has('Network', NE('10.0.0.2'))")) == 4  # B differs from A, A is not
    assert q(count("HasEither('Transport', 80, 'ICMP.ID', 444)")) == 2
    assert q(count("Has('Network', Regex('10[.]0[.]0[.]2'))")) == 4
    assert q("G.Flows().Has('TCP', 80).Values('IPV4.B')") == ["10.0.0.2"]
    assert q("G.Flows().Has('TCP', 80).Values('Transport')") == [
        {"Protocol": "TCP", "A": 1234, "B": 80, "ID": 0}]


def test_group_and_more_than(both: GremlinDB) -> None:
    q = both.query
    [groups] = q("G.Flows().Has('Application', 'ICMPv4').Group()")
    by_size = sorted(len(flows) for flows in groups.values())
    assert by_size == [1, 2]  # ping 222 on both nodes, ping 444 on node1
    same = next(k for k, v in groups.items() if len(v) == 2)
    assert {f["TrackingID"] for f in groups[same]} == {same}
    assert {f["NodeTID"] for f in groups[same]} == {"node1", "node2"}
    [kept] = q("G.Flows().Has('Application', 'ICMPv4').Group().MoreThan(1)")
    assert list(kept) == [same]
    [kept] = q("G.Flows().Group().MoreThan()")  # default 1
    assert list(kept) == [same]
    assert q("G.Flows().Group().MoreThan(2)") == []  # n honoured (SPEC §3 fix 2)
    assert len(q("G.Flows().Group().MoreThan(0)")[0]) == 3
    [by_node] = q("G.Flows().Group('NodeTID')")
    assert {k: len(v) for k, v in by_node.items()} == {"node1": 2, "node2": 2}
    [by_id] = q("G.Flows().Group('ICMP.ID')")
    assert {k: len(v) for k, v in by_id.items()} == {"222": 2, "444": 1}  # the TCP flow has none


def test_sum(both: GremlinDB) -> None:
    q = both.query
    total = q("G.Flows().Sum('Metric.ABBytes')")
    assert isinstance(total, float)
    assert total == float(sum(f["Metric"]["ABBytes"] for f in NODE1 + NODE2))
    assert q("G.Flows().Has('ICMP.ID', 444).Sum('LastUpdateMetric.ABPackets')") == 1.0
    with pytest.raises(GremlinQueryError, match="only fields of Metric and LastUpdateMetric"):
        q("G.Flows().Sum('ICMP.ID')")
    with pytest.raises(GremlinQueryError, match="Metric has no field 'Foo'"):
        q("G.Flows().Sum('Metric.Foo')")


def test_values_and_keys(both: GremlinDB) -> None:
    q = both.query
    assert sorted(q("G.Flows().Values('NodeTID')")) == ["node1", "node1", "node2", "node2"]
    assert q("G.Flows().Values('NodeTID').Dedup().Count()") == 2
    keys = q("G.Flows().Keys()")
    assert "Network.A" in keys and "Metric.ABBytes" in keys and "UUID" in keys
    assert "Host" not in keys and "UpdatedAt" not in keys  # the analyzer's own
    assert keys == sorted(keys)


def test_time_context_selects_the_flows_alive_then(gdb: GremlinDB) -> None:
    early = captured("node1", ping(222, 0))  # T .. T+1
    late = captured("node1", ping(444, 40_000))  # T+40s .. T+40.001s
    load(gdb, early + late)
    q = gdb.query
    limits = Limits(flow_expire_s=10)

    def ids_at(text: str) -> list[int]:
        return sorted(f["ICMP"]["ID"] for f in q(text, limits=limits))
    assert ids_at(f"G.At({T + 5_000}).Flows()") == [222]  # 5 s after it ended (expire 10 s)
    assert ids_at(f"G.At({T + 20_000}).Flows()") == []  # ended more than expire ago
    assert ids_at(f"G.At({T + 45_000}).Flows()") == [444]
    assert ids_at(f"G.At({T + 45_000}, 50).Flows()") == [222, 444]  # a 50 s slice
    assert ids_at(f"G.At({T - 1}).Flows()") == []  # before they started
    # the default expire (600 s) keeps both alive a minute later, as agents would
    assert len(q(f"G.At({T + 60_000}).Flows()")) == 2
    # from the nodes of that time, with their flows
    assert ids_at(f"G.At({T + 45_000}).V().Has('Name', 'eth0').Flows()") == [444]
    assert names(q(f"G.At({T + 45_000}).Flows().CaptureNode()", limits=limits)) == ["eth0"]
    assert q(f"G.At({T + 45_000}).V().Has('Name', 'eth1').Flows()", limits=limits) == []


def test_tunnel_and_inner_flows(gdb: GremlinDB) -> None:
    """vxlan-src-port.pcap: one VXLAN flow (VNI 10) with two TCP flows inside."""
    flows = [f.to_json() for f in process_file(PCAPS / "vxlan-src-port.pcap", CaptureOptions(),
                                               node_tid="node1").flows]
    load(gdb, flows)
    q = gdb.query
    [outer] = q("G.Flows().Has('ParentUUID', '')")  # Skydive's outer flows
    assert outer["Application"] == "VXLAN" and outer["Network"]["ID"] == 10
    assert outer["ParentUUID"] == ""
    assert uuids(q("G.Flows().HasNot('ParentUUID')")) == [outer["UUID"]]
    inner = q(f"G.Flows().Has('ParentUUID', '{outer['UUID']}')")
    assert sorted(uuids(inner)) == sorted(f["UUID"] for f in flows[1:])
    assert q("G.Flows().Has('ParentUUID', NE('')).Count()") == 2
    assert q("G.Flows().Has('Network.ID', 10).Values('Transport.B')") == [4789]


def test_errors(both: GremlinDB) -> None:
    q = both.query
    with pytest.raises(GremlinQueryError, match="OutE\\(\\) cannot follow Flows\\(\\)"):
        q("G.Flows().OutE()")
    with pytest.raises(GremlinQueryError, match="Count\\(\\) cannot follow Group\\(\\)"):
        q("G.Flows().Group().Count()")
    with pytest.raises(GremlinQueryError, match="Hops\\(\\) cannot follow V\\(\\)"):
        q("G.V().Hops()")
    with pytest.raises(GremlinQueryError, match="MoreThan\\(\\) cannot follow Flows\\(\\)"):
        q("G.Flows().MoreThan(1)")
    with pytest.raises(NotAvailableError, match="Sockets\\(\\) is not available"):
        q("G.Flows().Sockets()")
    with pytest.raises(GremlinQueryError, match="Has\\(\\) takes a key alone"):
        q("G.Flows().Has('ICMP.ID', 1, 'x')")
    # keys are validated and backquoted, values are parameters: nothing to inject
    with pytest.raises(GremlinQueryError, match="invalid key"):
        q("G.Flows().Has('a` OR 1=1 //', 1)")
    assert q("G.Flows().Has('x) OR (1=1', 1)") == []
    assert q("G.Flows().Has('NodeTID', \"node1' OR 'a'='a\")") == []
