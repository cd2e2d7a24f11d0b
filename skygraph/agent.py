"""`skygraph agent`: runs the topology probes on this host (host node,
namespaces + netlink, Open vSwitch) into an in-memory graph.

Until agents talk to an analyzer over gRPC, `--standalone` writes the
graph's mutations straight into the configured graph database (embedded
default or Neo4j) through the batched writer. On start it loads this host's
elements from the database, lets the probes announce what exists, and
deletes what they did not (resync: no duplicates, no stale nodes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from skygraph.config import Config, ConfigError, NetnsSection
from skygraph.probes import host
from skygraph.probes.elements import Writer
from skygraph.probes.netns.probe import NetnsProbe
from skygraph.probes.ovs.probe import OvsProbe
from skygraph.process import batch_writer, graph_connection, stop_on_signals
from skygraph.topology.bus import EventBus
from skygraph.topology.graph import Graph
from skygraph.topology.mutations import StoreMutation
from skygraph.topology.store import BatchWriter, GraphStore

log = logging.getLogger("skygraph.agent")

# ---------------------------------------------------------------- probes
class Probes:
    """The host node and the probes, feeding one in-memory graph."""

    def __init__(self, graph: Graph, host_id: str, cfg: Config,
                 root_path: str | None = None) -> None:
        self.writer = Writer(graph, host_id)
        self.host_id = host_id
        self.cfg = cfg
        self.host_node = host.node_id(host_id)
        topo = cfg.agent.topology
        self.netns = NetnsProbe(self.writer, self.host_node, topo.netns.run_path, root_path,
                                topo.netlink.metrics_update)
        self.ovs = (OvsProbe(self.writer, self.host_node, cfg.ovs.ovsdb, cfg.ovs.enable_stats)
                    if "ovsdb" in topo.probes else None)

    async def start(self) -> None:
        facts = await asyncio.get_running_loop().run_in_executor(None, host.read_facts)
        await self.writer.put(self.host_node,
                              host.host_metadata(self.host_id, facts, self.cfg.agent.metadata))
        await self.netns.start()     # netlink first: OVS interfaces merge into its nodes
        if self.ovs is not None:
            await self.ovs.start()

    async def synced(self) -> None:
        """Return once every probe has announced what exists (OVS: bounded wait)."""
        if self.ovs is None:
            return
        deadline = time.monotonic() + self.cfg.ovs.sync_timeout
        while self.ovs.applied == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.ovs.applied == 0:
            log.warning("ovsdb %s did not answer within %.0fs; its nodes are resynced when it "
                        "does", self.cfg.ovs.ovsdb, self.cfg.ovs.sync_timeout)

    async def stop(self) -> None:
        if self.ovs is not None:
            await self.ovs.stop()
        await self.netns.stop()


async def _forward(sub: Any, writer: BatchWriter) -> None:
    while True:
        await writer.submit(await sub.get())


async def run_standalone(cfg: Config, store: GraphStore, stop: asyncio.Event, root_path: str | None = None,
                         ready: Callable[[Probes], None] | None = None) -> None:
    """Probes -> graph -> batched writer -> `store`, until `stop` is set."""
    host_id = cfg.host_id or socket.gethostname()
    writer = batch_writer(cfg, store)
    await writer.start()
    bus: EventBus[StoreMutation] = EventBus()
    graph = Graph(bus)
    probes = Probes(graph, host_id, cfg, root_path)
    nodes, edges = await store.graph()
    probes.writer.load([n for n in nodes if n.Host == host_id],
                       [e for e in edges if e.Host == host_id])
    sub = bus.subscribe()
    forward = asyncio.create_task(_forward(sub, writer), name="agent forward")
    try:
        await probes.start()
        await probes.synced()
        removed = await probes.writer.sweep()
        log.info("agent %s: synced %d nodes, %d edges (%d stale elements removed)", host_id,
                 len(graph.nodes), len(graph.edges), removed)
        if ready is not None:
            ready(probes)
        await stop.wait()
    finally:
        await probes.stop()
        while not sub.queue.empty():
            await asyncio.sleep(0.01)
        forward.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forward
        sub.close()
        await writer.stop()


# ---------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--standalone", action="store_true",
                        help="write the topology straight into the graph database (no analyzer)")
    parser.add_argument("--host-id", help="this host's id (default: host_id from the config, "
                                          "else the hostname)")
    parser.add_argument("--netns-run-path", help="namespace directory to watch "
                                                 "(default /var/run/netns)")
    parser.add_argument("--ovsdb", help="OVSDB address (default unix:///var/run/openvswitch/db.sock)")
    parser.add_argument("--no-ovs", action="store_true", help="do not run the ovsdb probe")


def run(args: argparse.Namespace, cfg: Config) -> int:
    if not args.standalone:
        raise ConfigError("agent: only --standalone is available until the analyzer link "
                          "(gRPC) lands")
    topo = cfg.agent.topology
    if args.netns_run_path:
        topo = dataclasses.replace(topo, netns=NetnsSection(args.netns_run_path))
    if args.no_ovs:
        topo = dataclasses.replace(topo, probes=tuple(p for p in topo.probes if p != "ovsdb"))
    ovs = dataclasses.replace(cfg.ovs, ovsdb=args.ovsdb) if args.ovsdb else cfg.ovs
    cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, topology=topo), ovs=ovs,
                              host_id=args.host_id or cfg.host_id)
    asyncio.run(_main(cfg))
    return 0


async def _main(cfg: Config) -> None:
    with stop_on_signals() as stop:
        async with graph_connection(cfg) as handle:
            log.info("agent: writing to %s %s", handle.backend, handle.store.uri)
            await run_standalone(cfg, handle.store, stop)
            log.info("agent stopped")
