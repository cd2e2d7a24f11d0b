"""`skygraph query "<gremlin>" [--format json|dot|pcap] [-o FILE]`.

`add_arguments` and `run`/`run_async` are wired by the top-level CLI, which
hands in the graph's `read` callable (and libpcap's compiler for `BPF()`).
`--format pcap` writes the packets of a `RawPackets()` result as a capture
file (gremlin/packets.py), to `-o FILE` or to standard output when that is
not a terminal. Run as `python -m skygraph.gremlin.cli` it connects by
itself to the Bolt server named by `--graph-uri` (or `SKYGRAPH_GRAPH_URI`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import BinaryIO, TextIO

from skygraph.gremlin import dot, packets
from skygraph.gremlin.errors import GremlinError
from skygraph.gremlin.packets import Compile
from skygraph.gremlin.plan import DEFAULT_MAX_RESULTS, DEFAULT_TIMEOUT_S, Limits
from skygraph.gremlin.query import Read, execute


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("gremlin", metavar="QUERY",
                   help="a Skydive Gremlin query, e.g. \"G.V().Has('Name', 'eth0')\"")
    p.add_argument("--format", choices=("json", "dot", "pcap"), default="json",
                   help="json (default), dot (Graphviz, for node/edge/path results) or pcap "
                        "(the packets of a RawPackets() result, e.g. \"G.At('-1s', 1000)"
                        ".Flows().Has('Application', 'ICMPv4').RawPackets()\")")
    p.add_argument("-o", "--output", default="-", metavar="FILE",
                   help="write the result to FILE (default: standard output)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds before the query is abandoned (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--max-results", type=int, default=DEFAULT_MAX_RESULTS,
                   help=f"largest result returned (default {DEFAULT_MAX_RESULTS})")


async def run_async(args: argparse.Namespace, read: Read, now_ms: int | None = None,
                    out: TextIO | None = None, err: TextIO | None = None,
                    compile_bpf: Compile | None = None) -> int:
    """Run the query; write the result (exit 0) or print the error (exit 1, or 2 when
    the result cannot be written in --format)."""
    out = out or sys.stdout
    err = err or sys.stderr
    fmt = getattr(args, "format", "json")
    output = getattr(args, "output", "-") or "-"
    if fmt == "pcap" and output == "-" and out.isatty():
        print("skygraph: query: a pcap is binary: redirect the output (> icmp.pcap) or give "
              "-o FILE", file=err)
        return 2
    limits = Limits(max_results=args.max_results, timeout_s=args.timeout)
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    try:
        result = await execute(args.gremlin, read, now, limits, compile_bpf=compile_bpf)
    except GremlinError as exc:
        print(f"skygraph: query: {exc}", file=err)
        return 1
    try:
        if fmt == "pcap":
            write_output(packets.render(result), output, out)
        elif fmt == "dot":
            write_output(dot.render(result), output, out)
        else:
            write_output(json.dumps(result, indent=2) + "\n", output, out)
    except (dot.NotRenderable, packets.NotRenderable) as exc:
        print(f"skygraph: query: {exc}", file=err)
        return 2
    return 0


def write_output(data: str | bytes, output: str, out: TextIO) -> None:
    """`data` to the file `output`, or to `out` for "-" (bytes to its binary buffer)."""
    if output != "-":
        with open(output, "wb" if isinstance(data, bytes) else "w") as fh:
            fh.write(data)
        return
    if isinstance(data, str):
        out.write(data)
        return
    buffer: BinaryIO | None = getattr(out, "buffer", None)
    if buffer is None:
        raise TypeError("binary output needs a stream with a buffer")
    out.flush()
    buffer.write(data)
    buffer.flush()


def run(args: argparse.Namespace, read: Read | None = None) -> int:
    """Synchronous entry: with `read` from the caller, or connecting by `--graph-uri`."""
    if read is not None:
        return asyncio.run(run_async(args, read))
    return asyncio.run(_standalone(args))


async def _standalone(args: argparse.Namespace) -> int:
    from skygraph.topology.errors import StoreError
    from skygraph.topology.store import GraphStore

    uri = getattr(args, "graph_uri", None) or os.environ.get("SKYGRAPH_GRAPH_URI", "")
    if not uri:
        print("skygraph: query: no graph database: pass --graph-uri (or SKYGRAPH_GRAPH_URI)",
              file=sys.stderr)
        return 2
    user = getattr(args, "graph_user", None) or os.environ.get("SKYGRAPH_GRAPH_USER", "neo4j")
    password = getattr(args, "graph_password", None) or \
        os.environ.get("SKYGRAPH_GRAPH_PASSWORD", "")
    database = getattr(args, "graph_database", None) or \
        os.environ.get("SKYGRAPH_GRAPH_DATABASE") or None
    try:
        store = await GraphStore.open(uri, user, password, database, wait=5.0)
    except StoreError as exc:
        print(f"skygraph: query: {exc}", file=sys.stderr)
        return 1
    try:
        return await run_async(args, store.read)
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="skygraph query",
                                description="Run a Skydive Gremlin query on the graph")
    add_arguments(p)
    p.add_argument("--graph-uri", help="Bolt URI (env SKYGRAPH_GRAPH_URI)")
    p.add_argument("--graph-user", help="user (env SKYGRAPH_GRAPH_USER)")
    p.add_argument("--graph-password", help="password (env SKYGRAPH_GRAPH_PASSWORD)")
    p.add_argument("--graph-database", help="database (env SKYGRAPH_GRAPH_DATABASE)")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
