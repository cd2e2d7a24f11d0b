"""Capture targets through a live agent (issue 9), checked by independent tools,
and the injector's modes. Two namespaces behind a bridge (a: 10.66.1.1,
b: 10.66.1.2, also fd66::1/2), a target namespace t (10.66.0.2) reached from
the agent's namespace; the agent runs in the root namespace and watches a
run directory holding the three namespaces.

- a's eth0 carries two captures with different targets: erspanv1 (BPF icmp)
  and netflowv5 (BPF `ip proto 1`); b's eth0 an sflow target (sampling 1).
- Injected pings: a raw GRE socket in t gets the ERSPAN frames (exactly the
  pings), nfcapd/nfdump the NetFlow records, tshark the sFlow samples.
- Injector modes on a local capture: random ICMP ids, TCP and UDP with ports,
  IPv6, counts and intervals.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RUN_ID, free_port
from tests.integration.e2e.lab import sh
from tests.integration.e2e.test_two_agents import gremlin, terminate, wait

pytestmark = [pytest.mark.root, pytest.mark.slow]

SRC = "G.V().Has('Type', 'netns', 'Name', 'a').Out('Name', 'eth0')"
DST = "G.V().Has('Type', 'netns', 'Name', 'b').Out('Name', 'eth0')"
RECEIVER = """
import json, socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
s.settimeout(0.5)
end = time.time() + float(sys.argv[1])
out = []
while time.time() < end:
    try:
        data = s.recv(65535)
    except socket.timeout:
        continue
    ihl = (data[0] & 0x0F) * 4
    flags, proto = struct.unpack("!HH", data[ihl:ihl + 4])
    gre = 4 + (4 if flags & 0x1000 else 0) + (4 if flags & 0x2000 else 0) + (4 if flags & 0x8000 else 0)
    erspan = data[ihl + gre:]
    if proto == 0x88BE:
        session, inner = struct.unpack("!I", erspan[:4])[0] & 0x3FF, erspan[8:]
    elif proto == 0x22EB:
        session = struct.unpack("!I", erspan[:4])[0] & 0x3FF
        inner = erspan[12 + (8 if erspan[11] & 1 else 0):]
    else:
        continue
    out.append([proto, session, inner.hex()])
print(json.dumps(out))
"""


@contextlib.contextmanager
def bridged(prefix: str, base: Path) -> Iterator[Path]:
    """The namespaces a, b, t (names `prefix` + letter) and the agent's run dir."""
    run_dir = base / "netns"

    def down() -> None:
        for n in "abt":
            sh("umount", str(run_dir / n), check=False)
            sh("ip", "netns", "del", prefix + n, check=False)
        sh("ip", "link", "del", prefix + "br", check=False)
        sh("ip", "link", "del", prefix + "t0", check=False)
    down()
    try:
        run_dir.mkdir(parents=True)
        sh("ip", "link", "add", prefix + "br", "type", "bridge")
        sh("ip", "link", "set", prefix + "br", "up")
        for i, n in enumerate("ab", 1):
            sh("ip", "netns", "add", prefix + n)
            sh("ip", "link", "add", f"{prefix}{n}h", "type", "veth", "peer", "name", f"{prefix}{n}v")
            sh("ip", "link", "set", f"{prefix}{n}v", "netns", prefix + n, "name", "eth0")
            sh("ip", "link", "set", f"{prefix}{n}h", "master", prefix + "br", "up")
            sh("ip", "addr", "add", f"10.66.1.{i}/24", "dev", "eth0", ns=prefix + n)
            sh("ip", "addr", "add", f"fd66::{i}/64", "dev", "eth0", "nodad", ns=prefix + n)
        sh("ip", "netns", "add", prefix + "t")
        sh("ip", "link", "add", prefix + "t0", "type", "veth", "peer", "name", prefix + "tv")
        sh("ip", "link", "set", prefix + "tv", "netns", prefix + "t", "name", "eth0")
        sh("ip", "addr", "add", "10.66.0.1/24", "dev", prefix + "t0")
        sh("ip", "link", "set", prefix + "t0", "up")
        sh("ip", "addr", "add", "10.66.0.2/24", "dev", "eth0", ns=prefix + "t")
        for n in "abt":
            sh("ip", "link", "set", "eth0", "up", ns=prefix + n)
            sh("ip", "link", "set", "lo", "up", ns=prefix + n)
            (run_dir / n).touch()
            sh("mount", "--bind", f"/var/run/netns/{prefix}{n}", str(run_dir / n))
        yield run_dir
    finally:
        down()


@contextlib.contextmanager
def agent(rpc: str, run_dir: Path, tmp_path: Path) -> Iterator[None]:
    cfg = tmp_path / "agent.yml"
    cfg.write_text(f"host_id: {RUN_ID}-tg\nflow:\n  update: 1\n  expire: 5\n"
                   "agent:\n  capture:\n    stats_update: 0.5\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGRAPH_")}
    with open(tmp_path / "agent.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "skygraph.cli", "-c", str(cfg), "agent",
                                 "--analyzer", rpc, "--netns-run-path", str(run_dir), "--no-ovs"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            yield
        finally:
            terminate(proc, 30)


def capture(a: Any, query: str, **fields: Any) -> str:
    r = a.request("POST", "/api/capture", {"GremlinQuery": query, **fields})
    assert r.status == 201, r.body
    ident: str = r.json()["UUID"]
    wait(f"capture {fields} active", lambda: any(
        c["ID"] == ident and c["State"] == "active"
        for n in gremlin(a, query) or [] for c in n["Metadata"].get("Captures") or []))
    return ident


def inject(a: Any, **fields: Any) -> dict[str, Any]:
    r = a.request("POST", "/api/injectpacket", {"Src": SRC, "Dst": DST, **fields})
    assert r.status == 201, r.body
    out: dict[str, Any] = r.json()
    return out


def test_targets_through_a_live_agent(analyzer_at, tmp_path):
    prefix = f"{RUN_ID}g"
    with bridged(prefix, tmp_path / "lab") as run_dir, analyzer_at() as a, \
            agent(a.rpc, run_dir, tmp_path):
        wait("the three namespaces' eth0", lambda: len(gremlin(
            a, "G.V().Has('Type', 'netns').Out('Name', 'eth0')") or []) == 3)
        nf_port, sf_port = free_port(), free_port()
        capture(a, SRC, Type="afpacket", BPFFilter="icmp", Target="10.66.0.2:0",
                TargetType="erspanv1",
                SessionID=3)
        capture(a, SRC, Type="afpacket", BPFFilter="ip proto 1", Target=f"10.66.0.2:{nf_port}",
                TargetType="netflowv5")
        capture(a, DST, Target=f"10.66.0.2:{sf_port}", TargetType="sflow", SamplingRate=1,
                PollingInterval=1)
        nf_dir = tmp_path / "nfcapd"
        nf_dir.mkdir()
        nfcapd = subprocess.Popen(["ip", "netns", "exec", prefix + "t", "nfcapd", "-w",
                                   str(nf_dir), "-b", "10.66.0.2", "-p", str(nf_port), "-t", "60"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sflow_pcap = tmp_path / "sflow.pcap"
        dump = subprocess.Popen(["ip", "netns", "exec", prefix + "t", "tcpdump", "-n", "-i", "eth0",
                                 "-w", str(sflow_pcap), "udp", "port", str(sf_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        receiver = subprocess.Popen(["ip", "netns", "exec", prefix + "t", sys.executable, "-c",
                                     RECEIVER, "8"], stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(1)
            injection = inject(a, Type="icmp4", Count=4, Interval=200)
            frames = json.loads(receiver.communicate(timeout=60)[0])
            time.sleep(3)      # the NetFlow export after an update tick, sFlow samples
        finally:
            for proc in (nfcapd, dump):
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
            if receiver.poll() is None:
                receiver.kill()

        # ERSPAN Type II, session 3: exactly the 4 requests and 4 replies of the injection
        assert len(frames) == 8, frames
        assert {(proto, session) for proto, session, _ in frames} == {(0x88BE, 3)}
        ids = set()
        for _, _, inner in frames:
            raw = bytes.fromhex(inner)
            assert raw[12:14] == b"\x08\x00" and raw[23] == 1         # IPv4, ICMP
            ids.add(int.from_bytes(raw[38:40], "big"))
        assert ids == {injection["ICMPID"]}

        # NetFlow v5 collected by nfcapd, read by nfdump: one record per direction
        out = subprocess.run(["nfdump", "-R", str(nf_dir), "-q", "-o",
                              "fmt:%sa|%da|%pr|%pkt|%byt"], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        rows = [tuple(f.strip() for f in line.split("|")) for line in out.stdout.splitlines()
                if line.strip()]      # per-export deltas: several records may add up
        totals: dict[tuple[str, str], list[int]] = {}
        for sa, da, pr, pkt, byt in rows:
            assert pr == "ICMP", rows
            t = totals.setdefault((sa, da), [0, 0])
            t[0] += int(pkt)
            t[1] += int(byt)
        assert totals == {("10.66.1.1", "10.66.1.2"): [4, 4 * 28],
                          ("10.66.1.2", "10.66.1.1"): [4, 4 * 28]}, out.stdout

        # sFlow read by tshark: flow samples (sampling 1) carrying the pings seen on b's eth0
        shark = subprocess.run(["tshark", "-r", str(sflow_pcap), "-d", f"udp.port=={sf_port},sflow",
                                "-T", "fields", "-e", "sflow_245.header_protocol", "-e",
                                "icmp.ident"], capture_output=True, text=True, timeout=60)
        assert shark.returncode == 0, shark.stderr
        samples, idents = 0, set()
        for line in shark.stdout.splitlines():
            protocols, _, ident = line.partition("\t")
            samples += len([p for p in protocols.split(",") if p == "1"])   # Ethernet headers
            idents.update(i for i in ident.split(",") if i)
        assert samples >= 8 and idents == {str(injection["ICMPID"])}, shark.stdout
        malformed = subprocess.run(["tshark", "-r", str(sflow_pcap), "-d",
                                    f"udp.port=={sf_port},sflow", "-Y", "_ws.malformed"],
                                   capture_output=True, text=True, timeout=60)
        assert malformed.stdout.strip() == ""


def test_injector_modes(analyzer_at, tmp_path):
    prefix = f"{RUN_ID}m"
    with bridged(prefix, tmp_path / "lab") as run_dir, analyzer_at() as a, \
            agent(a.rpc, run_dir, tmp_path):
        wait("a's eth0", lambda: gremlin(a, SRC))
        capture(a, SRC)

        def flows(query: str) -> list[dict[str, Any]]:
            return gremlin(a, f"{SRC}.Flows(){query}") or []

        # random: a new ICMP id per packet after the first (the announced one)
        rnd = inject(a, Type="icmp4", Count=4, Mode="random")
        found = wait("4 ICMP flows", lambda: len(f := [x for x in flows(
            ".Has('Application', 'ICMPv4')") if x["Metric"]["ABPackets"] == 1]) == 4 and f)
        assert rnd["ICMPID"] in {f["ICMP"]["ID"] for f in found}
        assert len({f["ICMP"]["ID"] for f in found}) == 4
        # TCP with ports: 3 SYNs, answered by RSTs (nothing listens)
        tcp = inject(a, Type="tcp4", DstPort=8080, SrcPort=40001, Count=3)
        [syn] = wait("the TCP flow", lambda: [x for x in flows(".Has('Transport.B', 8080)")
                                             if x["Metric"]["ABPackets"] == 3])
        assert syn["Transport"]["A"] == 40001 and syn["TrackingID"] == tcp["TrackingID"]
        assert syn["Metric"]["BAPackets"] >= 1
        # UDP over IPv6, with an interval between the packets
        udp = inject(a, Type="udp6", DstPort=5353, Count=3, Interval=400,
                     DstIP="fd66::2", DstMAC=gremlin(a, DST)[0]["Metadata"]["MAC"])
        [u6] = wait("the UDP/IPv6 flow", lambda: [x for x in flows(
            ".Has('Network.Protocol', 'IPV6', 'Transport.B', 5353)")
            if x["Metric"]["ABPackets"] == 3])
        assert (u6["Network"]["A"], u6["Network"]["B"]) == ("fd66::1", "fd66::2")
        assert u6["TrackingID"] == udp["TrackingID"]
        assert u6["Metric"]["Last"] - u6["Metric"]["Start"] >= 700   # 2 intervals of 400 ms
