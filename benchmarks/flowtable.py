"""Flow table benchmark for issue 16: skygraph flows vs softflowd on the same pcap, in one run.

Run it from a fresh clone with one command:

    bash scripts/install.sh && .venv/bin/python benchmarks/flowtable.py

    .venv/bin/python benchmarks/flowtable.py [--packets N] [--flows N] [--repeat N]
        [--live-flows N] [--keep DIR] [--options-only | --no-options]

It generates a deterministic capture (default 1,000,000 packets, 10,000 flows:
TCP sessions, UDP, ICMP echo, 10 % of the flows inside VXLAN; kept in --keep
DIR and reused from there), then runs these phases, printing the load average
(os.getloadavg) at the start and end of the run and of each phase:

1. Offline speed (issue 16, point 3). `skygraph flows FILE` (JSON to /dev/null)
   and `softflowd -r FILE` in turn, interleaved A, B, A, B ... for `--repeat`
   rounds (default 5): each round prints both wall and CPU times, packets/s,
   peak RSS and the round's ratios (wall: softflowd's time / skygraph's; CPU:
   softflowd's CPU / skygraph's); then the median of the per-round ratios.
   skygraph runs with its default workers (`--workers 0`: one process per CPU,
   up to 4, for files of 16 MiB or more; printed first); each round also runs
   `--workers 1` after softflowd, whose ratio is printed for information.
   The machine may be shared: ratios of the same round are what compare.
   Target: median wall ratio >= 1.00.
2. Exactness. One extra, untimed `skygraph flows FILE --format json` run, its
   output parsed: over the flows that are not VXLAN outer flows (LayersPath
   other than Ethernet/IPv4/UDP/VXLAN), Metric.ABPackets + Metric.BAPackets
   must sum to the packets generated (packets // flows * flows) and their
   number must be --flows; and `--workers 1` gives byte for byte the same
   output as the default workers. Target: all hold.
3. Options (issue 16, point 4). For each of `--rawpacket-limit 10`,
   `--extra-tcp-metric` and `--layer-key-mode L3`: the default command and the
   one with the option in turn (default, option, default, option ...,
   `--repeat` rounds); a round's cost is option wall / default wall - 1 (the
   extra time as a share of the default's); printed per round and as the
   median over rounds with the median default and option times.
   Target: median cost <= 20 % for each option.
4. Live flows: peak RSS of one process holding --live-flows (default 500,000)
   flows in one table; no target (`--live-flows 0` skips it).

`--options-only` runs only phase 3; `--no-options` runs all but phase 3.
skygraph runs with its bytecode cached (PYTHONPYCACHEPREFIX in the work
directory, written by an untimed warm-up run), as an installed package would;
its start-up time (the same command on a 100-packet file) is printed first.

The verdicts are printed at the end, one line per target:

    offline skygraph/softflowd >= 1.00 (median of N, wall): PASS|FAIL
    option --rawpacket-limit 10 cost <= 20 % (median of N, wall): PASS|FAIL
    ... (one line per option)
    exact flows and packets (..., --workers 1 identical): PASS|FAIL

Exit status: 0 when every target passed, 1 when any failed (or skygraph
exited with a non-zero status: its stderr is shown), 2 when the benchmark
cannot run (softflowd is not installed, `apt-get install softflowd`, or failed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
RECORD = struct.Struct("<IIII")
ETH = struct.Struct("!6s6sH")
IPV4 = struct.Struct("!BBHHHBBH4s4s")
TCP = struct.Struct("!HHIIBBHHH")
UDP = struct.Struct("!HHHH")
ICMP = struct.Struct("!BBHHH")
VXLAN = struct.Struct("!BxxxI")
SYN, ACK, FIN, PSH = 0x02, 0x10, 0x01, 0x08


def _mac(i: int) -> bytes:
    return bytes([0x02, 0, (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF, 1])


def _ip(i: int, side: int) -> bytes:
    return bytes([10, side, (i >> 8) & 0xFF, i & 0xFF])


def _l4(kind: str, fwd: bool, sport: int, dport: int, k: int, n: int, payload: int) -> bytes:
    if kind == "tcp":
        if k < 2:  # the handshake: SYN, then SYN/ACK
            flags = SYN if fwd else SYN | ACK
        elif k >= n - 2:
            flags = FIN | ACK
        else:
            flags = ACK | (PSH if payload else 0)
        s, d = (sport, dport) if fwd else (dport, sport)
        return TCP.pack(s, d, 1000 + k, 2000 + k, 5 << 4, flags, 512, 0, 0) + bytes(payload)
    if kind == "udp":
        s, d = (sport, dport) if fwd else (dport, sport)
        return UDP.pack(s, d, 8 + payload, 0) + bytes(payload)
    return ICMP.pack(8 if fwd else 0, 0, 0, sport, k // 2) + bytes(payload)


def _ipv4(src: bytes, dst: bytes, proto: int, body: bytes) -> bytes:
    return IPV4.pack(0x45, 0, 20 + len(body), 1, 0, 64, proto, 0, src, dst) + body


def generate(path: Path, packets: int, flows: int, seed: int = 1) -> None:
    """Write the deterministic benchmark pcap."""
    rng = random.Random(seed)
    per_flow = packets // flows
    specs = []
    for i in range(flows):
        r = i % 20
        kind = "tcp" if r < 11 else "udp" if r < 17 else "icmp"
        specs.append((i, kind, i % 10 == 9, 1024 + rng.randrange(60000),
                      rng.choice((80, 443, 5432, 6379, 9000)) if kind != "udp"
                      else rng.choice((161, 514, 5000, 9999))))
    order = [i for i in range(flows) for _ in range(per_flow)]
    rng.shuffle(order)
    sent = [0] * flows
    proto = {"tcp": 6, "udp": 17, "icmp": 1}
    ts = 1_700_000_000_000_000
    with open(path, "wb") as out:
        out.write(PCAP_HEADER)
        chunk: list[bytes] = []
        for n, i in enumerate(order):
            fid, kind, vxlan, sport, dport = specs[i]
            k = sent[i]
            sent[i] += 1
            fwd = k % 2 == 0
            payload = rng.randrange(0, 160) if k > 1 else 0
            src, dst = (_ip(fid, 1), _ip(fid, 2)) if fwd else (_ip(fid, 2), _ip(fid, 1))
            smac, dmac = (_mac(fid), _mac(fid + 1 << 1)) if fwd else (_mac(fid + 1 << 1),
                                                                      _mac(fid))
            frame = ETH.pack(dmac, smac, 0x0800) + _ipv4(
                src, dst, proto[kind], _l4(kind, fwd, sport, dport, k, per_flow, payload))
            if vxlan:
                outer_src, outer_dst = (b"\xac\x10\x00\x01", b"\xac\x10\x00\x02") if fwd \
                    else (b"\xac\x10\x00\x02", b"\xac\x10\x00\x01")
                udp = UDP.pack(49152 + fid % 4096, 4789, 16 + len(frame), 0)
                frame = ETH.pack(b"\x02\xff\0\0\0\2" if fwd else b"\x02\xff\0\0\0\1",
                                 b"\x02\xff\0\0\0\1" if fwd else b"\x02\xff\0\0\0\2", 0x0800) \
                    + _ipv4(outer_src, outer_dst, 17,
                            udp + VXLAN.pack(0x08, (100 + fid % 50) << 8) + frame)
            ts += 10
            chunk.append(RECORD.pack(ts // 1_000_000, ts % 1_000_000, len(frame), len(frame)))
            chunk.append(frame)
            if n % 65536 == 0:
                out.write(b"".join(chunk))
                chunk = []
        out.write(b"".join(chunk))


def skygraph_command() -> list[str]:
    exe = shutil.which("skygraph", path=str(Path(sys.executable).parent))
    if exe is not None:
        probe = subprocess.run([exe, "flows", "--help"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [exe, "flows"]
    return [sys.executable, "-m", "skygraph.capture.offline"]


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int, int]:
    """Run `cmd`; return (wall seconds, CPU seconds, peak RSS in kB, exit status)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            sys.stderr.write(err.read().decode(errors="replace")[-4000:])
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, code


WORKERS_SCRIPT = """
import sys
from pathlib import Path
from skygraph.capture import fastpath
from skygraph.capture.offline_workers import workers_for
from skygraph.capture.options import CaptureOptions
n = workers_for(0, Path(sys.argv[1]), CaptureOptions(), "")
print(("C extension" if fastpath.native else "per-packet path (no C extension)")
      + f", default workers on this file: {n}")
"""

LIVE_FLOWS_SCRIPT = """
import resource, sys
from pathlib import Path
from skygraph.capture.offline import process_file
from skygraph.capture.options import CaptureOptions
r = process_file(Path(sys.argv[1]), CaptureOptions())
print(len(r.flows), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def generate_apart(path: Path, packets: int, flows: int, seed: int = 1) -> None:
    """`generate` in a child process: this one stays small, so the children timed
    after it (forked from it) do not start with its memory in their peak RSS."""
    subprocess.run([sys.executable, __file__, "--generate", str(path), str(packets), str(flows),
                    str(seed)], check=True)


def python_env(work: Path) -> dict[str, str]:
    """skygraph's environment: bytecode cached in the work directory."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


VXLAN_OUTER = "Ethernet/IPv4/UDP/VXLAN"
OPTION_SETS: list[list[str]] = [["--rawpacket-limit", "10"], ["--extra-tcp-metric"],
                                ["--layer-key-mode", "L3"]]
MIN_RATIO = 1.00  # offline skygraph/softflowd, wall
MAX_COST = 0.20  # an option's extra wall time as a share of the default's


class CannotRun(Exception):
    """The benchmark cannot run (exit status 2)."""


class SkygraphFailed(Exception):
    """skygraph exited with a non-zero status (exit status 1); its stderr is shown."""


def load(label: str) -> None:
    one, five, fifteen = os.getloadavg()
    print(f"load average ({label}): {one:.2f} {five:.2f} {fifteen:.2f}", flush=True)


def run_skygraph(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """`timed`, raising SkygraphFailed on a non-zero status."""
    elapsed, cpu, rss, code = timed(cmd, env)
    if code != 0:
        raise SkygraphFailed(f"skygraph flows failed with status {code}: {' '.join(cmd)}")
    return elapsed, cpu, rss


def find_softflowd() -> str:
    softflowd = shutil.which("softflowd") or shutil.which("softflowd", path="/usr/sbin")
    if softflowd is None:
        raise CannotRun("softflowd: not installed; install it with `apt-get install softflowd` "
                        "(Debian/Ubuntu, as root) and run again")
    return softflowd


def speed_phase(cmd: list[str], env: dict[str, str], softflowd: str, pcap: Path, work: Path,
                packets: int, repeat: int) -> float:
    """Interleaved skygraph, softflowd rounds; return the median wall ratio."""
    load("offline phase start")
    # `-c none`: softflowd 1.1.0 may block in accept() on its control socket
    # after reading a file (it tests poll results it never polled for).
    sf_cmd = [softflowd, "-r", str(pcap), "-n", "127.0.0.1:9", "-d", "-c", "none",
              "-p", str(work / "softflowd.pid"), "-m", "65536"]
    print(f"A: {' '.join(cmd)} {pcap} > /dev/null\nB: {' '.join(sf_cmd)}\n"
          f"C: {' '.join(cmd)} {pcap} --workers 1 > /dev/null (for information)")
    ratios: list[tuple[float, float]] = []
    alone: list[float] = []
    for rnd in range(1, repeat + 1):
        sg_time, sg_cpu, sg_rss = run_skygraph([*cmd, str(pcap)], env)
        sg_rate = packets / sg_time
        print(f"[{rnd}] skygraph  ({' '.join(Path(c).name for c in cmd[-2:])}): {sg_time:6.2f} s "
              f"(CPU {sg_cpu:.2f} s)  {sg_rate / 1e6:5.2f} M packets/s  "
              f"peak RSS {sg_rss / 1024:.0f} MB", flush=True)
        sf_time, sf_cpu, sf_rss, rc = timed(sf_cmd)
        if rc != 0:
            raise CannotRun(f"softflowd failed with status {rc}")
        sf_rate = packets / sf_time
        print(f"[{rnd}] softflowd (softflowd -r):  {sf_time:6.2f} s (CPU {sf_cpu:.2f} s)  "
              f"{sf_rate / 1e6:5.2f} M packets/s  peak RSS {sf_rss / 1024:.0f} MB")
        one_time, one_cpu, _ = run_skygraph([*cmd, str(pcap), "--workers", "1"], env)
        print(f"[{rnd}] skygraph --workers 1: {one_time:6.2f} s (CPU {one_cpu:.2f} s)  "
              f"{packets / one_time / 1e6:5.2f} M packets/s")
        ratios.append((sg_rate / sf_rate, sf_cpu / sg_cpu))
        alone.append(sf_time / one_time)
        print(f"[{rnd}] ratio skygraph/softflowd: {sg_rate / sf_rate:.2f} (wall), "
              f"{sf_cpu / sg_cpu:.2f} (CPU); with --workers 1: {sf_time / one_time:.2f} (wall)",
              flush=True)
    wall = median([r[0] for r in ratios])
    print(f"ratio skygraph/softflowd, median of {len(ratios)} rounds: {wall:.2f} (wall), "
          f"{median([r[1] for r in ratios]):.2f} (CPU); --workers 1: {median(alone):.2f} (wall)")
    load("offline phase end")
    return wall


def exactness(cmd: list[str], env: dict[str, str], pcap: Path, packets: int,
              flows: int) -> tuple[bool, str]:
    """Untimed JSON runs (default workers, one worker), checked against the generator and
    against each other; return (passed, description)."""
    text = json_output([*cmd, str(pcap), "--format", "json"], env)
    same = json_output([*cmd, str(pcap), "--format", "json", "--workers", "1"], env) == text
    result = json.loads(text)
    inner = [f for f in result if f.get("LayersPath") != VXLAN_OUTER]
    counted = sum(f.get("Metric", {}).get("ABPackets", 0) + f.get("Metric", {}).get("BAPackets", 0)
                  for f in inner)
    passed = counted == packets and len(inner) == flows and same
    text = (f"packets in non-outer flows {counted:,} (generated {packets:,}), non-outer flows "
            f"{len(inner):,} (--flows {flows:,}), VXLAN outer flows {len(result) - len(inner):,}, "
            f"--workers 1 output {'identical' if same else 'DIFFERENT'}")
    print(f"exactness: {text}: {'PASS' if passed else 'FAIL'}")
    return passed, text


def json_output(cmd: list[str], env: dict[str, str]) -> bytes:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(cmd, stdout=out, stderr=err, cwd=REPO, env=env, check=False)
        if proc.returncode != 0:
            err.seek(0)
            sys.stderr.write(err.read().decode(errors="replace")[-4000:])
            raise SkygraphFailed(f"{' '.join(cmd[-4:])} failed with status {proc.returncode}")
        out.seek(0)
        return out.read()


def options_phase(cmd: list[str], env: dict[str, str], pcap: Path,
                  repeat: int) -> list[tuple[str, float]]:
    """Each option set interleaved with the default command; return (option, median cost)."""
    load("options phase start")
    costs: list[tuple[str, float]] = []
    for option in OPTION_SETS:
        name = " ".join(option)
        rounds: list[tuple[float, float, float, float]] = []
        for rnd in range(1, repeat + 1):
            d_time, d_cpu, _ = run_skygraph([*cmd, str(pcap)], env)
            o_time, o_cpu, _ = run_skygraph([*cmd, str(pcap), *option], env)
            rounds.append((d_time, o_time, o_time / d_time - 1, o_cpu / d_cpu - 1))
            print(f"[{rnd}] default {d_time:6.2f} s (CPU {d_cpu:.2f} s)  {name}: {o_time:6.2f} s "
                  f"(CPU {o_cpu:.2f} s)  cost {100 * (o_time / d_time - 1):+.1f} % (wall), "
                  f"{100 * (o_cpu / d_cpu - 1):+.1f} % (CPU)", flush=True)
        cost = median([r[2] for r in rounds])
        print(f"{name}, median of {len(rounds)} rounds: default {median([r[0] for r in rounds]):.2f} s, "
              f"option {median([r[1] for r in rounds]):.2f} s, cost {100 * cost:+.1f} % (wall), "
              f"{100 * median([r[3] for r in rounds]):+.1f} % (CPU); target cost <= "
              f"{100 * MAX_COST:.0f} %: {'PASS' if cost <= MAX_COST else 'FAIL'}", flush=True)
        costs.append((name, cost))
    load("options phase end")
    return costs


def live_phase(env: dict[str, str], work: Path, live_flows: int) -> None:
    load("live-flows phase start")
    live = work / f"live-{live_flows}.pcap"
    if not live.exists():
        generate_apart(live, live_flows * 2, live_flows, seed=2)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", LIVE_FLOWS_SCRIPT, str(live)],
                         capture_output=True, text=True, cwd=REPO, env=env, check=False)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SkygraphFailed(f"the live-flows run failed with status {out.returncode}")
    nflows, rss = out.stdout.split()
    print(f"peak RSS with {int(nflows):,} live flows: {int(rss) / 1024:.0f} MB "
          f"({time.perf_counter() - t:.1f} s)")
    load("live-flows phase end")


def main() -> int:
    if sys.argv[1:2] == ["--generate"]:
        path, packets, flows, seed = sys.argv[2:6]
        generate(Path(path), int(packets), int(flows), int(seed))
        return 0
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--flows", type=int, default=10_000)
    ap.add_argument("--live-flows", type=int, default=500_000,
                    help="flows in the peak-RSS phase (0: skip it)")
    ap.add_argument("--repeat", type=int, default=5,
                    help="interleaved rounds per comparison (default 5)")
    ap.add_argument("--keep", type=Path, default=None, help="directory to keep the pcaps in")
    phases = ap.add_mutually_exclusive_group()
    phases.add_argument("--options-only", action="store_true", help="run only the options phase")
    phases.add_argument("--no-options", action="store_true", help="skip the options phase")
    args = ap.parse_args()
    if args.repeat < 1 or args.flows < 1 or args.packets < args.flows or args.live_flows < 0:
        ap.error("need --repeat >= 1, --packets >= --flows >= 1, --live-flows >= 0")
    work = args.keep or Path(tempfile.mkdtemp(prefix="skygraph-bench-"))
    try:
        return run_all(args, work)
    except CannotRun as e:
        print(f"cannot run: {e}", file=sys.stderr)
        return 2
    except SkygraphFailed as e:
        print(e, file=sys.stderr)
        return 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def run_all(args: argparse.Namespace, work: Path) -> int:
    load("run start")
    softflowd = "" if args.options_only else find_softflowd()
    work.mkdir(parents=True, exist_ok=True)
    pcap = work / f"bench-{args.packets}-{args.flows}.pcap"
    if not pcap.exists():
        t = time.perf_counter()
        generate_apart(pcap, args.packets, args.flows)
        print(f"generated {pcap} ({pcap.stat().st_size / 1e6:.0f} MB) "
              f"in {time.perf_counter() - t:.1f} s")
    packets = args.packets // args.flows * args.flows
    env = python_env(work)
    cmd = skygraph_command()
    small = work / "small-100.pcap"
    if not small.exists():
        generate_apart(small, 100, 10)
    timed([*cmd, str(small)], env)  # warm-up: writes the bytecode cache
    start_time, start_cpu, _ = run_skygraph([*cmd, str(small)], env)
    native = subprocess.run([sys.executable, "-c", WORKERS_SCRIPT, str(pcap)],
                            capture_output=True, text=True, cwd=REPO, env=env, check=False)
    print(f"skygraph batch path: {native.stdout.strip() or native.stderr.strip()}; "
          f"start-up (100-packet file): {start_time:.2f} s (CPU {start_cpu:.2f} s)")
    print(f"file: {pcap} ({packets:,} packets, {args.flows:,} flows); "
          f"{args.repeat} interleaved rounds per comparison")

    verdicts: list[tuple[str, bool]] = []  # (text with {} for PASS/FAIL, passed), in order
    exact_verdict: list[tuple[str, bool]] = []
    if not args.options_only:
        # untimed, first: it also brings the file into the page cache for both tools
        exact, _ = exactness(cmd, env, pcap, packets, args.flows)
        exact_verdict.append(("exact flows and packets (non-outer flows = --flows, their packets = "
                              "generated, --workers 1 identical): {}", exact))
        wall = speed_phase(cmd, env, softflowd, pcap, work, packets, args.repeat)
        verdicts.append((f"offline skygraph/softflowd >= {MIN_RATIO:.2f} (median of "
                         f"{args.repeat}, wall): {{}} ({wall:.2f})", wall >= MIN_RATIO))
    if not args.no_options:
        for name, cost in options_phase(cmd, env, pcap, args.repeat):
            verdicts.append((f"option {name} cost <= {100 * MAX_COST:.0f} % (median of "
                             f"{args.repeat}, wall): {{}} ({100 * cost:+.1f} %)", cost <= MAX_COST))
    verdicts += exact_verdict
    if not args.options_only and args.live_flows > 0:
        live_phase(env, work, args.live_flows)
    load("run end")
    print("verdicts:")
    for text, passed in verdicts:
        print("  " + text.format("PASS" if passed else "FAIL"))
    failed = sum(not passed for _, passed in verdicts)
    print(f"{len(verdicts) - failed} of {len(verdicts)} targets met" if failed
          else f"all {len(verdicts)} targets met")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
