"""Helpers for the link tests: a recording handler, an agent with a small
in-memory graph wired to an `AnalyzerClient`, and polling."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from skygraph.rpc.client import AnalyzerClient
from skygraph.rpc.model import CaptureStats, Command
from skygraph.topology.bus import EventBus
from skygraph.topology.graph import Graph
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import StoreMutation

FAST = (0.05, 0.4)   # test backoff


async def eventually(check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


class Recorder:
    """A handler that records what it is given (the server's contract, no graph)."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.fail_flows = 0

    async def on_connect(self, host_id: str, version: int, peer: str) -> None:
        self.events.append(("connect", host_id, version))

    async def on_sync(self, host_id: str, nodes: list[Node], edges: list[Edge]) -> None:
        self.events.append(("sync", host_id, sorted(n.ID for n in nodes), sorted(e.ID for e in edges)))

    async def on_mutations(self, host_id: str, mutations: list[StoreMutation]) -> None:
        self.events.append(("mutations", host_id, mutations))

    async def on_flows(self, host_id: str, capture_id: str, flows: list[dict[str, Any]]) -> None:
        if self.fail_flows:
            self.fail_flows -= 1
            raise RuntimeError("flow store unavailable")
        self.events.append(("flows", host_id, capture_id, [f["UUID"] for f in flows]))

    async def on_stats(self, host_id: str, stats: CaptureStats) -> None:
        self.events.append(("stats", host_id, stats))

    async def on_disconnect(self, host_id: str) -> None:
        self.events.append(("disconnect", host_id))

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]

    def flows(self) -> list[str]:
        return [u for e in self.events if e[0] == "flows" for u in e[3]]


class Agent:
    """An agent's in-memory graph whose changes feed a client, as skygraph.agent does."""

    def __init__(self, host_id: str) -> None:
        self.host_id = host_id
        self.bus: EventBus[StoreMutation] = EventBus()
        self.graph = Graph(self.bus)
        self.commands: list[Command] = []

    def snapshot(self) -> tuple[list[Node], list[Edge]]:
        return list(self.graph.nodes.values()), list(self.graph.edges.values())

    async def on_command(self, command: Command) -> None:
        await asyncio.sleep(0.001 * (len(self.commands) % 3))   # uneven handling times
        self.commands.append(command)

    def client(self, address: str, **kwargs: Any) -> AnalyzerClient:
        kwargs.setdefault("backoff", FAST)
        return AnalyzerClient(address, self.host_id, snapshot=self.snapshot,
                              on_command=self.on_command, **kwargs)

    @contextlib.asynccontextmanager
    async def running(self, client: AnalyzerClient) -> AsyncIterator[AnalyzerClient]:
        sub = self.bus.subscribe()

        async def forward() -> None:
            while True:
                await client.mutation(await sub.get())
        tasks = [asyncio.create_task(client.run()), asyncio.create_task(forward())]
        try:
            yield client
        finally:
            await client.close()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            sub.close()
