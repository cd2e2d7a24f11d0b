"""CaptureManager against a graph built like the agent's (host -> netns (Path) ->
veth) and real namespaces: Captures metadata, counters, errors, stop, node removal."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from skygraph.capture.live import NODE_DOWN
from skygraph.capture.manager import CaptureManager
from skygraph.capture.options import TableSettings
from skygraph.topology.flow import Flow, ICMPType
from skygraph.topology.graph import Graph
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, NodeAdded, NodeDeleted, NodeUpdated
from tests.conftest import run
from tests.integration.capture.conftest import VethPair, sh

pytestmark = pytest.mark.root

CAPTURE = {"UUID": "cap-m1", "GremlinQuery": "G.V().Has('Name', 'x')", "Type": "afpacket",
           "BPFFilter": "icmp", "Name": "pings", "Description": "ICMP only"}


class Recorder:
    """The agent's side: flows from reader threads, Captures writes on the loop."""

    def __init__(self) -> None:
        self.flows: list[tuple[str, Flow]] = []
        self.writes: list[tuple[str, list[dict[str, Any]]]] = []  # (node id, Captures)
        self._lock = threading.Lock()

    def on_flows(self, capture_id: str, flows: list[Flow]) -> None:
        with self._lock:
            self.flows.extend((capture_id, f) for f in flows)

    async def set_captures(self, node_id: str, entries: list[dict[str, Any]]) -> None:
        self.writes.append((node_id, entries))

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
