"""Custom scalars of the schema: `Long` (64-bit integers, e.g. ms epoch times,
which GraphQL's 32-bit `Int` cannot hold). `JSON` is strawberry's own."""

from __future__ import annotations

from typing import Any, NewType

import strawberry
from graphql import IntValueNode, ValueNode
from strawberry.types.scalar import ScalarDefinition

Long = NewType("Long", int)

_MIN, _MAX = -(2**63), 2**63 - 1


def _long(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"Long cannot represent {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"Long cannot represent {value!r}") from None
    if isinstance(value, float) and number != value:
        raise ValueError(f"Long cannot represent a fraction: {value!r}")
    if not _MIN <= number <= _MAX:
        raise ValueError(f"Long cannot represent {value!r}: outside 64 bits")
    return number


def _long_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> int:
    if not isinstance(node, IntValueNode):
        raise ValueError("Long must be an integer literal")
    return _long(node.value)


SCALARS: dict[object, ScalarDefinition] = {
    Long: strawberry.scalar(
        name="Long", description="A 64-bit integer; times are milliseconds since the epoch.",
        serialize=_long, parse_value=_long, parse_literal=_long_literal),
}
