"""`execute` with a fake `read`: existence checks, timeouts, pass-through."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from skygraph.gremlin import ElementNotFoundError, LimitExceededError, Limits, execute


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_rows_are_finished() -> None:
    seen: list[tuple[str, dict[str, Any], float]] = []

    async def read(cypher: str, params: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        seen.append((cypher, params, timeout))
        return [{"count": 3}]

    assert run(execute("G.V().Count()", read, 0, Limits(timeout_s=2.5))) == 3
    assert seen[0][2] == 2.5


def test_missing_id_is_checked_first() -> None:
    async def read(cypher: str, params: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        assert "RETURN 1 AS found" in cypher
        return []

    with pytest.raises(ElementNotFoundError, match="Node 'x' does not exist"):
        run(execute("G.V('x').Out()", read, 0))


def test_client_side_timeout() -> None:
    async def read(cypher: str, params: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        await asyncio.sleep(10)
        return []

    with pytest.raises(LimitExceededError, match=r"query timed out after 0\.01 s"):
        run(execute("G.V()", read, 0, Limits(timeout_s=0.01)))


class ServerTimeout(Exception):
    code = "Neo.ClientError.Transaction.TransactionTimedOutClientConfiguration"


class Unrelated(Exception):
    code = "Neo.ClientError.Statement.SyntaxError"


def test_server_side_timeout_and_other_errors() -> None:
    async def timing_out(cypher: str, params: dict[str, Any], timeout: float) -> Any:
        raise ServerTimeout("timed out")

    async def failing(cypher: str, params: dict[str, Any], timeout: float) -> Any:
        raise Unrelated("bad")

    with pytest.raises(LimitExceededError, match="timed out after 10 s"):
        run(execute("G.V()", timing_out, 0))
    with pytest.raises(Unrelated):
        run(execute("G.V()", failing, 0))
