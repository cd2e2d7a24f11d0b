"""Flow table benchmark: skygraph flows vs softflowd on the same pcap.

Generates a deterministic capture (default 1,000,000 packets, 10,000
flows: TCP sessions, UDP, ICMP echo, 10 % of the flows inside VXLAN), then
times `skygraph flows FILE` and `softflowd -r FILE` one after the other,
`--repeat` times (the machine may be shared: compare the ratios of the same
round), printing packets/s for both, their ratio and skygraph's peak RSS;
then measures peak RSS with 500,000 live flows in one table.

skygraph runs with its bytecode cached (PYTHONPYCACHEPREFIX in the work
directory, written by an untimed warm-up run), as an installed package
would; its start-up time (the same command on a 100-packet file) is printed
too.

    .venv/bin/python benchmarks/flowtable.py [--packets N] [--flows N] [--repeat N] [--keep DIR]
"""

from __future__ import annotations

import argparse
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


def main() -> int:
    if sys.argv[1:2] == ["--generate"]:
        path, packets, flows, seed = sys.argv[2:6]
        generate(Path(path), int(packets), int(flows), int(seed))
        return 0
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--flows", type=int, default=10_000)
    ap.add_argument("--live-flows", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=3, help="rounds of skygraph then softflowd")
    ap.add_argument("--keep", type=Path, default=None, help="directory to keep the pcaps in")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="skygraph-bench-"))
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
    start_time, start_cpu, _, rc = timed([*cmd, str(small)], env)
    if rc != 0:
        print(f"skygraph flows failed with status {rc}")
        return 1
    native = subprocess.run([sys.executable, "-c", "from skygraph.capture import fastpath; "
                             "print('C extension' if fastpath.native else 'numpy fallback')"],
                            capture_output=True, text=True, cwd=REPO, env=env, check=False)
    print(f"skygraph batch path: {native.stdout.strip() or native.stderr.strip()}; "
          f"start-up (100-packet file): {start_time:.2f} s (CPU {start_cpu:.2f} s)")

    softflowd = shutil.which("softflowd") or shutil.which("softflowd", path="/usr/sbin")
    if softflowd is None:
        print("softflowd: not installed (apt-get install softflowd); no comparison")
    ratios: list[tuple[float, float]] = []
    for rnd in range(1, args.repeat + 1):
        sg_time, sg_cpu, sg_rss, rc = timed([*cmd, str(pcap)], env)
        if rc != 0:
            print(f"skygraph flows failed with status {rc}")
            return 1
        sg_rate = packets / sg_time
        print(f"[{rnd}] skygraph  ({' '.join(Path(c).name for c in cmd[-2:])}): {sg_time:6.2f} s "
              f"(CPU {sg_cpu:.2f} s)  {sg_rate / 1e6:5.2f} M packets/s  "
              f"peak RSS {sg_rss / 1024:.0f} MB")
        if softflowd is None:
            continue
        # `-c none`: softflowd 1.1.0 may block in accept() on its control socket
        # after reading a file (it tests poll results it never polled for).
        sf_time, sf_cpu, sf_rss, rc = timed([
            softflowd, "-r", str(pcap), "-n", "127.0.0.1:9", "-d", "-c", "none",
            "-p", str(work / "softflowd.pid"), "-m", "65536"])
        if rc != 0:
            print(f"softflowd failed with status {rc}")
            return 1
        sf_rate = packets / sf_time
        print(f"[{rnd}] softflowd (softflowd -r):  {sf_time:6.2f} s (CPU {sf_cpu:.2f} s)  "
              f"{sf_rate / 1e6:5.2f} M packets/s  peak RSS {sf_rss / 1024:.0f} MB")
        ratios.append((sg_rate / sf_rate, sf_cpu / sg_cpu))
        print(f"[{rnd}] ratio skygraph/softflowd: {sg_rate / sf_rate:.2f} (wall), "
              f"{sf_cpu / sg_cpu:.2f} (CPU)")
    if ratios:
        print(f"ratio skygraph/softflowd, median of {len(ratios)}: "
              f"{median([r[0] for r in ratios]):.2f} (wall), "
              f"{median([r[1] for r in ratios]):.2f} (CPU)")

    live = work / f"live-{args.live_flows}.pcap"
    if not live.exists():
        generate_apart(live, args.live_flows * 2, args.live_flows, seed=2)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", LIVE_FLOWS_SCRIPT, str(live)],
                         capture_output=True, text=True, cwd=REPO, env=env, check=False)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        return 1
    nflows, rss = out.stdout.split()
    print(f"peak RSS with {int(nflows):,} live flows: {int(rss) / 1024:.0f} MB "
          f"({time.perf_counter() - t:.1f} s)")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
