"""GraphStore.read: one auto-commit query in a read session (no BEGIN/COMMIT
round trips), rows as dicts; a transient error or a lost connection is retried
as the driver retries its transactions, within the read's timeout; a permanent
error is raised at once, and a server that is down is StoreUnavailable at once."""

from __future__ import annotations

import asyncio
from typing import Any

import neo4j
import pytest
from neo4j import exceptions as neo_errors

from skygraph.topology.dialect import Dialect
from skygraph.topology.errors import StoreUnavailable
from skygraph.topology.store import GraphStore


class Result:
    def __init__(self, keys: list[str], rows: list[list[Any]]) -> None:
        self._keys, self._rows = keys, rows

    def keys(self) -> list[str]:
        return self._keys

    async def values(self) -> list[list[Any]]:
        return self._rows


class Session:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def run(self, query: Any, params: dict[str, Any]) -> Result:
        self.driver.runs.append((query, params))
        if self.driver.failures:
            raise self.driver.failures.pop(0)
        return Result(["n", "c"], [[1, "a"], [2, "b"]])

    async def execute_read(self, *args: Any, **kw: Any) -> Any:
        raise AssertionError("a read is not a managed transaction")


class Driver:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.runs: list[tuple[Any, dict[str, Any]]] = []
        self.sessions: list[dict[str, Any]] = []

    def session(self, **kw: Any) -> Session:
        self.sessions.append(kw)
        return Session(self)


def store_with(driver: Driver) -> GraphStore:
    return GraphStore(driver, "db", Dialect("neo4j", "Neo4j/5"), "bolt://x")  # type: ignore[arg-type]


def transient() -> neo_errors.Neo4jError:
    return neo_errors.TransientError._hydrate_neo4j(
        code="Neo.TransientError.Transaction.DeadlockDetected", message="deadlock")


def test_a_read_is_one_auto_commit_query_in_a_read_session() -> None:
    driver = Driver([])
    rows = asyncio.run(store_with(driver).read("MATCH (n) RETURN n", {"x": 1}, timeout=2.5))
    assert rows == [{"n": 1, "c": "a"}, {"n": 2, "c": "b"}]
    assert driver.sessions == [{"database": "db", "default_access_mode": neo4j.READ_ACCESS}]
    (query, params), = driver.runs
    assert isinstance(query, neo4j.Query) and query.text == "MATCH (n) RETURN n"
    assert query.timeout == 2.5 and params == {"x": 1}


def test_transient_errors_and_lost_connections_are_retried() -> None:
    driver = Driver([transient(), neo_errors.SessionExpired("gone"), transient()])
    rows = asyncio.run(store_with(driver).read("RETURN 1", {}))
    assert len(rows) == 2 and len(driver.runs) == 4


def test_retries_end_with_the_reads_timeout() -> None:
    driver = Driver([transient() for _ in range(100)])
    with pytest.raises(neo_errors.TransientError):
        asyncio.run(store_with(driver).read("RETURN 1", {}, timeout=0.3))
    assert 2 <= len(driver.runs) < 10


def test_a_permanent_error_is_raised_at_once() -> None:
    bad = neo_errors.CypherSyntaxError._hydrate_neo4j(
        code="Neo.ClientError.Statement.SyntaxError", message="bad")
    driver = Driver([bad])
    with pytest.raises(neo_errors.CypherSyntaxError):
        asyncio.run(store_with(driver).read("RETRUN 1", {}))
    assert len(driver.runs) == 1


def test_a_server_that_is_down_is_unavailable_at_once() -> None:
    driver = Driver([neo_errors.ServiceUnavailable("down")])
    with pytest.raises(StoreUnavailable, match="bolt://x is unavailable: down"):
        asyncio.run(store_with(driver).read("RETURN 1", {}))
    assert len(driver.runs) == 1
