"""Freed heap goes back to the system once the analyzer is idle: a burst of
allocations freed, then `trim` brings the resident size down; the idle loop
trims only when idle and grown, never while flows wait to be written."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from skygraph import memory

BURST = """
import gc, json, sys
from skygraph import memory
docs = [{f"Field{k}": "x" * 600 + str(i) for k in range(8)} for i in range(40_000)]
survivors = docs[::500]  # a few stay, as the writer's caches keep a few
del docs
gc.collect()
freed = memory.rss_bytes()
assert memory.trim(), "no malloc_trim (not glibc)"
trimmed = memory.rss_bytes()
print(json.dumps([freed, trimmed, len(survivors)]))
"""


def test_trim_gives_freed_heap_back() -> None:
    """A burst of flow-sized documents, freed but for a few: their heap stays
    resident (glibc keeps it for reuse) until a trim returns it."""
    out = subprocess.run([sys.executable, "-c", BURST], capture_output=True, text=True,
                         check=True, timeout=60)
    freed, trimmed, _ = json.loads(out.stdout)
    assert freed - trimmed > 64 << 20, (freed >> 20, trimmed >> 20)


class Done(Exception):
    pass


def test_the_idle_loop_trims_only_when_idle_and_grown(monkeypatch: pytest.MonkeyPatch) -> None:
    # The RSS read at the start (the floor), at each turn, and after each trim.
    rss = iter([100, 105, 200, 200, 50, 54, 300, 300, 50])
    idle = iter([True, False, True, True, False, True])
    turns: list[int] = []
    trims: list[int] = []

    async def sleep(_: float) -> None:
        if len(turns) == 6:
            raise Done
        turns.append(len(turns) + 1)

    monkeypatch.setattr(memory, "rss_bytes", lambda: next(rss))
    def trim() -> bool:
        trims.append(turns[-1])
        return True

    monkeypatch.setattr(memory, "trim", trim)
    monkeypatch.setattr(asyncio, "sleep", sleep)
    with pytest.raises(Done):
        asyncio.run(memory.trim_when_idle(lambda: next(idle)))
    # floor 100: 105 idle but within 10 %; 200 busy; 200 idle -> trim, leaving 50;
    # 54 within 10 % of 50; 300 busy; 300 idle -> trim
    assert trims == [3, 6]
