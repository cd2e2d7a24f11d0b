"""sFlow v5 decoder (never raises, every length checked) and the node's `SFlow`
metadata built from counter samples (Skydive's shape and rules)."""

from __future__ import annotations

import random
import struct

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether

from skygraph.capture.sflow_counters import SFlowCounters
from skygraph.capture.sflow_decode import CounterSample, RawHeader, decode
from tests.integration.capture import sflow_builder as b

PING = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
             / IP(src="10.1.0.1", dst="10.1.0.2") / ICMP(id=7, seq=1) / (b"x" * 56))


def full_datagram() -> bytes:
    return b.datagram([
        b.flow_sample([b.raw_header(PING[:64], len(PING)), b.switch_record()], seq=3, rate=2,
                      pool=40, drops=1, input=7, output=9),
        b.counter_sample([b.generic_counters(7, in_octets=1000, in_ucast=10, out_octets=2000,
                                             out_ucast=20), b.ethernet_counters(1, 2, 3)], seq=4),
        b.flow_sample([b.raw_header(PING, protocol=1)], expanded=True, index=8, rate=5),
        b.counter_sample([b.ovs_dp(5, 6, 0, 7, 3, 2)], expanded=True, index=0x3FFFFFFF),
    ], agent="192.0.2.9", seq=42, uptime=777, sub_agent=3)


def test_decodes_every_field() -> None:
    d = decode(full_datagram())
    assert d.error == "" and d.skipped == 1  # the extended switch record
    assert (d.version, d.agent, d.sub_agent_id, d.sequence_number, d.uptime, d.num_samples) == \
        (5, "192.0.2.9", 3, 42, 777, 4)
    first, second = d.flow_samples
    assert (first.sequence_number, first.source_id_type, first.source_id_index,
            first.sampling_rate, first.sample_pool, first.drops, first.input, first.output) == \
        (3, 0, 7, 2, 40, 1, 7, 9)
    assert first.headers == (RawHeader(1, len(PING) + 4, 4, PING[:64]),)
    assert first.headers[0].wire_length == len(PING)
    assert (second.source_id_index, second.sampling_rate, second.headers[0].header) == \
        (8, 5, PING)
    generic, ovs = d.counter_samples
    (gen, eth) = generic.records
    assert gen.values["ifIndex"] == 7 and gen.values["IfInOctets"] == 1000
    assert (gen.values["IfOutOctets"], gen.values["IfOutUcastPkts"]) == (2000, 20)
    assert (eth.values["EthAlignmentErrors"], eth.values["EthSingleCollisionFrames"]) == (1, 3)
    assert ovs.source_id_index == 0x3FFFFFFF and ovs.records[0].values["OvsDpNHit"] == 5


def test_ipv6_agent_and_unknown_sample_formats() -> None:
    d = decode(b.datagram([b.tagged(9, b"\x00" * 12), b.tagged(1, b"", enterprise=4413)],
                          agent="2001:db8::1"))
    assert (d.agent, d.error, d.skipped) == ("2001:db8::1", "", 2)


@pytest.mark.parametrize(("data", "error"), [
    (b"", "datagram at byte 0 needs 8 bytes, 0 left"),
    (struct.pack("!II", 4, 1) + bytes(20), "sFlow version 4, not 5"),
    (struct.pack("!II", 5, 3) + bytes(20), "agent address type 3 at byte 4"),
    (b.datagram([])[:-2], "datagram at byte 12 needs 16 bytes, 14 left"),
])
def test_malformed_headers_name_the_fault(data: bytes, error: str) -> None:
    assert error in decode(data).error


def test_announced_counts_and_lengths_cannot_overrun() -> None:
    dgram = bytearray(b.datagram([b.flow_sample([b.raw_header(PING)])]))
    struct.pack_into("!I", dgram, 24, 1_000_000)  # num_samples
    d = decode(bytes(dgram))
    assert len(d.flow_samples) == 1 and "1000000 samples announced" in d.error
    sample = bytearray(b.flow_sample([b.raw_header(PING)]))
    struct.pack_into("!I", sample, 4 + 4 * 8, 9)  # the sample's num_records
    d = decode(b.datagram([bytes(sample)]))
    assert "9 records announced" in d.error and d.flow_samples == []
    record = bytearray(b.raw_header(PING))
    struct.pack_into("!I", record, 8 + 12, 5000)  # header_length beyond the record
    d = decode(b.datagram([b.flow_sample([bytes(record)])]))
    assert "sampled header at byte" in d.error


def test_never_raises_on_truncations_and_corruptions() -> None:
    good = full_datagram()
    for n in range(len(good)):
        d = decode(good[:n])
        assert d.error, n
    rng = random.Random(7)
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        decode(bytes(data))  # any result, no exception
    for _ in range(500):
        decode(bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))))


# ---- SFlow metadata ---------------------------------------------------------------------
def counters(*records: bytes) -> list[CounterSample]:
    return decode(b.datagram([b.counter_sample(list(records))])).counter_samples


def test_sflow_metadata_sums_interfaces_and_keeps_deltas() -> None:
    c = SFlowCounters()
    assert c.update(counters(b.generic_counters(1, in_octets=100, in_ucast=1),
                             b.generic_counters(2, in_octets=50, out_ucast=3)), 1000)
    meta = c.metadata()
    assert meta["IfMetrics"] == {"1": {"IfInOctets": 100, "IfInUcastPkts": 1},
                                 "2": {"IfInOctets": 50, "IfOutUcastPkts": 3}}
    assert meta["Metric"] == {"IfInOctets": 150, "IfInUcastPkts": 1, "IfOutUcastPkts": 3,
                              "Start": 1000, "Last": 1000}
    assert meta["LastUpdateMetric"] == {"IfInOctets": 150, "IfInUcastPkts": 1,
                                        "IfOutUcastPkts": 3, "Start": 1000, "Last": 1000}
    # Interface 1 again; 0 and 2^32-1 mean "unknown": the previous value stays.
    assert c.update(counters(b.generic_counters(1, in_octets=400, in_ucast=0,
                                                in_errors=0xFFFFFFFF)), 3000)
    meta = c.metadata()
    assert meta["IfMetrics"]["1"] == {"IfInOctets": 400, "IfInUcastPkts": 1}
    assert meta["Metric"]["IfInOctets"] == 450 and meta["Metric"]["Last"] == 3000
    assert meta["Metric"]["Start"] == 1000
    assert meta["LastUpdateMetric"] == {"IfInOctets": 300, "Start": 1000, "Last": 3000}
    # Nothing new: no change reported, LastUpdateMetric kept.
    assert not c.update(counters(b.generic_counters(1, in_octets=400)), 4000)
    assert c.metadata()["LastUpdateMetric"]["Last"] == 3000


def test_sflow_metadata_other_counters_and_empty_samples() -> None:
    c = SFlowCounters()
    assert not c.update(counters(), 1000)  # no record
    assert not c.update(counters(b.generic_counters(3)), 1000)  # all zero: Skydive skips
    assert c.update(counters(b.ovs_dp(5, 6, 0, 7, 3, 2), b.vlan_counters(10, 99, 1, 0, 0, 0),
                             b.ethernet_counters(0, 4)), 2000)
    metric = c.metadata()["Metric"]
    assert metric == {"OvsDpNHit": 5, "OvsDpNMissed": 6, "OvsDpNMaskHit": 7, "OvsDpNFlows": 3,
                      "OvsDpNMasks": 2, "VlanOctets": 99, "VlanUcastPkts": 1, "EthFCSErrors": 4,
                      "Start": 2000, "Last": 2000}
    assert c.update(counters(b.ovs_dp(9, 6, 0, 7, 4, 2)), 2500)
    assert c.metadata()["LastUpdateMetric"] == {"OvsDpNHit": 4, "OvsDpNFlows": 1,
                                                "Start": 2000, "Last": 2500}
