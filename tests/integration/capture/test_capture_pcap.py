"""The `pcap` capture type: libpcap (ctypes) on a veth inside a namespace, real pings,
libpcap's filter and counters, refusals with libpcap's message."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest
from scapy.layers.inet import ICMP
from scapy.layers.l2 import Ether

from skygraph.agent import target_factory
from skygraph.capture.libpcap import version
from skygraph.capture.options import TableSettings
from skygraph.capture.sflow_decode import decode
from skygraph.capture.sources import source_for
from skygraph.capture.sources.base import NODE_DOWN, CaptureError, CaptureSource
from skygraph.capture.sources.pcap import PcapSource
from skygraph.topology.flow import Flow, ICMPType
from tests.integration.capture.conftest import Collector, VethPair, context, running

pytestmark = pytest.mark.root


def echo_flows(latest: dict[str, Flow]) -> list[Flow]:
    return [f for f in latest.values() if f.icmp is not None and f.icmp.type == ICMPType.ECHO]


def wait_received(source: CaptureSource, packets: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while source.stats().packets_received < packets and time.monotonic() < deadline:
        time.sleep(0.05)


def test_libpcap_is_loaded() -> None:
    assert version().startswith("libpcap version 1.")


def test_ping_gives_one_echo_flow_with_libpcap_counters(pair: VethPair) -> None:
    spec = {"Type": "pcap", "BPFFilter": "icmp", "HeaderSize": 64, "RawPacketLimit": 2}
    with running(spec, pair.metadata(), pair.a) as (source, sink), pair.listen_udp(9999):
        assert isinstance(source, PcapSource)
        pair.udp(9999, count=20)  # kept out by libpcap's (kernel) filter
        pair.ping(4)
        latest = sink.wait(lambda fl: sum(f.metric.ab_packets + f.metric.ba_packets
                                          for f in echo_flows(fl)) == 8)
        (flow,) = echo_flows(latest)
        assert (flow.metric.ab_packets, flow.metric.ba_packets) == (4, 4)
        assert flow.metric.ab_bytes == flow.metric.ba_bytes == 4 * 98  # wire length
        assert flow.layers_path == "Ethernet/IPv4/ICMPv4"
        assert (flow.network.a, flow.network.b) == (pair.a_ip, pair.b_ip)  # type: ignore[union-attr]
        assert flow.node_tid == f"tid-{pair.a_if}" and flow.capture_id == "cap-1"
        assert all(f.transport is None for f in sink.flows()), "UDP passed the filter"
        raw = [p for f in sink.flows() if f.uuid == flow.uuid for p in f.last_raw_packets]
        assert len(raw) == 2 and all(len(p.data) == 64 for p in raw)  # snaplen = HeaderSize
        wait_received(source, 8)
        stats = source.stats()
        assert (stats.packets_received, stats.packets_dropped, stats.packets_if_dropped) == (8, 0, 0)
        assert stats.flow_count == 1
        assert source.metadata() == {}


def test_stop_flushes_final_flows_and_keeps_counters(pair: VethPair) -> None:
    settings = TableSettings(update=3600, expire=7200)
    with running({"Type": "pcap", "BPFFilter": "icmp"}, pair.metadata(), pair.a,
                 settings=settings) as (source, sink):
        pair.ping(3)
        wait_received(source, 6)
        assert sink.flows() == []  # no tick yet
        source.stop()
        assert not source.running and source.error is None
        (flow,) = echo_flows(sink.latest())
        assert flow.metric.ab_packets + flow.metric.ba_packets == 6
        assert source.stats().packets_received == 6  # the counters outlive the handle


def test_bad_filter_is_refused_with_libpcap_message(pair: VethPair) -> None:
    source = source_for(context({"Type": "pcap", "BPFFilter": "icmp and and"}, pair.metadata(),
                                pair.a, Collector()))
    with pytest.raises(CaptureError, match=r"node node-1 \(.*\): BPF filter '\(icmp and and\)'"
                                           r": can't parse filter expression: syntax error"):
        source.start()
    assert not source.running


def test_refuses_missing_interface_and_down_node(pair: VethPair) -> None:
    meta = {**pair.metadata(), "Name": "nosuch0", "IfIndex": 0}
    with pytest.raises(CaptureError, match=r"pcap_activate\(nosuch0\): .*No such device"):
        source_for(context({"Type": "pcap"}, meta, pair.a, Collector())).start()
    with pytest.raises(CaptureError, match=NODE_DOWN):
        source_for(context({"Type": "pcap"}, {**pair.metadata(), "LinkFlags": []}, pair.a,
                           Collector()))
    with pytest.raises(CaptureError, match="pcap cannot capture on a node of Type 'netns'"):
        source_for(context({"Type": "pcap"}, {**pair.metadata(), "Type": "netns"}, pair.a,
                           Collector()))


def test_frames_go_to_a_packet_target_and_no_flow_to_the_sink(pair: VethPair) -> None:
    """TargetType sflow: every captured frame leaves as an sFlow flow sample."""
    collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    collector.bind(("127.0.0.1", 0))
    collector.settimeout(0.5)
    spec = {"Type": "pcap", "BPFFilter": "icmp", "TargetType": "sflow", "SamplingRate": 1,
            "Target": f"127.0.0.1:{collector.getsockname()[1]}", "HeaderSize": 128}
    headers: list[bytes] = []
    try:
        with running(spec, pair.metadata(), pair.a, make_target=target_factory()) as (src, sink):
            pair.ping(2)
            deadline = time.monotonic() + 10
            while len(headers) < 4 and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    d = decode(collector.recv(65535))
                    headers += [h.header for s in d.flow_samples for h in s.headers]
            assert src.stats().packets_received == 4
        assert sink.flows() == []
    finally:
        collector.close()
    assert len(headers) == 4
    assert all(bytes(Ether(h)[ICMP])[:1] in (b"\x08", b"\x00") for h in headers)
