"""`graph export --at`: the times Gremlin's At accepts, plus ISO 8601."""

import pytest

from skygraph.cli import parse_time

NOW = 1_795_000_000_000


@pytest.mark.parametrize(("text", "expected"), [
    ("-1h", NOW - 3_600_000),
    ("-90s", NOW - 90_000),
    ("NOW", NOW),
    ("1795000000", 1_795_000_000_000),          # seconds
    ("1795000000123", 1_795_000_000_123),       # milliseconds
    ("Sat, 21 Nov 2026 00:00:00 UTC", 1_795_219_200_000),
    ("2026-11-21T00:00:00+00:00", 1_795_219_200_000),
])
def test_times(text, expected):
    assert parse_time(text, NOW) == expected


def test_bad_time_says_what_is_accepted():
    with pytest.raises(ValueError, match=r"--at: expected a duration like -1h.*'yesterday'"):
        parse_time("yesterday", NOW)
