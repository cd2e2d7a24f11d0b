"""Batching and retries shared by the topology writer and the flow sink (retry.py)."""

import asyncio
from dataclasses import dataclass, field

from neo4j import exceptions as neo_errors

from skygraph.topology.retry import next_batch, write_retrying


@dataclass
class Stats:
    retries: int = 0
    rejected: int = 0
    last_error: str = ""
    rejected_details: list[str] = field(default_factory=list)


def retrying(batch: list[int], write, stats: Stats) -> int:
    return asyncio.run(write_retrying(batch, write, stats=stats, what="test",
                                      describe=lambda i: f"item {i}", merge=int.__add__,
                                      refused=0, permanent=ValueError, max_backoff=0.01))


def test_a_transient_error_is_retried_until_the_batch_is_written():
    written: list[list[int]] = []
    failures = [neo_errors.TransientError("deadlock"), neo_errors.ServiceUnavailable("down")]

    async def write(part: list[int]) -> int:
        if failures:
            raise failures.pop(0)
        written.append(part)
        return len(part)
    stats = Stats()
    assert retrying([1, 2, 3], write, stats) == 3
    assert written == [[1, 2, 3]] and stats.retries == 2 and stats.rejected == 0


def test_a_permanent_error_is_isolated_and_the_rest_written():
    written: list[int] = []

    async def write(part: list[int]) -> int:
        if 4 in part:
            raise ValueError("refused")
        written.extend(part)
        return len(part)
    stats = Stats()
    assert retrying(list(range(8)), write, stats) == 7
    assert sorted(written) == [0, 1, 2, 3, 5, 6, 7]
    assert stats.rejected == 1 and stats.rejected_details == ["item 4: ValueError: refused"]


def test_next_batch_takes_what_is_queued_up_to_its_size():
    async def scenario() -> tuple[list[int], list[int]]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(5):
            queue.put_nowait(i)
        return await next_batch(queue, 3, 0.01), await next_batch(queue, 3, 0.01)
    assert asyncio.run(scenario()) == ([0, 1, 2], [3, 4])
