"""Freed heap goes back to the system once the analyzer is idle: a burst of
allocations freed, then `trim` brings the resident size down; the idle loop
trims only when idle and grown, never while flows wait to be written."""

from __future__ import annotations

import asyncio
import ctypes

import pytest

from skygraph import memory


def test_trim_gives_freed_heap_back() -> None:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = memory.rss_bytes()
    # 64 MiB in 64 KiB blocks, below the mmap threshold: on the heap; all touched
    blocks = [libc.malloc(64 << 10) for _ in range(1024)]
    for b in blocks:
        ctypes.memset(b, 1, 64 << 10)
    keep = libc.malloc(16)  # the heap's top stays in use: only a trim returns the rest
    grown = memory.rss_bytes()
    for b in blocks:
        libc.free(b)
    assert grown - before > 48 << 20
    assert memory.trim()
    after = memory.rss_bytes()
    libc.free(keep)
    assert grown - after > 48 << 20, (before >> 20, grown >> 20, after >> 20)


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
