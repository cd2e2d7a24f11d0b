"""A real analyzer (`skygraph.analyzer.serve`: uvicorn, REST, GraphQL, auth)
on a free loopback port, on the session's embedded Bolt server, run in a
background loop; plus a small HTTP client."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from skygraph import analyzer
from skygraph.config import Config, GraphSection, load
from tests.conftest import BoltServer, LoopThread, Reply, free_port, http, open_store


@dataclasses.dataclass
class Served:
    url: str
    context: ssl.SSLContext | None = None
    rpc: str = ""          # where agents connect (gRPC)

    @property
    def endpoint(self) -> str:
        return self.url.split("://", 1)[1]

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None, raw: bytes | None = None) -> Reply:
        return http(self.url + path, method, body, headers, raw, self.context)


def analyzer_config(bolt_server: BoltServer, tmp_path: Any, yaml_text: str = "") -> Config:
    """The analyzer's config: `yaml_text` (analyzer section) + the session's Bolt server."""
    path = tmp_path / "analyzer.yml"
    path.write_text(yaml_text)
    cfg = load(str(path), env={})
    graph = GraphSection(uri=bolt_server.uri, user=bolt_server.user,
                         password=bolt_server.password)
    listen = f"127.0.0.1:{free_port()}"
    rpc = dataclasses.replace(cfg.analyzer.rpc, listen=f"127.0.0.1:{free_port()}")
    return dataclasses.replace(cfg, graph=graph, analyzers=(rpc.listen,),
                               analyzer=dataclasses.replace(cfg.analyzer, listen=listen, rpc=rpc))


@contextmanager
def running(cfg: Config, context: ssl.SSLContext | None = None) -> Iterator[Served]:
    loop = LoopThread()
    stop: asyncio.Event | None = None
    urls: list[str] = []
    sock = analyzer.bind(cfg.analyzer.listen)

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        await analyzer.serve(cfg, sock, stop, urls.append)
    future = asyncio.run_coroutine_threadsafe(main(), loop.loop)
    try:
        for _ in range(600):
            if urls or future.done():
                break
            time.sleep(0.05)
        if future.done():
            future.result()
        assert urls, "the analyzer did not start"
        yield Served(urls[0], context, cfg.analyzer.rpc.listen)
    finally:
        if stop is not None:
            loop.loop.call_soon_threadsafe(stop.set)
        try:
            future.result(60)
        finally:
            sock.close()
            loop.close()


@pytest.fixture
def fresh_graph(bolt_server: BoltServer) -> None:
    """Empty graph, history and captures."""
    async def clear() -> None:
        store = await open_store(bolt_server)
        await store.run("MATCH (c:Capture) DELETE c")
        await store.close()
    bolt_server.loop.run(clear())


@pytest.fixture
def analyzer_at(bolt_server: BoltServer, tmp_path: Any, fresh_graph: None
                ) -> Callable[..., Any]:
    """`with analyzer_at(yaml) as a:` runs an analyzer with that config."""
    def make(yaml_text: str = "", context: ssl.SSLContext | None = None) -> Any:
        return running(analyzer_config(bolt_server, tmp_path, yaml_text), context)
    return make

