"""The typed syntax tree of a Gremlin query.

A query is `G` followed by steps; step arguments are literals, bare keywords
(`ASC`, `NOW`, ...) or calls (predicates and `Metadata(...)`). Names are
canonical (the parser maps case and aliases), columns are 1-based.
"""

from __future__ import annotations

from dataclasses import dataclass

Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Literal:
    value: Scalar
    column: int


@dataclass(frozen=True, slots=True)
class Keyword:
    """A bare word argument: ASC, DESC, NOW, FOREVER."""

    name: str
    column: int


@dataclass(frozen=True, slots=True)
class Call:
    """A nested call argument: a predicate (`Gt(3)`) or `Metadata(k, v, ...)`."""

    name: str
    args: tuple[Arg, ...]
    column: int


Arg = Literal | Keyword | Call


def describe(arg: Arg) -> str:
    """An argument as error messages show it: 'eth0', NOW, Metadata(...)."""
    if isinstance(arg, Literal):
        return repr(arg.value)
    if isinstance(arg, Keyword):
        return arg.name
    return f"{arg.name}(...)"


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    args: tuple[Arg, ...]
    column: int


@dataclass(frozen=True, slots=True)
class Query:
    steps: tuple[Step, ...]
    text: str
