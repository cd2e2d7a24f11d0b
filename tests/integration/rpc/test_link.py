"""The link end to end: a real analyzer side (Api on the session's embedded
Bolt server, `Agents`, `RpcServer`) and agents with small in-memory graphs, on
loopback grpc.aio; the analyzer stopped and started again on the same port."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from skygraph.api.agents import Agents
from skygraph.api.service import Api
from skygraph.rpc.server import RpcServer
from skygraph.topology.embedded import free_port
from skygraph.topology.graph import Graph
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, NodeAdded, NodeDeleted, NodeUpdated
from skygraph.topology.store import BatchWriter, GraphStore
from tests.conftest import RUN_ID, BoltServer, open_store, run
from tests.integration.rpc.conftest import Agent, eventually

pytestmark = pytest.mark.bolt
H1 = f"{RUN_ID}-h1"
H2 = f"{RUN_ID}-h2"


class Analyzer:
    """The analyzer's agent-facing half, started and stopped as a process would be."""

    def __init__(self, store: GraphStore, port: int, **server_kwargs: Any) -> None:
        self.store = store
        self.port = port
        self.server_kwargs = server_kwargs

    async def start(self) -> Analyzer:
        self.writer = BatchWriter(self.store)
        await self.writer.start()
        self.api = Api(self.store, self.writer)
        await self.api.load()
        self.agents = Agents(self.api)
        self.server = RpcServer(self.agents, f"127.0.0.1:{self.port}", **self.server_kwargs)
        self.address = await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop()
        await self.writer.stop()

    def host_ids(self, host: str) -> tuple[set[str], set[str]]:
        g = self.api.graph
        return ({n.ID for n in g.nodes.values() if n.Host == host},
                {e.ID for e in g.edges.values() if e.Host == host})


def nid(name: str) -> str:
    return f"{RUN_ID}-{name}"


def host_node(host: str) -> Node:
    return Node(nid(f"host-{host}"), {"Name": host, "Type": "host"}, Host=host)


def iface(host: str, name: str, **meta: Any) -> Node:
    return Node(nid(f"{host}-{name}"), {"Name": name, "Type": "veth", **meta}, Host=host)


def owns(host: str, child: Node) -> Edge:
    return Edge(nid(f"own-{child.ID}"), nid(f"host-{host}"), child.ID, {"RelationType": "ownership"},
                Host=host)


def populate(g: Graph, host: str, names: list[str]) -> None:
    g.apply_nowait(NodeAdded(host_node(host)))
    for name in names:
        n = iface(host, name)
        g.apply_nowait(NodeAdded(n))
        g.apply_nowait(EdgeAdded(owns(host, n)))


def agent_ids(agent: Agent) -> tuple[set[str], set[str]]:
    return set(agent.graph.nodes), set(agent.graph.edges)


async def duplicates(store: GraphStore) -> list[Any]:
    return list(await store.read("MATCH (n:Node) WITH n.ID AS id, count(*) AS c WHERE c > 1 "
                                 "RETURN id", {}))


def test_sync_mutations_and_resync_after_an_analyzer_restart(bolt_server: BoltServer) -> None:
    async def scenario() -> None:
        store = await open_store(bolt_server)
        port = free_port()
        analyzer = await Analyzer(store, port).start()
        other = Graph()
        populate(other, H2, ["eth0"])           # another host's elements, already there
        await analyzer.api.apply([NodeAdded(n) for n in other.nodes.values()]
                                 + [EdgeAdded(e) for e in other.edges.values()])
        h2_before = analyzer.host_ids(H2)

        agent = Agent(H1)
        populate(agent.graph, H1, ["eth0", "eth1"])
        async with agent.running(agent.client(analyzer.address)) as client:
            await eventually(lambda: analyzer.host_ids(H1) == agent_ids(agent), what="first sync")
            host = analyzer.api.graph.nodes[nid(f"host-{H1}")]
            assert host.Metadata["Status"] == "connected"
            assert analyzer.agents.hosts_connected() == [H1]

            eth0 = agent.graph.nodes[nid(f"{H1}-eth0")]
            await agent.graph.apply(NodeUpdated(eth0.with_(Metadata={**eth0.Metadata, "MTU": 9000})))
            await eventually(lambda: analyzer.api.graph.nodes[eth0.ID].Metadata.get("MTU") == 9000,
                             what="the mutation")

            await analyzer.stop()                      # the analyzer goes away...
            await eventually(lambda: not client.connected, what="the client noticing")
            eth2 = iface(H1, "eth2")                   # ...and the agent's graph changes meanwhile
            await agent.graph.apply(NodeAdded(eth2))
            await agent.graph.apply(EdgeAdded(owns(H1, eth2)))
            eth1 = agent.graph.nodes[nid(f"{H1}-eth1")]
            await agent.graph.apply(NodeDeleted(eth1))
            # dropped (the next sync carries them): node, edge, then edge + node deleted
            await eventually(lambda: client.counters.mutations_dropped == 4)

            analyzer = await Analyzer(store, port).start()  # a fresh process, same port
            assert eth1.ID in analyzer.api.graph.nodes      # loaded from the store: stale now
            assert analyzer.api.graph.nodes[nid(f"host-{H1}")].Metadata["Status"] == "disconnected"
            await eventually(lambda: analyzer.host_ids(H1) == agent_ids(agent), what="the resync")
            assert client.counters.connects == 2 and client.counters.syncs == 2
            assert analyzer.host_ids(H2) == h2_before         # other hosts untouched
            assert analyzer.api.graph.nodes[eth0.ID].Metadata["MTU"] == 9000
            assert analyzer.api.graph.nodes[nid(f"host-{H1}")].Metadata["Status"] == "connected"
            status = analyzer.agents.status()[H1]
            assert status["Connected"] and status["Version"] == 1
            assert status["Peer"].startswith("ipv4:127.0.0.1:")
        await analyzer.stop()
        nodes, edges = await store.graph()
        assert {n.ID for n in nodes if n.Host == H1} == set(agent.graph.nodes)
        assert {e.ID for e in edges if e.Host == H1} == set(agent.graph.edges)
        assert await duplicates(store) == []
        assert await store.node(eth1.ID) is None
        await store.close()
    run(scenario())


def test_disconnect_marks_the_host_and_deletes_nothing(bolt_server: BoltServer) -> None:
    async def scenario() -> None:
        store = await open_store(bolt_server)
        analyzer = await Analyzer(store, 0).start()
        agent = Agent(H1)
        populate(agent.graph, H1, ["eth0"])
        host_id = nid(f"host-{H1}")
        async with agent.running(agent.client(analyzer.address)):
            await eventually(lambda: analyzer.host_ids(H1) == agent_ids(agent))
            await analyzer.writer.flush()
            connected_at = analyzer.api.now_ms()
            await asyncio.sleep(0.01)      # the disconnect is a later revision
        await eventually(lambda: analyzer.api.graph.nodes[host_id].Metadata["Status"] == "disconnected")
        host = analyzer.api.graph.nodes[host_id]
        assert host.Metadata["DisconnectedAt"] >= connected_at
        assert analyzer.host_ids(H1) == agent_ids(agent)
        assert analyzer.agents.hosts_connected() == []
        assert analyzer.agents.status()[H1]["Connected"] is False
        await analyzer.writer.flush()
        stored = await store.node(host_id)
        assert stored is not None and stored.Metadata["Status"] == "disconnected"
        before = await store.node(host_id, at=connected_at)   # history stays readable
        assert before is not None and before.Metadata["Status"] == "connected"
        nodes, _ = await store.graph()
        assert {n.ID for n in nodes if n.Host == H1} == set(agent.graph.nodes)
        await analyzer.stop()
        await store.close()
    run(scenario())


def test_bad_mutations_are_logged_and_skipped_flows_reach_the_bus(
        bolt_server: BoltServer, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        store = await open_store(bolt_server)
        analyzer = await Analyzer(store, 0).start()
        sub = analyzer.api.flow_bus.subscribe()
        agent = Agent(H1)
        populate(agent.graph, H1, [])
        async with agent.running(agent.client(analyzer.address)) as client:
            await eventually(lambda: analyzer.host_ids(H1) == agent_ids(agent))
            ghost = Edge(nid("ghost-edge"), nid("ghost"), nid(f"host-{H1}"), {"RelationType": "layer2"},
                         Host=H1)
            await client.mutation(EdgeAdded(ghost))
            await client.mutation(NodeAdded(iface(H1, "after")))
            foreign = iface(H2, "theirs")
            await client.mutation(NodeAdded(foreign))
            await eventually(lambda: nid(f"{H1}-after") in analyzer.api.graph.nodes)
            assert ghost.ID not in analyzer.api.graph.edges
            assert foreign.ID not in analyzer.api.graph.nodes
            client.flows("cap1", [{"UUID": "f1"}, {"UUID": "f2", "CaptureID": "other"}])
            got = [await sub.get(), await sub.get()]
            assert got == [{"UUID": "f1", "CaptureID": "cap1"}, {"UUID": "f2", "CaptureID": "other"}]
            await eventually(lambda: client.buffered_flows == 0)
            assert analyzer.agents.status()[H1]["Flows"] == 2
        messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert any(f"agent {H1}" in m and ghost.ID in m and "does not exist" in m for m in messages)
        assert any(f"agent {H1}: node {foreign.ID}: belongs to host '{H2}': refused" == m
                   for m in messages)
        sub.close()
        await analyzer.stop()
        await store.close()
    run(scenario())
