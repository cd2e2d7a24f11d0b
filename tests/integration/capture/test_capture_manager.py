"""CaptureManager against a graph built like the agent's (host -> netns (Path) ->
veth) and real namespaces: Captures metadata, counters, errors, stop, node removal."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from skygraph.agent import target_factory
from skygraph.capture.live import NODE_DOWN
from skygraph.capture.manager import CaptureManager
from skygraph.capture.options import TableSettings
from skygraph.capture.sources.base import AgentCaptureSettings
from skygraph.topology.embedded import free_port
from skygraph.topology.flow import Flow, ICMPType
from skygraph.topology.graph import Graph
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, NodeAdded, NodeDeleted, NodeUpdated
from skygraph.topology.netns import run_in
from tests.conftest import run
from tests.integration.capture import sflow_builder as b
from tests.integration.capture.conftest import VethPair, sh

pytestmark = pytest.mark.root

CAPTURE = {"UUID": "cap-m1", "GremlinQuery": "G.V().Has('Name', 'x')", "Type": "afpacket",
           "BPFFilter": "icmp", "Name": "pings", "Description": "ICMP only"}


class Recorder:
    """The agent's side: flows from reader threads, Captures writes on the loop."""

    def __init__(self) -> None:
        self.flows: list[tuple[str, Flow]] = []
        self.writes: list[tuple[str, list[dict[str, Any]]]] = []  # (node id, Captures)
        self.metadata: list[tuple[str, str, Any]] = []  # (node id, key, value) of the types
        self._lock = threading.Lock()

    def on_flows(self, capture_id: str, flows: list[Flow]) -> None:
        with self._lock:
            self.flows.extend((capture_id, f) for f in flows)

    async def set_captures(self, node_id: str, entries: list[dict[str, Any]]) -> None:
        self.writes.append((node_id, entries))

    async def set_node_metadata(self, node_id: str, key: str, value: Any) -> None:
        self.metadata.append((node_id, key, value))

    def last(self, node_id: str) -> list[dict[str, Any]] | None:
        found = [entries for ident, entries in self.writes if ident == node_id]
        return found[-1] if found else None

    def echo_packets(self) -> int:
        with self._lock:
            latest = {f.uuid: f for _, f in self.flows
                      if f.icmp is not None and f.icmp.type == ICMPType.ECHO}
        return sum(f.metric.ab_packets + f.metric.ba_packets for f in latest.values())


def agent_graph(pair: VethPair) -> Graph:
    g = Graph(clock=lambda: int(time.time() * 1000))
    nodes = {
        "host": {"Name": "testhost", "Type": "host"},
        "ns-a": {"Name": "a", "Type": "netns", "Path": pair.a},
        "veth-a": pair.metadata(),
    }
    for ident, meta in nodes.items():
        g.apply_nowait(NodeAdded(Node(ident, meta)))
    for parent, child in (("host", "ns-a"), ("ns-a", "veth-a")):
        g.apply_nowait(EdgeAdded(Edge(f"{parent}/{child}", parent, child,
                                      {"RelationType": "ownership"})))
    return g


def add_node(g: Graph, ident: str, meta: dict[str, Any], owner: str) -> None:
    g.apply_nowait(NodeAdded(Node(ident, meta)))
    g.apply_nowait(EdgeAdded(Edge(f"{owner}/{ident}", owner, ident, {"RelationType": "ownership"})))


def manager(g: Graph, rec: Recorder, **kwargs: Any) -> CaptureManager:
    return CaptureManager(g, "host", TableSettings(update=1, expire=600), [], rec.on_flows,
                          rec.set_captures, stats_update=0.2, **kwargs)


async def until(pred: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def test_start_on_node_in_namespace_then_counters_then_stop(pair: VethPair) -> None:
    g = agent_graph(pair)
    rec = Recorder()
    m = manager(g, rec)

    async def scenario() -> None:
        entry = await m.start(CAPTURE, "veth-a")
        assert entry == {"ID": "cap-m1", "State": "active", "Name": "pings",
                         "Description": "ICMP only", "BPFFilter": "icmp", "Type": "afpacket",
                         "PacketsReceived": 0, "PacketsDropped": 0, "PacketsIfDropped": 0}
        assert rec.writes == [("veth-a", [entry])]
        assert await m.start(CAPTURE, "veth-a") == entry  # already running: nothing new
        assert len(rec.writes) == 1
        await asyncio.to_thread(pair.ping, 4)
        await until(lambda: (rec.last("veth-a") or [{}])[0].get("PacketsReceived") == 8)
        (counted,) = rec.last("veth-a") or []
        assert counted["State"] == "active" and counted["PacketsDropped"] == 0
        await until(lambda: rec.echo_packets() == 8)
        assert {c for c, _ in rec.flows} == {"cap-m1"}
        assert all(f.capture_id == "cap-m1" and f.node_tid == f"tid-{pair.a_if}"
                   for _, f in rec.flows)
        assert (("cap-m1", "veth-a") in m.stats())
        assert await m.stop("cap-m1", "veth-a") is True
        assert rec.last("veth-a") == []
        assert m.captures() == [] and m.stats() == {}
        assert await m.stop("cap-m1", "veth-a") is False
        await m.stop_all()
    run(scenario())


def test_error_entry_for_a_down_node_next_to_an_active_one(pair: VethPair) -> None:
    g = agent_graph(pair)
    down_name = pair.name("dn")
    sh(f"ip link add {down_name} type veth peer name {pair.name('dp')}", pair.a)
    add_node(g, "veth-down", pair.metadata(name=down_name, LinkFlags=["BROADCAST"]), "ns-a")
    add_node(g, "ns-gone", {"Name": "gone", "Type": "netns", "Path": pair.a + "-gone"}, "host")
    add_node(g, "veth-gone", pair.metadata(), "ns-gone")
    rec = Recorder()
    m = manager(g, rec)

    async def scenario() -> None:
        entry = await m.start(CAPTURE, "veth-down")
        assert entry["State"] == "error"
        assert entry["Error"] == f"capture on node veth-down ({down_name}): {NODE_DOWN}"
        assert entry["PacketsReceived"] == 0
        assert rec.last("veth-down") == [entry]
        other = await m.start({**CAPTURE, "UUID": "cap-m2", "BPFFilter": "icmp and and"},
                              "veth-a")
        assert other["State"] == "error" and "syntax error" in other["Error"]
        gone = await m.start(CAPTURE, "veth-gone")
        assert gone["State"] == "error" and "-gone is gone" in gone["Error"]
        ok = await m.start(CAPTURE, "veth-a")
        assert ok["State"] == "active"
        assert [e["ID"] for e in rec.last("veth-a") or []] == ["cap-m2", "cap-m1"]
        missing = await m.start(CAPTURE, "no-such-node")
        assert missing["State"] == "error" and "no such node" in missing["Error"]
        assert rec.last("no-such-node") is None
        # Stopping the error entry removes it from the node.
        assert await m.stop("cap-m1", "veth-down")
        assert rec.last("veth-down") == []
        await m.stop_all()
        assert rec.last("veth-a") == []
    run(scenario())


def test_node_removed_stops_its_captures(pair: VethPair) -> None:
    g = agent_graph(pair)
    rec = Recorder()
    m = manager(g, rec)

    async def scenario() -> None:
        await m.start(CAPTURE, "veth-a")
        await asyncio.to_thread(pair.ping, 2)
        writes = len(rec.writes)
        g.apply_nowait(NodeDeleted(g.nodes["veth-a"]))
        await until(lambda: m.captures() == [])
        # The final flows reached the agent; nothing was written on the gone node.
        await until(lambda: rec.echo_packets() == 4)
        assert all(ident != "veth-a" for ident, _ in rec.writes[writes:])
        await m.stop_all()
    run(scenario())


def test_root_namespace_node_uses_root_path(pair: VethPair) -> None:
    """A node owned by the host directly lives in the namespace mapped to the host."""
    g = Graph(clock=lambda: int(time.time() * 1000))
    g.apply_nowait(NodeAdded(Node("host", {"Name": "testhost", "Type": "host"})))
    add_node(g, "veth-b", pair.metadata(ns=pair.b, name=pair.b_if), "host")
    rec = Recorder()
    m = manager(g, rec, root_path=pair.b)

    async def scenario() -> None:
        entry = await m.start(CAPTURE, "veth-b")
        assert entry["State"] == "active", entry
        await asyncio.to_thread(pair.ping, 3)
        await until(lambda: rec.echo_packets() == 6)
        await m.stop_all()
        assert rec.last("veth-b") == []
    run(scenario())


def test_failed_start_retried_when_the_node_comes_up(pair: VethPair) -> None:
    g = agent_graph(pair)
    sh(f"ip link set {pair.a_if} down", pair.a)
    node = g.nodes["veth-a"]
    g.apply_nowait(NodeUpdated(node.with_(Metadata={**node.Metadata, "LinkFlags": ["BROADCAST"]})))
    rec = Recorder()
    m = manager(g, rec)

    async def scenario() -> None:
        entry = await m.start(CAPTURE, "veth-a")
        assert entry["State"] == "error" and NODE_DOWN in entry["Error"]
        await asyncio.sleep(0.5)  # unchanged node: no retry
        assert [e["State"] for e in rec.last("veth-a") or []] == ["error"]
        sh(f"ip link set {pair.a_if} up", pair.a)
        up = g.nodes["veth-a"]
        g.apply_nowait(NodeUpdated(up.with_(Metadata={**up.Metadata, "LinkFlags": ["UP"]})))
        await until(lambda: [e["State"] for e in rec.last("veth-a") or []] == ["active"])
        await asyncio.to_thread(pair.ping, 2)
        await until(lambda: rec.echo_packets() == 4)
        await m.stop_all()
    run(scenario())


def test_capture_types_through_the_manager(pair: VethPair) -> None:
    """pcap, pcapsocket and sflow chosen from `Type`, their entries and node metadata;
    an unknown type is an error entry naming it."""
    g = agent_graph(pair)
    node = g.nodes["veth-a"]
    g.apply_nowait(NodeUpdated(node.with_(Metadata={**node.Metadata,
                                                    "IPV4": [f"{pair.a_ip}/24"]})))
    rec = Recorder()
    tcp_port, udp_port = free_port(), free_port()
    m = manager(g, rec, agent=AgentCaptureSettings(pcapsocket_ports=(tcp_port, tcp_port)),
                set_node_metadata=rec.set_node_metadata)
    sflow_capture = {**CAPTURE, "UUID": "cap-f", "Type": "sflow", "Port": udp_port,
                     "BPFFilter": ""}

    async def scenario() -> None:
        pcap = await m.start({**CAPTURE, "UUID": "cap-p", "Type": "pcap"}, "veth-a")
        assert pcap["State"] == "active" and pcap["Type"] == "pcap", pcap
        sock = await m.start({**CAPTURE, "UUID": "cap-s", "Type": "pcapsocket",
                              "BPFFilter": ""}, "veth-a")
        assert sock["State"] == "active" and sock["PCAPSocket"] == f"127.0.0.1:{tcp_port}"
        sflow = await m.start(sflow_capture, "veth-a")
        assert sflow["State"] == "active" and sflow["SFlowSocket"] == f"{pair.a_ip}:{udp_port}"
        unknown = await m.start({**CAPTURE, "UUID": "cap-x", "Type": "dpdk"}, "veth-a")
        assert unknown["State"] == "error"
        assert "capture type 'dpdk' is not supported by this agent" in unknown["Error"]
        entries = {e["ID"]: e for e in rec.last("veth-a") or []}
        assert entries["cap-s"]["PCAPSocket"] == sock["PCAPSocket"]
        assert entries["cap-f"]["SFlowSocket"] == sflow["SFlowSocket"]
        await asyncio.to_thread(pair.ping, 2)
        await until(lambda: rec.echo_packets() == 4)
        assert {c for c, _ in rec.flows} == {"cap-p"}
        datagram = b.datagram([b.counter_sample([b.generic_counters(3, in_octets=700)])])
        await asyncio.to_thread(run_in, pair.b, lambda: send_udp(datagram, pair.a_ip, udp_port))
        await until(lambda: any(k == "SFlow" for _, k, _ in rec.metadata))
        (ident, key, value), = rec.metadata
        assert (ident, key) == ("veth-a", "SFlow")
        assert value["IfMetrics"] == {"3": {"IfInOctets": 700}}
        await m.stop("cap-f", "veth-a")
        await m.flush_metadata()
        assert rec.metadata[-1] == ("veth-a", "SFlow", None)
        await m.stop_all()
        assert rec.last("veth-a") == []
    run(scenario())


def send_udp(data: bytes, host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, (host, port))


def test_capture_target_gets_the_flows_instead_of_the_agent(pair: VethPair) -> None:
    """TargetType netflowv5: the capture's flows leave as NetFlow v5 to the target."""
    g = agent_graph(pair)
    rec = Recorder()
    m = manager(g, rec, make_target=target_factory())
    collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    collector.bind(("127.0.0.1", 0))
    collector.settimeout(10)
    target = f"127.0.0.1:{collector.getsockname()[1]}"

    async def scenario() -> None:
        entry = await m.start({**CAPTURE, "TargetType": "netflowv5", "Target": target}, "veth-a")
        assert entry["State"] == "active", entry
        bad = await m.start({**CAPTURE, "UUID": "cap-bad", "TargetType": "erspanv1",
                             "Target": "127.0.0.1:0", "SessionID": 5000}, "veth-a")
        assert bad["State"] == "error"
        assert "TargetType 'erspanv1': SessionID: 5000 is not in 0..1023" in bad["Error"]
        await asyncio.to_thread(pair.ping, 3)
        data = await asyncio.to_thread(collector.recv, 65535)
        version, count = struct.unpack_from("!HH", data)
        assert version == 5 and count >= 1
        src, dst = struct.unpack_from("!4s4s", data, 24)
        assert {socket.inet_ntoa(src), socket.inet_ntoa(dst)} == {pair.a_ip, pair.b_ip}
        await m.stop_all()
        assert rec.flows == []  # nothing went to the analyzer
    try:
        run(scenario())
    finally:
        collector.close()
