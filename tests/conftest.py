"""Shared fixtures: the real embedded Bolt server (ArcadeDB from the
arcadedb-embedded wheel) on free loopback ports, one per test session,
supervised from a background event loop so it can be killed and restarted.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from skygraph.topology.embedded import USER, EmbeddedConfig, EmbeddedServer, free_port
from skygraph.topology.store import GraphStore

T = TypeVar("T")
# Skydive's packet traces with their expected flows (copied from ../shared/pcaps, so a
# fresh clone has them).
PCAPS = Path(__file__).resolve().parent / "data" / "pcaps"
RUN_ID = f"sg{os.getpid()}"  # prefix of everything tests create on the host


class LoopThread:
    """An event loop in a thread, for fixtures that outlive one test's loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@dataclass
class BoltServer:
    server: EmbeddedServer
    loop: LoopThread

    @property
    def uri(self) -> str:
        return self.server.uri

    @property
    def user(self) -> str:
        return USER

    @property
    def password(self) -> str:
        return self.server.password

    def kill(self) -> None:
        """SIGKILL the server process (the supervisor restarts it)."""
        assert self.server.proc is not None
        self.server.proc.kill()


@pytest.fixture(scope="session")
def bolt_server() -> Iterator[BoltServer]:
    data = Path(tempfile.mkdtemp(prefix=f"{RUN_ID}-bolt-"))
    config = EmbeddedConfig(data_dir=data, bolt_port=free_port(), http_port=free_port(),
                            heap="1g", database="skygraph")
    server = EmbeddedServer(config)
    loop = LoopThread()
    loop.run(server.start())
    try:
        yield BoltServer(server, loop)
    finally:
        loop.run(server.stop())
        loop.close()
        shutil.rmtree(data, ignore_errors=True)


def run(coro: Awaitable[T]) -> T:
    """Run one test scenario in a fresh event loop."""
    async def main() -> T:
        return await coro
    return asyncio.run(main())


async def open_store(server: BoltServer, clear: bool = True) -> GraphStore:
    store = await GraphStore.open(server.uri, server.user, server.password)
    await store.bootstrap()
    if clear:
        await store.clear()
    return store


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(url: str, method: str, body: Any = None, headers: dict[str, str] | None = None,
         raw: bytes | None = None, context: Any = None) -> Reply:
    """One HTTP request (JSON `body`, or `raw` bytes); error statuses are replies too."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=60, context=context) as resp:
            return Reply(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


def wait(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """`check()` until it returns something truthy (returned), else AssertionError."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
