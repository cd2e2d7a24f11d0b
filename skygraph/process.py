"""What every skygraph process does: open the configured graph database
(embedded default or external Bolt server) and stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

from skygraph.config import Config
from skygraph.topology.connect import GraphHandle, connect_graph
from skygraph.topology.embedded import EmbeddedConfig
from skygraph.topology.store import BatchWriter, GraphStore


def embedded_config(cfg: Config) -> EmbeddedConfig:
    e = cfg.graph.embedded
    return EmbeddedConfig(data_dir=cfg.data_dir / "embedded", bolt_port=e.bolt_port,
                          http_port=e.http_port, heap=e.heap, database=e.database)


def graph_connection(cfg: Config) -> contextlib.AbstractAsyncContextManager[GraphHandle]:
    g = cfg.graph
    return connect_graph(g.uri, g.user, g.password, g.database or None, embedded_config(cfg),
                         wait=g.connect_timeout)


def batch_writer(cfg: Config, store: GraphStore) -> BatchWriter:
    """The batched writer with the `graph.writer` settings."""
    w = cfg.graph.writer
    return BatchWriter(store, max_batch=w.max_batch, max_delay=w.max_delay,
                       max_queue=w.max_queue, pending_edge_ttl=w.pending_edge_ttl)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGTERM or SIGINT while the block runs (the running loop's handlers)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
