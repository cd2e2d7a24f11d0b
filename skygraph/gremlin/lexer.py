"""Tokens of Skydive's Gremlin dialect.

Words (step names, predicates, keywords, `true`/`false`), numbers (integers,
floats, an optional leading `-`), strings in `'…'` or `"…"` with `\\'`, `\\"`
and `\\\\` escapes (skygraph difference #12), and the punctuation `.`, `(`,
`)`, `,`. Whitespace separates tokens. Columns are 1-based.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from skygraph.gremlin.errors import GremlinSyntaxError


class Kind(Enum):
    WORD = "word"
    STRING = "string"
    NUMBER = "number"
    DOT = "'.'"
    LPAREN = "'('"
    RPAREN = "')'"
    COMMA = "','"
    END = "end of query"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    text: str
    value: str | int | float | None
    column: int


_PUNCT = {".": Kind.DOT, "(": Kind.LPAREN, ")": Kind.RPAREN, ",": Kind.COMMA}
_ESCAPES = {"'": "'", '"': '"', "\\": "\\"}
MAX_QUERY_LENGTH = 65536
_DIGITS = frozenset("0123456789")


def tokenize(text: str) -> list[Token]:
    """Split `text` into tokens, ending with an END token."""
    if len(text) > MAX_QUERY_LENGTH:
        raise GremlinSyntaxError(f"query longer than {MAX_QUERY_LENGTH} characters", 1)
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        col = i + 1
        if ch.isspace():
            i += 1
        elif ch in _PUNCT:
            tokens.append(Token(_PUNCT[ch], ch, None, col))
            i += 1
        elif ch in "'\"":
            i = _string(text, i, tokens)
        elif ch in _DIGITS or (ch == "-" and i + 1 < n and text[i + 1] in _DIGITS):
            i = _number(text, i, tokens)
        elif ch.isalpha() or ch == "_":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            tokens.append(Token(Kind.WORD, text[i:j], text[i:j], col))
            i = j
        else:
            raise GremlinSyntaxError(f"unexpected character {ch!r}", col)
    tokens.append(Token(Kind.END, "", None, n + 1))
    return tokens


def _string(text: str, start: int, tokens: list[Token]) -> int:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1] if i + 1 < len(text) else ""
            if nxt not in _ESCAPES:
                raise GremlinSyntaxError(
                    "invalid escape in string (only \\', \\\" and \\\\ are allowed)", i + 1)
            out.append(_ESCAPES[nxt])
            i += 2
        elif ch == quote:
            tokens.append(Token(Kind.STRING, text[start:i + 1], "".join(out), start + 1))
            return i + 1
        else:
            out.append(ch)
            i += 1
    raise GremlinSyntaxError("unterminated string", start + 1)


def _number(text: str, start: int, tokens: list[Token]) -> int:
    i = start + 1
    n = len(text)
    while i < n and text[i] in _DIGITS:
        i += 1
    is_float = False
    if i + 1 < n and text[i] == "." and text[i + 1] in _DIGITS:
        is_float = True
        i += 1
        while i < n and text[i] in _DIGITS:
            i += 1
    if i < n and (text[i].isalpha() or text[i] == "_"):
        raise GremlinSyntaxError(f"invalid number {text[start:i + 1]!r}", start + 1)
    raw = text[start:i]
    value: int | float = float(raw) if is_float else int(raw)
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise GremlinSyntaxError(f"integer {raw} does not fit in 64 bits", start + 1)
    tokens.append(Token(Kind.NUMBER, raw, value, start + 1))
    return i
