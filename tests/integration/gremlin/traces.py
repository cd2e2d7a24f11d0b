"""Skydive's reference traces replayed as an agent's capture would send them
(every update tick's flows, with their kept packets), and the tools that read
capture files; shared by the raw packet and metric tests."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skygraph.capture import pcapfile
from skygraph.capture.bpf import compile_filter
from skygraph.capture.options import CaptureOptions, TableSettings
from skygraph.capture.table import FlowTable
from skygraph.topology.flowschema import wire_json
from tests.conftest import PCAPS

SETTINGS = TableSettings(update=1, expire=5)


def compile_bpf(expression: str, link_type: int) -> Any:
    return compile_filter(expression, link_type, 256).matches


@dataclass
class Replay:
    """What a capture on `tid` sent for a trace: every update of every flow."""

    trace: str
    tid: str
    frames: list[pcapfile.Frame]
    link_type: int
    updates: list[dict[str, Any]]

    @property
    def first_ms(self) -> int:
        return self.frames[0].ts_ns // 1_000_000

    @property
    def last_ms(self) -> int:
        return self.frames[-1].ts_ns // 1_000_000

    def final(self) -> dict[str, dict[str, Any]]:
        """The last update of each flow, by UUID."""
        return {u["UUID"]: u for u in self.updates}


def replay(trace: str, tid: str, limit: int = 0, layer_key_mode: str = "L2") -> Replay:
    """The trace through a flow table as a live capture runs it: ticks on packet time,
    then the updates and expiry that follow the last packet."""
    info, frames = pcapfile.read(PCAPS / trace)
    frames_list = list(frames)
    table = FlowTable(CaptureOptions(raw_packet_limit=limit, layer_key_mode=layer_key_mode),
                      SETTINGS, tid, info.link_type)
    sent = []
    for frame in frames_list:
        sent += table.tick(frame.ts_ns // 1_000_000)
        table.feed(frame.data, frame.ts_ns, frame.wire_length)
    end = frames_list[-1].ts_ns // 1_000_000
    for t in range(end + 1000, end + 20_000, 1000):
        sent += table.tick(t)
    assert len(table) == 0, f"{trace}: flows still in the table"
    return Replay(trace, tid, frames_list, info.link_type, [wire_json(f) for f in sent])


def tcpdump(path: Path) -> list[str]:
    out = subprocess.run(["tcpdump", "-nn", "-tt", "-r", str(path)], capture_output=True,
                         text=True, timeout=30, check=True)
    return out.stdout.splitlines()


def tshark(path: Path, *fields: str) -> list[list[str]]:
    args = [a for f in fields for a in ("-e", f)]
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", *args],
                         capture_output=True, text=True, timeout=60, check=True)
    return [line.split("\t") for line in out.stdout.splitlines()]
