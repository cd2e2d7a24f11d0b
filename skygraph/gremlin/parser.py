"""Recursive-descent parser: tokens -> `ast.Query`.

Grammar (keywords case-insensitive):

    query := 'G' ('.' step)* END
    step  := WORD '(' [arg (',' arg)*] ')'
    arg   := STRING | NUMBER | 'true' | 'false' | KEYWORD | WORD '(' [arg (',' arg)*] ')'

The tables below own the dialect's vocabulary: canonical step names, their
aliases (`AT` = `CONTEXT`, `NODE` = `CAPTURENODE`), how many arguments each
takes, and which steps belong to the flow extension.
"""

from __future__ import annotations

from collections.abc import Mapping

from skygraph.gremlin.ast import Arg, Call, Keyword, Literal, Query, Step
from skygraph.gremlin.errors import GremlinSyntaxError
from skygraph.gremlin.lexer import Kind, Token, tokenize

ANY = -1  # no upper bound on the argument count

# canonical name -> (min args, max args or ANY)
TOPOLOGY_STEPS: Mapping[str, tuple[int, int]] = {
    "Context": (1, 2), "V": (0, 1), "E": (0, 1),
    "Has": (1, ANY), "HasKey": (1, 1), "HasNot": (1, 1), "HasEither": (2, ANY),
    "Out": (0, ANY), "In": (0, ANY), "Both": (0, ANY),
    "OutE": (0, ANY), "InE": (0, ANY), "BothE": (0, ANY),
    "OutV": (0, ANY), "InV": (0, ANY), "BothV": (0, ANY),
    "Dedup": (0, ANY), "Count": (0, 0), "Range": (2, 2), "Limit": (1, 1),
    "Sort": (0, 2), "Values": (1, 1), "ValueMap": (0, ANY), "Keys": (0, 0),
    "Sum": (0, 1), "ShortestPathTo": (1, 2), "SubGraph": (0, ANY),
    "As": (1, 1), "Select": (1, ANY),
    "Descendants": (0, ANY), "Ascendants": (0, ANY), "Neighbors": (0, ANY),
}
FLOW_STEPS: Mapping[str, tuple[int, int]] = {
    "Flows": (0, ANY), "Hops": (0, ANY), "Nodes": (0, ANY), "CaptureNode": (0, ANY),
    "Metrics": (0, 1), "Aggregates": (0, 1), "RawPackets": (0, 0), "BPF": (1, 1),
    "Group": (0, 1), "MoreThan": (0, 1), "Sockets": (0, 0), "NextHop": (1, 1),
    "Workflow": (1, ANY),
}
STEPS: Mapping[str, tuple[int, int]] = {**TOPOLOGY_STEPS, **FLOW_STEPS}
PREDICATES: Mapping[str, tuple[int, int]] = {
    "Within": (1, ANY), "Without": (1, ANY), "Ne": (1, 1), "Nee": (1, 1),
    "Lt": (1, 1), "Gt": (1, 1), "Lte": (1, 1), "Gte": (1, 1),
    "Inside": (2, 2), "Outside": (2, 2), "Between": (2, 2),
    "Regex": (1, 1), "Ipv4Range": (1, 1), "Metadata": (0, ANY),
}
KEYWORDS = ("ASC", "DESC", "NOW", "FOREVER")
ALIASES = {"AT": "Context", "NODE": "CaptureNode"}

_STEP_NAMES = {name.upper(): name for name in STEPS} | ALIASES
_PREDICATE_NAMES = {name.upper(): name for name in PREDICATES}


def parse(text: str) -> Query:
    """Parse a query; raise GremlinSyntaxError naming the column and what was expected."""
    return _Parser(tokenize(text), text).query()


def arity_message(name: str, bounds: tuple[int, int], got: int) -> str | None:
    """The error text when `got` arguments do not fit `bounds`, else None."""
    low, high = bounds
    if low <= got and (high == ANY or got <= high):
        return None
    if high == ANY:
        want = f"at least {low} argument{'s' if low != 1 else ''}"
    elif low == high:
        want = "no arguments" if low == 0 else f"{low} argument{'s' if low != 1 else ''}"
    else:
        want = f"{low} to {high} arguments"
    return f"{name}() takes {want}, got {got}"


class _Parser:
    def __init__(self, tokens: list[Token], text: str) -> None:
        self.tokens = tokens
        self.pos = 0
        self.text = text

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        tok = self.tokens[self.pos]
        if tok.kind is not Kind.END:
            self.pos += 1
        return tok

    def fail(self, tok: Token, message: str) -> GremlinSyntaxError:
        return GremlinSyntaxError(f"{message}, found {_describe(tok)}", tok.column)

    def query(self) -> Query:
        first = self.advance()
        if first.kind is not Kind.WORD or first.text.upper() != "G":
            raise self.fail(first, "expected 'G' at the start of the query")
        steps: list[Step] = []
        while self.peek().kind is not Kind.END:
            dot = self.advance()
            if dot.kind is not Kind.DOT:
                raise self.fail(dot, "expected '.' before the next step")
            steps.append(self.step())
        return Query(tuple(steps), self.text)

    def step(self) -> Step:
        tok = self.advance()
        if tok.kind is not Kind.WORD:
            raise self.fail(tok, "expected a step name after '.'")
        name = _STEP_NAMES.get(tok.text.upper())
        if name is None:
            raise GremlinSyntaxError(f"unknown step '{tok.text}'", tok.column)
        args = self.arguments(tok, name)
        message = arity_message(name, STEPS[name], len(args))
        if message:
            raise GremlinSyntaxError(message, tok.column)
        return Step(name, args, tok.column)

    def arguments(self, name_tok: Token, name: str) -> tuple[Arg, ...]:
        lpar = self.advance()
        if lpar.kind is not Kind.LPAREN:
            raise self.fail(lpar, f"expected '(' after '{name_tok.text}'")
        args: list[Arg] = []
        if self.peek().kind is Kind.RPAREN:
            self.advance()
            return ()
        while True:
            args.append(self.argument())
            tok = self.advance()
            if tok.kind is Kind.RPAREN:
                return tuple(args)
            if tok.kind is not Kind.COMMA:
                raise GremlinSyntaxError("expected ')' after argument list", tok.column)

    def argument(self) -> Arg:
        tok = self.advance()
        if tok.kind is Kind.STRING or tok.kind is Kind.NUMBER:
            assert tok.value is not None
            return Literal(tok.value, tok.column)
        if tok.kind is not Kind.WORD:
            raise self.fail(tok, "expected an argument (string, number, boolean, keyword or "
                                 "predicate)")
        upper = tok.text.upper()
        if upper in ("TRUE", "FALSE"):
            return Literal(upper == "TRUE", tok.column)
        if upper in KEYWORDS:
            return Keyword(upper, tok.column)
        name = _PREDICATE_NAMES.get(upper)
        if name is None:
            raise GremlinSyntaxError(f"unknown predicate or keyword '{tok.text}'", tok.column)
        args = self.arguments(tok, name)
        message = arity_message(name, PREDICATES[name], len(args))
        if message:
            raise GremlinSyntaxError(message, tok.column)
        return Call(name, args, tok.column)


def _describe(tok: Token) -> str:
    if tok.kind is Kind.END:
        return "end of query"
    if tok.kind is Kind.WORD:
        return f"'{tok.text}'"
    if tok.kind in (Kind.STRING, Kind.NUMBER):
        return f"{tok.kind.value} {tok.text}"
    return str(tok.kind.value)
