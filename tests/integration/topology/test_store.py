"""The graph store against the real embedded Bolt server (ArcadeDB)."""

from __future__ import annotations

import asyncio
import time

from skygraph.topology.graph import Graph
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import (
    EdgeAdded,
    EdgeDeleted,
    EdgeUpdated,
    NodeAdded,
    NodeDeleted,
    NodeUpdated,
)
from skygraph.topology.store import BatchWriter, GraphStore
from tests.conftest import open_store, run


class Clock:
    def __init__(self, t: int = 1_000) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def intf(i: str, name: str | None = None, **meta: object) -> Node:
    return Node(i, {"Type": "veth", "Name": name or i, **meta})


async def counts(store: GraphStore) -> dict[str, int]:
    out = {}
    for label in ("Node", "ArchivedNode", "ArchivedEdge"):
        out[label] = (await store.run(f"MATCH (n:{label}) RETURN count(n) AS c"))[0]["c"]
    out["rels"] = (await store.run("MATCH ()-[e]->() RETURN count(e) AS c"))[0]["c"]
    return out


def test_round_trip_keeps_metadata_labels_and_relationship_types(bolt_server):
    async def scenario():
        store = await open_store(bolt_server)
        g = Graph(clock=Clock())
        meta = {"Type": "device", "Name": "eth0", "MTU": 1500, "IPV4": ["10.0.0.1/24"],
                "Ovs": {"Metric": {"RxBytes": 12}}, "RoutingTables": [{"ID": 254, "Src": None}],
                "Features": {}, "LinkFlags": ["UP", "BROADCAST"]}
        ms = g.apply_nowait(NodeAdded(Node("h", {"Type": "host", "Name": "h1"}, Host="h1")))
        ms += g.apply_nowait(NodeAdded(Node("i", meta, Host="h1", Origin="test")))
        ms += g.apply_nowait(EdgeAdded(Edge("e", "h", "i", {"RelationType": "ownership"})))
        await store.apply(ms)
        nodes, edges = await store.graph()
        got = {n.ID: n for n in nodes}
        assert got["i"].Metadata == meta
        assert (got["i"].Host, got["i"].Origin, got["i"].Revision) == ("h1", "test", 1)
        assert [(e.ID, e.Parent, e.Child, e.relation_type) for e in edges] == [
            ("e", "h", "i", "ownership")]
        rows = await store.run("MATCH (h:Node:Host)-[r:OWNERSHIP]->(i:Node:Interface) "
                               "RETURN i.`Ovs.Metric.RxBytes` AS rx, i.Type AS t, r.ID AS id")
        assert rows == [{"rx": 12, "t": "device", "id": "e"}]
        await store.close()
    run(scenario())


def test_replaying_a_batch_changes_nothing(bolt_server):
    async def scenario():
        store = await open_store(bolt_server)
        clock = Clock()
        g = Graph(clock=clock)
        batch = g.apply_nowait(NodeAdded(intf("a")))
        batch += g.apply_nowait(NodeAdded(intf("b")))
        batch += g.apply_nowait(EdgeAdded(Edge("ab", "a", "b", {"RelationType": "layer2"})))
        clock.t = 2000
        batch += g.apply_nowait(NodeUpdated(intf("a", "a2")))
        clock.t = 3000
        batch += g.apply_nowait(NodeUpdated(intf("a", "a3")))
        batch += g.apply_nowait(NodeAdded(intf("c")))
        batch += g.apply_nowait(NodeDeleted(intf("c")))
        await store.apply(batch)
        before = (await counts(store), await store.graph(), await store.revisions(0, 10_000))
        await store.apply(batch)
        await store.apply(batch[:4])  # an older prefix replayed too
        after = (await counts(store), await store.graph(), await store.revisions(0, 10_000))
        assert before == after
        assert before[0] == {"Node": 2, "ArchivedNode": 3, "ArchivedEdge": 0, "rels": 1}
        await store.close()
    run(scenario())


def test_ordered_sequences_in_one_batch_and_across_batches(bolt_server):
    async def scenario():
        store = await open_store(bolt_server)
        clock = Clock()
        g = Graph(clock=clock)
        ms = g.apply_nowait(NodeAdded(intf("x")))
        ms += g.apply_nowait(NodeAdded(intf("y")))
        ms += g.apply_nowait(EdgeAdded(Edge("xy", "x", "y", {"RelationType": "layer2"})))
        await store.apply(ms)
        clock.t = 2000
        # delete and re-create x in one batch, then link it again
        ms = g.apply_nowait(NodeDeleted(intf("x")))
        clock.t = 2001
        ms += g.apply_nowait(NodeAdded(Node("x", {"Type": "veth", "Name": "x-again"})))
        ms += g.apply_nowait(EdgeAdded(Edge("xy2", "x", "y", {"RelationType": "layer2"})))
        ms += g.apply_nowait(EdgeDeleted(Edge("xy2", "x", "y", {})))
        ms += g.apply_nowait(EdgeAdded(Edge("xy3", "y", "x", {"RelationType": "layer2"})))
        await store.apply(ms)
        nodes, edges = await store.graph()
        assert {n.ID: n.name for n in nodes} == {"x": "x-again", "y": "y"}
        assert {n.ID: n.CreatedAt for n in nodes}["x"] == 2001
        assert [e.ID for e in edges] == ["xy3"]
        old_nodes, old_edges = await store.graph(at=1500)
        assert {n.ID: n.name for n in old_nodes} == {"x": "x", "y": "y"}
        assert [e.ID for e in old_edges] == ["xy"]
        archived = await store.run("MATCH (e:ArchivedEdge) RETURN e.ID AS id, e.DeletedAt AS d "
                                   "ORDER BY id")
        assert archived == [{"id": "xy", "d": 2000}, {"id": "xy2", "d": 2001}]
        await store.close()
    run(scenario())


def test_history_at_three_instants_and_over_a_slice(bolt_server):
    """Acceptance: add, rename, delete; reads at each instant; a slice returns all."""
    async def scenario():
        store = await open_store(bolt_server)
        writer = BatchWriter(store, max_delay=0.01)
        await writer.start()
        clock = Clock(10_000)
        g = Graph(clock=clock)
        await writer.submit_all(g.apply_nowait(NodeAdded(intf("n", "eth0"))))
        await writer.flush()
        clock.t = 20_000
        await writer.submit_all(g.apply_nowait(NodeUpdated(intf("n", "eth1"))))
        await writer.flush()
        clock.t = 30_000
        await writer.submit_all(g.apply_nowait(NodeDeleted(intf("n"))))
        await writer.flush()
        at = {t: await store.node("n", at=t) for t in (5_000, 15_000, 25_000, 35_000)}
        assert at[5_000] is None
        assert (at[15_000].name, at[15_000].Revision, at[15_000].DeletedAt) == ("eth0", 1, None)
        assert (at[25_000].name, at[25_000].Revision, at[25_000].DeletedAt) == ("eth1", 2, 30_000)
        assert at[35_000] is None
        assert await store.node("n") is None
        nodes, _ = await store.revisions(10_000, 30_000)
        assert sorted((n.Revision, n.name) for n in nodes) == [(1, "eth0"), (2, "eth1")]
        nodes, _ = await store.revisions(21_000, 29_000)
        assert [(n.Revision, n.name) for n in nodes] == [(2, "eth1")]
        await writer.stop()
        await store.close()
    run(scenario())


def test_edge_before_its_endpoint_is_deferred_then_written(bolt_server):
    async def scenario():
        store = await open_store(bolt_server)
        writer = BatchWriter(store, max_delay=0.01, pending_edge_ttl=60)
        await writer.start()
        a = Node("a", {"Type": "veth", "Name": "a"}, CreatedAt=1, UpdatedAt=1, Revision=1)
        b = Node("b", {"Type": "veth", "Name": "b"}, CreatedAt=1, UpdatedAt=1, Revision=1)
        e = Edge("ab", "a", "b", {"RelationType": "layer2"}, CreatedAt=1, UpdatedAt=1,
                 Revision=1)
        await writer.submit(NodeAdded(a))
        await writer.submit(EdgeAdded(e))  # b is on its way from another agent
        await writer.flush()
        assert writer.stats.pending_edges == 1
        assert (await store.graph())[1] == []
        await writer.submit(NodeAdded(b))
        await writer.flush()
        assert writer.stats.pending_edges == 0
        assert [x.ID for x in (await store.graph())[1]] == ["ab"]
        await writer.stop()
        await store.close()
    run(scenario())


def test_edge_whose_endpoint_never_comes_is_dropped_and_counted(bolt_server):
    async def scenario():
        store = await open_store(bolt_server)
        writer = BatchWriter(store, max_delay=0.01, pending_edge_ttl=0.05)
        await writer.start()
        await writer.submit(EdgeAdded(Edge("zz", "nope1", "nope2", {"RelationType": "layer2"},
                                           CreatedAt=1, UpdatedAt=1, Revision=1)))
        await writer.flush()
        await asyncio.sleep(0.1)
        await writer.submit(NodeAdded(Node("q", {"Type": "veth", "Name": "q"}, CreatedAt=1,
                                           UpdatedAt=1, Revision=1)))
        await writer.flush()
        assert (writer.stats.pending_edges, writer.stats.dropped_edges) == (0, 1)
        await writer.stop()
        await store.close()
    run(scenario())


def test_type_change_across_kinds_keeps_edges(bolt_server):
    async def scenario():
        store = await open_store(bolt_server)
        clock = Clock()
        g = Graph(clock=clock)
        ms = g.apply_nowait(NodeAdded(Node("h", {"Type": "host", "Name": "h"})))
        ms += g.apply_nowait(NodeAdded(Node("x", {"Type": "mystery", "Name": "x"})))
        ms += g.apply_nowait(EdgeAdded(Edge("hx", "h", "x", {"RelationType": "ownership",
                                                             "Note": "kept"})))
        await store.apply(ms)
        clock.t = 2000
        await store.apply(g.apply_nowait(NodeUpdated(Node("x", {"Type": "veth", "Name": "x"}))))
        rows = await store.run("MATCH (:Host)-[r:OWNERSHIP]->(x:Interface) "
                               "RETURN x.ID AS id, x.Revision AS rev, r.Note AS note")
        assert rows == [{"id": "x", "rev": 2, "note": "kept"}]
        old = await store.node("x", at=1500)
        assert old is not None and old.type == "mystery"
        await store.close()
    run(scenario())


def test_concurrent_writers_lose_nothing(bolt_server):
    async def scenario():
        store = await open_store(bolt_server)
        shared = Node("shared", {"Type": "host", "Name": "shared"}, CreatedAt=1, UpdatedAt=1,
                      Revision=1)
        writers = [BatchWriter(store, max_batch=50, max_delay=0.005) for _ in range(4)]
        for w in writers:
            await w.start()

        async def produce(k: int, w: BatchWriter) -> None:
            await w.submit(NodeAdded(shared))  # every writer announces the same node
            for i in range(150):
                n = Node(f"w{k}-{i}", {"Type": "veth", "Name": f"eth{i}"}, CreatedAt=2,
                         UpdatedAt=2, Revision=1)
                await w.submit(NodeAdded(n))
                await w.submit(EdgeAdded(Edge(f"e{k}-{i}", "shared", n.ID,
                                              {"RelationType": "layer2"}, CreatedAt=2,
                                              UpdatedAt=2, Revision=1)))
            await w.flush()

        await asyncio.gather(*(produce(k, w) for k, w in enumerate(writers)))
        c = await counts(store)
        assert (c["Node"], c["rels"]) == (601, 600)
        for w in writers:
            assert w.stats.rejected == 0
            await w.stop()
        await store.close()
    run(scenario())


def test_database_killed_during_a_burst_loses_no_accepted_mutation(bolt_server):
    """Acceptance: SIGKILL the server mid-burst; the writer reconnects and writes all."""
    async def scenario():
        store = await open_store(bolt_server)
        writer = BatchWriter(store, max_batch=500, max_delay=0.01, max_backoff=0.5)
        await writer.start()
        total = 6000

        async def burst() -> None:
            for i in range(total):
                await writer.submit(NodeAdded(Node(f"k{i}", {"Type": "veth", "Name": f"k{i}"},
                                                   CreatedAt=1, UpdatedAt=1, Revision=1)))

        producer = asyncio.create_task(burst())
        while writer.stats.written < 1000:
            await asyncio.sleep(0.01)
        restarts = bolt_server.server.restarts
        bolt_server.kill()  # the supervisor restarts it
        unwritten_at_kill = total - writer.stats.written
        await producer
        await asyncio.wait_for(writer.flush(), 180)
        assert unwritten_at_kill > 1000, "the kill must land in the middle of the burst"
        assert bolt_server.server.restarts == restarts + 1
        rows = await store.run("MATCH (n:Node) WHERE n.ID STARTS WITH 'k' RETURN count(n) AS c")
        assert rows == [{"c": total}]
        await writer.stop()
        await store.close()
    run(scenario())


def test_known_revision_fast_path_writes_the_same_as_the_general_path(bolt_server):
    """Updates built from the store's memory of the last revision (archive from
    the client, only changed properties sent) leave exactly what the general
    path (archive copied on the server) leaves."""
    async def apply_all(store: GraphStore, batches: list, forget: bool) -> tuple:
        for batch in batches:
            if forget:
                store.known_nodes.clear()
                store.known_edges.clear()
            await store.apply(batch)
        return await store.graph(), await store.revisions(0, 10**6), await counts(store)

    clock = Clock()
    g = Graph(clock=clock)
    batches = [g.apply_nowait(NodeAdded(Node("h", {"Type": "host", "Name": "h"})))
               + g.apply_nowait(NodeAdded(intf("i", MTU=1500, Up=1, Tags=["a"],
                                               Ovs={"Metric": {"RxBytes": 1}})))
               + g.apply_nowait(EdgeAdded(Edge("hi", "h", "i", {"RelationType": "ownership",
                                                                "Weight": 1})))]
    for t, meta in ((2000, {"MTU": 9000, "Up": True, "Tags": ["a", "b"],
                            "Ovs": {"Metric": {"RxBytes": 5}}}),
                    (3000, {"Up": 1.0, "Neighbors": [{"IP": "10.0.0.1"}]}),
                    (4000, {"MTU": 1500})):
        clock.t = t
        batches.append(g.apply_nowait(NodeUpdated(intf("i", **meta)))
                       + g.apply_nowait(EdgeUpdated(Edge("hi", "h", "i", {
                           "RelationType": "ownership", "Weight": t}))))

    async def scenario():
        store = await open_store(bolt_server)
        fast = await apply_all(store, batches, forget=False)
        assert len(store.known_nodes) == 2 and len(store.known_edges) == 1
        await store.clear()
        general = await apply_all(store, batches, forget=True)
        assert fast == general
        nodes, _ = fast[1]
        assert sorted((n.Revision, n.Metadata.get("MTU"), n.Metadata.get("Up"))
                      for n in nodes if n.ID == "i") == [
            (1, 1500, 1), (2, 9000, True), (3, None, 1.0), (4, 1500, None)]
        await store.close()
    run(scenario())


def test_database_down_producers_wait_on_a_full_queue_and_nothing_is_lost(bolt_server):
    """Backpressure: while the database is stopped, `submit` blocks once the queue
    is full (nothing is dropped); when it is back, every accepted mutation is written."""
    async def scenario():
        store = await open_store(bolt_server)
        writer = BatchWriter(store, max_batch=10, max_delay=0.01, max_queue=20,
                             max_backoff=0.2)
        await writer.start()
        bolt_server.loop.run(bolt_server.server.stop())
        try:
            async def produce() -> None:
                for i in range(200):
                    await writer.submit(NodeAdded(Node(f"q{i}", {"Type": "veth",
                                                                 "Name": f"q{i}"},
                                                       CreatedAt=1, UpdatedAt=1, Revision=1)))
            producer = asyncio.create_task(produce())
            # The driver retries briefly on its own before the writer's loop does.
            deadline = time.monotonic() + 30
            while writer.stats.retries == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert writer.stats.retries > 0, "the writer must retry while the database is down"
            assert not producer.done(), "producers must wait while the database is down"
            assert writer.stats.accepted <= 20 + 10 + 1  # queue + the batch being retried
        finally:
            bolt_server.loop.run(bolt_server.server.start())
        await asyncio.wait_for(producer, 120)
        await asyncio.wait_for(writer.flush(), 120)
        rows = await store.run("MATCH (n:Node) WHERE n.ID STARTS WITH 'q' RETURN count(n) AS c")
        assert rows == [{"c": 200}]
        await writer.stop()
        await store.close()
    run(scenario())


def test_update_from_a_stale_memory_is_detected_and_applied_correctly(bolt_server):
    """Store A remembers revision 1 of a node; store B (another writer) moves it
    to revision 2; A's update (revision 3) must archive revision 2, not 1."""
    async def scenario():
        a = await open_store(bolt_server)
        b = await open_store(bolt_server, clear=False)
        n1 = intf("n", "eth1").with_(CreatedAt=1, UpdatedAt=1000, Revision=1)
        await a.apply([NodeAdded(n1)])
        assert a.known_nodes.get("n") is not None
        await b.apply([NodeUpdated(intf("n", "eth2").with_(CreatedAt=1, UpdatedAt=2000,
                                                          Revision=2))])
        await a.apply([NodeUpdated(intf("n", "eth3").with_(CreatedAt=1, UpdatedAt=3000,
                                                          Revision=3))])
        nodes, _ = await a.revisions(0, 10_000)
        assert sorted((n.Revision, n.name) for n in nodes) == [
            (1, "eth1"), (2, "eth2"), (3, "eth3")]
        assert (await a.node("n", at=2500)).name == "eth2"
        assert a.known_nodes.get("n").revision == 3
        await a.close()
        await b.close()
    run(scenario())
