"""The C extension leaks nothing: a refcount and RSS loop over the batch path.

AddressSanitizer (scripts/asan.sh) sees reads and writes out of bounds but not
leaks (CPython is not built for LeakSanitizer); a reference the extension
forgets to drop (a Record, a NewFlow, a key's bytes) keeps its object alive, so
the same file run through the batch path again and again must leave the number
of Python memory blocks and the process's RSS where the first runs left them.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

from skygraph.capture.offline import process_file
from skygraph.capture.options import CaptureOptions
from tests.unit.capture.test_capture_fastflow import benchmark_module, native

ROUNDS = 12


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def blocks() -> int:
    gc.collect()
    return sys.getallocatedblocks()


def test_batch_path_leaks_no_object_and_no_memory(tmp_path: Path) -> None:
    native()
    path = tmp_path / "bench.pcap"
    # TCP sessions (events), UDP, ICMP echo (echo events), 10 % VXLAN (the exact path
    # for a tunnel's first packet): every kind of record that crosses the boundary
    benchmark_module().generate(path, 20_000, 2_000)
    opts = CaptureOptions(extra_tcp_metric=True)
    for _ in range(3):                                  # caches and arenas warm
        first = process_file(path, opts, block_size=64 << 10)
    assert first.batched > 0.85 * first.packets and len(first.flows) > 2_000
    del first
    before_blocks, before_rss = blocks(), rss()
    for _ in range(ROUNDS):
        result = process_file(path, opts, block_size=64 << 10)
        del result
    grown_blocks, grown_rss = blocks() - before_blocks, rss() - before_rss
    # one object leaked per packet would be 240,000 blocks, one per flow 24,000
    assert grown_blocks < 2_000, f"{grown_blocks} Python memory blocks more after {ROUNDS} runs"
    assert grown_rss < 16 << 20, f"RSS grew by {grown_rss >> 20} MiB over {ROUNDS} runs"
