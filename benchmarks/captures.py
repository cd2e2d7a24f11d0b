"""Capture type benchmarks (issue 8): the `sflow` collector's datagrams/s and flow
samples/s, and the `ebpf` capture's packets/s against `afpacket` on the same veth.

Builds two namespaces joined by a veth (sender `tx0` 198.18.N.1, receiver `rx0`
198.18.N.2, IPv6 off; names carry a per-run prefix and are removed at the end,
as in benchmarks/pipeline.py) and runs the capture sources in this process, as
the agent's capture manager does (`skygraph.capture.sources.source_for` with a
`SourceContext` for the rx0 node; flows go to a sink that keeps the last
version of each flow).  Flow tables use `--update` (default 60 s, the agent's
`flow.update`; each update tick copies every touched flow on the capture's
thread, which `--update 1` makes part of the measurement) and expire 600 s.

sflow: `--datagrams` distinct sFlow v5 datagrams are built with skygraph's own
encoder (skygraph/exporters/sflow.py): `--samples` flow samples each, carrying
the first `--header` bytes of frames of benchmarks/flowtable.py's generated
trace (TCP, UDP, ICMP, 10 % VXLAN), a counter sample in every tenth; they are
written as UDP frames to rx0's address, port 6343, and replayed from tx0 with
`tcpreplay --topspeed --loop N` (`--sflow-pps`: at that rate).  A `sflow` capture on rx0 is the collector.
Counted: the datagrams, flow samples and malformed datagrams the capture
decoded (its own counters), the UDP socket's drops (/proc/net/udp in the receiving
namespace), the process's CPU.  Rate = counted / (last count change - first
count), polled every 20 ms while the replay runs and until the socket is
empty.  A second line times `sflow_decode.decode` alone on the same datagrams
in this process (no socket, no flow table): the decoder's own ceiling.

ebpf vs afpacket: a generated trace (`--packets`, `--flows`) replayed with
`tcpreplay --topspeed --preload-pcap --loop N` from tx0, `--runs` times each,
alternating: an `ebpf` capture on rx0, then an `afpacket` capture with
`LayerKeyMode: L3` (ebpf keys flows in L3 mode).  Per run: the capture's
PacketsReceived / PacketsDropped (ebpf: packets the kernel program saw /
packets a full kernel map could not count; afpacket: the ring's
PACKET_STATISTICS), received rate = (received - dropped) / the replay's
duration, this process's CPU seconds from the replay's start until the
capture has stopped (final flows flushed), and the outer flows (ParentUUID
empty: ebpf does not split VXLAN) by TrackingID: whether both capture types
found the same flows, whether each one's flows hold every packet it delivered,
and with no drops the same packet counts per flow.  Then one more pair paced
with `tcpreplay --pps` (`--paced`, 1 loop), slow enough for both to keep up,
whose per-flow packet counts are compared.

    .venv/bin/python benchmarks/captures.py [--only sflow|ebpf] [--packets N]
        [--flows N] [--loops N] [--runs N] [--datagrams N] [--samples N]
        [--header N] [--sflow-loops N] [--sflow-pps N] [--paced PPS] [--update S]
        [--keep DIR]

The first line says which skygraph is measured: this checkout (commit, and
whether skygraph/ has local changes) or, with `PYTHONPATH=<dir>`, another
tree (e.g. `git archive <commit> skygraph | tar -x -C <dir>`).

Needs root and tcpreplay (scripts/install.sh).  Exit status 0 when the
measurement ran.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if importlib.util.find_spec("skygraph") is None:  # not installed: this checkout's
    sys.path.append(str(REPO))


def _load(name: str, file: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, HERE / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


bench_pipeline = _load("bench_pipeline", "pipeline.py")
bench_flowtable = bench_pipeline.bench_flowtable

from skygraph.capture.options import TableSettings  # noqa: E402
from skygraph.capture.sflow_decode import decode  # noqa: E402
from skygraph.capture.sources import source_for  # noqa: E402
from skygraph.capture.sources.base import CaptureSource, CaptureSpec, SourceContext  # noqa: E402
from skygraph.exporters import sflow as sflow_encoder  # noqa: E402
from skygraph.topology.flow import Flow  # noqa: E402
from skygraph.topology.netns import run_in  # noqa: E402

RX, TX = bench_pipeline.RX, bench_pipeline.TX
SFLOW_PORT = 6343
IF_INDEX = 7  # the sFlow data source the datagrams announce


# ---------------------------------------------------------------- plumbing
def cpu_self() -> float:
    """CPU seconds (user + system) of this process so far, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measured() -> str:
    """Which skygraph this process runs: the checkout's (commit, local changes) or
    another tree's (e.g. PYTHONPATH=<git archive of a commit>)."""
    import skygraph
    where = Path(skygraph.__file__).resolve().parent
    if where == REPO / "skygraph":
        return str(bench_pipeline.checkout())
    return f"skygraph from {where}"


def netns_path(name: str) -> str:
    return f"/var/run/netns/{name}"


@dataclass
class Iface:
    """An interface of the lab as a capture node (what the netlink probe would write)."""

    ns: str
    name: str
    mac: str
    ip: str
    index: int

    def metadata(self) -> dict[str, Any]:
        return {"Name": self.name, "Type": "veth", "EncapType": "ether",
                "TID": f"bench-{self.name}", "LinkFlags": ["UP", "BROADCAST", "MULTICAST"],
                "IfIndex": self.index, "MAC": self.mac, "IPV4": [f"{self.ip}/24"]}


def address(the_lab: Any, net: int) -> tuple[Iface, Iface]:
    """Give tx0 198.18.`net`.1/24 and rx0 .2 (RFC 2544's benchmarking range); the
    (sender, receiver) interfaces."""
    out = []
    for ns, dev, host in ((the_lab.sender, TX, 1), (the_lab.receiver, RX, 2)):
        ip = f"198.18.{net}.{host}"
        bench_pipeline.sh("ip", "addr", "add", f"{ip}/24", "dev", dev, ns=ns)
        (link,) = json.loads(bench_pipeline.sh("ip", "-j", "link", "show", dev, ns=ns))
        out.append(Iface(ns, dev, str(link["address"]), ip, int(link["ifindex"])))
    return out[0], out[1]


class Sink:
    """The flows a capture hands over: the last version of each, by UUID."""

    def __init__(self) -> None:
        self.latest: dict[str, Flow] = {}
        self._lock = threading.Lock()

    def __call__(self, flows: list[Flow]) -> None:
        with self._lock:
            for f in flows:
                self.latest[f.uuid] = f

    def outer(self) -> dict[str, int]:
        """Packets of the outer flows (no ParentUUID) by TrackingID."""
        with self._lock:
            flows = list(self.latest.values())
        out: dict[str, int] = {}
        for f in flows:
            if not f.parent_uuid:
                out[f.tracking_id] = (out.get(f.tracking_id, 0) + f.metric.ab_packets
                                      + f.metric.ba_packets)
        return out


@contextmanager
def capture(spec: dict[str, Any], node: Iface, sink: Callable[[list[Flow]], None], update: int,
            **kwargs: Any) -> Iterator[CaptureSource]:
    """A capture source started on `node` as the agent's manager would; stopped at exit."""
    ctx = SourceContext(CaptureSpec.from_json({"UUID": f"bench-{spec.get('Type')}", **spec}),
                        f"node-{node.name}", node.metadata(), netns_path(node.ns),
                        TableSettings(update=update, expire=600), [], sink, **kwargs)
    source = source_for(ctx)
    source.start()
    try:
        yield source
    finally:
        source.stop(60)


def settle(read: Callable[[], Any], every: float = 0.3, times: int = 3,
           timeout: float = 120) -> Any:
    """Poll `read()` until it returns the same value `times` times in a row."""
    deadline = time.monotonic() + timeout
    history = [read()]
    while time.monotonic() < deadline:
        time.sleep(every)
        history.append(read())
        if len(history) >= times and all(h == history[-1] for h in history[-times:]):
            break
    return history[-1]


def read_frames(path: Path, limit: int) -> list[bytes]:
    """The first `limit` frames of a classic pcap (benchmarks/flowtable.py's format)."""
    data = path.read_bytes()
    frames: list[bytes] = []
    off = len(bench_flowtable.PCAP_HEADER)
    record = bench_flowtable.RECORD
    while off < len(data) and len(frames) < limit:
        _, _, incl, _ = record.unpack_from(data, off)
        frames.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return frames


# ---------------------------------------------------------------- sFlow collector
def checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(src: Iface, dst: Iface, sport: int, dport: int, payload: bytes) -> bytes:
    """Ethernet/IPv4/UDP from `src` to `dst` (valid IP checksum; UDP checksum 0)."""
    ft = bench_flowtable
    udp = ft.UDP.pack(sport, dport, 8 + len(payload), 0) + payload
    ip = bytearray(ft.IPV4.pack(0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                                bytes(int(x) for x in src.ip.split(".")),
                                bytes(int(x) for x in dst.ip.split("."))))
    struct.pack_into("!H", ip, 10, checksum(bytes(ip)))
    eth = ft.ETH.pack(bytes.fromhex(dst.mac.replace(":", "")),
                      bytes.fromhex(src.mac.replace(":", "")), 0x0800)
    return bytes(eth + ip + udp)


@dataclass
class SFlowLoad:
    datagrams: list[bytes]
    flow_samples: int  # per pass over `datagrams`
    counter_samples: int


def sflow_datagrams(frames: list[bytes], count: int, samples: int, header: int,
                    agent: str) -> SFlowLoad:
    """`count` sFlow v5 datagrams built with skygraph's encoder: `samples` flow samples
    each (the first `header` bytes of successive frames), a counter sample in every
    tenth."""
    enc = sflow_encoder
    out: list[bytes] = []
    n = flow_samples = counter_samples = 0
    for seq in range(count):
        records = []
        for _ in range(samples):
            frame = frames[n % len(frames)]
            n += 1
            records.append(enc.encode_flow_sample(enc.FlowSample(
                sequence_number=n, if_index=IF_INDEX, sampling_rate=1, sample_pool=n, drops=0,
                input=IF_INDEX, output=0, header_protocol=enc.HEADER_ETHERNET,
                frame_length=len(frame) + enc.FCS_BYTES, stripped=enc.FCS_BYTES,
                header=frame[:header])))
        flow_samples += samples
        if seq % 10 == 9:
            records.append(enc.encode_counters_sample(seq, enc.InterfaceCounters(
                IF_INDEX, in_octets=n * 150, in_ucast=n, out_octets=n * 90, out_ucast=n // 2)))
            counter_samples += 1
        out.append(enc.encode_datagram(agent, 0, seq + 1, seq * 10, records))
    return SFlowLoad(out, flow_samples, counter_samples)


def write_pcap(path: Path, frames: list[bytes]) -> None:
    ft = bench_flowtable
    ts = 1_700_000_000_000_000
    with open(path, "wb") as out:
        out.write(ft.PCAP_HEADER)
        for frame in frames:
            ts += 10
            out.write(ft.RECORD.pack(ts // 1_000_000, ts % 1_000_000, len(frame), len(frame)))
            out.write(frame)


class ProcNet:
    """/proc/net/<table> (udp, raw) of a namespace, opened there once and re-read (no
    process per look: a fork of this process every poll would eat the capture's CPU)."""

    def __init__(self, ns: str, table: str) -> None:
        # Kept open on purpose: the file shows the namespace it was opened in.
        self._file = run_in(netns_path(ns), lambda: open(  # noqa: SIM115
            f"/proc/thread-self/net/{table}", "rb", buffering=0))

    def state(self, port: int) -> tuple[int, int]:
        """(rx_queue bytes, drops) of the socket on local port `port` (raw: protocol)."""
        self._file.seek(0)
        for line in self._file.read().decode().splitlines()[1:]:
            f = line.split()
            if int(f[1].split(":")[1], 16) == port:
                return int(f[4].split(":")[1], 16), int(f[-1])
        return 0, 0

    def close(self) -> None:
        self._file.close()


@dataclass
class SFlowRun:
    sent: int
    seconds: float  # tcpreplay's
    veth_lost: int
    socket_drops: int
    datagrams: int
    flow_samples: int
    decode_errors: int
    busy: float  # first counted datagram -> last
    drain: float  # replay end -> last counted datagram
    cpu: float
    flows: int

    @property
    def rate(self) -> float:
        return self.datagrams / self.busy if self.busy > 0 else 0.0


def sflow_run(the_lab: Any, rx: Iface, pcap: Path, loops: int, update: int,
              pps: int) -> SFlowRun:
    sink = Sink()
    spec = {"Type": "sflow", "Port": SFLOW_PORT}
    udp = ProcNet(the_lab.receiver, "udp")
    try:
        with capture(spec, rx, sink, update) as source:
            src: Any = source  # SFlowSource: its decoder counters
            lost0 = the_lab.lost()
            _, drops0 = udp.state(SFLOW_PORT)
            cpu0 = cpu_self()
            proc = subprocess.Popen(
                ["ip", "netns", "exec", the_lab.sender, "tcpreplay", "-i", TX,
                 f"--pps={pps}" if pps else "--topspeed", "--preload-pcap", f"--loop={loops}",
                 str(pcap)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            first = last = 0.0
            seen = 0
            replay_end: float | None = None
            quiet_since: float | None = None
            while True:
                time.sleep(0.02)
                now = time.monotonic()
                count = src.datagrams
                if replay_end is None and proc.poll() is not None:
                    replay_end = now
                if count != seen:
                    if not seen:
                        first = now
                    seen, last, quiet_since = count, now, None
                elif replay_end is not None:
                    if udp.state(SFLOW_PORT)[0] == 0:
                        quiet_since = quiet_since or now
                        if now - quiet_since > 0.5:
                            break
                    if now - replay_end > 300:
                        raise RuntimeError("the sflow collector never drained its socket")
            rep = parse_replay(proc.communicate()[0])
            _, drops1 = udp.state(SFLOW_PORT)
            lost1 = the_lab.lost()
            cpu = cpu_self() - cpu0
            datagrams, flow_samples, errors = src.datagrams, src.flow_samples, src.decode_errors
    finally:
        udp.close()
    return SFlowRun(rep.sent, rep.seconds, lost1 - lost0, drops1 - drops0, datagrams,
                    flow_samples, errors, last - first,
                    max(last - replay_end, 0.0) if replay_end else 0.0, cpu, len(sink.latest))


def parse_replay(out: str) -> Any:
    m = re.search(r"Actual: (\d+) packets \(\d+ bytes\) sent in ([\d.]+) seconds", out)
    failed = re.search(r"Failed packets:\s+(\d+)", out)
    if m is None or failed is None:
        raise RuntimeError(f"tcpreplay: unexpected output:\n{out}")
    return bench_pipeline.Replay(int(m.group(1)), int(failed.group(1)), float(m.group(2)))


def decoder_rate(datagrams: list[bytes], min_seconds: float = 3.0) -> tuple[float, float, int]:
    """(datagrams/s, flow samples/s, passes) of `decode` alone over `datagrams`."""
    passes = samples = 0
    t0 = time.perf_counter()
    while True:
        for d in datagrams:
            samples += len(decode(d).flow_samples)
        passes += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            break
    return passes * len(datagrams) / elapsed, samples / elapsed, passes


SFLOW_HEADER = (f"{'run':<5} {'sent':>8} {'secs':>6} {'sent/s':>8} {'veth':>6} {'sock.drop':>9} "
                f"{'counted':>8} {'samples':>9} {'errors':>6} {'busy s':>6} {'drain':>5} "
                f"{'dgram/s':>8} {'smpl/s':>8} {'CPU s':>6} {'CPU':>5} {'dg/CPUs':>8} {'flows':>6}")


def sflow_row(n: int, r: SFlowRun) -> str:
    per = r.flow_samples / r.busy if r.busy > 0 else 0.0
    return (f"{n:<5} {r.sent:>8} {r.seconds:>6.2f} {r.sent / r.seconds / 1e3:>7.1f}k "
            f"{r.veth_lost:>6} {r.socket_drops:>9} {r.datagrams:>8} {r.flow_samples:>9} "
            f"{r.decode_errors:>6} {r.busy:>6.2f} {r.drain:>5.2f} {r.rate / 1e3:>7.1f}k "
            f"{per / 1e3:>7.1f}k {r.cpu:>6.2f} {100 * r.cpu / max(r.busy, 1e-9):>4.0f}% "
            f"{r.datagrams / max(r.cpu, 1e-9) / 1e3:>7.1f}k {r.flows:>6}")


def bench_sflow(args: argparse.Namespace, the_lab: Any, tx: Iface, rx: Iface, work: Path) -> None:
    trace = work / "sflow-frames.pcap"
    if not trace.exists():
        bench_flowtable.generate(trace, 20_000, 1_000, seed=3)
    frames = read_frames(trace, 20_000)
    load = sflow_datagrams(frames, args.datagrams, args.samples, args.header, tx.ip)
    sizes = [len(d) for d in load.datagrams]
    pcap = work / "sflow.pcap"
    write_pcap(pcap, [udp_frame(tx, rx, 40000 + i % 1000, SFLOW_PORT, d)
                      for i, d in enumerate(load.datagrams)])
    print(f"\n== sflow collector: `sflow` capture on {RX} ({rx.ip}:{SFLOW_PORT}); "
          f"{args.datagrams} datagrams x {args.sflow_loops} loops, {args.samples} flow samples "
          f"of {args.header}-byte headers each (+1 counter sample in every 10th), "
          f"{statistics.mean(sizes):.0f} bytes on average, tcpreplay "
          f"{f'--pps {args.sflow_pps}' if args.sflow_pps else '--topspeed'} from {TX}")
    print(SFLOW_HEADER)
    runs = []
    for n in range(1, args.runs + 1):
        run = sflow_run(the_lab, rx, pcap, args.sflow_loops, args.update, args.sflow_pps)
        runs.append(run)
        print(sflow_row(n, run), flush=True)
        time.sleep(1)
    rate, per, passes = decoder_rate(load.datagrams)
    med = statistics.median(r.rate for r in runs)
    med_samples = statistics.median(r.flow_samples / r.busy for r in runs if r.busy > 0)
    print("legend: sent/secs: tcpreplay's count and duration; veth: lost between tx0 and rx0; "
          "sock.drop: the collector socket's drops\n(receive buffer full); counted/samples/"
          "errors: the capture's decoded datagrams, flow samples, malformed datagrams; busy: "
          "first\ncounted datagram -> last; drain: replay end -> last; dgram/s, smpl/s: counted "
          "/ busy; CPU: this process (the collector's thread)\nover the run, % of one core of "
          "busy; dg/CPUs: counted / CPU s;\nflows: flows the capture's table made of the "
          "samples")
    med_cpu = statistics.median(r.datagrams / r.cpu for r in runs if r.cpu > 0)
    print(f"collector (median of {len(runs)}): {med / 1e3:.1f}k datagrams/s, "
          f"{med_samples / 1e3:.1f}k flow samples/s; {med_cpu / 1e3:.1f}k datagrams per CPU "
          f"second; {sum(r.socket_drops for r in runs)} datagrams dropped by the socket")
    print(f"decoder alone (sflow_decode.decode in this process, {passes} passes over "
          f"{len(load.datagrams)} datagrams): {rate / 1e3:.1f}k datagrams/s, "
          f"{per / 1e3:.1f}k flow samples/s; collector/decoder {med / rate:.2f}")


# ---------------------------------------------------------------- ebpf vs afpacket
@dataclass
class CaptureRun:
    kind: str
    replay: Any  # bench_pipeline.Replay
    received: int
    dropped: int
    veth_lost: int
    cpu: float
    window: float  # wall seconds the CPU was measured over
    flows: dict[str, int] = field(default_factory=dict)  # outer TrackingID -> packets

    @property
    def delivered(self) -> int:
        return self.received - self.dropped

    @property
    def pps(self) -> float:
        return self.delivered / float(self.replay.seconds)


def replay(the_lab: Any, pcap: Path, loops: int, pps: int = 0) -> Any:
    """tcpreplay from tx0, at top speed (pps 0) or `pps` packets/s; its count and time."""
    rate = f"--pps={pps}" if pps else "--topspeed"
    return parse_replay(bench_pipeline.sh("tcpreplay", "-i", TX, rate, "--preload-pcap",
                                          f"--loop={loops}", str(pcap), ns=the_lab.sender))


def capture_run(kind: str, the_lab: Any, rx: Iface, pcap: Path, loops: int,
                update: int, pps: int = 0) -> CaptureRun:
    sink = Sink()
    spec = {"Type": kind, "LayerKeyMode": "L3"}
    with capture(spec, rx, sink, update) as source:
        lost0 = the_lab.lost()
        before = source.stats()
        cpu0, t0 = cpu_self(), time.monotonic()
        rep = replay(the_lab, pcap, loops, pps)
        after = settle(lambda: (lambda s: (s.packets_received, s.packets_dropped))(
            source.stats()))
        lost1 = the_lab.lost()
    cpu = cpu_self() - cpu0  # the final flows are in the sink once stopped
    label = f"{kind}@{pps // 1000}k" if pps else kind
    return CaptureRun(label, rep, after[0] - before.packets_received,
                      after[1] - before.packets_dropped, lost1 - lost0, cpu,
                      time.monotonic() - t0, sink.outer())


CAPTURE_HEADER = (f"{'capture':<9} {'sent':>9} {'secs':>6} {'sent/s':>8} {'veth':>6} "
                  f"{'received':>9} {'dropped':>8} {'recv/s':>8} {'CPU s':>6} {'window':>6} {'CPU':>5} "
                  f"{'flows':>6} {'in flows':>9}")


def capture_row(r: CaptureRun) -> str:
    return (f"{r.kind:<9} {r.replay.sent:>9} {r.replay.seconds:>6.2f} "
            f"{r.replay.pps / 1e3:>7.0f}k {r.veth_lost:>6} {r.received:>9} {r.dropped:>8} "
            f"{r.pps / 1e3:>7.0f}k {r.cpu:>6.2f} {r.window:>6.2f} {100 * r.cpu / r.window:>4.0f}% "
            f"{len(r.flows):>6} {sum(r.flows.values()):>9}")


def compare(ebpf: CaptureRun, afpacket: CaptureRun) -> str:
    a, b = ebpf.flows, afpacket.flows
    if a.keys() != b.keys():
        return (f"flows differ: {len(a.keys() - b.keys())} only in ebpf, "
                f"{len(b.keys() - a.keys())} only in afpacket")
    held = ", ".join(
        f"{r.kind}'s flows hold {'every' if sum(r.flows.values()) == r.delivered else 'NOT every'}"
        f" packet it delivered" for r in (ebpf, afpacket))
    if ebpf.dropped or afpacket.dropped:
        return f"same {len(a)} flows (packet counts per flow not compared: drops); {held}"
    same = sum(1 for k in a if a[k] == b[k])
    return f"same {len(a)} flows, {same} with the same packet count; {held}"


def bench_ebpf(args: argparse.Namespace, the_lab: Any, rx: Iface, work: Path) -> None:
    pcap = work / f"captures-{args.packets}-{args.flows}.pcap"
    if not pcap.exists():
        bench_flowtable.generate(pcap, args.packets, args.flows)
    print(f"\n== ebpf vs afpacket (L3 key mode) on {RX}: tcpreplay --topspeed --preload-pcap "
          f"--loop {args.loops} of {args.packets} packets, {args.flows} flows (10 % VXLAN), "
          f"from {TX}; alternating, {args.runs} runs each")
    print(CAPTURE_HEADER)
    runs: list[tuple[CaptureRun, CaptureRun]] = []
    for _ in range(args.runs):
        pair = []
        for kind in ("ebpf", "afpacket"):
            run = capture_run(kind, the_lab, rx, pcap, args.loops, args.update)
            pair.append(run)
            print(capture_row(run), flush=True)
            time.sleep(1)
        runs.append((pair[0], pair[1]))
    paced: tuple[CaptureRun, CaptureRun] | None = None
    if args.paced:
        eb = capture_run("ebpf", the_lab, rx, pcap, 1, args.update, args.paced)
        print(capture_row(eb), flush=True)
        time.sleep(1)
        af = capture_run("afpacket", the_lab, rx, pcap, 1, args.update, args.paced)
        print(capture_row(af), flush=True)
        paced = (eb, af)
    print("legend: sent/secs: tcpreplay's count and duration; veth: lost between tx0 and rx0; "
          "received/dropped: the capture's PacketsReceived/\nPacketsDropped (ebpf: seen by the "
          "kernel program / not counted, map full; afpacket: the ring's PACKET_STATISTICS);\n"
          "recv/s = (received - dropped) / secs; CPU s: this process (the capture's thread) "
          "over window: from the replay's start until\nthe counters settled and the capture "
          "stopped (final flows flushed); CPU: % of one core over window; flows: outer "
          "flows (no ParentUUID)\nby TrackingID; in flows: their packets; @Nk: a paced run "
          "(tcpreplay --pps, 1 loop) where both should keep up")
    for n, (eb, af) in enumerate(runs, 1):
        print(f"run {n}: {compare(eb, af)}")
    if paced is not None:
        print(f"paced run (tcpreplay --pps {args.paced}, 1 loop): {compare(*paced)}")
    eb_pps = statistics.median(e.pps for e, _ in runs)
    af_pps = statistics.median(a.pps for _, a in runs)
    eb_cpu = statistics.median(e.cpu for e, _ in runs)
    af_cpu = statistics.median(a.cpu for _, a in runs)
    print(f"median received: ebpf {eb_pps / 1e3:.0f}k pkt/s, afpacket {af_pps / 1e3:.0f}k "
          f"pkt/s (ratio ebpf/afpacket {eb_pps / af_pps:.2f}); kernel drops: ebpf "
          f"{sum(e.dropped for e, _ in runs)}, afpacket {sum(a.dropped for _, a in runs)}; "
          f"CPU: ebpf {eb_cpu:.2f} s, afpacket {af_cpu:.2f} s (ratio {eb_cpu / af_cpu:.2f})")


# ---------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("sflow", "ebpf"), default=None)
    ap.add_argument("--packets", type=int, default=200_000, help="packets in the trace (ebpf)")
    ap.add_argument("--flows", type=int, default=2_000, help="flows in the trace (ebpf)")
    ap.add_argument("--loops", type=int, default=4, help="tcpreplay --loop (ebpf)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each capture")
    ap.add_argument("--datagrams", type=int, default=10_000, help="distinct sFlow datagrams")
    ap.add_argument("--samples", type=int, default=7, help="flow samples per datagram")
    ap.add_argument("--header", type=int, default=128, help="sampled header bytes")
    ap.add_argument("--sflow-loops", type=int, default=10, help="tcpreplay --loop (sflow)")
    ap.add_argument("--paced", type=int, default=25_000,
                    help="pps of one more ebpf/afpacket pair, 1 loop (0: none)")
    ap.add_argument("--sflow-pps", type=int, default=0,
                    help="send sFlow datagrams at this rate instead of top speed")
    ap.add_argument("--update", type=int, default=60,
                    help="flow.update of the captures' flow tables (s; the agent's default)")
    ap.add_argument("--keep", type=Path, default=None, help="directory to keep the pcaps in")
    args = ap.parse_args()
    if shutil.which("tcpreplay") is None:
        print("tcpreplay not found (bash scripts/install.sh installs it)")
        return 1
    if os.geteuid() != 0:
        print("needs root (network namespaces, raw sockets, bpf())")
        return 1
    work = args.keep or Path(tempfile.mkdtemp(prefix="skygraph-bench-captures-"))
    work.mkdir(parents=True, exist_ok=True)
    prefix = f"sgc{os.getpid() % 100000}"
    try:
        with bench_pipeline.lab(prefix) as the_lab:
            tx, rx = address(the_lab, os.getpid() % 250 + 1)
            print(f"measuring {measured()}")
            print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
            print(f"{os.cpu_count()} CPUs shared by the sender, the kernel and the capture "
                  f"(and anything else running); captures run in this process, flow.update "
                  f"{args.update} s")
            if args.only in (None, "sflow"):
                bench_sflow(args, the_lab, tx, rx, work)
            if args.only in (None, "ebpf"):
                bench_ebpf(args, the_lab, rx, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\nload average after: {:.2f} {:.2f} {:.2f} (other work on the machine skews all "
          "figures)".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
