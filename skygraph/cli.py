"""The `skygraph` command: subcommands wired to the parts of the package."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from skygraph import __version__

if TYPE_CHECKING:
    from skygraph.config import Config

log = logging.getLogger("skygraph")


def _graph_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("graph database (default: the embedded server)")
    g.add_argument("--graph-uri", help="Bolt URI of a Neo4j 5 server, e.g. bolt://host:7687 "
                                       "(env SKYGRAPH_GRAPH_URI)")
    g.add_argument("--graph-user", help="user (env SKYGRAPH_GRAPH_USER)")
    g.add_argument("--graph-password", help="password (env SKYGRAPH_GRAPH_PASSWORD)")
    g.add_argument("--graph-database", help="database name (env SKYGRAPH_GRAPH_DATABASE)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skygraph", description="Network topology and flow "
                                "analyzer on a Neo4j graph")
    p.add_argument("-c", "--conf", help="configuration file (YAML, or TOML by extension)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (default from config: INFO)")
    p.add_argument("--version", action="version", version=f"skygraph {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = sub.add_parser("analyzer", help="run the analyzer (graph store + HTTP API)")
    a.add_argument("--listen", help="HOST:PORT of the HTTP API (default 127.0.0.1:8082)")
    _graph_flags(a)

    al = sub.add_parser("allinone", help="the analyzer and an agent for this host in one "
                                         "process (as root): the quick start")
    al.add_argument("--listen", help="HOST:PORT of the HTTP API (default 127.0.0.1:8082)")
    _graph_flags(al)

    g = sub.add_parser("graph", help="import or export the topology (Skydive JSON)")
    gs = g.add_subparsers(dest="graph_command", required=True, metavar="ACTION")
    gi = gs.add_parser("import", help="load {\"Nodes\": [...], \"Edges\": [...]} into the graph")
    gi.add_argument("file", help="topology JSON file, or - for standard input")
    gi.add_argument("--replace", action="store_true",
                    help="delete the whole graph and its history first")
    _graph_flags(gi)
    ge = gs.add_parser("export", help="write the topology as Skydive JSON")
    ge.add_argument("-o", "--output", default="-", help="output file (default: standard output)")
    ge.add_argument("--at", help="the graph as it was then: --at=-1h (relative), NOW, epoch s or ms, "
                                 "RFC 1123 or ISO 8601 (2026-11-20T10:00:00+00:00)")
    _graph_flags(ge)

    from skygraph import agent
    ag = sub.add_parser("agent", help="run the topology probes on this host (as root)")
    agent.add_arguments(ag)
    _graph_flags(ag)

    from skygraph.api import client
    from skygraph.gremlin import cli as gremlin_cli
    q = sub.add_parser("query", help="run a Skydive Gremlin query on the graph (or, with "
                                     "--analyzer, through a running analyzer)")
    gremlin_cli.add_arguments(q)
    _graph_flags(q)
    client.add_client_flags(q)

    cap = sub.add_parser("capture", help="create, list, get or delete captures on an analyzer")
    client.add_capture_arguments(cap)

    inj = sub.add_parser("inject", help="create, list, get or delete packet injections on an "
                                        "analyzer")
    client.add_inject_arguments(inj)

    pcap = sub.add_parser("pcap", help="import a trace into an analyzer's flow store")
    client.add_pcap_arguments(pcap)

    u = sub.add_parser("user", help="manage the API users file (analyzer.auth.users_file)")
    us = u.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    ua = us.add_parser("add", help="add or replace a user; the password is read from standard "
                                   "input (prompted on a terminal)")
    ua.add_argument("--file", required=True, help="users file (created mode 0600)")
    ua.add_argument("name")

    from skygraph.capture import offline
    f = sub.add_parser("flows", help="decode a pcap file into flows (offline)")
    offline.add_arguments(f)

    from skygraph.lab import commands as lab
    lb = sub.add_parser("lab", help="Skydive's three-node lab on this machine (as root): an "
                                    "analyzer, two agents with Open vSwitch joined by GRE")
    lab.add_arguments(lb, _graph_flags)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["flows"]:
        return _flows(argv[1:])
    import asyncio

    from skygraph.config import ConfigError, load, override
    from skygraph.topology.errors import TopologyError
    args = parser().parse_args(argv)
    try:
        cfg = load(args.conf)
    except ConfigError as exc:
        print(f"skygraph: config: {exc}", file=sys.stderr)
        return 2
    level = (args.log_level or cfg.logging.level).upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if hasattr(args, "graph_uri"):
        cfg = override(cfg, uri=args.graph_uri, user=args.graph_user,
                       password=args.graph_password, database=args.graph_database)
    try:
        if args.command == "analyzer":
            return _analyzer(cfg, args)
        if args.command == "allinone":
            return _allinone(cfg, args)
        if args.command == "graph":
            return asyncio.run(_graph(cfg, args))
        if args.command == "agent":
            from skygraph import agent
            return agent.run(args, cfg)
        if args.command == "query":
            if args.analyzer:
                from skygraph.api import client
                return client.run_query(args, args.gremlin, args.format)
            return asyncio.run(_query(cfg, args))
        if args.command == "capture":
            from skygraph.api import client
            return client.run_capture(args)
        if args.command == "inject":
            from skygraph.api import client
            return client.run_inject(args)
        if args.command == "pcap":
            from skygraph.api import client
            return client.run_pcap(args)
        if args.command == "user":
            return _user(args)
        if args.command == "flows":
            from skygraph.capture import offline
            return int(offline.run(args))
        if args.command == "lab":
            from skygraph.lab import commands as lab
            return lab.run(args, cfg)
    except (ConfigError, TopologyError, OSError, ValueError, RuntimeError) as exc:
        print(f"skygraph: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


def _flows(argv: list[str]) -> int:
    """`skygraph flows`, started without building the whole parser: the offline command
    needs none of the other commands' modules (the agent's alone take seconds to import)."""
    from skygraph.capture import offline
    f = argparse.ArgumentParser(prog="skygraph flows")
    offline.add_arguments(f)
    args = f.parse_args(argv)
    try:
        return int(offline.run(args))
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"skygraph: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _analyzer(cfg: Config, args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses

    from skygraph import analyzer
    if args.listen:
        analyzer.parse_listen(args.listen, "--listen")
        cfg = dataclasses.replace(cfg, analyzer=dataclasses.replace(cfg.analyzer,
                                                                    listen=args.listen))
    asyncio.run(analyzer.run(cfg))
    return 0


def _user(args: argparse.Namespace) -> int:
    import getpass

    from skygraph.api.auth import add_user
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise ValueError("user add: empty password")
    add_user(args.file, args.name, password)
    print(f"user {args.name} written to {args.file}", file=sys.stderr)
    return 0


def _allinone(cfg: Config, args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses

    from skygraph import agent, analyzer
    from skygraph.config import ConfigError
    from skygraph.process import stop_on_signals
    if args.listen:
        analyzer.parse_listen(args.listen, "--listen")
        cfg = dataclasses.replace(cfg, analyzer=dataclasses.replace(cfg.analyzer,
                                                                    listen=args.listen))
    if cfg.analyzer.tls.cert_file and not cfg.agent.tls.ca_file:
        raise ConfigError("allinone: analyzer.tls is set, so the local agent talks TLS to it: "
                          "give agent.tls.ca_file (the CA of analyzer.tls.cert_file), plus "
                          "agent.tls.cert_file/key_file when analyzer.tls.client_ca_file is set")
    # the local agent talks to this analyzer, with its token
    cfg = dataclasses.replace(cfg, analyzers=(cfg.analyzer.rpc.listen,), agent=dataclasses.replace(
        cfg.agent, token=cfg.agent.token or cfg.analyzer.auth.token))

    async def main() -> None:
        sock = analyzer.bind(cfg.analyzer.listen)
        try:
            with stop_on_signals() as stop:
                up = asyncio.Event()
                serving = asyncio.create_task(analyzer.serve(cfg, sock, stop,
                                                             lambda _url: up.set()))
                await asyncio.wait([serving, asyncio.create_task(up.wait())],
                                   return_when=asyncio.FIRST_COMPLETED)
                if serving.done():
                    await serving    # it failed: say why
                    return
                probing = asyncio.create_task(agent.run_connected(cfg, stop))
                await asyncio.gather(serving, probing)
        finally:
            sock.close()
    asyncio.run(main())
    return 0


async def _graph(cfg: Config, args: argparse.Namespace) -> int:
    from skygraph.process import graph_connection
    from skygraph.topology import snapshot
    from skygraph.topology.graph import Graph
    from skygraph.topology.mutations import EdgeAdded, NodeAdded
    from skygraph.topology.store import BatchWriter

    if args.graph_command == "import":
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        nodes, edges = snapshot.parse(text, args.file)
        graph = Graph()
        mutations = []
        for n in nodes:
            mutations.extend(graph.apply_nowait(NodeAdded(n)))
        for e in edges:
            mutations.extend(graph.apply_nowait(EdgeAdded(e)))
        async with graph_connection(cfg) as handle:
            if args.replace:
                await handle.store.clear()
            writer = BatchWriter(handle.store)
            await writer.start()
            await writer.submit_all(mutations)
            await writer.stop()
            if writer.stats.rejected:
                print("\n".join(writer.stats.rejected_details), file=sys.stderr)
                return 1
        print(f"imported {len(nodes)} nodes and {len(edges)} edges", file=sys.stderr)
        return 0
    at = parse_time(args.at) if args.at else None
    async with graph_connection(cfg) as handle:
        nodes, edges = await handle.store.graph(at)
    text = json.dumps(snapshot.to_json(nodes, edges), indent=2) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    return 0


async def _query(cfg: Config, args: argparse.Namespace) -> int:
    from skygraph.api.service import compile_bpf
    from skygraph.gremlin import cli as gremlin_cli
    from skygraph.process import graph_connection
    async with graph_connection(cfg) as handle:
        return await gremlin_cli.run_async(args, handle.store.read, compile_bpf=compile_bpf)


def parse_time(text: str, now_ms: int | None = None) -> int:
    """ms since the epoch from `text`, as Gremlin's `At` reads it (a duration
    relative to now like `-1h`, `NOW`, an RFC 1123 date, epoch seconds or
    milliseconds), or an ISO 8601 date."""
    import time
    from datetime import datetime

    from skygraph.gremlin import GremlinError
    from skygraph.gremlin.ast import Keyword, Literal
    from skygraph.gremlin.timeparse import time_point_ms
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    arg = Keyword("NOW", 0) if text.upper() == "NOW" else Literal(
        int(text) if text.isdigit() else text, 0)
    try:
        return time_point_ms(arg, now)
    except GremlinError:
        pass
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        raise ValueError(f"--at: expected a duration like -1h, NOW, an RFC 1123 or ISO 8601 "
                         f"date, or epoch seconds/milliseconds; got {text!r}") from None


if __name__ == "__main__":
    sys.exit(main())
