"""Subscriptions over graphql-transport-ws (websockets client, real server):
topology events of changes made through the API during the test, flow
updates, filter errors, the end of a subscription when the client leaves,
and connection_init authorisation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from skygraph.graphql.app import make_app
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, Mutation, NodeAdded, NodeDeleted, NodeUpdated
from tests.integration.graphql.conftest import Served, serve

pytestmark = pytest.mark.bolt

EVENTS = """subscription($f: TopologyFilter) { topologyEvents(filter: $f) {
    kind revision node { id name deletedAt } edge { id parentId childId relationType } } }"""
FLOWS = """subscription($c: ID, $f: [MetadataPredicate!]) { flowUpdates(captureId: $c, filter: $f) }"""


class Client:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        return message

    async def subscribe(self, op: str, query: str, variables: dict[str, Any]) -> None:
        await self.send({"id": op, "type": "subscribe",
                         "payload": {"query": query, "variables": variables}})

    async def until_live(self, op: str, poke: Callable[[int], Any]) -> None:
        """Poke (make an event) until the subscription delivers one: from then on,
        the server is subscribed. The pokes' events are consumed."""
        for i in range(100):
            await poke(i)
            try:
                message = await self.recv(0.3)
            except TimeoutError:
                continue
            assert message["type"] == "next" and message["id"] == op, message
            while True:  # drain the other pokes
                try:
                    await self.recv(0.3)
                except TimeoutError:
                    return
        raise AssertionError("the subscription never delivered an event")


@asynccontextmanager
async def client(url: str, params: dict[str, Any] | None = None) -> AsyncIterator[Client]:
    async with connect(url.replace("http", "ws", 1) + "/graphql",
                       subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        c = Client(ws)
        await c.send({"type": "connection_init", "payload": params or {}})
        assert (await c.recv())["type"] == "connection_ack"
        yield c


def on_server(served: Served, mutations: list[Mutation]) -> Any:
    """Apply changes on the server's loop, from the client's loop."""
    return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
        served.api.apply(mutations), served.loop.loop))


def subscribers(served: Served) -> int:
    return len(served.api.bus)


async def eventually(check: Callable[[], bool]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.025)
    raise AssertionError("condition not reached")


def test_topology_events_of_changes_made_during_the_test(served: Served) -> None:
    def dev(name: str, **extra: Any) -> Node:
        return Node(name, {"Name": name, "Type": "device", **extra}, Host="agentA")

    async def scenario() -> list[tuple[str, str]]:
        base = subscribers(served)
        async with client(served.url) as c:
            await c.subscribe("1", EVENTS, {"f": {
                "kinds": ["NODE_ADDED", "EDGE_ADDED", "NODE_DELETED"],
                "nodes": {"nameRegex": "sub.*|poke.*"}}})
            await c.until_live("1", lambda i: on_server(served, [NodeAdded(dev(f"poke{i}"))]))
            assert subscribers(served) == base + 1
            await on_server(served, [
                NodeAdded(dev("sub1")), NodeAdded(dev("other")),        # other: filtered out
                EdgeAdded(Edge("own-sub1", "ns0", "sub1", {"RelationType": "ownership"})),
                NodeUpdated(dev("sub1", MTU=9000)),                      # kind not asked for
                NodeDeleted(Node("sub1", {}))])
            got: list[tuple[str, str]] = []
            while not got or got[-1][0] != "NODE_DELETED":
                message = await c.recv()
                assert message["type"] == "next" and "errors" not in message["payload"], message
                event = message["payload"]["data"]["topologyEvents"]
                element = event["node"] or event["edge"]
                assert event["revision"] >= 1
                got.append((event["kind"], element["id"]))
                if event["kind"] == "NODE_DELETED":
                    assert event["node"]["deletedAt"] is not None
                if event["kind"] == "EDGE_ADDED":
                    assert event["edge"] == {"id": "own-sub1", "parentId": "ns0",
                                             "childId": "sub1", "relationType": "ownership"}
            await c.send({"id": "1", "type": "complete"})
            await eventually(lambda: subscribers(served) == base)  # closed on complete
            # a second subscription, and the client just goes away
            await c.subscribe("2", EVENTS, {})
            await c.until_live("2", lambda i: on_server(served, [NodeAdded(dev(f"poke2-{i}"))]))
            assert subscribers(served) == base + 1
        await eventually(lambda: subscribers(served) == base)  # closed on disconnect
        return got

    got = asyncio.run(scenario())
    # "other" filtered by name, the edges of the pokes did not exist, the update not asked for
    assert got == [("NODE_ADDED", "sub1"), ("EDGE_ADDED", "own-sub1"), ("NODE_DELETED", "sub1")]


def test_flow_updates_by_capture_and_filter(served: Served) -> None:
    def publish(flow: dict[str, Any]) -> Any:
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
            served.api.flow_bus.publish(flow), served.loop.loop))

    async def scenario() -> list[str]:
        async with client(served.url) as c:
            await c.subscribe("f", FLOWS, {"c": "cap1", "f": [
                {"key": "Application", "eq": "TCP"}, {"key": "Network.A", "regex": "10\\..*"}]})
            await c.until_live("f", lambda i: publish({
                "UUID": f"poke{i}", "CaptureID": "cap1", "Application": "TCP",
                "Network": {"A": "10.0.0.1", "B": "10.0.0.2"}}))
            for uuid, capture, app, a in (("f1", "cap1", "TCP", "10.0.0.1"),
                                          ("f2", "cap2", "TCP", "10.0.0.1"),
                                          ("f3", "cap1", "UDP", "10.0.0.1"),
                                          ("f4", "cap1", "TCP", "192.168.0.1"),
                                          ("f5", "cap1", "TCP", "10.1.1.1")):
                await publish({"UUID": uuid, "CaptureID": capture, "Application": app,
                               "Network": {"A": a, "B": "10.0.0.9"}})
            got = []
            while len(got) < 2:
                got.append((await c.recv())["payload"]["data"]["flowUpdates"]["UUID"])
            return got

    assert asyncio.run(scenario()) == ["f1", "f5"]


def test_a_bad_subscription_filter_is_an_error_message(served: Served) -> None:
    async def scenario() -> dict[str, Any]:
        async with client(served.url) as c:
            await c.subscribe("x", EVENTS, {"f": {"nodes": {"nameRegex": "("}}})
            return await c.recv()

    message = asyncio.run(scenario())
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert errors[0]["message"].startswith("filter nameRegex: invalid regex '('")


def test_connection_init_is_authorised(served: Served) -> None:
    seen: list[Any] = []

    def authorize(params: Any) -> bool:
        seen.append(params)
        return isinstance(params, dict) and params.get("Authorization") == "Bearer s3cret"

    server = serve(make_app(served.api, authorize_ws=authorize), served.loop)

    async def init(params: dict[str, Any]) -> str:
        async with connect(server.url.replace("http", "ws", 1) + "/graphql",
                           subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init", "payload": params}))
            try:
                return str(json.loads(await asyncio.wait_for(ws.recv(), 10))["type"])
            except ConnectionClosed as exc:
                assert exc.rcvd is not None
                return f"closed {exc.rcvd.code}"

    try:
        assert asyncio.run(init({})) == "closed 4403"
        assert asyncio.run(init({"Authorization": "Bearer nope"})) == "closed 4403"
        assert asyncio.run(init({"Authorization": "Bearer s3cret"})) == "connection_ack"
    finally:
        server.stop()
    assert seen == [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Bearer s3cret"}]


WHERE = """subscription($w: FlowFilter) { flowUpdates(where: $w) }"""


def test_flow_updates_take_the_flows_query_filter(served: Served) -> None:
    """`where` is the `flows` query's FlowFilter, with the same meaning."""
    def publish(flow: dict[str, Any]) -> Any:
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
            served.api.flow_bus.publish(flow), served.loop.loop))

    async def scenario() -> list[str]:
        async with client(served.url) as c:
            await c.subscribe("w", WHERE, {"w": {"application": "ICMPv4", "nodeTID": "t1",
                                                 "metadata": [{"key": "Metric.ABPackets",
                                                               "gt": 2}]}})
            await c.until_live("w", lambda i: publish({
                "UUID": f"poke{i}", "NodeTID": "t1", "Application": "ICMPv4",
                "Metric": {"ABPackets": 3}}))
            for uuid, tid, app, packets in (("g1", "t1", "ICMPv4", 5), ("g2", "t2", "ICMPv4", 5),
                                            ("g3", "t1", "TCP", 5), ("g4", "t1", "ICMPv4", 1),
                                            ("g5", "t1", "ICMPv4", 9)):
                await publish({"UUID": uuid, "NodeTID": tid, "Application": app,
                               "Metric": {"ABPackets": packets}})
            got = []
            while len(got) < 2:
                got.append((await c.recv())["payload"]["data"]["flowUpdates"]["UUID"])
            await c.subscribe("h", WHERE, {"w": {"host": "h1"}})
            refused = await c.recv()
            got.append(str(refused["payload"]))
            return got

    got = asyncio.run(scenario())
    assert got[:2] == ["g1", "g5"]
    assert "where.host" in got[2]
