"""The in-memory graph's rules: ownership exclusive, cascading deletes,
revisions and timestamps, endpoints required, every change published."""

import asyncio

import pytest

from skygraph.topology.bus import EventBus
from skygraph.topology.errors import NotFoundError, ValidationError
from skygraph.topology.graph import Graph
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import (
    EdgeAdded,
    EdgeDeleted,
    MetadataOp,
    NodeAdded,
    NodeDeleted,
    NodePartiallyUpdated,
    NodeUpdated,
)


def host(i: str) -> Node:
    return Node(i, {"Type": "host", "Name": i})


def intf(i: str) -> Node:
    return Node(i, {"Type": "veth", "Name": i})


def own(i: str, p: str, c: str) -> Edge:
    return Edge(i, p, c, {"RelationType": "ownership"})


def test_ownership_is_exclusive():
    g = Graph(clock=lambda: 10)
    for n in (host("h1"), host("h2"), intf("i")):
        g.apply_nowait(NodeAdded(n))
    g.apply_nowait(EdgeAdded(own("o1", "h1", "i")))
    applied = g.apply_nowait(EdgeAdded(own("o2", "h2", "i")))
    assert [type(m).__name__ for m in applied] == ["EdgeDeleted", "EdgeAdded"]
    assert applied[0].edge.ID == "o1" and applied[0].edge.DeletedAt == 10
    assert set(g.edges) == {"o2"}


def test_layer2_edges_are_not_exclusive():
    g = Graph(clock=lambda: 1)
    for n in (host("h1"), intf("a"), intf("b")):
        g.apply_nowait(NodeAdded(n))
    g.apply_nowait(EdgeAdded(Edge("l1", "a", "b", {"RelationType": "layer2"})))
    g.apply_nowait(EdgeAdded(Edge("l2", "h1", "b", {"RelationType": "layer2"})))
    assert set(g.edges) == {"l1", "l2"}


def test_delete_node_deletes_its_edges_first():
    g = Graph(clock=lambda: 5)
    for n in (host("h"), intf("i")):
        g.apply_nowait(NodeAdded(n))
    g.apply_nowait(EdgeAdded(own("o", "h", "i")))
    applied = g.apply_nowait(NodeDeleted(intf("i")))
    assert [type(m) for m in applied] == [EdgeDeleted, NodeDeleted]
    assert not g.edges and "i" not in g.nodes


def test_updates_bump_revision_and_time():
    t = [100]
    g = Graph(clock=lambda: t[0])
    g.apply_nowait(NodeAdded(intf("i")))
    t[0] = 200
    [m] = g.apply_nowait(NodeUpdated(Node("i", {"Type": "veth", "Name": "eth9"})))
    assert (m.node.Revision, m.node.CreatedAt, m.node.UpdatedAt) == (2, 100, 200)
    t[0] = 300
    [m] = g.apply_nowait(NodePartiallyUpdated("i", (MetadataOp("Ovs.Metric.RxBytes", 7),)))
    assert m.node.Metadata == {"Type": "veth", "Name": "eth9", "Ovs": {"Metric": {"RxBytes": 7}}}
    assert m.node.Revision == 3


def test_errors_name_what_is_missing():
    g = Graph(clock=lambda: 1)
    g.apply_nowait(NodeAdded(host("h")))
    with pytest.raises(ValidationError, match=r"edge o: field 'Child': node nope does not exist"):
        g.apply_nowait(EdgeAdded(own("o", "h", "nope")))
    with pytest.raises(NotFoundError, match="node ghost does not exist"):
        g.apply_nowait(NodeUpdated(host("ghost")))
    with pytest.raises(ValidationError, match=r"Metadata\.Name"):
        g.apply_nowait(NodeUpdated(Node("h", {"Type": "host"})))


def test_every_applied_change_is_published_in_order():
    async def scenario():
        bus = EventBus()
        sub = bus.subscribe()
        g = Graph(bus, clock=lambda: 1)
        await g.apply(NodeAdded(host("h")))
        await g.apply(NodeAdded(intf("i")))
        await g.apply(EdgeAdded(own("o", "h", "i")))
        await g.apply(NodeDeleted(host("h")))
        got = [await sub.get() for _ in range(5)]
        return [type(m).__name__ for m in got]
    assert asyncio.run(scenario()) == ["NodeAdded", "NodeAdded", "EdgeAdded", "EdgeDeleted",
                                       "NodeDeleted"]


def test_bus_applies_backpressure_instead_of_dropping():
    async def scenario():
        bus = EventBus()
        sub = bus.subscribe(maxsize=2)
        await bus.publish(1)
        await bus.publish(2)
        blocked = asyncio.create_task(bus.publish(3))
        await asyncio.sleep(0.01)
        assert not blocked.done()
        assert await sub.get() == 1
        await blocked
        return [await sub.get(), await sub.get()]
    assert asyncio.run(scenario()) == [2, 3]
