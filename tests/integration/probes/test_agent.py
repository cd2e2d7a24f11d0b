"""`skygraph agent --standalone`: probes -> graph -> batched writer -> the real
embedded Bolt server; asserted through Gremlin (and Cypher), and resynced on
restart without duplicates or stale nodes."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest

from skygraph.agent import Probes, run_standalone
from skygraph.config import AgentSection, Config, NetlinkSection, NetnsSection, OvsSection, TopologySection
from skygraph.gremlin import execute
from skygraph.topology.store import GraphStore
from tests.conftest import RUN_ID, BoltServer, LoopThread, open_store
from tests.integration.probes.conftest import Lab, Ovs

pytestmark = [pytest.mark.root, pytest.mark.bolt]


class StandaloneAgent:
    def __init__(self, loop: LoopThread, store: GraphStore, lab: Lab, ovs: Ovs,
                 host_id: str) -> None:
        self.loop, self.store, self.lab = loop, store, lab
        self.cfg = dataclasses.replace(
            Config(), host_id=host_id,
            agent=AgentSection({"rack": {"row": 4}}, TopologySection(
                ("ovsdb",), NetnsSection(str(lab.run_dir)), NetlinkSection(0))),
            ovs=OvsSection(ovs.db))
        self.probes: Probes | None = None
        self._task: Any = None

    def start(self) -> None:
        async def begin() -> None:
            self.stop_event = asyncio.Event()
            ready = asyncio.Event()

            def on_ready(p: Probes) -> None:
                self.probes = p
                ready.set()
            self._task = asyncio.create_task(run_standalone(
                self.cfg, self.store, self.stop_event, self.lab.host, on_ready))
            done, _ = await asyncio.wait([self._task, asyncio.create_task(ready.wait())],
                                         timeout=60, return_when=asyncio.FIRST_COMPLETED)
            if self._task in done:
                self._task.result()
        self.loop.run(begin())

    def stop(self) -> None:
        async def end() -> None:
            self.stop_event.set()
            await self._task
        if self._task is not None:
            self.loop.run(end())
            self._task = None

    def gremlin(self, text: str) -> Any:
        return self.loop.run(execute(text, self.store.read, int(time.time() * 1000)))

    def wait_gremlin(self, text: str, pred: Any, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = self.gremlin(text)
            if pred(result) or time.monotonic() > deadline:
                assert pred(result), f"{text} -> {result!r}"
                return result
            time.sleep(0.1)


@pytest.fixture
def store_loop(bolt_server: BoltServer) -> Iterator[tuple[LoopThread, GraphStore]]:
    loop = LoopThread()
    store = loop.run(open_store(bolt_server))
    try:
        yield loop, store
    finally:
        loop.run(store.close())
        loop.close()


def test_standalone_agent_writes_and_resyncs(store_loop: tuple[LoopThread, GraphStore],
                                             lab: Lab, ovs: Ovs) -> None:
    loop, store = store_loop
    host_id = f"{RUN_ID}-agent"
    br, a, b = lab.name("br"), lab.name("va"), lab.name("vb")
    path = lab.netns("ns")
    ns_name = path.rsplit("/", 1)[1]
    ovs.add_bridge(br)
    br2, p1, p2 = lab.name("b2"), lab.name("p1"), lab.name("p2")
    ovs.add_bridge(br2)
    ovs.vsctl(f"add-port {br} {p1} -- set interface {p1} type=patch options:peer={p2} "
              f"-- add-port {br2} {p2} -- set interface {p2} type=patch options:peer={p1}")
    lab.sh(f"ip link add {a} type veth peer name {b} && ip link set {b} netns {path}")
    agent = StandaloneAgent(loop, store, lab, ovs, host_id)
    agent.start()
    try:
        hosts = agent.wait_gremlin(f"G.V().Has('Type', 'host', 'Name', '{host_id}')",
                                   lambda r: len(r) == 1)
        assert hosts[0]["Metadata"]["rack"] == {"row": 4}
        agent.wait_gremlin(f"G.V().Has('Name', '{host_id}').Out().Has('Type', 'netns', "
                           f"'Name', '{ns_name}').Out().Has('Name', '{b}')",
                           lambda r: len(r) == 1)
        agent.wait_gremlin(f"G.V().Has('Type', 'ovsbridge', 'Name', '{br}').Out('Type', "
                           f"'ovsport').Out('Type', 'internal').Dedup()",
                           lambda r: len(r) == 1 and r[0]["Metadata"]["UUID"])
        peer = agent.wait_gremlin(f"G.V().Has('Name', '{p1}', 'Type', 'patch').Both('Type', 'patch')",
                                  lambda r: len(r) == 1)
        assert peer[0]["Metadata"]["Name"] == p2
        edge = agent.gremlin(f"G.V().Has('Name', '{p1}', 'Type', 'patch').BothE().Has('Type', 'patch')")
        assert edge and edge[0]["Metadata"]["RelationType"] == "layer2"
        veth = agent.wait_gremlin(f"G.V().Has('Name', '{a}').Both('Type', 'veth')",
                                  lambda r: len(r) == 1)
        assert veth[0]["Metadata"]["Name"] == b
        # The queries docs/graph-model.md gives for Neo4j Browser.
        ports = loop.run(store.read(
            "MATCH (b:OvsBridge)-[:LAYER2]->(p:OvsPort)-[:LAYER2]->(i:Interface) "
            "WHERE b.Host = $h RETURN b.Name AS bridge, p.Name AS port, i.Name AS interface, "
            "i.Type AS type", {"h": host_id}, 10.0))
        assert {"bridge": br, "port": br, "interface": br, "type": "internal"} in ports
        assert {"bridge": br, "port": p1, "interface": p1, "type": "patch"} in ports
        pairs = loop.run(store.read(
            "MATCH (h:Host {Name: $h})-[:OWNERSHIP]->(a:Interface)-[:LAYER2 {Type: 'veth'}]-"
            "(b:Interface)<-[:OWNERSHIP]-(ns:Netns) RETURN a.Name AS a, b.Name AS b, "
            "ns.Name AS ns", {"h": host_id}, 10.0))
        assert pairs == [{"a": a, "b": b, "ns": ns_name}]
        before = agent.gremlin(f"G.V().Has('@Host', '{host_id}').Count()")
    finally:
        agent.stop()

    # While the agent is down: one veth goes, another comes.
    c, d = lab.name("vc"), lab.name("vd")
    lab.sh(f"ip link del {a} && ip link add {c} type veth peer name {d}")
    agent = StandaloneAgent(loop, store, lab, ovs, host_id)
    agent.start()
    try:
        agent.wait_gremlin(f"G.V().Has('Name', '{c}')", lambda r: len(r) == 1)
        agent.wait_gremlin(f"G.V().Has('Name', Within('{a}', '{b}'))", lambda r: r == [])
        assert agent.gremlin(f"G.V().Has('Type', 'ovsbridge', 'Name', '{br}')")
        assert agent.gremlin(f"G.V().Has('@Host', '{host_id}').Count()") == before
        rows = loop.run(store.read(
            "MATCH (n:Node) WHERE n.Host = $h RETURN n.ID AS id", {"h": host_id}, 10.0))
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids))
        names = loop.run(store.read(
            "MATCH (n:Node) WHERE n.Host = $h "
            "RETURN n.TID AS tid, n.Name AS name, count(*) AS c", {"h": host_id}, 10.0))
        assert all(r["tid"] for r in names), names
        assert all(r["c"] == 1 for r in names), names
    finally:
        agent.stop()
