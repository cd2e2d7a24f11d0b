"""Capture target benchmark (issue 9): packets/s an afpacket capture forwards to an
ERSPAN target (erspanv1, erspanv2) and NetFlow v5 records/s it exports, against
the rate the capture receives, in one run.

Lab: the two namespaces of benchmarks/pipeline.py (sender `tx0`, receiver
`rx0`, IPv6 off) plus a target namespace `T` joined to this (the agent's)
namespace by a veth: 198.19.N.1 here, 198.19.N.2 in T (RFC 2544's
benchmarking range; everything carries a per-run prefix and is removed at the
end).  Captures run in this process as the agent's capture manager runs them
(`source_for` on a `SourceContext` for the rx0 node, the agent's target
factory `skygraph.agent.target_factory`), so the target sockets are opened in
this namespace and their packets cross the veth to T, as an agent's would.
Flow tables (local, netflowv5) use `--update` (default 60 s, the agent's
`flow.update`: NetFlow records leave on update and expire ticks and when the
capture stops; `--update 1` exports every second) and expire 600 s.

A generated trace (benchmarks/flowtable.py: `--packets`, `--flows`, TCP, UDP,
ICMP, 10 % of the flows in VXLAN) is replayed from tx0 with `tcpreplay
--topspeed --preload-pcap --loop N` while one capture runs on rx0; per run,
`--runs` times each, alternating:

- local: the capture with no target (flows to a sink): the reference rate;
- erspanv1 / erspanv2: `Target` 198.19.N.2:0; in T a raw IPPROTO_GRE socket
  (a child process) counts the GRE packets by protocol (0x88BE Type II,
  0x22EB Type III); its socket drops come from /proc/net/raw in T;
- netflowv5: `Target` 198.19.N.2:9995; in T `nfcapd` collects, then
  `nfdump` lists the records: their count, the flows they describe (distinct
  src, dst, ports, protocol) against the flows in the trace (outer and
  VXLAN-inner IPv4 flows, one per direction, counted from the pcap here), and
  their packets against the trace's.

Per run: the capture's kernel counters (received, dropped: ring full),
received rate = (received - dropped) / the replay's duration; what the target
says it sent (`Records`, `Datagrams`, `Errors`); what arrived in T;
forwarded rate = GRE packets read in T / (first -> last frame the target
sent, polled every 20 ms); this process's CPU from the replay's start until
the capture stopped.

    .venv/bin/python benchmarks/targets.py [--packets N] [--flows N] [--loops N]
        [--runs N] [--update S] [--only local,erspanv1,erspanv2,netflowv5] [--keep DIR]

The first line says which skygraph is measured (see benchmarks/captures.py:
`PYTHONPATH=<dir>` measures another tree).  Needs root, tcpreplay, nfcapd and
nfdump (scripts/install.sh).  Exit status 0
when the measurement ran.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent


def _load(name: str, file: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, HERE / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


bench_captures = _load("bench_captures", "captures.py")
bench_pipeline = bench_captures.bench_pipeline
bench_flowtable = bench_captures.bench_flowtable

from skygraph.agent import target_factory  # noqa: E402
from skygraph.capture.offline import process_file  # noqa: E402
from skygraph.capture.options import CaptureOptions  # noqa: E402
from skygraph.exporters import TargetNode, parse_endpoint  # noqa: E402
from skygraph.exporters.netflow import NetFlowV5Target  # noqa: E402

RX, TX = bench_pipeline.RX, bench_pipeline.TX
NETFLOW_PORT = 9995
IPPROTO_GRE = 47
GRE_TYPES = {0x88BE: "erspanv1", 0x22EB: "erspanv2"}
KINDS = ("local", "erspanv1", "erspanv2", "netflowv5")
Key = tuple[str, str, int, int, int]  # src, dst, sport, dport, IP protocol

# A raw GRE receiver, run in the target namespace: counts packets by GRE protocol
# until SIGTERM, then prints them as JSON.
GRE_RECEIVER = r"""
import json, signal, socket
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
s.settimeout(0.2)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
counts = {}
buf = bytearray(65536)
print("ready", flush=True)
while not stop:
    try:
        n = s.recv_into(buf)
    except (TimeoutError, InterruptedError):
        continue
    at = (buf[0] & 15) * 4 + 2
    proto = buf[at] << 8 | buf[at + 1]
    counts[proto] = counts.get(proto, 0) + 1
print(json.dumps(counts), flush=True)
"""


# ---------------------------------------------------------------- the target namespace
@dataclass
class TargetNet:
    """Namespace `ns` holding `ip`, reached from here through veth `host_if`."""

    ns: str
    host_if: str
    host_ip: str
    ip: str

    def up(self) -> None:
        sh = bench_pipeline.sh
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "t0",
           "netns", self.ns)
        sh("sysctl", "-qw", f"net.ipv6.conf.{self.host_if}.disable_ipv6=1")
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        sh("sysctl", "-qw", "net.ipv6.conf.t0.disable_ipv6=1", ns=self.ns)
        sh("ip", "addr", "add", f"{self.ip}/24", "dev", "t0", ns=self.ns)
        sh("ip", "link", "set", "t0", "up", ns=self.ns)
        sh("ip", "link", "set", "lo", "up", ns=self.ns)

    def down(self) -> None:
        bench_pipeline.sh("ip", "link", "del", self.host_if, check=False)
        bench_pipeline.sh("ip", "netns", "del", self.ns, check=False)

    def rx_packets(self) -> int:
        stats = json.loads(bench_pipeline.sh("ip", "-s", "-j", "link", "show", "t0",
                                             ns=self.ns))[0]["stats64"]
        return int(stats["rx"]["packets"])


class Child:
    """A program in a namespace; its output read by a thread; stopped by its pid."""

    def __init__(self, argv: list[str], ns: str) -> None:
        self.name = Path(argv[0]).name
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 30) -> None:
        bench_pipeline.wait_for(f"{text!r} from {self.name}",
                                lambda: any(text in line for line in self.lines)
                                or self.proc.poll() is not None, timeout, 0.05)
        if not any(text in line for line in self.lines):
            raise RuntimeError(f"{self.name} exited:\n" + "\n".join(self.lines))

    def stop(self, timeout: float = 30) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return "\n".join(self.lines)


# ---------------------------------------------------------------- the trace's flows
def trace_flows(path: Path) -> tuple[dict[Key, int], set[Key]]:
    """Packets per directional IPv4 flow of a pcap, VXLAN-inner flows included (ports 0
    without TCP/UDP), as a NetFlow v5 collector should see them; and the inner ones."""
    data = path.read_bytes()
    record = bench_flowtable.RECORD
    out: dict[Key, int] = defaultdict(int)
    inner: set[Key] = set()
    off = len(bench_flowtable.PCAP_HEADER)
    while off < len(data):
        _, _, incl, _ = record.unpack_from(data, off)
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        eth = 0
        while eth >= 0 and struct.unpack_from("!H", frame, eth + 12)[0] == 0x0800:
            ip = eth + 14
            ihl, proto = (frame[ip] & 15) * 4, frame[ip + 9]
            sport = dport = 0
            if proto in (6, 17):
                sport, dport = struct.unpack_from("!HH", frame, ip + ihl)
            src, dst = (".".join(str(b) for b in frame[ip + 12 + i:ip + 16 + i]) for i in (0, 4))
            key = (src, dst, sport, dport, proto)
            out[key] += 1
            if eth:
                inner.add(key)
            eth = ip + ihl + 16 if proto == 17 and dport == 4789 else -1
    return dict(out), inner


def nfdump_flows(flows_dir: Path) -> tuple[int, dict[Key, int]]:
    """(records, packets per directional flow) nfdump lists from `flows_dir`."""
    out = subprocess.run(["nfdump", "-R", str(flows_dir), "-q", "-N", "-o",
                          "fmt:%sa|%da|%sp|%dp|%pr|%pkt"], capture_output=True, text=True,
                         check=True, timeout=300, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"}
                         ).stdout
    records = 0
    flows: dict[Key, int] = defaultdict(int)
    protocols = {"TCP": 6, "UDP": 17, "ICMP": 1}
    for line in out.splitlines():
        f = [x.strip() for x in line.split("|")]
        if len(f) < 6:
            continue
        records += 1
        proto = protocols.get(f[4]) or int(f[4])
        dport = 0 if proto == 1 else int(f[3])  # ICMP: nfdump prints type.code
        flows[(f[0], f[1], int(f[2]), dport, proto)] += int(f[5])
    return records, dict(flows)


# ---------------------------------------------------------------- one run
@dataclass
class Run:
    kind: str
    replay: Any  # bench_pipeline.Replay
    received: int
    dropped: int
    veth_lost: int
    cpu: float
    target: dict[str, int] = field(default_factory=dict)  # the target's stats()
    busy: float = 0.0  # first -> last frame/record the target sent
    at_target: int = 0  # GRE packets read in T (erspan) / records nfdump lists (netflow)
    socket_drops: int = 0  # the GRE receiver's socket drops
    target_rx: int = 0  # packets the target namespace's veth received
    flows: dict[Key, int] = field(default_factory=dict)  # netflow: nfdump's
    collector_log: str = ""

    @property
    def delivered(self) -> int:
        return self.received - self.dropped

    @property
    def pps(self) -> float:
        return self.delivered / float(self.replay.seconds)

    @property
    def out_rate(self) -> float:
        return self.at_target / self.busy if self.busy > 0 else 0.0


def one_run(kind: str, the_lab: Any, rx: Any, tnet: TargetNet, pcap: Path, loops: int,
            update: int, work: Path, n: int) -> Run:
    spec: dict[str, Any] = {"Type": "afpacket", "Name": f"bench-{kind}-{n}"}
    receiver: Child | None = None
    raw: Any = None
    flows_dir = work / f"nfcapd-{n}"
    if kind.startswith("erspan"):
        spec.update(TargetType=kind, Target=f"{tnet.ip}:0")
        raw = bench_captures.ProcNet(tnet.ns, "raw")
        receiver = Child([sys.executable, "-c", GRE_RECEIVER], tnet.ns)
        receiver.wait_for("ready")
    elif kind == "netflowv5":
        spec.update(TargetType=kind, Target=f"{tnet.ip}:{NETFLOW_PORT}")
        shutil.rmtree(flows_dir, ignore_errors=True)
        flows_dir.mkdir(parents=True)
        receiver = Child(["nfcapd", "-w", str(flows_dir), "-b", tnet.ip, "-p",
                          str(NETFLOW_PORT), "-t", "3600", "-B", str(16 << 20), "-P",
                          str(work / f"nfcapd-{n}.pid")], tnet.ns)
        receiver.wait_for("Startup")
    sink = bench_captures.Sink()
    try:
        rx0 = tnet.rx_packets()
        drops0 = raw.state(IPPROTO_GRE)[1] if raw else 0
        with bench_captures.capture(spec, rx, sink, update,
                                    make_target=target_factory()) as source:
            target: Any = getattr(getattr(source, "pipeline", None), "target", None)
            lost0 = the_lab.lost()
            before = source.stats()
            cpu0, start = bench_captures.cpu_self(), time.monotonic()
            proc = subprocess.Popen(
                ["ip", "netns", "exec", the_lab.sender, "tcpreplay", "-i", TX, "--topspeed",
                 "--preload-pcap", f"--loop={loops}", str(pcap)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            first = last = 0.0
            seen = 0
            counters: list[tuple[int, int]] = []
            while True:
                time.sleep(0.02)
                now = time.monotonic()
                sent = target.stats()["Records"] if target is not None else 0
                if sent != seen:
                    first = first or now
                    seen, last = sent, now
                if proc.poll() is None:
                    continue
                stats = source.stats()
                counters.append((stats.packets_received, stats.packets_dropped))
                # Settled: kernel counters unchanged for 0.6 s (counters move every
                # stats call) and, for packet targets, no frame sent meanwhile.
                if len(counters) >= 30 and counters[-1] == counters[-30] and \
                        (kind == "netflowv5" or now - last > 0.6 or not seen):
                    break
            rep = bench_captures.parse_replay(proc.communicate()[0])
            lost1 = the_lab.lost()
            after = counters[-1]
        cpu = bench_captures.cpu_self() - cpu0  # stopped: final flows/records sent
        stats_out = dict(target.stats()) if target is not None else {}
        busy = last - first if seen else 0.0
        if kind == "netflowv5":  # the final records leave when the capture stops
            busy = time.monotonic() - start
        run = Run(kind, rep, after[0] - before.packets_received,
                  after[1] - before.packets_dropped, lost1 - lost0, cpu, stats_out, busy)
        if raw is not None and receiver is not None:
            bench_pipeline.wait_for("the GRE receiver to read its socket",
                                    lambda: raw.state(IPPROTO_GRE)[0] == 0, 120, 0.05)
            run.socket_drops = raw.state(IPPROTO_GRE)[1] - drops0
            out = receiver.stop()
            counts = json.loads(out.splitlines()[-1])
            run.at_target = sum(v for k, v in counts.items() if GRE_TYPES.get(int(k)) == kind)
        elif kind == "netflowv5" and receiver is not None:
            udp = bench_captures.ProcNet(tnet.ns, "udp")
            try:
                bench_pipeline.wait_for("nfcapd to read its socket",
                                        lambda: udp.state(NETFLOW_PORT)[0] == 0, 120, 0.05)
                run.socket_drops = udp.state(NETFLOW_PORT)[1]
            finally:
                udp.close()
            run.collector_log = receiver.stop()
            run.at_target, run.flows = nfdump_flows(flows_dir)
        run.target_rx = tnet.rx_packets() - rx0
        return run
    finally:
        if receiver is not None:
            receiver.stop()
        if raw is not None:
            raw.close()


# ---------------------------------------------------------------- report
HEADER = (f"{'capture':<10} {'sent':>8} {'secs':>5} {'sent/s':>7} {'veth':>5} {'received':>8} "
          f"{'dropped':>8} {'recv/s':>7} {'target':>8} {'errors':>6} {'at T':>8} {'sockdrop':>8} "
          f"{'busy s':>6} {'out/s':>7} {'out/del':>7} {'CPU s':>6}")


def row(r: Run) -> str:
    records = r.target.get("Records", 0)
    ratio = f"{r.at_target / r.delivered:.2f}" if r.kind.startswith("erspan") and \
        r.delivered else "-"
    out = "-" if r.kind == "local" else f"{r.out_rate / 1e3:.1f}k"
    return (f"{r.kind:<10} {r.replay.sent:>8} {r.replay.seconds:>5.2f} "
            f"{r.replay.pps / 1e3:>6.0f}k {r.veth_lost:>5} {r.received:>8} {r.dropped:>8} "
            f"{r.pps / 1e3:>6.0f}k {records if r.kind != 'local' else '-':>8} "
            f"{r.target.get('Errors', 0) if r.kind != 'local' else '-':>6} "
            f"{r.at_target if r.kind != 'local' else '-':>8} "
            f"{r.socket_drops if r.kind != 'local' else '-':>8} "
            f"{r.busy if r.kind != 'local' else 0:>6.2f} {out:>7} {ratio:>7} {r.cpu:>6.2f}")


LEGEND = """\
sent/secs: tcpreplay's count and duration; veth: lost between tx0 and rx0; received/dropped:
the capture's kernel counters (PACKET_STATISTICS: passed the filter / ring full); recv/s =
(received - dropped) / secs; target: what the target says it sent (`Records`: mirrored frames
or NetFlow records), errors: its failed sends; at T: erspan: GRE packets of that type the raw
socket in T read, netflow: records nfdump lists; sockdrop: the T socket's drops (raw socket /
nfcapd's UDP socket); busy: first -> last frame the target sent (netflow: replay start ->
capture stopped, the final records included); out/s = at T / busy; out/del = GRE packets at T
/ packets the capture delivered; CPU s: this process (capture thread and target) from the
replay's start until the capture stopped."""


def is_vxlan(k: Key) -> bool:
    return k[4] == 17 and 4789 in (k[2], k[3])


def netflow_summary(r: Run, trace: dict[Key, int], inner: set[Key], loops: int) -> str:
    """What nfdump listed of one netflowv5 run against the trace."""
    exported = r.flows
    vxlan = {k for k in trace if is_vxlan(k)}
    others = set(trace) - vxlan
    got_vxlan = {k for k in exported if is_vxlan(k)}
    got = set(exported) - got_vxlan
    exact = sum(1 for k in others & got if exported[k] == loops * trace[k])
    packets = sum(exported.values())
    outer = sum(v for k, v in exported.items() if k not in inner)
    want = loops * sum(trace.values())
    seq = re.search(r"Sequence Errors: (\d+)", r.collector_log)
    return "\n".join([
        f"netflowv5 run: {r.at_target} records collected ({r.target.get('Records', 0)} sent "
        f"in {r.target.get('Datagrams', 0)} datagrams, {r.target.get('Errors', 0)} send "
        f"errors), {r.at_target / r.busy if r.busy else 0:.0f} records/s over {r.busy:.1f} s; "
        f"nfcapd: {seq.group(1) if seq else '?'} sequence errors",
        f"  flows (src, dst, ports, protocol; one per direction; VXLAN-inner included): "
        f"{len(got)} exported, the trace has {len(others)}: {len(others - got)} missing, "
        f"{len(got - others)} not in the trace, {exact} with exactly {loops} x the trace's "
        f"packets",
        f"  VXLAN outer flows: trace {len(vxlan)} (one per UDP source port and direction), "
        f"exported {len(got_vxlan)} (the flow key leaves the source port out)",
        f"  packets in the records {packets}, in the replayed trace counted per flow {want} "
        f"({packets / want:.2f}); in the outer flows' records {outer}, the capture delivered "
        f"{r.delivered} ({'equal' if outer == r.delivered else 'DIFFERENT'})"])


def exporter_rate(pcap: Path, min_seconds: float = 3.0) -> tuple[float, float, int]:
    """(flows/s, records/s, flows) of `NetFlowV5Target.flows` alone in this process: the
    trace's flows (one offline flow table) handed to a fresh target per pass, sent to a
    UDP socket of this process that nobody reads (the kernel drops what overflows)."""
    flows = process_file(pcap, CaptureOptions()).flows
    node = TargetNode(if_index=3, name=RX, agent_ip="", mac="")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        endpoint = parse_endpoint(f"127.0.0.1:{sink.getsockname()[1]}", "netflowv5",
                                  default_port=2055)
        handed = records = 0
        spent = 0.0
        while spent < min_seconds:
            target = NetFlowV5Target(endpoint, node)
            t = time.perf_counter()
            target.flows(flows, int(time.time() * 1000))
            spent += time.perf_counter() - t
            handed += len(flows)
            records += target.stats()["Records"]
            target.close()
    return handed / spent, records / spent, len(flows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=200_000, help="packets in the trace")
    ap.add_argument("--flows", type=int, default=2_000, help="flows in the trace")
    ap.add_argument("--loops", type=int, default=4, help="tcpreplay --loop per run")
    ap.add_argument("--runs", type=int, default=3, help="runs of each capture")
    ap.add_argument("--update", type=int, default=60,
                    help="flow.update of the captures' flow tables (s; the agent's default)")
    ap.add_argument("--only", default=",".join(KINDS), help="comma-separated captures to run")
    ap.add_argument("--keep", type=Path, default=None, help="directory to keep files in")
    args = ap.parse_args()
    kinds = [k for k in args.only.split(",") if k]
    if any(k not in KINDS for k in kinds):
        print(f"--only: one of {', '.join(KINDS)}")
        return 1
    for tool in ("tcpreplay", "nfcapd", "nfdump"):
        if shutil.which(tool) is None:
            print(f"{tool} not found (bash scripts/install.sh installs it)")
            return 1
    if os.geteuid() != 0:
        print("needs root (network namespaces, raw sockets)")
        return 1
    work = args.keep or Path(tempfile.mkdtemp(prefix="skygraph-bench-targets-"))
    work.mkdir(parents=True, exist_ok=True)
    pcap = work / f"targets-{args.packets}-{args.flows}.pcap"
    if not pcap.exists():
        bench_flowtable.generate(pcap, args.packets, args.flows)
    trace, inner = trace_flows(pcap)
    prefix = f"sgt{os.getpid() % 100000}"
    net = os.getpid() % 250 + 1
    tnet = TargetNet(f"{prefix}t", f"{prefix}t", f"198.19.{net}.1", f"198.19.{net}.2")
    runs: list[Run] = []
    try:
        with bench_pipeline.lab(prefix) as the_lab:
            tnet.down()
            tnet.up()
            _, rx = bench_captures.address(the_lab, net)
            print(f"measuring {bench_captures.measured()}")
            print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
            print(f"{os.cpu_count()} CPUs shared by the sender, the kernel, the capture and "
                  f"target (this process), the receiver in T (and anything else running); "
                  f"flow.update {args.update} s")
            print(f"afpacket capture on {RX} with each target in turn; tcpreplay --topspeed "
                  f"--preload-pcap --loop {args.loops} of {args.packets} packets, "
                  f"{args.flows} flows (10 % VXLAN; {len(trace)} directional IPv4 flows "
                  f"counting VXLAN-inner ones), from {TX}; targets in namespace {tnet.ns} "
                  f"({tnet.ip}), {args.runs} runs each\n")
            print(HEADER)
            for n in range(1, args.runs + 1):
                for kind in kinds:
                    run = one_run(kind, the_lab, rx, tnet, pcap, args.loops, args.update,
                                  work, n)
                    runs.append(run)
                    print(row(run), flush=True)
                    time.sleep(1)
        exporter = exporter_rate(pcap) if "netflowv5" in kinds else None
    finally:
        tnet.down()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print("load average after: {:.2f} {:.2f} {:.2f} (other work on the machine skews all "
          "figures)".format(*os.getloadavg()))
    print("\n" + LEGEND + "\n")
    for kind in kinds:
        rs = [r for r in runs if r.kind == kind]
        recv = statistics.median(r.pps for r in rs)
        line = f"{kind}: median received {recv / 1e3:.0f}k pkt/s"
        if kind.startswith("erspan"):
            out = statistics.median(r.out_rate for r in rs)
            share = statistics.median(r.at_target / max(r.delivered, 1) for r in rs)
            line += (f", forwarded {out / 1e3:.1f}k pkt/s (ratio forwarded/received "
                     f"{out / recv:.2f}); GRE packets at the target / packets delivered "
                     f"{share:.2f}; kernel drops {sum(r.dropped for r in rs)} of "
                     f"{sum(r.received for r in rs)}")
        elif kind == "netflowv5":
            rate = statistics.median(r.at_target / r.busy for r in rs if r.busy)
            line += f", {rate:.0f} NetFlow records/s collected"
        print(line)
    for r in runs:
        if r.kind == "netflowv5":
            print(netflow_summary(r, trace, inner, args.loops))
    if exporter is not None:
        flows_s, records_s, nflows = exporter
        print(f"NetFlow v5 exporter alone (NetFlowV5Target.flows in this process, the trace's "
              f"{nflows} flows per pass, UDP to a local socket): {flows_s / 1e3:.1f}k flows/s, "
              f"{records_s / 1e3:.1f}k records/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
