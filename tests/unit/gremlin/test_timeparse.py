"""Context/At time arguments (SPEC §1h)."""

from __future__ import annotations

import pytest

from skygraph.gremlin.ast import Keyword, Literal
from skygraph.gremlin.errors import GremlinQueryError
from skygraph.gremlin.timeparse import duration_ms, parse_duration_ms, time_point_ms

NOW = 1_700_000_000_000


@pytest.mark.parametrize(("text", "ms"), [
    ("-1s", -1000), ("5m", 300_000), ("1h30m", 5_400_000), ("1.5s", 1500), ("0", 0),
    ("+2ms", 2), ("-1m30s", -90_000), ("500us", 0), ("", None), ("1x", None), ("s", None),
    ("1s2", None), ("--1s", None),
])
def test_go_durations(text: str, ms: int | None) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize(("arg", "ms"), [
    (Keyword("NOW", 1), NOW),
    (Literal("-1s", 1), NOW - 1000),
    (Literal("Mon, 02 Jan 2006 15:04:05 MST", 1), 1136239445000),
    (Literal("Tue, 14 Nov 2023 22:13:20 GMT", 1), 1_700_000_000_000),
    (Literal(1_700_000_000, 1), 1_700_000_000_000),
    (Literal(1_700_000_000_123, 1), 1_700_000_000_123),
    (Literal(2**31 - 1, 1), (2**31 - 1) * 1000),
    (Literal(2**31, 1), 2**31),
])
def test_time_points(arg: Keyword | Literal, ms: int) -> None:
    assert time_point_ms(arg, NOW) == ms


@pytest.mark.parametrize("arg", [Literal("soon", 3), Literal(-5, 3), Literal(1.5, 3),
                                 Keyword("FOREVER", 3), Literal(True, 3),
                                 Literal("02 Jan 2006", 3)])
def test_bad_time_points(arg: Keyword | Literal) -> None:
    with pytest.raises(GremlinQueryError, match=r"^column 3: invalid time"):
        time_point_ms(arg, NOW)


def test_durations() -> None:
    assert duration_ms(Literal(1000, 1), NOW) == 1_000_000
    assert duration_ms(Literal("5m", 1), NOW) == 300_000
    assert duration_ms(Keyword("FOREVER", 1), NOW) == NOW
    for bad in (Literal("-5m", 2), Literal(-1, 2), Keyword("NOW", 2), Literal("x", 2)):
        with pytest.raises(GremlinQueryError, match=r"^column 2: invalid duration"):
            duration_ms(bad, NOW)
