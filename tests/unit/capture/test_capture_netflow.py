"""NetFlow v5 receiver: the decoder (against skygraph's exporter and scapy's encoder,
malformed input never raising) and records as flows (directions, ICMP folding,
unknown protocols, successive exports, times, update ticks)."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.netflow import NetflowHeader, NetflowHeaderV5, NetflowRecordV5

from skygraph.capture.netflow_decode import HEADER, RECORD, Record, decode
from skygraph.capture.netflow_flows import NetFlowFlows, record_key, wall_ms
from skygraph.capture.options import CaptureOptions, TableSettings, application_ports
from skygraph.capture.table import FlowTable
from skygraph.exporters import netflow as nf
from skygraph.topology.flow import FlowProtocol, ICMPType


def exported(records: list[nf.Record], uptime: int = 10_000, seq: int = 0) -> bytes:
    return nf.encode_datagram(nf.Header(sys_uptime=uptime, unix_secs=1_700_000_000,
                                        unix_nsecs=5, flow_sequence=seq), records)


# ---- decoder ----------------------------------------------------------------------------------
def test_decodes_skygraph_exporter_datagram_field_by_field() -> None:
    recs = [nf.Record("10.0.0.1", "10.0.0.2", 40000, 80, 6, 12, 3456, 1000, 9000, tcp_flags=0x1b,
                      input=7, output=7),
            nf.Record("10.0.0.2", "10.0.0.1", 0, 0x0800, 1, 1, 84, 2000, 2000)]
    d = decode(exported(recs, uptime=9500, seq=41))
    assert d.error == ""
    assert (d.version, d.count, d.sys_uptime, d.unix_secs, d.unix_nsecs, d.flow_sequence,
            d.engine_type, d.engine_id, d.sampling_interval) == \
        (5, 2, 9500, 1_700_000_000, 5, 41, nf.ENGINE_TYPE, nf.ENGINE_ID, 0)
    tcp, icmp = d.records
    assert (tcp.srcaddr, tcp.dstaddr, tcp.nexthop, tcp.srcport, tcp.dstport, tcp.protocol,
            tcp.packets, tcp.octets, tcp.first, tcp.last, tcp.tcp_flags, tcp.input,
            tcp.output) == ("10.0.0.1", "10.0.0.2", "0.0.0.0", 40000, 80, 6, 12, 3456, 1000,
                            9000, 0x1b, 7, 7)
    assert (icmp.srcaddr, icmp.protocol, icmp.dstport, icmp.packets) == ("10.0.0.2", 1, 0x0800, 1)


def test_decodes_scapy_datagram() -> None:
    rec = NetflowRecordV5(src="192.0.2.1", dst="198.51.100.7", nexthop="192.0.2.254", input=3,
                          output=4, dpkts=5, dOctets=500, first=100, last=900, srcport=5353,
                          dstport=53, tcpFlags=0, prot=17, tos=0x10, src_as=64500,
                          dst_as=64501, src_mask=24, dst_mask=16)
    data = bytes(NetflowHeader(version=5) / NetflowHeaderV5(
        count=2, sysUptime=1234, unixSecs=1_600_000_000, unixNanoSeconds=7, flowSequence=99,
        engineType=10, engineID=1) / rec / NetflowRecordV5(src="10.9.9.9", prot=47))
    d = decode(data)
    assert d.error == "" and (d.count, d.sys_uptime, d.flow_sequence, d.engine_type) == \
        (2, 1234, 99, 10)
    assert d.records[0] == Record("192.0.2.1", "198.51.100.7", "192.0.2.254", 3, 4, 5, 500, 100,
                                  900, 5353, 53, 0, 17, 0x10, 64500, 64501, 24, 16)
    assert (d.records[1].srcaddr, d.records[1].protocol) == ("10.9.9.9", 47)


def one_record() -> bytes:
    return exported([nf.Record("10.0.0.1", "10.0.0.2", 1, 2, 17, 1, 28, 0, 0)])


@pytest.mark.parametrize(("data", "records", "error"), [
    (b"", 0, "header: 0 bytes"),
    (one_record()[:23], 0, "header: 23 bytes"),
    (b"\x00\x09" + one_record()[2:], 0, "version at byte 0: 9, not 5"),
    (one_record()[:HEADER.size + RECORD.size - 1], 0, "record 1 at byte 24: the header counts 1"),
    (one_record()[:2] + b"\x00\x03" + one_record()[4:], 1, "record 2 at byte 72"),
    (one_record()[:2] + b"\x00\x00" + one_record()[4:], 0, ""),  # count 0: trailing bytes unread
])
def test_malformed_datagrams_give_what_is_whole_and_say_where(data: bytes, records: int,
                                                               error: str) -> None:
    d = decode(data)
    assert len(d.records) == records
    assert d.error.startswith(error) if error else d.error == ""


def test_more_than_30_records_are_decoded_and_flagged() -> None:
    recs = [nf.Record("10.0.0.1", "10.0.0.2", i, 2, 17, 1, 28, 0, 0) for i in range(30)]
    data = bytearray(exported(recs) + exported(recs[:1])[HEADER.size:])
    struct.pack_into("!H", data, 2, 31)
    d = decode(bytes(data))
    assert len(d.records) == 31 and d.error == "count at byte 2: 31 records, v5 allows 30"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(data: bytes) -> None:
    d = decode(b"\x00\x05" + data)
    assert len(d.records) * RECORD.size <= len(data) + 2


def test_mutated_datagrams_never_raise() -> None:
    rng = random.Random(5)
    base = exported([nf.Record("10.0.0.1", "10.0.0.2", 1, 2, 6, 1, 40, 0, 0)] * 3)
    for _ in range(2000):
        data = bytearray(base[:rng.randrange(len(base) + 1)])
        for _ in range(rng.randrange(4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        decode(bytes(data))


# ---- records as flows ---------------------------------------------------------------------------
def receiver(**opts: Any) -> tuple[NetFlowFlows, FlowTable]:
    table = FlowTable(CaptureOptions(**opts), TableSettings(update=10, expire=600),
                      node_tid="bridge-tid")
    return NetFlowFlows(table), table


def rec(src: str, dst: str, prot: int, sport: int = 0, dport: int = 0, pkts: int = 1,
        octets: int = 84, first: int = 9_000, last: int = 9_500, flags: int = 0) -> nf.Record:
    return nf.Record(src, dst, sport, dport, prot, pkts, octets, first, last, tcp_flags=flags)


NOW = 1_700_000_000_000


def test_ping_request_and_reply_records_are_one_echo_flow() -> None:
    flows, table = receiver()
    # OVS: echo requests carry type 8 << 8 in dstport, replies type 0.
    d = decode(exported([rec("10.0.0.1", "10.0.0.2", 1, 0, 0x0800, pkts=5, octets=420),
                         rec("10.0.0.2", "10.0.0.1", 1, 0, 0x0000, pkts=5, octets=420,
                             first=9_100, last=9_600)]))
    assert flows.feed(d, NOW) == 10
    (f,) = table.flows()
    assert f.application == "ICMPv4" and f.layers_path == "IPv4/ICMPv4"
    assert f.network is not None
    assert (f.network.protocol, f.network.a, f.network.b) == (FlowProtocol.IPV4, "10.0.0.1",
                                                              "10.0.0.2")
    assert f.transport is not None and (f.transport.protocol, f.transport.a, f.transport.b) == \
        (FlowProtocol.ICMPV4, 0, 0x0800)
    assert f.icmp is not None and (f.icmp.type, f.icmp.code) == (ICMPType.ECHO, 0)
    m = f.metric
    assert (m.ab_packets, m.ab_bytes, m.ba_packets, m.ba_bytes) == (5, 420, 5, 420)
    # Times: sysUptime 10000 at arrival NOW.
    assert (f.start, f.last, m.start, m.last) == (NOW - 1000, NOW - 400, NOW - 1000, NOW - 400)
    assert f.node_tid == "bridge-tid" and f.tracking_id == f.l3_tracking_id != ""
    assert f.uuid and f.link is None and f.parent_uuid == ""


def test_the_oldest_record_of_a_datagram_opens_the_flow() -> None:
    flows, table = receiver()
    flows.feed(decode(exported([rec("10.0.0.2", "10.0.0.1", 1, 0, 0, first=9_200),
                                rec("10.0.0.1", "10.0.0.2", 1, 0, 0x0800, first=9_100)])), NOW)
    (f,) = table.flows()
    assert f.network is not None and (f.network.a, f.start) == ("10.0.0.1", NOW - 900)


@pytest.mark.parametrize(("reply", "opener"), [
    (rec("10.0.0.2", "10.0.0.1", 1, 0, 0), rec("10.0.0.1", "10.0.0.2", 1, 0, 0x0800)),
    (rec("10.0.0.2", "10.0.0.1", 6, 80, 40000, flags=0x12),
     rec("10.0.0.1", "10.0.0.2", 6, 40000, 80, flags=0x02)),
    (rec("10.0.0.2", "10.0.0.1", 17, 53, 5353), rec("10.0.0.1", "10.0.0.2", 17, 5353, 53)),
])
def test_at_equal_times_the_initiator_opens_the_flow(reply: nf.Record, opener: nf.Record) -> None:
    flows, table = receiver()
    flows.feed(decode(exported([reply, opener])), NOW)
    (f,) = table.flows()
    assert f.network is not None and f.network.a == "10.0.0.1"


def test_tcp_directions_flags_and_successive_exports_add_up() -> None:
    flows, table = receiver(tcp_applications=application_ports({80: "http"}))
    flows.feed(decode(exported([rec("10.0.0.1", "10.0.0.2", 6, 40000, 80, 3, 180, flags=0x02),
                                rec("10.0.0.2", "10.0.0.1", 6, 80, 40000, 2, 120, flags=0x12)])),
               NOW)
    (first,) = table.flows()
    uuid = first.uuid
    flows.feed(decode(exported([rec("10.0.0.1", "10.0.0.2", 6, 40000, 80, 4, 400, first=12_000,
                                    last=14_000, flags=0x11)], uptime=15_000)), NOW + 5000)
    (f,) = table.flows()
    assert f.uuid == uuid and f.application == "HTTP"
    assert f.transport is not None and (f.transport.a, f.transport.b) == (40000, 80)
    m = f.metric
    assert (m.ab_packets, m.ab_bytes, m.ba_packets, m.ba_bytes) == (7, 580, 2, 120)
    assert (f.ab_tcp_flags, f.ba_tcp_flags) == (0x13, 0x12)
    assert (f.start, f.last) == (NOW - 1000, NOW + 4000)
    assert flows.records == 3


def test_unknown_protocol_is_a_flow_named_by_its_number() -> None:
    """SPEC §3 fix 4: Skydive's receiver looped on these; here they are flows."""
    flows, table = receiver()
    flows.feed(decode(exported([rec("10.0.0.1", "10.0.0.2", 47, pkts=2, octets=200),
                                rec("10.0.0.1", "10.0.0.2", 89, pkts=1, octets=64),
                                rec("10.0.0.1", "10.0.0.2", 6, 1, 2)])), NOW)
    by_app = {f.application: f for f in table.flows()}
    assert set(by_app) == {"47", "89", "TCP"}
    gre = by_app["47"]
    assert gre.transport is None and gre.icmp is None and gre.layers_path == "IPv4"
    assert (gre.metric.ab_packets, gre.metric.ab_bytes) == (2, 200)


def test_ip_in_ip_sctp_and_udp_keep_skydive_names() -> None:
    flows, table = receiver()
    flows.feed(decode(exported([rec("10.0.0.1", "10.0.0.2", 4), rec("10.0.0.1", "10.0.0.2", 132, 1, 2),
                                rec("10.0.0.1", "10.0.0.2", 17, 1, 2)])), NOW)
    got = sorted((f.application, f.transport.protocol.name if f.transport else "")
                 for f in table.flows())
    assert got == [("IPV4", "IPV4"), ("SCTP", "SCTP"), ("UDP", "UDP")]


def test_tcp_and_udp_on_the_same_ports_stay_apart_and_keys_are_symmetric() -> None:
    a = decode(exported([rec("10.0.0.1", "10.0.0.2", 6, 1000, 2000)])).records[0]
    b = decode(exported([rec("10.0.0.2", "10.0.0.1", 6, 2000, 1000)])).records[0]
    u = decode(exported([rec("10.0.0.1", "10.0.0.2", 17, 1000, 2000)])).records[0]
    assert record_key(a) == record_key(b) != record_key(u)


def test_update_tick_sends_the_window() -> None:
    flows, table = receiver()
    flows.feed(decode(exported([rec("10.0.0.1", "10.0.0.2", 17, 5, 6, pkts=2, octets=60)])), NOW)
    table.tick(NOW)
    flows.feed(decode(exported([rec("10.0.0.2", "10.0.0.1", 17, 6, 5, pkts=1, octets=30)])),
               NOW + 1000)
    (sent,) = table.tick(NOW + 10_000)
    lum = sent.last_update_metric
    assert lum is not None and (lum.ab_packets, lum.ba_packets, lum.last) == (2, 1, NOW + 10_000)
    flows.feed(decode(exported([rec("10.0.0.1", "10.0.0.2", 17, 5, 6, pkts=4, octets=120)])),
               NOW + 12_000)
    (again,) = table.tick(NOW + 20_000)
    lum = again.last_update_metric
    assert lum is not None and (lum.ab_packets, lum.ba_packets) == (4, 0)
    assert again.metric.ab_packets == 6


@pytest.mark.parametrize(("stamp", "uptime", "expected"), [
    (9_000, 10_000, NOW - 1000),
    (10_000, 10_000, NOW),
    (10_500, 10_000, NOW),  # after the export: clock noise, counts as the export
    (2**32 - 1000, 500, NOW - 1500),  # sysUptime wrapped between the two
])
def test_record_times_against_arrival(stamp: int, uptime: int, expected: int) -> None:
    assert wall_ms(stamp, uptime, NOW) == expected
