"""The `sflow` capture type: skygraph's sFlow v5 decoder checked field by field against
tshark, and the collector in a namespace fed with datagrams from a peer namespace
(flows with exact counters, tunnel splitting, BPF, `SFlow` counters metadata)."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.utils import wrpcap

from skygraph.capture.sflow_decode import Datagram, decode
from skygraph.capture.sources import source_for
from skygraph.capture.sources.base import CaptureError
from skygraph.capture.sources.sflow import SFlowSource
from skygraph.topology.flow import Flow, ICMPType
from skygraph.topology.netns import run_in
from tests.integration.capture import sflow_builder as b
from tests.integration.capture.conftest import Collector, VethPair, context, running

MAC_A, MAC_B = "02:00:00:00:0a:01", "02:00:00:00:0b:02"


def ping(request: bool, seq: int, size: int = 56) -> bytes:
    ip = IP(src="10.1.0.1", dst="10.1.0.2") if request else IP(src="10.1.0.2", dst="10.1.0.1")
    eth = Ether(src=MAC_A, dst=MAC_B) if request else Ether(src=MAC_B, dst=MAC_A)
    return bytes(eth / ip / ICMP(type=8 if request else 0, id=99, seq=seq) / (b"p" * size))


# ---- decoder against tshark ------------------------------------------------------------------
def random_frame(rng: random.Random) -> bytes:
    src, dst = f"10.9.{rng.randrange(256)}.{rng.randrange(1, 255)}", f"10.8.0.{rng.randrange(1, 255)}"
    l4 = rng.choice([ICMP(id=rng.randrange(65536)), UDP(sport=rng.randrange(1, 65536), dport=53),
                     TCP(sport=rng.randrange(1, 65536), dport=80, flags="S")])
    return bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src=src, dst=dst) / l4
                 / (b"z" * rng.randrange(0, 300)))


def random_datagram(rng: random.Random, seq: int) -> bytes:
    samples = []
    for i in range(rng.randrange(1, 6)):
        sample_seq = seq * 100 + i  # unique per datagram: tshark names subtrees by it
        if rng.random() < 0.6:
            frame = random_frame(rng)
            cut = rng.randrange(14, len(frame) + 1)
            records = [b.raw_header(frame[:cut], len(frame), stripped=rng.choice([0, 4]))]
            if rng.random() < 0.3:
                records.append(b.switch_record(rng.randrange(4096), rng.randrange(4096)))
            samples.append(b.flow_sample(
                records, seq=sample_seq, index=rng.randrange(1, 1 << 24), rate=rng.randrange(1, 5000),
                pool=rng.randrange(1 << 32), drops=rng.randrange(1000), input=rng.randrange(1 << 30),
                output=rng.randrange(1 << 30), expanded=rng.random() < 0.5))
        else:
            big = (1 << 64) - 1
            records = [b.generic_counters(rng.randrange(1, 1 << 24), rng.randrange(big),
                                          *[rng.randrange(1 << 32) for _ in range(6)],
                                          rng.randrange(big),
                                          *[rng.randrange(1 << 32) for _ in range(5)])]
            if rng.random() < 0.5:
                records.append(b.ethernet_counters(*[rng.randrange(1 << 32) for _ in range(13)]))
            if rng.random() < 0.3:
                records.append(b.vlan_counters(rng.randrange(4096), rng.randrange(big),
                                               *[rng.randrange(1 << 32) for _ in range(4)]))
            samples.append(b.counter_sample(records, seq=sample_seq,
                                            index=rng.randrange(1, 1 << 24),
                                            expanded=rng.random() < 0.5))
    return b.datagram(samples, agent=f"192.0.2.{rng.randrange(1, 255)}", seq=seq,
                      uptime=rng.randrange(1 << 32), sub_agent=rng.randrange(10))


def tshark_samples(path: Path) -> list[list[tuple[str, Any]]]:
    """Per frame, the sflow layer as (key, value) pairs (duplicate keys kept)."""
    out = subprocess.run(["tshark", "-r", str(path), "-T", "json", "-d", "udp.port==6343,sflow"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    frames = json.loads(out, object_pairs_hook=lambda pairs: pairs)
    result = []
    for frame in frames:
        layers = dict(dict(frame)["_source"])["layers"]
        result.append(dict(layers)["sflow"])
    return result


def _get(pairs: list[tuple[str, Any]], key: str) -> Any:
    values = [v for k, v in pairs if k == key]
    return values[0] if values else None


def _subtrees(pairs: list[tuple[str, Any]]) -> list[tuple[str, list[tuple[str, Any]]]]:
    return [(k, v) for k, v in pairs if isinstance(v, list) and not k.endswith("_tree")]


def ours(d: Datagram) -> dict[str, Any]:
    return {
        "head": [d.version, d.agent, d.sub_agent_id, d.sequence_number, d.uptime, d.num_samples],
        "flows": [[f.sequence_number, f.source_id_index, f.sampling_rate, f.sample_pool, f.drops,
                   f.input, f.output, [[h.protocol, h.frame_length, h.stripped, h.header.hex()]
                                       for h in f.headers]] for f in d.flow_samples],
        "counters": [[c.sequence_number, c.source_id_index, [dict(r.values) for r in c.records]]
                     for c in d.counter_samples]}


GENERIC = {"sflow_245.ifindex": "ifIndex", "sflow_245.ifinoct": "IfInOctets",
           "sflow_245.ifinpkt": "IfInUcastPkts", "sflow_245.ifinmcast": "IfInMulticastPkts",
           "sflow_245.ifinbcast": "IfInBroadcastPkts", "sflow_245.ifindisc": "IfInDiscards",
           "sflow_245.ifinerr": "IfInErrors", "sflow_245.ifinunk": "IfInUnknownProtos",
           "sflow_245.ifoutoct": "IfOutOctets", "sflow_245.ifoutpkt": "IfOutUcastPkts",
           "sflow_245.ifoutmcast": "IfOutMulticastPkts",
           "sflow_245.ifoutbcast": "IfOutBroadcastPkts", "sflow_245.ifoutdisc": "IfOutDiscards",
           "sflow_245.ifouterr": "IfOutErrors", "sflow_245.iftype": "ifType",
           "sflow_245.ifspeed": "ifSpeed", "sflow_245.ifdirection": "ifDirection",
           "sflow_245.ifpromisc": "ifPromiscuousMode"}
ETHERNET = {f"sflow_245.dot3Stats{n}": f"Eth{n}" for n in (
    "AlignmentErrors", "FCSErrors", "SingleCollisionFrames", "MultipleCollisionFrames",
    "SQETestErrors", "DeferredTransmissions", "LateCollisions", "ExcessiveCollisions",
    "InternalMacTransmitErrors", "CarrierSenseErrors", "FrameTooLongs",
    "InternalMacReceiveErrors", "SymbolErrors")}
VLAN = {"sflow_245.vlan_id": "vlan_id", "sflow_245.octets": "VlanOctets",
        "sflow_245.ucastPkts": "VlanUcastPkts", "sflow_245.multicastPkts": "VlanMulticastPkts",
        "sflow_245.broadcastPkts": "VlanBroadcastPkts", "sflow_245.discards": "VlanDiscards"}


def theirs(layer: list[tuple[str, Any]]) -> dict[str, Any]:
    g = lambda pairs, key: _get(pairs, key)  # noqa: E731
    head = [int(g(layer, "sflow_245.version")), g(layer, "sflow_245.agent"),
            int(g(layer, "sflow_245.sub_agent_id")), int(g(layer, "sflow_245.sequence_number")),
            int(g(layer, "sflow_245.sysuptime")), int(g(layer, "sflow_245.numsamples"))]
    flows, counters = [], []
    for name, s in _subtrees(layer):
        if "low sample" in name:
            expanded = name.startswith("Expanded")
            index = g(s, "sflow.flow_sample.source_id_index" if expanded else "sflow.flow_sample.index")
            inp = g(s, "sflow.flow_sample.input_interface_value" if expanded
                    else "sflow.flow_sample.input_interface")
            out_tree = s if expanded else g(s, "sflow.flow_sample.output_interface_tree")
            # tshark shows the header with its XDR padding: cut to the announced length.
            headers = [[int(g(r, "sflow_245.header_protocol")),
                        int(g(r, "sflow_245.header.frame_length")),
                        int(g(r, "sflow_245.header.payload_stripped")),
                        g(r, "sflow_245.header").replace(":", "")[
                            :2 * int(g(r, "sflow_245.header.sampled_header_length"))]]
                       for rname, r in _subtrees(s) if rname == "Raw packet header"]
            flows.append([int(g(s, "sflow.flow_sample.sequence_number")), int(index),
                          int(g(s, "sflow.flow_sample.sampling_rate")),
                          int(g(s, "sflow.flow_sample.sample_pool")),
                          int(g(s, "sflow.flow_sample.dropped_packets")), int(inp),
                          int(g(out_tree, "sflow.flow_sample.output_interface_value")), headers])
        else:
            records = []
            for rname, r in _subtrees(s):
                table = {"Generic interface counters": GENERIC,
                         "Ethernet interface counters": ETHERNET, "VLAN counters": VLAN}[rname]
                records.append({ours_name: int(g(r, key)) for key, ours_name in table.items()})
            counters.append([int(g(s, "sflow.counters_sample.sequence_number")),
                             int(g(s, "sflow.counters_sample.source_id_index")), records])
    return {"head": head, "flows": flows, "counters": counters}


def test_decoder_agrees_with_tshark(tmp_path: Path) -> None:
    rng = random.Random(20240601)
    datagrams = [random_datagram(rng, seq) for seq in range(1, 41)]
    pcap = tmp_path / "sflow.pcap"
    udp = Ether(src=MAC_A, dst=MAC_B) / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=40000, dport=6343)
    wrpcap(str(pcap), [udp / d for d in datagrams])
    layers = tshark_samples(pcap)
    assert len(layers) == len(datagrams)
    checked = 0
    for data, layer in zip(datagrams, layers, strict=True):
        d = decode(data)
        assert d.error == ""
        mine = ours(d)
        # Skydive's SFMetric names vs tshark's; ours also keep ifStatus, which tshark splits.
        for sample in mine["counters"]:
            for record in sample[2]:
                record.pop("ifStatus", None)
        assert mine == theirs(layer)
        checked += len(d.flow_samples) + len(d.counter_samples)
    assert checked > 100


# ---- the collector ------------------------------------------------------------------------
class MetadataLog:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, key: str, value: Any) -> None:
        with self._lock:
            self.calls.append((key, value))

    def last(self) -> tuple[str, Any] | None:
        with self._lock:
            return self.calls[-1] if self.calls else None


def sender(pair: VethPair) -> socket.socket:
    return run_in(pair.a, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))


def collector_meta(pair: VethPair) -> dict[str, Any]:
    return pair.metadata(ns=pair.b, name=pair.b_if, IPV4=[f"{pair.b_ip}/24"])


def echo_flows(latest: dict[str, Flow]) -> list[Flow]:
    return [f for f in latest.values() if f.icmp is not None and f.icmp.type == ICMPType.ECHO]


@pytest.mark.root
def test_collector_flows_counters_and_metadata(pair: VethPair) -> None:
    log = MetadataLog()
    spec = {"Type": "sflow", "HeaderSize": 128, "BPFFilter": "icmp or udp port 4789"}
    with running(spec, collector_meta(pair), pair.b, set_metadata=log) as (source, sink), \
            sender(pair) as out:
        assert isinstance(source, SFlowSource)
        assert source.metadata() == {"SFlowSocket": f"{pair.b_ip}:6343"}  # the default port
        dest = (pair.b_ip, 6343)
        # 3 echo requests and 3 replies (98 bytes on the wire, 64 sampled), in 2 datagrams,
        # plus a DNS packet the BPF keeps out.
        dns = bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src="10.1.0.1", dst="10.1.0.2")
                    / UDP(sport=5000, dport=53) / (b"q" * 30))
        first = [b.raw_header(ping(True, i)[:64], 98) for i in range(3)] + [b.raw_header(dns)]
        second = [b.raw_header(ping(False, i)[:64], 98) for i in range(3)]
        out.sendto(b.datagram([b.flow_sample([r], seq=i) for i, r in enumerate(first)]), dest)
        out.sendto(b.datagram([b.flow_sample(second, seq=9, expanded=True),
                               b.counter_sample([b.generic_counters(7, in_octets=5000,
                                                                    in_ucast=50)])]), dest)
        latest = sink.wait(lambda fl: sum(f.metric.ab_packets + f.metric.ba_packets
                                          for f in echo_flows(fl)) == 6)
        (flow,) = echo_flows(latest)
        assert (flow.metric.ab_packets, flow.metric.ba_packets) == (3, 3)
        assert flow.metric.ab_bytes == flow.metric.ba_bytes == 3 * 98  # FrameLength - stripped
        assert (flow.network.a, flow.network.b) == ("10.1.0.1", "10.1.0.2")  # type: ignore[union-attr]
        assert flow.link.a == MAC_A and flow.node_tid == f"tid-{pair.b_if}"  # type: ignore[union-attr]
        assert flow.capture_id == "cap-1"
        assert all(f.application != "DNS" for f in sink.flows()), "the BPF let DNS in"
        deadline = time.monotonic() + 5
        while log.last() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        key, value = log.last() or ("", None)
        assert key == "SFlow"
        assert value["IfMetrics"] == {"7": {"IfInOctets": 5000, "IfInUcastPkts": 50}}
        assert value["Metric"]["IfInOctets"] == 5000 and value["Metric"]["Last"] > 0
        assert value["LastUpdateMetric"]["IfInUcastPkts"] == 50
        # A VXLAN-encapsulated sample: the inner flow is split off with its ParentUUID.
        inner = ping(True, 50)
        vx = bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src="172.16.0.1", dst="172.16.0.2")
                   / UDP(sport=33333, dport=4789) / VXLAN(vni=42) / Ether(inner))
        garbage = b.datagram([b.flow_sample([b.raw_header(ping(True, 1))])])[:-9]
        out.sendto(garbage, dest)
        out.sendto(b.datagram([b.flow_sample([b.raw_header(vx)])]), dest)
        latest = sink.wait(lambda fl: any(f.parent_uuid for f in fl.values()))
        (child,) = [f for f in latest.values() if f.parent_uuid]
        parent = latest[child.parent_uuid]
        assert parent.application == "VXLAN" and child.network.a == "10.1.0.1"  # type: ignore[union-attr]
        assert source.decode_errors == 1 and "truncated" not in source.last_error
        assert source.last_error and source.running
        stats = source.stats()
        assert stats.packets_received == 8  # sampled headers: 7 + the VXLAN one
        source.stop()
    assert log.last() == ("SFlow", None)  # removed with the collector


@pytest.mark.root
def test_collector_refusals(pair: VethPair) -> None:
    with pytest.raises(CaptureError, match="no IPV4 address"):
        source_for(context({"Type": "sflow"}, pair.metadata(ns=pair.b, name=pair.b_if), pair.b,
                           Collector()))
    spec = {"Type": "sflow", "Port": 16343}
    with running(spec, collector_meta(pair), pair.b):
        second = source_for(context({**spec, "UUID": "cap-2"}, collector_meta(pair), pair.b,
                                    Collector()))
        with pytest.raises(CaptureError, match=f"sFlow collector on {pair.b_ip}:16343 in "
                                               f"namespace .*: Address already in use"):
            second.start()
    bad = source_for(context({"Type": "sflow", "BPFFilter": "icmp and and"},
                             collector_meta(pair), pair.b, Collector()))
    with pytest.raises(CaptureError, match="BPF filter 'icmp and and'"):
        bad.start()
