"""Offline flows: `skygraph flows FILE.pcap` -- a pcap file through the flow table.

Owns the command's options (named like the capture options), the run over
a file (BPF filter, flow table driven by packet time so update/expire and
application timeouts behave as live), the order of the flows (by `Start`,
parents before the flows they carry, then UUID), the output (Skydive flow
JSON list or a table) and `--write-raw` (the kept raw packets as a pcap).
Reading on several workers is `offline_workers`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO, cast

from skygraph.capture import fastpath, pcapfile
from skygraph.capture.bpf import BPFError, compile_filter
from skygraph.capture.fastpath import FastPath
from skygraph.capture.options import (
    DEFAULT_MAX_RAW_PACKETS,
    CaptureOptions,
    OptionError,
    TableSettings,
    parse_extra_layers,
)
from skygraph.capture.table import FlowTable
from skygraph.topology.flow import LINKTYPE_ETHERNET, LINKTYPE_IPV6, Flow, RawPacket

LINKTYPE_RAW = 101
MAX_WORKERS = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE.pcap", help="pcap or pcapng file")
    parser.add_argument("--bpf", default="", metavar="FILTER",
                        help="pcap-syntax filter, e.g. 'icmp and host 10.0.0.1'")
    parser.add_argument("--layer-key-mode", choices=("L2", "L3"), default="L2",
                        help="flow key: L2 (MACs and IPs) or L3 (IPs only)")
    parser.add_argument("--extra-layer", action="append", default=[], metavar="LAYER",
                        help="extra layer to decode into flows: DNS, DHCPv4, VRRP (repeatable)")
    parser.add_argument("--extra-tcp-metric", action="store_true",
                        help="fill TCPMetric (SYN/FIN/RST times and TTLs)")
    parser.add_argument("--ip-defrag", action="store_true", help="defragment IPv4")
    parser.add_argument("--reassemble-tcp", action="store_true",
                        help="TCP segment counters in TCPMetric")
    parser.add_argument("--rawpacket-limit", type=int, default=None, metavar="N",
                        help=f"raw packets kept per flow (0..{DEFAULT_MAX_RAW_PACKETS}; "
                             f"default 0, or {DEFAULT_MAX_RAW_PACKETS} with --write-raw)")
    parser.add_argument("--format", choices=("json", "table"), default="json")
    parser.add_argument("--write-raw", type=Path, default=None, metavar="OUT.pcap",
                        help="write the kept raw packets to this pcap file")
    parser.add_argument("--node-tid", default="", help="NodeTID stamped on the flows")
    parser.add_argument("--workers", type=_workers, default=0, metavar="N",
                        help="processes reading the file, each taking the flows of a share "
                             "of the IP addresses (default 0: one per CPU, up to "
                             "4, for files of 16 MiB or more; 1: read alone)")
    parser.add_argument("--no-fast-path", action="store_true", help=argparse.SUPPRESS)


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be 0 (automatic) to {MAX_WORKERS}, not {text!r}")
    return n


@dataclass
class Result:
    flows: list[Flow]
    packets: int
    dropped: int
    # the raw packets of each flow as it was sent (tuples: what was sent, not a later
    # state), and the flow's UUID; `raw` lists them with the flow's place in `flows`
    raw_sent: list[tuple[tuple[RawPacket, ...], str]] = field(default_factory=list)
    batched: int = 0  # packets the batch path summed per flow

    @property
    def raw(self) -> list[tuple[RawPacket, int]]:
        """(raw packet, index of its flow in `flows`), in the order the flows were sent."""
        if not self.raw_sent:
            return []
        order = {f.uuid: i for i, f in enumerate(self.flows)}
        return [(p, order[u]) for packets, u in self.raw_sent for p in packets]


def options_from_args(args: argparse.Namespace) -> CaptureOptions:
    limit = args.rawpacket_limit
    if limit is None:
        limit = DEFAULT_MAX_RAW_PACKETS if args.write_raw else 0
    return CaptureOptions(layer_key_mode=args.layer_key_mode,
                          extra_layers=parse_extra_layers(args.extra_layer),
                          extra_tcp_metric=args.extra_tcp_metric, ip_defrag=args.ip_defrag,
                          reassemble_tcp=args.reassemble_tcp, raw_packet_limit=limit)


def process_file(path: Path, opts: CaptureOptions, bpf: str = "", node_tid: str = "",
                 settings: TableSettings | None = None, fast: bool = True,
                 block_size: int | None = None, share: tuple[int, int] = (0, 1)) -> Result:
    """Run a capture file through a flow table; every flow it produced, in `order`.

    `share` (i, n): only the flows of the i-th of n shares of the records (see
    `FastPath`); needs the batch path (`shares_supported`)."""
    info = pcapfile.read_info(path)
    frames: Iterable[pcapfile.Frame] = ()
    if info.pcapng:
        info, frames = pcapfile.read(path)
    program = compile_filter(bpf, info.link_type, info.snaplen) if bpf else None
    table = FlowTable(opts, settings, node_tid, info.link_type,
                      packet_filter=program.matches if program is not None else None)
    done: dict[str, Flow] = {}
    raw: list[tuple[tuple[RawPacket, ...], str]] = []

    def collect(sent: Iterable[Flow]) -> None:
        for f in sent:
            if f.last_raw_packets:
                raw.append((f.last_raw_packets, f.uuid))
            done[f.uuid] = f

    index, shares = share
    fast_path = FastPath(table, index, shares)
    if shares > 1 and not (fast and fast_path.enabled and not info.pcapng):
        raise ValueError("a share of a file is read by the batch path only (classic pcap, "
                         "Ethernet, no --bpf or --ip-defrag)")
    if fast and fast_path.enabled and not info.pcapng:
        sizing = block_size if block_size is not None else fast_path.block_size
        fast_path.run_blocks(pcapfile.read_blocks(path, info, sizing), info, collect)
    else:
        if not info.pcapng:
            frames = pcapfile.read(path)[1]
        tick = table.tick
        feed = table.feed
        for ts, data, wire in frames:
            sent = tick(ts // 1_000_000)
            if sent:
                collect(sent)
            feed(data, ts, wire)
    remaining = table.flush()
    collect(remaining)
    flows = sorted(done.values(), key=lambda f: order(f, done))
    done.clear()
    return Result(flows, table.packets, table.dropped, raw, fast_path.batched)


def shares_supported(path: Path, opts: CaptureOptions, bpf: str) -> bool:
    """Whether `process_file` can read the file in shares (the batch path's case)."""
    if bpf or opts.ip_defrag or fastpath.native is None:
        return False
    info = pcapfile.read_info(path)
    return not info.pcapng and info.link_type == LINKTYPE_ETHERNET


OrderKey = tuple[int, int, str]


def order(f: Flow, by_uuid: dict[str, Flow]) -> OrderKey:
    """Where a flow goes in the output: by Start, a tunnel's flow before the flows it
    carries (its depth of parents), then by UUID."""
    depth = 0
    parent = f
    while parent.parent_uuid and parent.parent_uuid in by_uuid and depth < 64:
        parent = by_uuid[parent.parent_uuid]
        depth += 1
    return f.start, depth, f.uuid


def write_raw(out: Path, raw: list[tuple[RawPacket, int]]) -> int:
    """Write raw packets as one pcap; IP-only packets get a zero-MAC Ethernet header
    when Ethernet packets are present too (a pcap has a single link type)."""
    packets = sorted(raw, key=lambda pr: (pr[0].timestamp, pr[1], pr[0].index))
    ethernet = any(p.link_type == LINKTYPE_ETHERNET for p, _ in packets)
    link_type = LINKTYPE_ETHERNET if ethernet or not packets else LINKTYPE_RAW
    frames = []
    for p, _ in packets:
        data = p.data
        if ethernet and p.link_type != LINKTYPE_ETHERNET:
            ethertype = b"\x86\xdd" if p.link_type == LINKTYPE_IPV6 else b"\x08\x00"
            data = bytes(12) + ethertype + data
        frames.append(pcapfile.Frame(p.timestamp * 1_000_000, data, len(data)))
    with open(out, "wb") as fh:
        return pcapfile.write(fh, link_type, frames)


def json_line(f: Flow) -> str:
    return json.dumps(f.to_json())


def write_json(flows: list[Flow], out: TextIO) -> None:
    """A JSON list of Skydive flows, one flow per line (streamed, C-encoded)."""
    write_json_lines(map(json_line, flows), out)


def write_json_lines(lines: Iterable[str], out: TextIO) -> None:
    out.write("[")
    for i, line in enumerate(lines):
        out.write("\n " if i == 0 else ",\n ")
        out.write(line)
    out.write("\n]\n")


TableRow = tuple[str, str, str, str, str, str, str, str]
TABLE_HEADER: TableRow = ("UUID", "LayersPath", "Application", "Network / Link", "Transport",
                          "AB pkts/bytes", "BA pkts/bytes", "ParentUUID")


def table_row(f: Flow) -> TableRow:
    endpoints = f.network or f.link
    net = f"{endpoints.a} -> {endpoints.b}" if endpoints is not None else ""
    tr = f"{f.transport.a} -> {f.transport.b}" if f.transport is not None else ""
    m = f.metric
    return (f.uuid, f.layers_path, f.application, net, tr, f"{m.ab_packets}/{m.ab_bytes}",
            f"{m.ba_packets}/{m.ba_bytes}", f.parent_uuid)


def format_table(flows: list[Flow], out: TextIO) -> None:
    write_table([table_row(f) for f in flows], out)


def write_table(rows: list[TableRow], out: TextIO) -> None:
    rows = [TABLE_HEADER, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_HEADER))]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def run(args: argparse.Namespace) -> int:
    from skygraph.capture import offline_workers  # it imports this module
    fast = not getattr(args, "no_fast_path", False)
    try:
        opts = options_from_args(args)
        workers = offline_workers.workers_for(args.workers, args.file, opts, args.bpf, fast)
        if args.workers > 1 and workers == 1:
            print(f"skygraph flows: --workers {args.workers}: this file is read by one worker "
                  "(pcapng, non-Ethernet, --bpf or --ip-defrag)", file=sys.stderr)
        out = offline_workers.render(args.file, opts, args.bpf, args.node_tid,
                                     args.format == "table", workers,
                                     args.write_raw is not None, fast)
    except (OptionError, BPFError, pcapfile.PcapError) as e:
        print(f"skygraph flows: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"skygraph flows: {args.file}: {e.strerror or e}", file=sys.stderr)
        return 2
    if args.format == "json":
        write_json_lines(cast(list[str], out.items), sys.stdout)
    else:
        write_table(cast(list[TableRow], out.items), sys.stdout)
    if args.write_raw is not None:
        try:
            count = write_raw(args.write_raw, out.raw)
        except OSError as e:
            print(f"skygraph flows: --write-raw {args.write_raw}: {e.strerror or e}",
                  file=sys.stderr)
            return 2
        print(f"wrote {count} raw packets to {args.write_raw}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skygraph flows",
                                     description="Print the flows of a pcap file")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
