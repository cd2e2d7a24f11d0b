"""The probes' writer: own keys only, deterministic edges, TIDs follow ownership."""

from __future__ import annotations

import asyncio

from skygraph.probes.elements import Writer
from skygraph.topology import ids
from skygraph.topology.graph import Graph


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_put_sets_and_drops_only_given_keys() -> None:
    async def scenario() -> None:
        w = Writer(Graph(clock=lambda: 1), "h")
        await w.put("n", {"Name": "a", "Type": "veth", "MTU": 1500})
        await w.put("n", {"UUID": "u"})                     # another probe's key
        await w.put("n", {"Name": "a", "Type": "veth"}, drop={"MTU", "IPV4"})
        md = w.graph.nodes["n"].Metadata
        assert md["UUID"] == "u" and "MTU" not in md
        rev = w.graph.nodes["n"].Revision
        await w.put("n", {"Name": "a"})                     # no change: no revision
        assert w.graph.nodes["n"].Revision == rev
        assert [n.ID for n in w.named("a")] == ["n"]
        await w.put("n", {"Name": "b"})
        assert w.named("a") == [] and [n.ID for n in w.named("b")] == ["n"]
    run(scenario())


def test_tids_follow_ownership() -> None:
    async def scenario() -> None:
        w = Writer(Graph(clock=lambda: 1), "h")
        await w.put("host", {"Name": "h", "Type": "host"})
        await w.put("ns", {"Name": "ns1", "Type": "netns", "Path": "/run/netns/ns1"})
        await w.put("i", {"Name": "eth0", "Type": "veth"})
        assert "TID" not in w.graph.nodes["i"].Metadata
        await w.own("host", "ns")
        await w.own("ns", "i")
        ns_tid = ids.netns_tid(ids.host_tid("h"), "/run/netns/ns1")
        assert w.graph.nodes["ns"].Metadata["TID"] == ns_tid
        assert w.graph.nodes["i"].Metadata["TID"] == ids.child_tid(ns_tid, "eth0", "veth")
        await w.own("host", "i")                             # moved: exclusive ownership
        assert w.owner("i").ID == "host"  # type: ignore[union-attr]
        assert w.graph.nodes["i"].Metadata["TID"] == ids.child_tid(ids.host_tid("h"), "eth0",
                                                                   "veth")
        await w.put("i", {"Name": "eth9"})                   # rename: new TID
        assert w.graph.nodes["i"].Metadata["TID"] == ids.child_tid(ids.host_tid("h"), "eth9",
                                                                   "veth")
        await w.unlink("host", "i", "ownership")
        assert "TID" not in w.graph.nodes["i"].Metadata
    run(scenario())


def test_delete_tree_and_edge_ids() -> None:
    async def scenario() -> None:
        w = Writer(Graph(clock=lambda: 1), "h")
        for n in ("ns", "a", "b"):
            await w.put(n, {"Name": n, "Type": "netns" if n == "ns" else "veth", "Path": "/p"})
        await w.own("ns", "a")
        await w.own("ns", "b")
        eid = await w.link("a", "b", "layer2", {"Type": "veth"})
        assert eid == ids.edge_id("a", "b", "layer2")
        assert await w.link("a", "missing", "layer2") and len(w.graph.edges) == 3
        await w.delete_tree("ns")
        assert w.graph.nodes == {} and w.graph.edges == {}
    run(scenario())
