"""Errors a Gremlin query can raise; every message is meant for the user.

Syntax and translation errors carry the 1-based column of the offending token
and render as `column N: <what was wrong>`.
"""

from __future__ import annotations


class GremlinError(Exception):
    """Base of every Gremlin error. `column` is 1-based, or None when not tied to one."""

    def __init__(self, message: str, column: int | None = None) -> None:
        self.message = message
        self.column = column
        super().__init__(f"column {column}: {message}" if column is not None else message)


class GremlinSyntaxError(GremlinError):
    """The text is not a well-formed query (lexer or parser)."""


class GremlinQueryError(GremlinError):
    """Well-formed, but a step or predicate is misused (arity, type, regex, time)."""


class NotAvailableError(GremlinError):
    """The query needs a part of skygraph that is not there (e.g. the flow store)."""


class ElementNotFoundError(GremlinError):
    """`V('id')` / `E('id')` named an element that does not exist."""


class LimitExceededError(GremlinError):
    """The query ran past the timeout or produced more results than allowed."""
