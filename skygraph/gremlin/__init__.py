"""Skydive's Gremlin dialect, translated to Cypher (SPEC §1f, §1h).

`parse(text)` -> AST, `translate(ast, now_ms, limits)` -> `Plan` (Cypher +
parameters + a pure `finish`; `prepare(text, ...)` does both),
`execute(text, read, now_ms, limits)` runs it through an injected
`read(cypher, params, timeout_s)` callable; every error users see is a
`GremlinError` (`column N: ...` when tied to a place in the query).
"""

from skygraph.gremlin.ast import Query
from skygraph.gremlin.errors import (
    ElementNotFoundError,
    GremlinError,
    GremlinQueryError,
    GremlinSyntaxError,
    LimitExceededError,
    NotAvailableError,
)
from skygraph.gremlin.parser import parse
from skygraph.gremlin.plan import Limits, Plan
from skygraph.gremlin.query import Read, execute, prepare
from skygraph.gremlin.translator import translate

__all__ = [
    "ElementNotFoundError", "GremlinError", "GremlinQueryError", "GremlinSyntaxError",
    "LimitExceededError", "Limits", "NotAvailableError", "Plan", "Query", "Read", "execute",
    "parse", "prepare", "translate",
]
