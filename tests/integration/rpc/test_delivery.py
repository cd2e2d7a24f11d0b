"""Flows and commands over real grpc.aio: flows produced while the analyzer is
away arrive after the reconnect (bounded: oldest dropped and counted), flows
the analyzer failed to process are sent again, commands arrive in order."""

from __future__ import annotations

import asyncio

from skygraph.rpc.model import CaptureStats, Command, StartCapture, StopCapture
from skygraph.rpc.server import RpcServer
from skygraph.topology.embedded import free_port
from tests.conftest import run
from tests.integration.rpc.conftest import Agent, Recorder, eventually


def flows(*uuids: str) -> list[dict[str, object]]:
    return [{"UUID": u, "Metric": {"ABPackets": 1}} for u in uuids]


def test_flows_buffered_while_disconnected_arrive_after_reconnect() -> None:
    async def scenario() -> None:
        port = free_port()
        rec = Recorder()
        server = RpcServer(rec, f"127.0.0.1:{port}")
        await server.start()
        agent = Agent("h1")
        async with agent.running(agent.client(server.address, max_buffered_flows=5)) as c:
            assert await c.wait_connected(10)
            c.flows("cap", flows("a", "b"))
            await eventually(lambda: rec.flows() == ["a", "b"] and c.buffered_flows == 0)
            await server.stop()
            await eventually(lambda: not c.connected)
            c.flows("cap", flows("c", "d", "e"))
            c.flows("cap2", flows("f", "g", "h", "i"))      # 7 held > 5: c and d dropped
            c.stats(CaptureStats("cap", "n1", packets_received=7))
            assert (c.counters.flows_dropped, c.dropped_flows("cap"), c.buffered_flows) == (2, 2, 5)
            server = RpcServer(rec, f"127.0.0.1:{port}")
            await server.start()
            await eventually(lambda: c.buffered_flows == 0, what="the buffered flows")
            assert rec.flows() == ["a", "b", "e", "f", "g", "h", "i"]
            assert [e[2] for e in rec.events if e[0] == "flows"][-2:] == ["cap", "cap2"]
            stats = [e[2] for e in rec.events if e[0] == "stats"]
            assert stats == [CaptureStats("cap", "n1", packets_received=7)]
            kinds = rec.kinds()
            second = kinds.index("connect", 1)
            assert kinds[second:second + 2] == ["connect", "sync"]   # the sync comes first
        await server.stop()
    run(scenario())


def test_flows_the_analyzer_failed_on_are_sent_again() -> None:
    async def scenario() -> None:
        rec = Recorder()
        rec.fail_flows = 1
        server = RpcServer(rec, "127.0.0.1:0")
        await server.start()
        agent = Agent("h1")
        async with agent.running(agent.client(server.address)) as c:
            assert await c.wait_connected(10)
            c.flows("cap", flows("a", "b", "c"))
            await eventually(lambda: c.buffered_flows == 0)
            assert rec.flows() == ["a", "b", "c"]
            assert c.counters.connects == 2
            assert "failed to process flows from agent h1: RuntimeError: flow store unavailable" in \
                c.counters.last_error
        await server.stop()
    run(scenario())


def test_commands_arrive_in_order() -> None:
    async def scenario() -> None:
        server = RpcServer(Recorder(), "127.0.0.1:0")
        await server.start()
        agent = Agent("h1")
        sent: list[Command] = []
        assert not await server.send("h1", StopCapture("c", "n"))    # not connected
        async with agent.running(agent.client(server.address)) as c:
            assert await c.wait_connected(10)
            await eventually(lambda: server.hosts() == ["h1"])
            for i in range(30):
                cmd: Command = (StartCapture({"UUID": f"c{i}", "Type": "afpacket"}, f"n{i}") if i % 2
                                else StopCapture(f"c{i}", f"n{i}"))
                assert await server.send("h1", cmd)
                sent.append(cmd)
                if i % 7 == 0:
                    await asyncio.sleep(0)
            await eventually(lambda: len(agent.commands) == 30)
            assert agent.commands == sent
        await server.stop()
    run(scenario())
