"""Live pipeline benchmark: tcpreplay at top speed into a veth, captured by a
real `skygraph agent` (afpacket) feeding a `skygraph analyzer`, against
`tcpdump -w /dev/null` and `softflowd -i` (C, live flow accounting) on the
same veth, in turn.

Builds two namespaces joined by a veth (sender `tx0`, receiver `rx0`; names
carry a per-run prefix and are removed at the end) and, per scenario
(`--flows`, default 1,000 and 10,000 concurrent flows), a deterministic pcap
with benchmarks/flowtable.py's generator (default 1,000,000 small packets:
TCP sessions, UDP, ICMP echo, 10 % of the flows inside VXLAN, all flows
interleaved).  It starts `skygraph analyzer` (embedded graph, temporary data
directory) and `skygraph agent` (the receiving namespace reported as its
host, the default configuration but for capture counters every 0.5 s), then
per scenario alternates `--runs` times: tcpdump, softflowd, skygraph with
each `--workers` value (A, B, C, D, A, B, C, D ...), each during one
`tcpreplay --topspeed --preload-pcap` of the pcap from the sender namespace:

- tcpdump: `tcpdump -i rx0 -n -w /dev/null`; its "received by filter /
  dropped by kernel" lines, CPU time and peak RSS (wait4 rusage);
- softflowd: `softflowd -i rx0 -d -m 2xflows -n 127.0.0.1:9`; libpcap's
  counters from `softflowctl statistics`, its CPU from /proc over the replay;
- skygraph: a capture on rx0 created with REST `POST /api/capture`
  (`Workers` readers), the same replay; the capture's counters read through
  Gremlin once they stop moving (PacketsReceived, PacketsDropped: the kernel
  ring statistics of all its readers), the agent's CPU over the replay and
  memory, the analyzer's CPU (with its graph server), then `DELETE` (the
  final flows) and the time until the packets of the capture's outer flows in
  the graph add up to what the rings delivered ("settle").

Then a latency phase: the agent restarted with `flow.update: 1`, one more
skygraph run, `--markers` samples: one UDP packet of a new flow is replayed;
the agent sends it on its next update tick, stamped with that tick's
wall-clock time (`LastUpdateMetric.Last`, ms); the script polls
`G.Flows().Has('Network.A', ip)` every 10 ms.  "tick->graph" = seen -
LastUpdateMetric.Last; "send->graph" = seen - send time (adds the wait for
the tick, 0..1 s).

skygraph runs as `python -m skygraph.cli` from the checkout holding this
script, so running the script from a `git archive` copy measures that commit.
Delivered rate = (kernel-received - kernel-dropped) / the replay's duration
as tcpreplay reports it.  Lost on the veth (sender TX drops) is reported
apart: no receiver saw those.

Targets (issue 16), per scenario and Workers value: kernel drops < 0.1 %,
delivered rate >= 0.9 x tcpdump's (medians), every delivered packet in the
graph.  Exit status 0 when every target is met, 1 when one is missed, 2 when
the measurement could not run.

    .venv/bin/python benchmarks/pipeline.py [--packets N] [--flows N,N] [--runs N]
        [--workers N,N] [--no-softflowd] [--markers N] [--update S] [--keep DIR]

Needs root, tcpreplay, tcpdump and softflowd (scripts/install.sh).
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
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
_spec = importlib.util.spec_from_file_location("bench_flowtable", HERE / "flowtable.py")
assert _spec is not None and _spec.loader is not None
bench_flowtable = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_flowtable)

SKYGRAPH = [sys.executable, "-m", "skygraph.cli"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
RX, TX = "rx0", "tx0"
MIN_RATIO = 0.9
MAX_DROPS = 0.001  # < 0.1 % of the packets the kernel passed to the receiver


# ---------------------------------------------------------------- plumbing
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def checkout() -> str:
    """The measured code: the commit of REPO, marked when skygraph/ has local changes."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "skygraph"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"{REPO} (not a git checkout)"
    return f"{REPO} at {head}" + (" with uncommitted changes in skygraph/" if dirty else "")


def batch_path() -> str:
    """Which batch path the measured checkout's flow table uses (C extension or numpy)."""
    probe = ("from skygraph.capture import fastpath\n"
             "print('unknown' if not hasattr(fastpath, 'native') else "
             "'C extension' if fastpath.native is not None else 'numpy fallback (no built "
             "extension: bash scripts/install.sh builds it)')")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=REPO, check=False)
    return out.stdout.strip() or f"unknown ({out.stderr.strip()[-200:]})"


def sh(*cmd: str, ns: str | None = None, check: bool = True) -> str:
    full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    out = subprocess.run(full, capture_output=True, text=True, timeout=120, check=False)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(full)}: {out.stderr.strip()}")
    return out.stdout


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0,
             every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {what} (last: {last!r})")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """cpu_seconds of `pid` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += cpu_seconds(p)
        except OSError:
            continue
        todo.extend(children.get(p, []))
    return total


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in kB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def write_marker(path: Path, ip: bytes, sport: int) -> None:
    """A one-packet pcap: UDP from `ip`:`sport` to 10.251.0.1:7777."""
    ft = bench_flowtable
    body = ft.UDP.pack(sport, 7777, 8 + 18, 0) + bytes(18)
    frame = ft.ETH.pack(b"\x02\xee\0\0\0\2", b"\x02\xee\0\0\0\1", 0x0800) + \
        ft._ipv4(ip, b"\x0a\xfb\x00\x01", 17, body)
    now = time.time_ns() // 1000
    path.write_bytes(ft.PCAP_HEADER + ft.RECORD.pack(now // 1_000_000, now % 1_000_000,
                                                     len(frame), len(frame)) + frame)


# ---------------------------------------------------------------- the lab
@dataclass
class Lab:
    prefix: str
    base: Path

    @property
    def sender(self) -> str:
        return f"{self.prefix}s"

    @property
    def receiver(self) -> str:
        return f"{self.prefix}h"

    @property
    def run_dir(self) -> Path:
        return self.base / "netns"

    def up(self) -> None:
        self.run_dir.mkdir(parents=True)  # the agent's (empty) namespace directory
        sh("ip", "netns", "add", self.sender)
        sh("ip", "netns", "add", self.receiver)
        a, b = f"{self.prefix}a", f"{self.prefix}b"
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", a, "netns", self.sender, "name", TX)
        sh("ip", "link", "set", b, "netns", self.receiver, "name", RX)
        for ns, dev in ((self.sender, TX), (self.receiver, RX)):
            # no IPv6 neighbour discovery: only the replayed packets on the wire
            sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1", ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)

    def down(self) -> None:
        for ns in (self.sender, self.receiver):
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.base, ignore_errors=True)

    def lost(self) -> int:
        """Packets dropped so far between tx0 and rx0 (veth TX drops, rx0 RX drops)."""
        def stats(ns: str, dev: str) -> Any:
            return json.loads(sh("ip", "-s", "-j", "link", "show", dev, ns=ns))[0]["stats64"]
        rx, tx = stats(self.receiver, RX), stats(self.sender, TX)
        return int(tx["tx"]["dropped"] + rx["rx"]["dropped"])


@contextmanager
def lab(prefix: str) -> Iterator[Lab]:
    the_lab = Lab(prefix, Path(f"/run/{prefix}-bench"))
    the_lab.down()
    try:
        the_lab.up()
        yield the_lab
    finally:
        the_lab.down()


@dataclass
class Replay:
    sent: int
    failed: int
    seconds: float

    @property
    def pps(self) -> float:
        return self.sent / self.seconds


def replay(the_lab: Lab, pcap: Path, loops: int) -> Replay:
    out = sh("tcpreplay", "-i", TX, "--topspeed", "--preload-pcap", f"--loop={loops}",
             str(pcap), ns=the_lab.sender)
    m = re.search(r"Actual: (\d+) packets \(\d+ bytes\) sent in ([\d.]+) seconds", out)
    failed = re.search(r"Failed packets:\s+(\d+)", out)
    if m is None or failed is None:
        raise RuntimeError(f"tcpreplay: unexpected output:\n{out}")
    return Replay(int(m.group(1)), int(failed.group(1)), float(m.group(2)))


# ---------------------------------------------------------------- skygraph processes
class Analyzer:
    def __init__(self, url: str) -> None:
        self.url = url

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def gremlin(self, query: str) -> Any:
        return self.request("POST", "/api/topology", {"GremlinQuery": query})

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGRAPH_")}
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def terminate(proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- measurements
@dataclass
class Run:
    kind: str
    replay: Replay
    received: int          # kernel: passed the socket filter (drops included)
    dropped: int           # kernel: ring/buffer full
    veth_lost: int         # dropped between tx0 and rx0 (nobody saw them)
    cpu: float             # receiver CPU seconds during the run
    rss_kb: int            # receiver RSS (tcpdump: peak; agent: VmRSS after the run)
    hwm_kb: int = 0        # agent VmHWM after the run
    analyzer_cpu: float = 0.0
    settle: float | None = None  # s after the replay until the graph has every packet
    in_graph: int = 0      # packets of this capture's outer flows in the graph
    flow_writes: int = 0   # flow updates the analyzer wrote from the replay's start to settle
    latency: list[tuple[float, float]] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return self.received - self.dropped

    @property
    def pps(self) -> float:
        return self.delivered / self.replay.seconds


def tcpdump_run(the_lab: Lab, pcap: Path, loops: int) -> Run:
    proc = subprocess.Popen(["ip", "netns", "exec", the_lab.receiver, "tcpdump", "-i", RX, "-n",
                             "-w", "/dev/null"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        if "listening on" not in line:
            raise RuntimeError(f"tcpdump: {line.strip()}")
        lost0 = the_lab.lost()
        rep = replay(the_lab, pcap, loops)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read()
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    numbers = {k: int(n) for n, k in re.findall(
        r"(\d+) packets? (captured|received by filter|dropped by kernel)", err)}
    if len(numbers) != 3:
        raise RuntimeError(f"tcpdump: unexpected output:\n{err}")
    lost1 = the_lab.lost()
    return Run("tcpdump", rep, numbers["received by filter"], numbers["dropped by kernel"],
               lost1 - lost0, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)


def capture_entry(api: Analyzer, capture_id: str) -> dict[str, Any] | None:
    for node in api.gremlin(f"G.V().Has('Name', '{RX}')") or []:
        for entry in node["Metadata"].get("Captures") or []:
            if entry["ID"] == capture_id:
                return dict(entry)
    return None


def flows_written(api: Analyzer) -> int:
    """Flow updates the analyzer's flow sink has written so far (`/api/status`)."""
    return int(api.request("GET", "/api/status")["Flows"]["written"])


def outer_packets(api: Analyzer, capture_id: str) -> int:
    """Packets counted by this capture's outermost flows (VXLAN inner flows left out)."""
    base = f"G.Flows().Has('CaptureID', '{capture_id}').Has('ParentUUID', '')"
    return sum(int(api.gremlin(f"{base}.Sum('Metric.{k}')") or 0)
               for k in ("ABPackets", "BAPackets"))


def latency_sample(api: Analyzer, the_lab: Lab, work: Path, ip: str, sport: int
                   ) -> tuple[float, float]:
    """(tick->graph, send->graph) in ms for one new UDP flow from `ip`."""
    marker = work / "marker.pcap"
    write_marker(marker, bytes(int(x) for x in ip.split(".")), sport)
    query = f"G.Flows().Has('Network.A', '{ip}')"
    sent = time.time()
    sh("tcpreplay", "-i", TX, str(marker), ns=the_lab.sender)
    found: list[Any] = []
    deadline = time.monotonic() + 30
    while not found and time.monotonic() < deadline:
        found = api.gremlin(query) or []
        seen = time.time()
        if not found:
            time.sleep(0.01)
    if not found:
        raise RuntimeError(f"marker flow from {ip} never reached the graph")
    tick_ms = found[0]["LastUpdateMetric"]["Last"]
    return seen * 1000 - tick_ms, (seen - sent) * 1000


def softflowd_run(the_lab: Lab, pcap: Path, loops: int, work: Path, flows: int) -> Run:
    """softflowd -i rx0 (C, live flow accounting through libpcap), exporting NetFlow to
    the discard port; its libpcap counters from `softflowctl statistics`."""
    ctl, pid_file = work / "softflowd.ctl", work / "softflowd.pid"
    ctl.unlink(missing_ok=True)
    proc = subprocess.Popen(["ip", "netns", "exec", the_lab.receiver, "softflowd", "-i", RX,
                             "-d", "-m", str(2 * flows), "-n", "127.0.0.1:9", "-c", str(ctl),
                             "-p", str(pid_file)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for("softflowd's control socket", lambda: proc.poll() is not None or ctl.exists(),
                 timeout=20, every=0.05)
        if proc.poll() is not None:
            raise RuntimeError("softflowd exited at start")
        pid = proc.pid  # `ip netns exec` execs softflowd itself
        cpu0 = cpu_seconds(pid)
        lost0 = the_lab.lost()
        rep = replay(the_lab, pcap, loops)
        time.sleep(0.5)
        cpu1 = cpu_seconds(pid)
        rss, hwm = memory_kb(pid)
        out = sh("softflowctl", "-c", str(ctl), "statistics", ns=the_lab.receiver)
        sh("softflowctl", "-c", str(ctl), "shutdown", ns=the_lab.receiver, check=False)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    numbers = dict(re.findall(r"Packets (received|dropped) by libpcap: (\d+)", out))
    if len(numbers) != 2:
        raise RuntimeError(f"softflowctl statistics: unexpected output:\n{out}")
    return Run("softflowd", rep, int(numbers["received"]), int(numbers["dropped"]),
               the_lab.lost() - lost0, cpu1 - cpu0, rss, hwm)


def skygraph_run(api: Analyzer, agent: int, analyzer: int, the_lab: Lab, pcap: Path,
                 loops: int, work: Path, markers: int, run_no: int, workers: int = 1,
                 label: str = "") -> Run:
    """One capture on rx0 (`Workers` readers) during one replay.  After the replay the
    kernel counters are read once they stop moving, then the capture is deleted (its
    final flows flushed); settle = s from the replay's end until the capture's outer
    flows in the graph hold every delivered packet."""
    spec: dict[str, Any] = {"GremlinQuery": f"G.V().Has('Name', '{RX}')",
                            "Name": f"bench-{run_no}", "Workers": workers}
    capture_id = api.request("POST", "/api/capture", spec)["UUID"]
    deleted = False
    try:
        entry = wait_for("the capture active on rx0",
                         lambda: (e := capture_entry(api, capture_id)) and e["State"] == "active"
                         and e, every=0.1)
        received0, dropped0 = entry["PacketsReceived"], entry["PacketsDropped"]
        lost0 = the_lab.lost()
        cpu0, acpu0 = cpu_seconds(agent), tree_cpu_seconds(analyzer)
        written0 = flows_written(api)
        rep = replay(the_lab, pcap, loops)
        end = time.monotonic()
        cpu1, acpu1 = cpu_seconds(agent), tree_cpu_seconds(analyzer)
        rss, hwm = memory_kb(agent)
        lost1 = the_lab.lost()
        # The counters reach the graph every stats_update (0.5 s): final once unchanged
        # for 1.5 s.
        samples: list[tuple[float, tuple[int, int]]] = []
        while time.monotonic() < end + 60:
            e = capture_entry(api, capture_id) or {}
            samples.append((time.monotonic(), (e.get("PacketsReceived", 0) - received0,
                                               e.get("PacketsDropped", 0) - dropped0)))
            t, counters = samples[-1]
            if t - samples[0][0] >= 1.5 and all(c == counters for at, c in samples
                                                if at >= t - 1.5):
                break
            time.sleep(0.25)
        received, dropped = samples[-1][1]
        latency = [latency_sample(api, the_lab, work, f"10.250.{run_no % 250}.{i + 1}",
                                  40000 + i) for i in range(markers)]
        api.request("DELETE", f"/api/capture/{capture_id}")
        deleted = True
        settle: float | None = None
        in_graph = 0
        while time.monotonic() < end + 180:
            in_graph = outer_packets(api, capture_id)
            if in_graph >= received - dropped:
                settle = time.monotonic() - end
                break
            time.sleep(0.25)
        kind = f"skygraph workers={workers}" + (f" {label}" if label else "")
        return Run(kind, rep, received, dropped, lost1 - lost0, cpu1 - cpu0, rss, hwm,
                   acpu1 - acpu0, settle, in_graph, flows_written(api) - written0, latency)
    finally:
        if not deleted:
            api.request("DELETE", f"/api/capture/{capture_id}")
        wait_for("the capture gone from rx0", lambda: capture_entry(api, capture_id) is None)


# ---------------------------------------------------------------- report
def fmt_row(r: Run) -> str:
    ours = r.kind.startswith("skygraph")
    settle = "-" if not ours else "never" if r.settle is None else f"{r.settle:.1f}"
    graph = "-" if not ours else f"{r.in_graph / max(r.delivered, 1):.1%}"
    mem = f"{r.rss_kb / 1024:.0f}" + (f"/{r.hwm_kb / 1024:.0f}" if r.hwm_kb else "")
    acpu = f"{r.analyzer_cpu:.1f}" if ours else "-"
    per_m = f"{r.cpu / max(r.delivered, 1) * 1e6:.2f}"
    drop = f"{r.dropped / max(r.received, 1):.2%}"
    return (f"{r.kind:<22} {r.replay.sent:>8} {r.replay.seconds:>5.2f} "
            f"{r.replay.pps / 1e3:>6.0f}k {r.veth_lost:>5} {r.received:>8} {r.dropped:>7} "
            f"{drop:>6} {r.pps / 1e3:>6.0f}k {r.cpu:>5.2f} {100 * r.cpu / r.replay.seconds:>4.0f}% "
            f"{per_m:>6} {mem:>8} {acpu:>5} {settle:>6} {graph:>6} "
            f"{r.flow_writes if ours else '-':>6}")


HEADER = (f"{'receiver':<22} {'sent':>8} {'secs':>5} {'sent/s':>7} {'veth':>5} "
          f"{'received':>8} {'dropped':>7} {'drop%':>6} {'recv/s':>7} {'CPU s':>5} {'CPU':>5} "
          f"{'s/Mpkt':>6} {'RSS MB':>8} {'an.CPU':>5} {'settle':>6} {'graph':>6} {'writes':>6}")
LEGEND = """\
sent/secs: tcpreplay's count and duration; veth: lost between tx0 and rx0 (nobody saw
them); received/dropped: kernel counters of the receiver's socket (tcpdump: "received by
filter"/"dropped by kernel"; softflowd: libpcap's, from softflowctl; skygraph: the
capture's PacketsReceived/PacketsDropped, all readers); recv/s = (received - dropped) /
secs; CPU: receiver's CPU over the replay, % of one core; s/Mpkt: receiver CPU seconds per
million delivered packets; RSS: tcpdump peak, softflowd and agent VmRSS/VmHWM; an.CPU:
analyzer and its graph server during the replay; settle: s after the replay until the
capture's outer flows in the graph hold every delivered packet (the capture is deleted
once the counters stopped moving: with the default flow.update, its final flows are what
brings them); graph: those packets / delivered; writes: flow updates the analyzer wrote
from the replay's start until settled."""


def summary(label: str, xs: list[float]) -> str:
    return (f"{label}: min {min(xs):.0f}  median {statistics.median(xs):.0f}  "
            f"max {max(xs):.0f} ms  (n={len(xs)})")


def med(xs: Iterable[float]) -> float:
    values = list(xs)
    return statistics.median(values) if values else float("nan")


def loadavg() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


@dataclass
class Verdict:
    name: str
    ok: bool
    detail: str


def scenario_report(flows: int, runs: list[Run], workers: list[int]) -> list[Verdict]:
    """Medians per receiver, skygraph's ratios to tcpdump and softflowd, the verdicts."""
    by_kind: dict[str, list[Run]] = {}
    for r in runs:
        by_kind.setdefault(r.kind, []).append(r)
    td = by_kind.get("tcpdump", [])
    sf = by_kind.get("softflowd", [])
    td_pps = med(r.pps for r in td)
    sf_pps = med(r.pps for r in sf)
    print(f"\n{flows} flows, medians over {len(td)} runs each:")
    for kind, rs in by_kind.items():
        pps = med(r.pps for r in rs)
        per_m = med(r.cpu / max(r.delivered, 1) * 1e6 for r in rs)
        drops = sum(r.dropped for r in rs) / max(sum(r.received for r in rs), 1)
        extra = ""
        if kind.startswith("skygraph"):
            extra = (f"; {pps / td_pps:.2f} x tcpdump, {pps / sf_pps:.2f} x softflowd; "
                     f"settle {med(r.settle for r in rs if r.settle is not None):.1f} s, "
                     f"graph {min(r.in_graph / max(r.delivered, 1) for r in rs):.1%} (min)")
        print(f"  {kind:<22} {pps / 1e3:6.0f}k pkt/s delivered, {drops:.3%} dropped, "
              f"{per_m:.2f} CPU s per Mpkt, sender {med(r.replay.pps for r in rs) / 1e3:.0f}k "
              f"pkt/s{extra}")
    verdicts = []
    default = f"skygraph workers={workers[0]}"
    for w in workers:
        rs = by_kind.get(f"skygraph workers={w}", [])
        if not rs:
            continue
        dropped = sum(r.dropped for r in rs) / max(sum(r.received for r in rs), 1)
        ratio = med(r.pps for r in rs) / td_pps
        lost = [r for r in rs if r.settle is None]
        tag = f"{flows} flows, workers={w}" + (" (default)" if f"skygraph workers={w}" ==
                                                default else "")
        verdicts += [
            Verdict(f"{tag}: kernel drops < {MAX_DROPS:.1%}", dropped < MAX_DROPS,
                    f"{dropped:.3%}"),
            Verdict(f"{tag}: delivered >= {MIN_RATIO} x tcpdump", ratio >= MIN_RATIO,
                    f"{ratio:.2f}"),
            Verdict(f"{tag}: every delivered packet in the graph", not lost,
                    f"{len(lost)} runs short" if lost else "all runs"),
        ]
    return verdicts


def start_agent(cfg: Path, work: Path, the_lab: Lab, host: str, name: str
                ) -> subprocess.Popen[bytes]:
    return start([*SKYGRAPH, "-c", str(cfg), "agent", "--host-id", host,
                  "--host-netns", f"/var/run/netns/{the_lab.receiver}",
                  "--netns-run-path", str(the_lab.run_dir), "--no-ovs"], work / f"{name}.log")


def config(path: Path, rpc: str, listen: str, data: Path, update: int | None,
           ring_blocks: int = 0) -> None:
    flow = f"flow:\n  update: {update}\n" if update else ""
    ring = f"    ring_blocks: {ring_blocks}\n" if ring_blocks else ""
    path.write_text(f"analyzers: [{rpc}]\n"
                    f"analyzer:\n  listen: {listen}\n  rpc:\n    listen: {rpc}\n"
                    f"graph:\n  embedded:\n    data_dir: {data}\n    bolt_port: {free_port()}\n"
                    f"    http_port: {free_port()}\n    heap: 1g\n{flow}"
                    f"agent:\n  capture:\n    stats_update: 0.5\n{ring}  topology:\n    probes: []\n"
                    f"logging:\n  level: WARNING\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000, help="packets in each pcap")
    ap.add_argument("--flows", default="1000,10000",
                    help="concurrent flows of each scenario (comma-separated)")
    ap.add_argument("--loops", type=int, default=1, help="tcpreplay --loop per run")
    ap.add_argument("--runs", type=int, default=3, help="runs of each receiver per scenario")
    ap.add_argument("--workers", default="1,2",
                    help="skygraph capture Workers to measure (the first is the verdict's)")
    ap.add_argument("--no-softflowd", action="store_true", help="leave softflowd -i out")
    ap.add_argument("--markers", type=int, default=5,
                    help="latency samples (a last run with flow.update 1; 0: none)")
    ap.add_argument("--update", type=int, default=0,
                    help="the agent's flow.update (s) in the throughput runs (0: its default)")
    ap.add_argument("--ring-blocks", type=int, default=0,
                    help="the agent's capture.ring_blocks (MiB per reader; 0: its default)")
    ap.add_argument("--keep", type=Path, default=None, help="directory to keep pcaps and logs in")
    args = ap.parse_args()
    scenarios = [int(x) for x in args.flows.split(",") if x]
    workers = [int(x) for x in args.workers.split(",") if x]
    tools = ["tcpreplay", "tcpdump", "ip"] + ([] if args.no_softflowd else ["softflowd"])
    for tool in tools:
        if shutil.which(tool) is None:
            print(f"{tool} not found (bash scripts/install.sh installs it)")
            return 2
    if os.geteuid() != 0:
        print("needs root (network namespaces, raw sockets)")
        return 2

    work = args.keep or Path(tempfile.mkdtemp(prefix="skygraph-bench-pipeline-"))
    work.mkdir(parents=True, exist_ok=True)
    pcaps = {}
    for flows in scenarios:
        pcaps[flows] = work / f"pipeline-{args.packets}-{flows}.pcap"
        if not pcaps[flows].exists():
            t = time.perf_counter()
            bench_flowtable.generate(pcaps[flows], args.packets, flows)
            print(f"generated {pcaps[flows]} ({pcaps[flows].stat().st_size / 1e6:.0f} MB) "
                  f"in {time.perf_counter() - t:.1f} s")
    prefix = f"sgb{os.getpid() % 100000}"
    listen, rpc = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    data = Path(tempfile.mkdtemp(prefix=f"{prefix}-data-"))
    cfg, latency_cfg = work / "pipeline.yml", work / "pipeline-latency.yml"
    config(cfg, rpc, listen, data, args.update or None, args.ring_blocks)
    procs: list[subprocess.Popen[bytes]] = []
    verdicts: list[Verdict] = []
    latency_run: Run | None = None
    try:
        with lab(prefix) as the_lab:
            analyzer = start([*SKYGRAPH, "-c", str(cfg), "analyzer"], work / "analyzer.log")
            procs.append(analyzer)
            api = Analyzer(f"http://{listen}")
            wait_for("the analyzer", lambda: analyzer.poll() is not None or api.healthy(),
                     timeout=180, every=0.3)
            if analyzer.poll() is not None:
                raise RuntimeError(f"the analyzer exited; see {work / 'analyzer.log'}")
            agent = start_agent(cfg, work, the_lab, f"{prefix}-bench", "agent")
            procs.insert(0, agent)
            wait_for("rx0 in the graph", lambda: api.gremlin(f"G.V().Has('Name', '{RX}')"),
                     timeout=60)
            rss, _ = memory_kb(agent.pid)
            print(f"measuring {checkout()}; flow table batch path: {batch_path()}")
            print(f"{os.cpu_count()} CPUs; flow.update "
                  f"{args.update or 'default (60)'} s; ring {args.ring_blocks or 'default (32)'} "
                  f"MiB per reader; {args.packets} packets x {args.loops} "
                  f"loops per run; agent pid {agent.pid} (idle RSS {rss / 1024:.0f} MB), "
                  f"analyzer pid {analyzer.pid}")
            receivers = ["tcpdump", *([] if args.no_softflowd else ["softflowd"]),
                         *(f"skygraph:{w}" for w in workers)]
            n = 0
            for flows in scenarios:
                pcap = pcaps[flows]
                print(f"\n== {flows} concurrent flows; load average before: {loadavg()}")
                print(HEADER)
                runs: list[Run] = []
                for _ in range(args.runs):
                    for kind in receivers:  # in turn: A, B, C, A, B, C ...
                        n += 1
                        if kind == "tcpdump":
                            run = tcpdump_run(the_lab, pcap, args.loops)
                        elif kind == "softflowd":
                            run = softflowd_run(the_lab, pcap, args.loops, work, flows)
                        else:
                            run = skygraph_run(api, agent.pid, analyzer.pid, the_lab, pcap,
                                               args.loops, work, 0, n,
                                               workers=int(kind.split(":")[1]))
                        runs.append(run)
                        print(fmt_row(run), flush=True)
                        time.sleep(1)
                print(f"load average after: {loadavg()}")
                verdicts += scenario_report(flows, runs, workers)
            if args.markers:
                # Latency needs update ticks: an agent with flow.update 1, one run.
                terminate(agent)
                procs.remove(agent)
                config(latency_cfg, rpc, listen, data, 1, args.ring_blocks)
                agent = start_agent(latency_cfg, work, the_lab, f"{prefix}-bench", "agent-latency")
                procs.insert(0, agent)
                wait_for("rx0 in the graph", lambda: api.gremlin(f"G.V().Has('Name', '{RX}')"),
                         timeout=60)
                print(f"\n== latency: flow.update 1, {scenarios[0]} flows, load average "
                      f"{loadavg()}")
                print(HEADER)
                latency_run = skygraph_run(api, agent.pid, analyzer.pid, the_lab,
                                           pcaps[scenarios[0]], args.loops, work, args.markers,
                                           n + 1, workers=workers[0], label="update=1")
                print(fmt_row(latency_run), flush=True)
    finally:
        for proc in procs:
            terminate(proc)
        shutil.rmtree(data, ignore_errors=True)
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    print("\n" + LEGEND)
    if latency_run is not None and latency_run.latency:
        samples = latency_run.latency
        print("\nflow update latency, " + summary("tick->graph", [s[0] for s in samples]))
        print("flow update latency, " + summary("send->graph", [s[1] for s in samples]))
    print(f"\nload average at the end: {loadavg()} (other work on the machine skews all "
          "figures)")
    for v in verdicts:
        print(f"{v.name}: {'PASS' if v.ok else 'FAIL'} ({v.detail})")
    return 0 if all(v.ok for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
