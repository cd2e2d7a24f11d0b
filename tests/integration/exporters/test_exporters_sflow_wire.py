"""sFlow target against independent collectors: the frames of a real ping between
two namespaces, sampled by the target in one namespace and captured on the
wire in the other, are read by pmacct's sfacctd (per host pair and interface:
packets and bytes) and dissected by tshark (agent address, sequence numbers,
sampling rate, pool, raw headers, interface counters) without warnings."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether

from skygraph.exporters import Target, TargetNode, make_target
from skygraph.topology.netns import run_in
from tests.integration.capture.conftest import VethPair, sh
from tests.integration.exporters.conftest import (
    Daemon,
    Sniffer,
    frames_during,
    tshark_clean,
    tshark_fields,
    wait_until,
)

pytestmark = pytest.mark.root

PORT = 6343
HEADER = 128


def node_of(lab: VethPair) -> TargetNode:
    (link,) = json.loads(sh(f"ip -j link show dev {lab.a_if}", lab.a))
    return TargetNode(lab.ifindex(lab.a, lab.a_if), lab.a_if, lab.a_ip, str(link["address"]))


def open_target(lab: VethPair, node: TargetNode, rate: int, polling: int) -> Target:
    return run_in(lab.a, lambda: make_target(
        "sflow", f"{lab.b_ip}:{PORT}", node, header_size=HEADER, sampling_rate=rate,
        polling_interval=polling, session_id=1, link_type=1))


def sfacctd_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as f:
        return [row for row in csv.DictReader(f) if row.get("SRC_IP") != "SRC_IP"]


def test_sfacctd_and_tshark_read_the_samples_of_a_ping(lab: VethPair, workdir: Path) -> None:
    node = node_of(lab)
    frames = frames_during(lab.a, lab.a_if, lambda: lab.ping(5))
    pings = [f for f in frames if Ether(f[2]).haslayer(IP)]
    assert len(pings) == 10  # five requests out, five replies in
    mine = bytes.fromhex(node.mac.replace(":", ""))
    out = [f for f in frames if f[2][6:12] == mine]
    received = [f for f in frames if f[2][6:12] != mine]

    pcap = workdir / "sflow.pcap"
    # The collector's socket, so the datagrams draw no ICMP port unreachable.
    collector = lab.listen_udp(PORT)
    sniffer = Sniffer(lab.b, lab.b_if, f"udp port {PORT}", pcap)
    try:
        target = open_target(lab, node, rate=1, polling=1)
        try:
            target.packets(frames)
            # The timer's counter sample, once the frames are counted.
            wait_until(lambda: target.stats()["Counters"] >= 1, "a counter sample")
        finally:
            target.close()
        stats = target.stats()
        sniffer.wait_packets(stats["Datagrams"])
    finally:
        sniffer.stop()
        collector.close()

    # sfacctd reads the datagrams as they went over the wire: per host pair and
    # interface, every ICMP frame; bytes = the sampled frame lengths (wire length +
    # the 4-byte FCS a capture never sees).
    sums: dict[tuple[str, str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for _, wire, data in pings:
        ip = Ether(data)[IP]
        key = ((ip.src, ip.dst, "0", str(node.if_index)) if data[6:12] == mine
               else (ip.src, ip.dst, str(node.if_index), "0"))
        sums[key][0] += 1
        sums[key][1] += wire + 4
    printed = workdir / "sfacctd.csv"
    sfacctd = Daemon(["sfacctd", "-I", str(pcap), "-P", "print", "-O", "csv", "-o", str(printed),
                      "-c", "src_host,dst_host,proto,in_iface,out_iface"])
    sfacctd.proc.wait(60)  # it exits at the end of the file
    log = sfacctd.stop()
    got: dict[tuple[str, str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for row in sfacctd_rows(printed):
        if row["PROTOCOL"] == "icmp":
            key = (row["SRC_IP"], row["DST_IP"], row["IN_IFACE"], row["OUT_IFACE"])
            got[key][0] += int(row["PACKETS"])
            got[key][1] += int(row["BYTES"])
    assert dict(got) == dict(sums) and len(sums) == 2, log
    assert stats["Records"] == len(frames) and stats["Pool"] == len(frames)
    assert stats["Errors"] == 0 and stats["Drops"] == 0

    # tshark: every datagram and sample decodes, fields as sent.
    tshark_clean(pcap)
    datagrams = tshark_fields(pcap, ["sflow_245.version", "sflow_245.agent",
                                     "sflow_245.sub_agent_id", "sflow_245.sequence_number",
                                     "sflow_245.numsamples"])
    assert len(datagrams) == stats["Datagrams"]
    assert {(d[0], d[1], d[2]) for d in datagrams} == {("5", lab.a_ip, str(target.sub_agent_id))}
    assert [int(d[3]) for d in datagrams] == list(range(1, len(datagrams) + 1))
    samples = tshark_fields(pcap, ["sflow.flow_sample.sequence_number",
                                   "sflow.flow_sample.sampling_rate",
                                   "sflow.flow_sample.sample_pool",
                                   "sflow.flow_sample.index",
                                   "sflow_245.header.frame_length",
                                   "sflow_245.header.payload_stripped",
                                   "sflow_245.header.sampled_header_length"],
                            "-Y", "sflow.flow_sample.sequence_number")
    columns = [[int(v) for row in samples for v in row[i].split(",")] for i in range(7)]
    n = len(frames)
    assert columns[0] == list(range(1, n + 1))
    assert set(columns[1]) == {1} and columns[2] == list(range(1, n + 1))
    assert set(columns[3]) == {node.if_index}
    assert columns[4] == [w + 4 for _, w, _ in frames] and set(columns[5]) == {4}
    assert columns[6] == [min(len(d), HEADER) for _, _, d in frames]
    # The sampled headers are dissected down to the ICMP of the ping.
    protocols = tshark_fields(pcap, ["frame.protocols"], "-Y", "sflow.flow_sample.sequence_number")
    assert all(p[0].startswith("eth:ethertype:ip:udp:sflow") for p in protocols)
    assert sum(p[0].count(":icmp") for p in protocols) >= 1
    counters = tshark_fields(pcap, ["sflow_245.ifindex", "sflow_245.ifinoct",
                                    "sflow_245.ifoutoct", "sflow_245.ifinpkt",
                                    "sflow_245.ifoutpkt"], "-Y", "sflow_245.ifinoct")
    assert [int(c) for c in counters[0]] == [
        node.if_index, sum(w for _, w, _ in received), sum(w for _, w, _ in out),
        sum(1 for _, _, d in received if not d[0] & 1),
        sum(1 for _, _, d in out if not d[0] & 1)]
