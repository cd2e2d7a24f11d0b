"""The pure halves of the metric and raw packet steps: Skydive's metric
arithmetic (SPEC §2: FlowMetric.Split and the Aggregates facts of
gremlin/traversal/metrics_test.go), Sum, and raw packets written as capture
files (pcap, or pcapng when tcpdump could not share one file)."""

from __future__ import annotations

import base64
import struct

import pytest

from skygraph.gremlin import GremlinQueryError
from skygraph.gremlin.metrics import aggregate, split, total, total_of
from skygraph.gremlin.packets import NotRenderable, link_type_for, packets_of, render


def fm(value: int, start: int, last: int) -> dict[str, int]:
    return {"ABPackets": value, "ABBytes": value, "BAPackets": value, "BABytes": value,
            "Start": start, "Last": last}


def test_split_in_proportion_to_time() -> None:
    assert split(fm(100, 0, 100), 25) == (fm(25, 0, 25), fm(75, 25, 100))
    assert split(fm(100, 0, 100), 0) == (None, fm(100, 0, 100))
    assert split(fm(100, 0, 100), 100) == (fm(100, 0, 100), None)
    assert split(fm(100, 10, 10), 10) == (fm(100, 10, 10), None)  # an instant
    # integer parts, the remainder to the later part
    before, after = split(fm(10, 0, 3), 1)
    assert before is not None and after is not None
    assert (before["ABPackets"], after["ABPackets"]) == (3, 7)


def slices(metric: dict[str, int], at: int, duration: int, width: int = 10) -> list[dict[str, int]]:
    """Aggregates(width) of one flow's metric in the context At(at s, duration s)."""
    result = aggregate({"flow": [metric]}, (at - duration) * 1000, at * 1000, width * 1000, 1)
    return result["Aggregated"]


def test_aggregates_facts_of_skydive() -> None:
    assert slices(fm(1000, 0, 10_000), 10, 10) == [fm(1000, 0, 10_000)]
    assert slices(fm(1000, 0, 20_000), 10, 10) == [fm(500, 0, 10_000)]
    assert slices(fm(1000, 0, 20_000), 20, 10) == [fm(500, 10_000, 20_000)]
    assert slices(fm(1000, 10_000, 20_000), 15, 10) == [fm(500, 5_000, 15_000)]
    assert slices(fm(18_000, 0, 30_000), 30, 30) == [
        fm(6000, 0, 10_000), fm(6000, 10_000, 20_000), fm(6000, 20_000, 30_000)]


def test_aggregates_add_overlapping_series_and_drop_empty_slices() -> None:
    series = {"a": [fm(10, 0, 1000), fm(10, 25_000, 26_000)], "b": [fm(5, 500, 1500)]}
    assert aggregate(series, 0, 30_000, 10_000, 1)["Aggregated"] == [
        fm(15, 0, 10_000), fm(10, 20_000, 30_000)]
    # a metric too small to split keeps its whole value in the slice it starts in
    assert aggregate({"a": [fm(1, 9_000, 11_000)]}, 0, 20_000, 10_000, 1)["Aggregated"] == [
        fm(1, 0, 10_000)]
    with pytest.raises(GremlinQueryError, match="more than 10000"):
        aggregate(series, 0, 10**9, 1000, 1)


def test_sum() -> None:
    series = {"a": [fm(1, 10, 20), fm(2, 20, 30)], "b": [{**fm(4, 5, 15), "RTT": 7}]}
    assert total(series) == fm(7, 5, 30)
    assert total({}) is None
    assert total_of(series, "ABBytes", 1) == 7
    assert total_of(series, "abbytes", 1) == 7  # Skydive matches case-insensitively
    assert total_of({"eth0": [{"RxBytes": 5, "Start": 0, "Last": 1}]}, "TxBytes", 1) == 0
    with pytest.raises(GremlinQueryError, match="Sum\\(\\): metrics have no counter 'Start'"):
        total_of(series, "Start", 1)


def packet(ts: int, index: int, data: bytes, link_type: int) -> dict[str, object]:
    return {"Timestamp": ts, "Index": index, "Data": base64.b64encode(data).decode(),
            "LinkType": link_type}


def records(pcap: bytes) -> list[tuple[int, int, bytes]]:
    """(seconds, microseconds, data) of a classic little-endian pcap's records."""
    out, off = [], 24
    while off < len(pcap):
        sec, usec, incl, _ = struct.unpack_from("<IIII", pcap, off)
        out.append((sec, usec, pcap[off + 16:off + 16 + incl]))
        off += 16 + incl
    return out


ETH = bytes(12) + b"\x08\x00" + b"\x45" + bytes(19)
IP4 = b"\x45" + bytes(19)
IP6 = b"\x60" + bytes(39)


def test_render_one_link_type_in_time_order() -> None:
    pcap = render([{"f1": [packet(2_500, 1, ETH, 1)], "f2": [packet(1_001, 1, ETH, 1)]}])
    assert struct.unpack_from("<IHHiIII", pcap) == (0xA1B2C3D4, 2, 4, 0, 0, 262_144, 1)
    assert records(pcap) == [(1, 1000, ETH), (2, 500_000, ETH)]
    assert struct.unpack_from("<I", render([]), 20)[0] == 1  # nothing: an empty Ethernet pcap


def test_render_mixed_link_types() -> None:
    # raw IP next to Ethernet: behind a synthesized Ethernet header
    pcap = render([{"outer": [packet(1, 1, ETH, 1)], "inner": [packet(2, 1, IP4, 228),
                                                               packet(3, 2, IP6, 229)]}])
    assert struct.unpack_from("<I", pcap, 20)[0] == 1
    assert [r[2] for r in records(pcap)] == [
        ETH, bytes(12) + b"\x08\x00" + IP4, bytes(12) + b"\x86\xdd" + IP6]
    # IPv4 and IPv6 only: LINKTYPE_RAW
    assert link_type_for({228, 229}) == 101
    assert struct.unpack_from("<I", render([{"f": [packet(1, 1, IP4, 228),
                                                   packet(2, 2, IP6, 229)]}]), 20)[0] == 101
    # anything else: pcapng, one interface per link type
    ng = render([{"f": [packet(1, 1, ETH, 1), packet(2, 2, b"\x00" * 16, 113)]}])
    assert struct.unpack_from("<I", ng)[0] == 0x0A0D0D0A
    assert link_type_for({1, 113}) is None


def test_only_raw_packet_results_render() -> None:
    for result in ([{"UUID": "u", "Metric": {}}], [{"u": [{"ABPackets": 1}]}], 3, [1, 2],
                   {"Nodes": []}):
        with pytest.raises(NotRenderable, match="RawPackets\\(\\)"):
            packets_of(result)
    with pytest.raises(NotRenderable, match="not base64"):
        render([{"f": [{"Timestamp": 1, "Index": 1, "Data": "!", "LinkType": 1}]}])
