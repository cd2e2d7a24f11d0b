"""Capture orchestration on a real store: placements follow captures and topology."""

from __future__ import annotations

import asyncio

from skygraph.api.orchestrator import Orchestrator
from skygraph.api.service import Api
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, NodeAdded, NodeDeleted
from skygraph.topology.store import BatchWriter
from tests.conftest import RUN_ID, open_store, run


def node(ident: str, name: str, kind: str, host: str) -> NodeAdded:
    return NodeAdded(Node(f"{RUN_ID}-{ident}", {"Name": name, "Type": kind}, Host=host))


def test_placements_follow_captures_and_topology(bolt_server):
    async def scenario() -> None:
        store = await open_store(bolt_server)
        await store.run("MATCH (c:Capture) DELETE c")
        writer = BatchWriter(store)
        await writer.start()
        api = Api(store, writer)
        calls: list[tuple[str, ...]] = []
        connected = {"h1", "h2"}

        async def start(host: str, spec: dict, node_id: str) -> bool:
            calls.append(("start", host, spec["Type"], node_id.removeprefix(f"{RUN_ID}-")))
            return host in connected

        async def stop(host: str, capture_id: str, node_id: str) -> bool:
            calls.append(("stop", host, node_id.removeprefix(f"{RUN_ID}-")))
            return True

        orch = Orchestrator(api, start, stop, debounce=0.05)

        async def settle() -> list[tuple[str, ...]]:
            await asyncio.sleep(0.05)
            orch.poke()
            await orch.reconcile()
            out = sorted(calls)
            calls.clear()
            return out

        await api.apply([node("h1", "h1", "host", "h1"), node("e1", "eth0", "veth", "h1"),
                         node("b1", "eth0", "ovsbridge", "h1"), node("x", "eth0", "veth", ""),
                         EdgeAdded(Edge(f"{RUN_ID}-o1", f"{RUN_ID}-h1", f"{RUN_ID}-e1",
                                        {"RelationType": "ownership"}, Host="h1"))])
        cap = await api.captures.create({"GremlinQuery": "G.V().Has('Name', 'eth0')"})
        # the veth gets the default type; the bridge would get ovssflow; no host: skipped
        assert await settle() == [("start", "h1", "afpacket", "e1"),
                                  ("start", "h1", "ovssflow", "b1")]
        assert await settle() == []          # nothing changed: nothing sent
        await api.apply([node("e2", "eth0", "veth", "h2")])   # appears later, on another host
        assert await settle() == [("start", "h2", "afpacket", "e2")]
        e2 = api.graph.nodes[f"{RUN_ID}-e2"]
        await api.apply([NodeDeleted(e2.with_(DeletedAt=api.now_ms()))])
        assert await settle() == [("stop", "h2", "e2")]
        orch.host_connected("h1")             # agent restarted: told again
        assert await settle() == [("start", "h1", "afpacket", "e1"),
                                  ("start", "h1", "ovssflow", "b1")]
        connected.discard("h1")
        orch.host_disconnected("h1")
        assert await settle() == [("start", "h1", "afpacket", "e1"),
                                  ("start", "h1", "ovssflow", "b1")]  # not delivered
        connected.add("h1")
        assert len(await settle()) == 2       # retried until delivered
        assert await api.captures.delete(cap.uuid)
        assert await settle() == [("stop", "h1", "b1"), ("stop", "h1", "e1")]

        typed = await api.captures.create({"GremlinQuery": "G.V().Has('Name', 'eth0')",
                                           "Type": "pcap"})
        assert await settle() == [("start", "h1", "pcap", "e1")]   # the bridge does not allow pcap
        await api.captures.create({"GremlinQuery": "G.V().Count()"})
        await settle()
        assert list(orch.errors.values()) == ["the query does not return nodes"]
        assert typed.uuid not in orch.errors
        await writer.stop()
        await store.close()
    run(scenario())
