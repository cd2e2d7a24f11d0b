"""Running a query: parse, translate, read through an injected callable, finish.

The `read` callable is the only way out to the database (the store module
provides it; gremlin never imports a driver): it takes Cypher, parameters
and a timeout in seconds and returns records as dicts. Likewise `BPF()`
filters are compiled by a callable the caller gives (libpcap's compiler).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from skygraph.gremlin.errors import ElementNotFoundError, LimitExceededError
from skygraph.gremlin.packets import Compile, apply_filters
from skygraph.gremlin.parser import parse
from skygraph.gremlin.plan import Limits, Plan
from skygraph.gremlin.translator import translate

Read = Callable[[str, dict[str, Any], float], Awaitable[Sequence[Mapping[str, Any]]]]


def prepare(text: str, now_ms: int, limits: Limits | None = None) -> Plan:
    """Parse and translate `text` (pure)."""
    return translate(parse(text), now_ms, limits)


async def execute(text: str, read: Read, now_ms: int, limits: Limits | None = None,
                  compile_bpf: Compile | None = None) -> Any:
    """Run a Gremlin query and return its result in Skydive's JSON shape.
    `compile_bpf` compiles the filters of `BPF()` steps (libpcap: the caller's)."""
    limits = limits or Limits()
    the_plan = prepare(text, now_ms, limits)
    for check in the_plan.checks:
        if not await _read(read, check.cypher, dict(check.params), limits):
            raise ElementNotFoundError(check.message)
    rows = await _read(read, the_plan.cypher, dict(the_plan.params), limits)
    result = the_plan.finish(list(rows))
    if the_plan.packet_filters:
        result = await apply_filters(result, the_plan.packet_filters, compile_bpf)
    return result


async def _read(read: Read, cypher: str, params: dict[str, Any],
                limits: Limits) -> Sequence[Mapping[str, Any]]:
    # The driver enforces the timeout server-side; the asyncio timeout is the
    # backstop when the server ignores it (a deadline on this task, where
    # wait_for would start a task per read).
    timed_out = LimitExceededError(
        f"query timed out after {limits.timeout_s:g} s: narrow it or add Limit()")
    try:
        async with asyncio.timeout(limits.timeout_s + 1.0):
            return await read(cypher, params, limits.timeout_s)
    except TimeoutError:
        raise timed_out from None
    except Exception as exc:
        # The server's own timeout, recognised by its status code (gremlin does
        # not import the driver): Neo.ClientError.Transaction.TransactionTimedOut...
        if "TimedOut" in str(getattr(exc, "code", "") or ""):
            raise timed_out from exc
        raise
