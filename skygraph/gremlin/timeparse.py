"""Time arguments of `Context`/`At` (SPEC §1h), converted to ms epoch.

A time point is `NOW`, a Go duration relative to now (`'-1s'`, `'-5m'`,
`'1h30m'`), an RFC 1123 date (`'Mon, 02 Jan 2006 15:04:05 MST'`) or an
integer: seconds since the epoch when it fits in 31 bits, else milliseconds.
A duration (the slice length) is a Go duration string, integer seconds or
`FOREVER` (everything since the epoch). Pure: `now_ms` comes in.
"""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime

from skygraph.gremlin.ast import Arg, Keyword, Literal, describe
from skygraph.gremlin.errors import GremlinQueryError

_UNIT_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "μs": 1e-3, "ms": 1.0, "s": 1000.0,
            "m": 60_000.0, "h": 3_600_000.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_INT31 = 2**31 - 1


def parse_duration_ms(text: str) -> int | None:
    """A Go duration string in ms (may be negative), or None when it is not one."""
    body = text.strip()
    sign = 1
    if body[:1] in "+-" and body:
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        return None
    pos, total = 0, 0.0
    while pos < len(body):
        match = _PART.match(body, pos)
        if not match:
            return None
        total += float(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    return sign * round(total)


def time_point_ms(arg: Arg, now_ms: int) -> int:
    """The instant named by the first argument of `Context`."""
    if isinstance(arg, Keyword) and arg.name == "NOW":
        return now_ms
    if isinstance(arg, Literal) and not isinstance(arg.value, bool):
        value = arg.value
        if isinstance(value, int):
            if value < 0:
                raise GremlinQueryError(f"invalid time {value}: negative", arg.column)
            return value * 1000 if value <= _INT31 else value
        if isinstance(value, str):
            delta = parse_duration_ms(value)
            if delta is not None:
                return now_ms + delta
            try:
                stamp = parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                stamp = None
            if stamp is not None and stamp.tzinfo is not None:
                return int(stamp.timestamp() * 1000)
    raise GremlinQueryError(
        f"invalid time {describe(arg)}: expected NOW, a duration like '-1s', an RFC 1123 date "
        "or epoch seconds/milliseconds", arg.column)


def duration_ms(arg: Arg, at_ms: int) -> int:
    """The length of the time slice named by the second argument of `Context`."""
    if isinstance(arg, Keyword) and arg.name == "FOREVER":
        return at_ms
    if isinstance(arg, Literal) and not isinstance(arg.value, bool):
        value = arg.value
        if isinstance(value, int) and value >= 0:
            return value * 1000
        if isinstance(value, str):
            delta = parse_duration_ms(value)
            if delta is not None and delta >= 0:
                return delta
    raise GremlinQueryError(
        f"invalid duration {describe(arg)}: expected FOREVER, a duration like '5m' or seconds",
        arg.column)

