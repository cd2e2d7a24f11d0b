"""Giving freed memory back to the system.

A burst of work (a pcap import, an agent's backlog of flow updates) leaves the
analyzer's C heap with megabytes of freed but unreturned pages: glibc keeps
them for reuse and only returns the top of the heap on its own.  Once the
process is idle again, `malloc_trim(0)` returns every whole free page, so the
resident size goes back near where it was before the burst.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import resource
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("skygraph.memory")

GROWTH = 1.1  # trim once the RSS is 10 % above what the last trim left


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_TRIM = _malloc_trim()


def rss_bytes() -> int:
    """This process's resident set size (0 where /proc is not there)."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * resource.getpagesize()


def trim() -> bool:
    """Return the C heap's free pages to the system; False where there is no glibc."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


async def trim_when_idle(idle: Callable[[], bool], every: float = 10.0) -> None:
    """Every `every` s: when `idle()` and the RSS grew `GROWTH` times over what the
    last trim left, trim (in a thread: it walks the heap)."""
    floor = rss_bytes()
    while True:
        await asyncio.sleep(every)
        now = rss_bytes()
        if not idle() or now <= floor * GROWTH:
            continue
        if not await asyncio.to_thread(trim):
            return
        floor = rss_bytes()
        log.debug("memory trimmed: RSS %d -> %d MB", now >> 20, floor >> 20)
