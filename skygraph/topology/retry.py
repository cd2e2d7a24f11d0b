"""Batching and retrying writes to the graph database, shared by the topology
writer (writer.py) and the flow sink (flowstore.py).

- `next_batch`: take a batch off a queue, bounded in size and delay.
- `write_retrying`: write a batch until the database takes it; which driver
  errors are worth another try is decided here (`RETRYABLE`), so this module
  and store.py are the only ones that know the neo4j driver's errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from neo4j import exceptions as neo_errors

from skygraph.topology.errors import StoreUnavailable

log = logging.getLogger("skygraph.store")

# Errors after which the same transaction may succeed: the database restarting
# or unreachable, lock conflicts, and (ArcadeDB) MERGE races on a unique key.
RETRYABLE = (neo_errors.ServiceUnavailable, neo_errors.SessionExpired,
             neo_errors.TransientError, neo_errors.ConstraintError,
             neo_errors.IncompleteCommit, ConnectionError, OSError)
# Any error the database answers with: what is not retried is permanent.
DATABASE_ERROR = neo_errors.Neo4jError
# A MERGE race on a unique key (ArcadeDB) clears on retry; more than this is a real violation.
MAX_CONSTRAINT_RETRIES = 10

T = TypeVar("T")
R = TypeVar("R")


class RetryStats(Protocol):
    retries: int
    rejected: int
    last_error: str
    rejected_details: list[str]


async def next_batch(queue: asyncio.Queue[T], max_batch: int, max_delay: float) -> list[T]:
    """Wait for one item, then take up to `max_batch` within `max_delay` seconds
    (without waiting while more are already queued)."""
    batch = [await queue.get()]
    deadline = time.monotonic() + max_delay
    while len(batch) < max_batch:
        try:
            batch.append(queue.get_nowait())
            continue
        except asyncio.QueueEmpty:
            pass
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            break
        try:  # wait for more only when nothing is queued
            batch.append(await asyncio.wait_for(queue.get(), timeout))
        except TimeoutError:
            break
    return batch


async def write_retrying(batch: list[T], write: Callable[[list[T]], Awaitable[R]], *,
                         stats: RetryStats, what: str, describe: Callable[[T], str],
                         merge: Callable[[R, R], R], refused: R,
                         permanent: type[Exception] | tuple[type[Exception], ...],
                         max_backoff: float) -> R:
    """Write `batch` until the database takes it: transient errors and restarts are
    retried with backoff (nothing accepted is lost); a MERGE race on a unique key
    (ArcadeDB) is retried a few times; a `permanent` error is narrowed down by
    halving the batch until the element responsible is found, logged and counted
    (`refused` stands for its result), so the rest is written."""
    backoff = 0.05
    constraint_errors = 0
    while True:
        try:
            return await write(batch)
        except neo_errors.ConstraintError as exc:
            constraint_errors += 1
            if constraint_errors > MAX_CONSTRAINT_RETRIES:
                failure: Exception = exc
                break
            stats.retries += 1
            await asyncio.sleep(backoff)
        except (*RETRYABLE, StoreUnavailable) as exc:
            stats.retries += 1
            stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("%s: batch of %d not written yet (%s); retrying in %.2fs", what,
                        len(batch), stats.last_error, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)
        except permanent as exc:
            failure = exc
            break
    if len(batch) == 1:
        message = getattr(failure, "message", None) or str(failure)
        detail = f"{describe(batch[0])}: {type(failure).__name__}: {message}"
        log.error("%s: rejected by the database: %s", what, detail)
        stats.rejected += 1
        stats.rejected_details = [*stats.rejected_details[-99:], detail]
        return refused
    half = len(batch) // 2

    async def part(sub: list[T]) -> R:
        return await write_retrying(sub, write, stats=stats, what=what, describe=describe,
                                    merge=merge, refused=refused, permanent=permanent,
                                    max_backoff=max_backoff)
    return merge(await part(batch[:half]), await part(batch[half:]))
