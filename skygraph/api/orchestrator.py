"""Capture orchestration (SPEC §1b, §1i): which capture runs on which node,
kept true as captures and the topology change.

A capture's Gremlin query is evaluated against the graph; the nodes it
returns that belong to a host (`Host` set) and whose `Type` allows the
capture's type (SPEC §1b table; an empty type takes the node type's
default) are its placements. Whenever a capture is created or deleted, the
topology changes, or an agent (re)connects, the desired placements are
computed again and the difference is sent to the agents: start where a
placement appeared (an `eth0` created later), stop where one went away
(the node vanished, the capture was deleted). Agents report the result in
the node's `Captures` metadata; `Capture.Count` is read from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from skygraph.api.captures import capture_type_for
from skygraph.api.service import Api
from skygraph.gremlin import GremlinError

log = logging.getLogger("skygraph.orchestrator")

# (host, capture JSON, node id) -> delivered? ; (host, capture id, node id) -> delivered?
Start = Callable[[str, dict[str, Any], str], Awaitable[bool]]
Stop = Callable[[str, str, str], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Placement:
    capture_id: str
    node_id: str
    host: str
    capture: Mapping[str, Any]   # the Capture JSON sent to the agent, Type resolved


class Orchestrator:
    def __init__(self, api: Api, start: Start, stop: Stop, debounce: float = 0.2) -> None:
        self.api = api
        self.start_capture = start
        self.stop_capture = stop
        self.debounce = debounce
        self.placed: dict[tuple[str, str], Placement] = {}   # what agents were told
        self.errors: dict[str, str] = {}                      # capture id -> why it resolves to nothing
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        api.captures.listeners.append(self.poke)

    def poke(self) -> None:
        """Something changed: reconcile soon (changes within `debounce` are merged)."""
        self._dirty.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="capture orchestrator")
        self.poke()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        sub = self.api.subscribe()
        watch = asyncio.create_task(self._watch(sub), name="orchestrator events")
        try:
            while True:
                await self._dirty.wait()
                await asyncio.sleep(self.debounce)
                self._dirty.clear()
                try:
                    await self.reconcile()
                except Exception:
                    log.exception("capture orchestration failed; retrying on the next change")
                    await asyncio.sleep(1.0)
                    self.poke()
        finally:
            watch.cancel()
            sub.close()

    async def _watch(self, sub: Any) -> None:
        while True:
            await sub.get()
            self.poke()

    # ------------------------------------------------------------ agents
    def host_connected(self, host: str) -> None:
        """An agent (re)connected: it runs no capture yet, so tell it again."""
        self._forget(host)
        self.poke()

    def host_disconnected(self, host: str) -> None:
        self._forget(host)

    def _forget(self, host: str) -> None:
        for key in [k for k, p in self.placed.items() if p.host == host]:
            del self.placed[key]

    # ------------------------------------------------------------ reconcile
    async def desired(self) -> dict[tuple[str, str], Placement]:
        want: dict[tuple[str, str], Placement] = {}
        errors: dict[str, str] = {}
        for capture in await self.api.captures.list():
            try:
                result = await self.api.gremlin(capture.gremlin_query)
            except GremlinError as exc:
                errors[capture.uuid] = str(exc)
                continue
            if not isinstance(result, list):
                errors[capture.uuid] = "the query does not return nodes"
                continue
            for item in result:
                node = self.api.graph.nodes.get(item.get("ID", "")) \
                    if isinstance(item, dict) and "Parent" not in item else None
                if node is None or not node.Host:
                    continue
                ctype = capture_type_for(node.type, capture.type)
                if ctype is None:
                    continue
                spec = {**capture.to_json(), "Type": ctype}
                want[(capture.uuid, node.ID)] = Placement(capture.uuid, node.ID, node.Host, spec)
        self.errors = errors
        return want

    async def reconcile(self) -> None:
        await self.api.writer.flush()   # the query must see what the agents just sent
        want = await self.desired()
        for key in [k for k in self.placed if k not in want]:
            p = self.placed.pop(key)
            await self.stop_capture(p.host, p.capture_id, p.node_id)
        for key, p in want.items():
            if key not in self.placed and await self.start_capture(p.host, dict(p.capture),
                                                                    p.node_id):
                self.placed[key] = p
