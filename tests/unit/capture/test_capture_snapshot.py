"""`Flow.snapshot()`, what a table sends on its ticks: equal to a deep copy for
every flow of the reference traces, and independent of the flow the table goes
on updating."""

from __future__ import annotations

import copy

import pytest

from skygraph.capture.offline import process_file
from skygraph.capture.options import CaptureOptions
from tests.conftest import PCAPS

TRACES = sorted(PCAPS.glob("*.pcap"))


@pytest.mark.parametrize("trace", TRACES, ids=lambda p: p.name)
def test_snapshot_equals_a_deep_copy(trace) -> None:
    opts = CaptureOptions(extra_layers=7, extra_tcp_metric=True, ip_defrag=True,
                          raw_packet_limit=3)
    for flow in process_file(trace, opts, fast=False).flows:
        snap = flow.snapshot()
        assert snap == copy.deepcopy(flow)
        assert snap.to_json() == flow.to_json()


def test_snapshot_is_independent_of_the_original() -> None:
    flows = process_file(PCAPS / "simple-tcpv4.pcap",
                         CaptureOptions(extra_tcp_metric=True)).flows
    flow = flows[0]
    snap = flow.snapshot()
    before = snap.to_json()
    flow.metric.ab_packets += 100
    assert flow.tcp_metric is not None and flow.network is not None
    flow.tcp_metric.ab_packets += 7
    flow.network.a = "192.0.2.99"
    flow.last += 1000
    assert snap.to_json() == before
    assert len(TRACES) == 10
