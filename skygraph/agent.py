"""`skygraph agent`: runs the topology probes on this host (host node,
namespaces + netlink, Open vSwitch) into an in-memory graph, and the
captures the analyzer asks for.

Connected (the default): the graph is synced to the analyzer over gRPC
(`analyzers`; a full sync on every (re)connect, then its mutations), the
analyzer's start/stop capture commands run afpacket captures whose flows go
back on the same link, and each captured node carries its `Captures`
metadata. `--standalone` instead writes the graph straight into the graph
database (no analyzer, no captures): on start it loads this host's elements
from the database, lets the probes announce what exists, and deletes what
they did not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from skygraph import exporters
from skygraph.capture import ovsdb as capture_ovsdb
from skygraph.capture.injector import InjectionManager
from skygraph.capture.manager import CaptureManager
from skygraph.capture.options import CaptureOptions, TableSettings
from skygraph.capture.sources.base import AgentCaptureSettings, Target, TargetFactory, TargetRequest
from skygraph.config import Config, ConfigError, NetnsSection, port_range
from skygraph.probes import host
from skygraph.probes.elements import Writer
from skygraph.probes.netns.probe import NetnsProbe
from skygraph.probes.ovs.probe import OvsProbe
from skygraph.process import batch_writer, graph_connection, stop_on_signals
from skygraph.rpc.client import AnalyzerClient
from skygraph.rpc.model import CaptureStats, Command, InjectPacket, StartCapture, StopCapture, StopInjection
from skygraph.rpc.tls import ClientTLS
from skygraph.topology.bus import EventBus
from skygraph.topology.errors import NotFoundError
from skygraph.topology.flow import Flow
from skygraph.topology.flowschema import wire_json
from skygraph.topology.graph import Graph
from skygraph.topology.mutations import MetadataOp, NodePartiallyUpdated, StoreMutation
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


# ---------------------------------------------------------------- connected
def _exclude(addresses: tuple[str, ...]) -> list[tuple[str, int]]:
    """(ip, port) of every analyzer: captures never see our own link."""
    out = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            ip = socket.gethostbyname(host.strip("[]") or "127.0.0.1")
        except OSError:
            log.warning("analyzers: cannot resolve %s; its traffic is not excluded from "
                        "captures", host)
            continue
        out.append((ip, int(port)))
    return out


def table_settings(cfg: Config) -> TableSettings:
    f = cfg.flow
    return TableSettings(update=f.update, expire=f.expire, max_entries=f.max_entries,
                         application_timeout={k: int(v) for k, v in
                                              f.application_timeout.items()})


def client_tls(cfg: Config) -> ClientTLS | None:
    """The agent's TLS to its analyzers (`agent.tls`), None for plaintext; an unreadable
    file is an error naming the key and the file."""
    t = cfg.agent.tls
    if not t.ca_file:
        return None
    return ClientTLS.from_files(t.ca_file, t.cert_file, t.key_file, t.server_name, key="agent.tls")


def capture_settings(cfg: Config) -> AgentCaptureSettings:
    c = cfg.agent.capture
    return AgentCaptureSettings(
        pcapsocket_bind=c.pcapsocket_bind,
        pcapsocket_ports=port_range(c.pcapsocket_ports, "agent.capture.pcapsocket_ports"),
        sflow_bind=c.sflow_bind, sflow_ports=port_range(c.sflow_ports, "agent.capture.sflow_ports"),
        netflow_bind=c.netflow_bind,
        netflow_ports=port_range(c.netflow_ports, "agent.capture.netflow_ports"),
        ovsdb=cfg.ovs.ovsdb, workers=c.workers, ring_blocks=c.ring_blocks)


def remove_stale_ovs_rows(address: str, timeout: float = 5.0) -> None:
    """Take out the OVSDB rows of OVS captures an earlier agent left (it crashed)."""
    try:
        removed = capture_ovsdb.remove_stale(address, timeout=timeout)
    except capture_ovsdb.OvsdbError as exc:
        log.info("stale OVS capture rows not looked for: %s", exc)
        return
    if removed:
        log.info("ovsdb %s: %d stale capture rows removed", address, removed)


def target_factory() -> TargetFactory:
    """Capture targets (skygraph.exporters) for captures with a TargetType."""
    def make(req: TargetRequest) -> Target:
        node = exporters.TargetNode(if_index=req.if_index, name=req.name, agent_ip=req.agent_ip,
                                    mac=req.mac)
        target: Target = exporters.make_target(
            req.target_type, req.target, node, header_size=req.header_size,
            sampling_rate=req.sampling_rate, polling_interval=req.polling_interval,
            session_id=req.session_id, link_type=req.link_type)
        return target
    return make


async def run_connected(cfg: Config, stop: asyncio.Event, root_path: str | None = None,
                        ready: Callable[[Probes, AnalyzerClient], None] | None = None) -> None:
    """Probes -> graph -> analyzer (gRPC); analyzer commands -> captures -> flows."""
    host_id = cfg.host_id or socket.gethostname()
    loop = asyncio.get_running_loop()
    bus: EventBus[StoreMutation] = EventBus()
    graph = Graph(bus)
    probes = Probes(graph, host_id, cfg, root_path)

    def on_flows(capture_id: str, flows: list[Flow]) -> None:   # capture reader threads
        docs = [wire_json(f) for f in flows]   # with the packets kept (RawPacketLimit)
        loop.call_soon_threadsafe(client.flows, capture_id, docs)

    async def set_captures(node_id: str, entries: list[dict[str, Any]]) -> None:
        op = MetadataOp("Captures", entries) if entries else MetadataOp("Captures", delete=True)
        with contextlib.suppress(NotFoundError):   # the node went meanwhile
            await graph.apply(NodePartiallyUpdated(node_id, (op,)))

    async def set_node_metadata(node_id: str, key: str, value: Any) -> None:
        op = MetadataOp(key, value) if value is not None else MetadataOp(key, delete=True)
        with contextlib.suppress(NotFoundError):
            await graph.apply(NodePartiallyUpdated(node_id, (op,)))

    manager = CaptureManager(
        graph, probes.host_node, table_settings(cfg), _exclude(cfg.analyzers), on_flows,
        set_captures, root_path=root_path, stats_update=cfg.agent.capture.stats_update,
        options=CaptureOptions(layer_key_mode=cfg.flow.default_layer_key_mode),
        agent=capture_settings(cfg), set_node_metadata=set_node_metadata,
        make_target=target_factory())

    async def set_injections(node_id: str, entries: list[dict[str, Any]]) -> None:
        await set_node_metadata(node_id, "PacketInjections", entries or None)

    injector = InjectionManager(graph, probes.host_node, set_injections, root_path=root_path)

    async def on_command(cmd: Command) -> None:
        match cmd:
            case StartCapture():
                entry = await manager.start(dict(cmd.capture), cmd.node_id)
                log.info("capture %s on node %s: %s %s", cmd.capture_id, cmd.node_id,
                         entry.get("State"), entry.get("Error", ""))
            case StopCapture():
                await manager.stop(cmd.capture_id, cmd.node_id)
            case InjectPacket():
                await injector.start(dict(cmd.injection), cmd.node_id)
            case StopInjection():
                await injector.stop(cmd.injection_id, cmd.node_id)

    client = AnalyzerClient(
        list(cfg.analyzers), host_id, on_command=on_command, token=cfg.agent.token,
        tls=client_tls(cfg),
        max_buffered_flows=cfg.agent.max_buffered_flows,
        snapshot=lambda: (list(graph.nodes.values()), list(graph.edges.values())))

    async def forward(sub: Any) -> None:
        while True:
            await client.mutation(await sub.get())

    async def report_stats() -> None:
        while True:
            await asyncio.sleep(cfg.agent.capture.stats_update)
            for (capture_id, node_id), st in manager.stats().items():
                client.stats(CaptureStats(capture_id, node_id, packets_received=st.packets_received,
                                          packets_dropped=st.packets_dropped,
                                          flows_dropped=st.flow_dropped,
                                          flows_active=st.flow_count, at=int(time.time() * 1000)))

    sub = bus.subscribe()
    tasks: list[asyncio.Task[None]] = []
    # Before the analyzer link: no capture of this agent has rows yet.
    stale = (asyncio.create_task(asyncio.to_thread(remove_stale_ovs_rows, cfg.ovs.ovsdb))
             if probes.ovs is not None else None)
    try:
        await probes.start()
        await probes.synced()
        if stale is not None:
            await stale
        tasks = [asyncio.create_task(forward(sub), name="agent forward"),
                 asyncio.create_task(client.run(), name="analyzer link"),
                 asyncio.create_task(report_stats(), name="capture stats")]
        log.info("agent %s: %d nodes, %d edges; analyzers %s", host_id, len(graph.nodes),
                 len(graph.edges), ", ".join(cfg.analyzers))
        if ready is not None:
            ready(probes, client)
        await stop.wait()
    finally:
        await injector.stop_all()
        await manager.stop_all()        # final flows go out before the link closes
        await client.flush()
        await probes.stop()
        for task in tasks:
            task.cancel()
        await client.close()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sub.close()


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
    parser.add_argument("--analyzer", action="append", metavar="HOST:PORT",
                        help="analyzer gRPC address (repeatable; default: `analyzers` from the "
                             "config, 127.0.0.1:8083)")
    parser.add_argument("--host-netns", metavar="PATH",
                        help="report this network namespace (e.g. /var/run/netns/h1) as the "
                             "host, instead of the agent's own")


def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.analyzer:
        cfg = dataclasses.replace(cfg, analyzers=tuple(args.analyzer))
    if args.host_netns and not os.path.exists(args.host_netns):
        raise ConfigError(f"--host-netns {args.host_netns}: no such namespace file")
    topo = cfg.agent.topology
    if args.netns_run_path:
        topo = dataclasses.replace(topo, netns=NetnsSection(args.netns_run_path))
    if args.no_ovs:
        topo = dataclasses.replace(topo, probes=tuple(p for p in topo.probes if p != "ovsdb"))
    ovs = dataclasses.replace(cfg.ovs, ovsdb=args.ovsdb) if args.ovsdb else cfg.ovs
    cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, topology=topo), ovs=ovs,
                              host_id=args.host_id or cfg.host_id)
    asyncio.run(_main(cfg, args.standalone, args.host_netns))
    return 0


async def _main(cfg: Config, standalone: bool, root_path: str | None) -> None:
    with stop_on_signals() as stop:
        if not standalone:
            await run_connected(cfg, stop, root_path)
            log.info("agent stopped")
            return
        async with graph_connection(cfg) as handle:
            log.info("agent: writing to %s %s", handle.backend, handle.store.uri)
            await run_standalone(cfg, handle.store, stop, root_path)
            log.info("agent stopped")
