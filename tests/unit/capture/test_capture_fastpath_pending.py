"""A live reader's batch path: `run_blocks(settle=False)` call after call leaves the
per-flow sums in the extension (Python touches a busy flow once per tick, not once per
call), and `settle()` -- which the pipeline's ticks, flush and per-packet feeding call
first -- makes the table exactly what the per-packet path gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from skygraph.capture import fastpath, pcapfile
from skygraph.capture.fastpath import FastPath
from skygraph.capture.offline import process_file
from skygraph.capture.options import CaptureOptions, TableSettings
from skygraph.capture.table import FlowTable
from skygraph.topology.flow import Flow
from tests.unit.capture.test_capture_fastpath import mixed_traffic, write

SETTINGS = TableSettings(update=5, expire=30)


def drive(path: Path, settle_every: int) -> tuple[list[dict[str, object]], FlowTable, int]:
    """Blocks one call each (settle=False), settling every `settle_every` calls as the
    reader's wall-clock ticks do; the flows sent plus the final flush, by UUID."""
    info = pcapfile.read_info(path)
    table = FlowTable(CaptureOptions(extra_tcp_metric=True), SETTINGS, "tid")
    fast = FastPath(table)
    done: dict[str, Flow] = {}

    def collect(flows: list[Flow]) -> None:
        done.update((f.uuid, f) for f in flows)
    def counted() -> int:
        return sum(s.flow.metric.ab_packets + s.flow.metric.ba_packets
                   for s in table._flows.values())
    lagging = 0
    for n, block in enumerate(pcapfile.read_blocks(path, info, 2048), 1):
        fast.run_blocks([block], info, collect, settle=False)
        if n % settle_every == 0:
            before = counted()
            fast.settle()
            lagging = max(lagging, counted() - before)
    fast.settle()
    collect(table.flush())
    return [done[k].to_json() for k in sorted(done)], table, lagging


@pytest.mark.parametrize("settle_every", [1, 7, 10_000])
def test_pending_sums_then_settle_give_the_per_packet_flows(tmp_path: Path,
                                                            settle_every: int) -> None:
    assert fastpath.native is not None, "the _fastflow extension is not built"
    # 1440 packets 0.05 s apart: update ticks every 5 s inside the run, expiry after 30 s.
    path = write(tmp_path / "mixed.pcap", mixed_traffic(3, flows=48, per_flow=30),
                 1_700_000_000.0, 0.05)
    got, table, lagging = drive(path, settle_every)
    ref = process_file(path, CaptureOptions(extra_tcp_metric=True), settings=SETTINGS,
                       node_tid="tid", fast=False)
    want = {f.uuid: f.to_json() for f in ref.flows}
    assert got == [want[k] for k in sorted(want)]
    assert table.packets == ref.packets
    # Between calls the sums really stayed in C (else this proves nothing).
    assert lagging > 0 or settle_every > 1000  # (10_000: settled only at the end)
