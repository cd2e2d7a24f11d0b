"""RTM_GETSTATS encoding and decoding (struct tables in stats.py)."""

from __future__ import annotations

import struct

import pytest

from skygraph.probes.netns import stats


def message(ifindex: int, counters: list[int], seq: int = 7) -> bytes:
    payload = struct.pack(f"={len(stats.LINK_STATS64) + 2}Q", *counters, 0, 0)  # newer kernels
    attr = stats.NLA.pack(stats.NLA.size + len(payload), stats.IFLA_STATS_LINK_64) + payload
    body = stats.IF_STATS_MSG.pack(0, 0, 0, ifindex, 1) + attr
    return stats.NLMSGHDR.pack(stats.NLMSGHDR.size + len(body), stats.RTM_NEWSTATS, 2, seq,
                               0) + body


def done() -> bytes:
    return stats.NLMSGHDR.pack(stats.NLMSGHDR.size + 4, stats.NLMSG_DONE, 2, 7, 0) + b"\0" * 4


def test_request_layout() -> None:
    req = stats.request(3)
    length, mtype, flags, seq, _ = stats.NLMSGHDR.unpack_from(req)
    assert (length, mtype, seq) == (len(req), stats.RTM_GETSTATS, 3)
    assert flags == stats.NLM_F_REQUEST | stats.NLM_F_DUMP
    assert stats.IF_STATS_MSG.unpack_from(req, stats.NLMSGHDR.size)[-1] == 1


def test_parse_counters_and_done() -> None:
    counters = list(range(1, len(stats.LINK_STATS64) + 1))
    data = message(2, counters) + message(5, [0] * len(stats.LINK_STATS64))
    out, finished = stats.parse(data)
    assert not finished
    assert out[2]["rx_packets"] == 1 and out[2]["tx_bytes"] == 4
    assert out[2]["tx_compressed"] == len(stats.LINK_STATS64)
    assert set(out) == {2, 5}
    assert stats.parse(done()) == ({}, True)


def test_parse_error_names_the_errno() -> None:
    err = stats.NLMSGHDR.pack(stats.NLMSGHDR.size + 4, stats.NLMSG_ERROR, 0, 1, 0) + \
        struct.pack("=i", -95)
    with pytest.raises(OSError) as info:
        stats.parse(err)
    assert info.value.errno == 95
