"""Lexer and parser: the dialect's syntax (SPEC §1f, skygraph difference #12)."""

from __future__ import annotations

import pytest

from skygraph.gremlin import GremlinSyntaxError, parse
from skygraph.gremlin.ast import Call, Keyword, Literal, Step
from skygraph.gremlin.lexer import Kind, tokenize


def test_tokens_and_columns() -> None:
    toks = tokenize("G.V('a', -1, 2.5)")
    assert [(t.kind, t.value, t.column) for t in toks] == [
        (Kind.WORD, "G", 1), (Kind.DOT, None, 2), (Kind.WORD, "V", 3), (Kind.LPAREN, None, 4),
        (Kind.STRING, "a", 5), (Kind.COMMA, None, 8), (Kind.NUMBER, -1, 10),
        (Kind.COMMA, None, 12), (Kind.NUMBER, 2.5, 14), (Kind.RPAREN, None, 17),
        (Kind.END, None, 18)]


@pytest.mark.parametrize(("text", "value"), [
    (r"'it\'s'", "it's"), (r'"say \"hi\""', 'say "hi"'), (r"'a\\b'", "a\\b"),
    ("'double \" inside single'", 'double " inside single'), ('""', ""),
])
def test_string_escapes(text: str, value: str) -> None:
    assert tokenize(text)[0].value == value


def test_numbers() -> None:
    assert [t.value for t in tokenize("0 -0 12 -7 3.25 -0.5")[:-1]] == [0, 0, 12, -7, 3.25, -0.5]
    assert isinstance(tokenize("1.0")[0].value, float)


def test_case_insensitive_keywords_and_aliases() -> None:
    q = parse("g.v().HAS('Name', 'eth0').out()")
    assert [s.name for s in q.steps] == ["V", "Has", "Out"]
    assert parse("G.AT('-1s', 1000).V()").steps[0].name == "Context"
    assert parse("G.context(NOW).V()").steps[0].name == "Context"
    assert parse("G.V().Flows().node()").steps[2].name == "CaptureNode"
    assert parse("G.V().Flows().Nodes()").steps[2].name == "Nodes"


def test_arguments() -> None:
    (step,) = parse("G.V().Has('a', true, 'b', FALSE, 'c', Within(1, 'x', Gt(2)))").steps[1:]
    assert step == Step("Has", (
        Literal("a", 11), Literal(True, 16), Literal("b", 22), Literal(False, 27),
        Literal("c", 34),
        Call("Within", (Literal(1, 46), Literal("x", 49), Call("Gt", (Literal(2, 57),), 54)),
             39)), 7)
    sort = parse("G.V().Sort(desc, 'Name')").steps[1]
    assert sort.args[0] == Keyword("DESC", 12)
    ctx = parse("G.Context(NOW, FOREVER)").steps[0]
    assert ctx.args == (Keyword("NOW", 11), Keyword("FOREVER", 16))


def test_seed_queries_parse() -> None:
    parse("G.V().Has('Name', 'vm1').Out().Has('Name', 'eth0')")
    parse("G.At('-1s', 1000).Flows().Has('Application', 'ICMPv4').RawPackets()")
    parse("G.V().Has('Name', 'eth0')")
    parse("G.V().Has('Value', 2).ShortestPathTo(Metadata('Value', 4), "
          "Metadata('RelationType', 'layer2')).SubGraph().V()")


# Every malformed query and its exact message.
ERRORS = [
    ("", "column 1: expected 'G' at the start of the query, found end of query"),
    ("V()", "column 1: expected 'G' at the start of the query, found 'V'"),
    ("G.V().Has('a'", "column 14: expected ')' after argument list"),
    ("G.V().Has('a' 'b')", "column 15: expected ')' after argument list"),
    ("G.V(.Has('Name', 'test')",
     "column 5: expected an argument (string, number, boolean, keyword or predicate), "
     "found '.'"),
    ("G.V()).Out()", "column 6: expected '.' before the next step, found ')'"),
    ("G.V(", "column 5: expected an argument (string, number, boolean, keyword or predicate), "
             "found end of query"),
    ("G.V().Foo()", "column 7: unknown step 'Foo'"),
    ("G.V().Out", "column 10: expected '(' after 'Out', found end of query"),
    ("G.V().", "column 7: expected a step name after '.', found end of query"),
    ("G.V().Count(1)", "column 7: Count() takes no arguments, got 1"),
    ("G.V().Range(1)", "column 7: Range() takes 2 arguments, got 1"),
    ("G.V().HasKey()", "column 7: HasKey() takes 1 argument, got 0"),
    ("G.V().Has()", "column 7: Has() takes at least 1 argument, got 0"),
    ("G.V().Sort(ASC, 'a', 'b')", "column 7: Sort() takes 0 to 2 arguments, got 3"),
    ("G.V().Has('a', Gtx(1))", "column 16: unknown predicate or keyword 'Gtx'"),
    ("G.V().Has('a', Gt(1, 2))", "column 16: Gt() takes 1 argument, got 2"),
    ("G.V().Has('a", "column 11: unterminated string"),
    ("G.V().Has('a\\n')", "column 13: invalid escape in string (only \\', \\\" and \\\\ are "
                          "allowed)"),
    ("G.V().Has('a', #)", "column 16: unexpected character '#'"),
    ("G.V().Has('a', 12ab)", "column 16: invalid number '12a'"),
    ("G.V().Has('a', 99999999999999999999)",
     "column 16: integer 99999999999999999999 does not fit in 64 bits"),
    ("G.V().Has('a', -)", "column 16: unexpected character '-'"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[t or "<empty>" for t, _ in ERRORS])
def test_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(GremlinSyntaxError) as info:
        parse(text)
    assert str(info.value) == message
    assert info.value.column == int(message.split(":")[0].split()[1])
