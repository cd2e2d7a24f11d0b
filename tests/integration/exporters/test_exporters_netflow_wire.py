"""NetFlow v5 target against independent collectors: real packets (Skydive's
traces, and a conversation crafted with scapy) go through the flow table, its
update/expire/flush output through the target in one namespace, and nfcapd in
another collects it; nfdump must print, per direction, the addresses, ports,
protocol, packets, IP bytes and TCP flags counted here straight from the
packets, with no sequence error.  tshark dissects every datagram cleanly."""

from __future__ import annotations

import datetime
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import PcapReader, wrpcap

from skygraph.capture import pcapfile
from skygraph.capture.options import CaptureOptions, TableSettings
from skygraph.capture.table import FlowTable
from skygraph.exporters import TargetNode, make_target, parse_endpoint
from skygraph.exporters.netflow import NetFlowV5Target
from skygraph.topology.flow import Flow
from skygraph.topology.netns import run_in
from tests.conftest import PCAPS
from tests.integration.capture.conftest import VethPair
from tests.integration.exporters.conftest import (
    Daemon,
    Sniffer,
    tshark_clean,
    tshark_fields,
    udp_queue_empty,
    wait_until,
)

pytestmark = pytest.mark.root

PORT = 9995
Key = tuple[str, str, int, int, int]  # src, dst, sport, dport, IP protocol
TCP_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40,
            "C": 0x80}


class Expected:
    """Per direction totals computed from the packets themselves (scapy): every IPv4
    header of a packet (outer and GRE/VXLAN-tunnelled) counts its IP length."""

    def __init__(self) -> None:
        self.packets: dict[Key, int] = defaultdict(int)
        self.bytes: dict[Key, int] = defaultdict(int)
        self.flags: dict[Key, int] = defaultdict(int)
        self.first: dict[Key, int] = {}
        self.last: dict[Key, int] = {}

    def add(self, p: Packet) -> None:
        ms = int(p.time * 1000)
        layer = p.getlayer(IP)
        while layer is not None:
            sport = dport = 0
            if isinstance(layer.payload, (TCP, UDP)):
                sport, dport = layer.payload.sport, layer.payload.dport
            key = (layer.src, layer.dst, sport, dport, layer.proto)
            self.packets[key] += 1
            self.bytes[key] += layer.len
            if isinstance(layer.payload, TCP):
                self.flags[key] |= int(layer.payload.flags) & 0xFF
            self.first.setdefault(key, ms)
            self.last[key] = ms
            layer = layer.payload.getlayer(IP)


def expected_from(path: Path) -> Expected:
    exp = Expected()
    with PcapReader(str(path)) as reader:
        for p in reader:
            exp.add(p)
    return exp


def run_table(path: Path, send: Callable[[list[Flow], int], None],
              settings: TableSettings) -> int:
    """Feed a trace to a flow table as a capture does, the table ticked on packet time;
    every tick's output (and the final flush) to `send`.  Returns how many ticks sent."""
    table = FlowTable(CaptureOptions(), settings)
    exports = 0
    now = 0
    for ts, data, wire in pcapfile.read(path)[1]:
        now = ts // 1_000_000
        out = table.tick(now)
        if out:
            send(out, now)
            exports += 1
        table.feed(data, ts, wire)
    send(table.flush(), now + 1)
    return exports


def collect(lab: VethPair, workdir: Path,
            export: Callable[[str], int]) -> tuple[dict[Key, list[int]], str, Path]:
    """nfcapd in namespace b while `export(collector address)` runs in namespace a and
    returns how many datagrams it sent; returns nfdump's records summed per
    direction, nfcapd's log and a pcap of the datagrams."""
    flows_dir = workdir / "nfcapd"
    flows_dir.mkdir()
    pcap = workdir / "netflow.pcap"
    sniffer = Sniffer(lab.b, lab.b_if, f"udp port {PORT}", pcap)
    nfcapd = Daemon(["nfcapd", "-w", str(flows_dir), "-b", lab.b_ip, "-p", str(PORT), "-t", "60",
                     "-P", str(workdir / "nfcapd.pid")], lab.b)
    try:
        nfcapd.wait_for("Startup")
        datagrams = export(f"{lab.b_ip}:{PORT}")
        wait_until(lambda: udp_queue_empty(lab.b, PORT), "nfcapd to read every datagram")
        sniffer.wait_packets(datagrams)
    finally:
        log = nfcapd.stop()  # SIGTERM: nfcapd writes its file and exits
        sniffer.stop()
    out = subprocess.run(["nfdump", "-R", str(flows_dir), "-q", "-N", "-o",
                          "fmt:%sa|%da|%sp|%dp|%pr|%pkt|%byt|%flg|%in|%out|%ts|%te"],
                         capture_output=True, text=True, check=True,
                         env={"TZ": "UTC", "PATH": "/usr/bin:/bin"}).stdout
    totals: dict[Key, list[int]] = {}
    for line in out.splitlines():
        f = [x.strip() for x in line.split("|")]
        if len(f) < 12:
            continue
        key = (f[0], f[1], int(f[2]), port(f[3]), proto_number(f[4]))
        t = totals.setdefault(key, [0, 0, 0, int(f[8]), int(f[9]), 1 << 62, 0])
        t[0] += int(f[5])
        t[1] += int(f[6])
        t[2] |= flags_of(f[7])
        t[5] = min(t[5], ms_of(f[10]))
        t[6] = max(t[6], ms_of(f[11]))
    return totals, log, pcap


def port(text: str) -> int:
    # ICMP: nfdump shows the destination port as type.code.
    t, _, c = text.partition(".")
    return int(t) * 256 + int(c) if c else int(t)


def proto_number(name: str) -> int:
    return {"TCP": 6, "UDP": 17, "ICMP": 1, "GRE": 47}.get(name, 0) or int(name)


def flags_of(text: str) -> int:
    # nfdump prints the flags as 8 positions: C E U A P R S F, '.' when clear.
    return sum(1 << (7 - i) for i, c in enumerate(text.ljust(8, ".")[:8]) if c != ".")


def ms_of(text: str) -> int:
    t = datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=datetime.UTC)
    return int(t.timestamp() * 1000 + 0.5)


def check(totals: dict[Key, list[int]], exp: Expected, if_index: int) -> None:
    assert set(totals) == set(exp.packets), (sorted(totals), sorted(exp.packets))
    for key, (pkts, octets, flags, i, o, first, last) in totals.items():
        assert (pkts, octets) == (exp.packets[key], exp.bytes[key]), key
        assert flags == exp.flags[key], key
        assert (i, o) == (if_index, if_index)
        # A flow knows when it started and last saw a packet, not per direction: both
        # records of a conversation carry the conversation's times.
        src, dst, sport, dport, proto = key
        both = [k for k in (key, (dst, src, dport, sport, proto)) if k in exp.first]
        assert (first, last) == (min(exp.first[k] for k in both),
                                 max(exp.last[k] for k in both)), key


TRACES = ["eth-ip4-arp-dns-req-http-google.pcap", "simple-tcpv4.pcap", "icmpv4-symetric.pcap",
          "icmp-vlan.pcap", "layer-key-mode.pcap", "gre-gre-icmpv4.pcap", "dns.pcap",
          "icmpv4-truncated.pcap"]


@pytest.mark.parametrize("trace", TRACES)
def test_nfdump_prints_the_flows_of_a_trace(lab: VethPair, workdir: Path, trace: str) -> None:
    path = PCAPS / trace
    start = next(iter(pcapfile.read(path)[1]))[0] // 1_000_000
    node = TargetNode(5, "eth0", "", "")
    sent: list[NetFlowV5Target] = []

    def export(address: str) -> int:
        # sysUptime counts from the trace's first packet, as if the exporter started then.
        target = run_in(lab.a, lambda: NetFlowV5Target(
            parse_endpoint(address, "netflowv5", default_port=2055), node, clock=lambda: start))
        sent.append(target)
        try:
            run_table(path, target.flows, TableSettings(update=1, expire=600))
        finally:
            target.close()
        return target.stats()["Datagrams"]

    totals, log, pcap = collect(lab, workdir, export)
    check(totals, expected_from(path), node.if_index)
    stats = sent[0].stats()
    cflow = ("-d", f"udp.port=={PORT},cflow")
    tshark_clean(pcap, *cflow)
    counts = tshark_fields(pcap, ["cflow.version", "cflow.count", "cflow.sequence"], *cflow)
    assert [r[0] for r in counts] == ["5"] * stats["Datagrams"]
    assert sum(int(r[1]) for r in counts) == stats["Records"] and stats["Errors"] == 0
    sequence = [int(r[2]) for r in counts]
    assert sequence == [sum(int(r[1]) for r in counts[:i]) for i in range(len(counts))]
    assert "Sequence Errors: 0" in log, log


def test_ipv6_flows_are_skipped(lab: VethPair, workdir: Path) -> None:
    path = PCAPS / "simple-tcpv6.pcap"
    node = TargetNode(5, "eth0", "", "")
    targets: list[NetFlowV5Target] = []

    def export(address: str) -> int:
        t = run_in(lab.a, lambda: NetFlowV5Target(
            parse_endpoint(address, "netflowv5", default_port=2055), node))
        targets.append(t)
        run_table(path, t.flows, TableSettings(update=1, expire=600))
        t.close()
        return t.stats()["Datagrams"]

    totals, _, _ = collect(lab, workdir, export)
    assert totals == {}
    assert targets[0].stats()["Skipped"] >= 1 and targets[0].stats()["Datagrams"] == 0


def conversation(t0: float) -> list[Packet]:
    """Over six seconds: a TCP exchange with data both ways, 40 DNS queries each from
    its own port (more than one datagram of records), pings."""
    a, b = "02:00:00:00:00:0a", "02:00:00:00:00:0b"

    def there(p: Packet) -> Packet:
        return Ether(src=a, dst=b) / IP(src="10.1.0.1", dst="10.1.0.2") / p

    def back(p: Packet) -> Packet:
        return Ether(src=b, dst=a) / IP(src="10.1.0.2", dst="10.1.0.1") / p

    out: list[Packet] = [there(TCP(sport=43000, dport=80, flags="S")),
                         back(TCP(sport=80, dport=43000, flags="SA")),
                         there(TCP(sport=43000, dport=80, flags="A"))]
    for i in range(12):
        out.append(there(TCP(sport=43000, dport=80, flags="PA") / (b"q" * (10 + i))))
        out.append(back(TCP(sport=80, dport=43000, flags="PA") / (b"r" * (500 + i))))
    for i in range(40):
        out.append(there(UDP(sport=20000 + i, dport=53) / (b"d" * i)))
    for i in range(6):
        out.append(there(ICMP(type=8, id=77, seq=i) / (b"i" * 56)))
        out.append(back(ICMP(type=0, id=77, seq=i) / (b"i" * 56)))
    out += [there(TCP(sport=43000, dport=80, flags="FA")),
            back(TCP(sport=80, dport=43000, flags="FA")),
            there(TCP(sport=43000, dport=80, flags="A"))]
    for i, p in enumerate(out):
        p.time = t0 + i * 6.0 / len(out)
    return out


def test_live_target_exports_deltas_on_every_update(lab: VethPair, workdir: Path) -> None:
    """make_target's NetFlow target with today's clock: the table's update ticks every
    second export what each flow carried since the previous one; nfcapd sums them."""
    path = workdir / "conversation.pcap"
    node = TargetNode(11, "veth0", "", "")
    ticks: list[int] = []

    def export(address: str) -> int:
        target = run_in(lab.a, lambda: make_target(
            "netflowv5", address, node, header_size=0, sampling_rate=0, polling_interval=0,
            session_id=1, link_type=1))
        # Packets stamped after the exporter started, as a live capture's are.
        wrpcap(str(path), conversation(time.time() + 0.1))
        try:
            ticks.append(run_table(path, target.flows, TableSettings(update=1, expire=600)))
        finally:
            target.close()
        return target.stats()["Datagrams"]

    totals, log, _ = collect(lab, workdir, export)
    check(totals, expected_from(path), node.if_index)
    assert ticks[0] >= 4  # flows were exported on several updates, as deltas
    assert "Sequence Errors: 0" in log
    tcp = totals[("10.1.0.1", "10.1.0.2", 43000, 80, 6)]
    assert tcp[2] == 0x02 | 0x10 | 0x08 | 0x01  # SYN ACK PSH FIN from A
