"""Fuzz: random token streams and random dialect-shaped queries only ever
translate or fail with a GremlinError (never another exception)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skygraph.gremlin import GremlinError, prepare
from skygraph.gremlin.parser import KEYWORDS, PREDICATES, STEPS

NOW = 1_700_000_000_000

WORDS = [*STEPS, *PREDICATES, *KEYWORDS, "G", "g", "true", "false", "At", "Node", "foo"]
TOKEN = st.one_of(
    st.sampled_from(WORDS), st.sampled_from([".", "(", ")", ",", "'", '"', "\\", "-", " "]),
    st.integers(-(2**70), 2**70).map(str), st.floats(allow_nan=False).map(str),
    st.text(max_size=8).map(lambda s: "'" + s + "'"),
    st.text(max_size=4),
)


def _check(text: str) -> None:
    try:
        p = prepare(text, NOW)
    except GremlinError as err:
        assert str(err)
        return
    assert p.cypher.startswith(("MATCH", "CALL", "UNWIND", "WITH"))
    if "context" not in text.lower() and "at(" not in text.lower():
        # live queries never pay for history
        assert "Archived" not in p.cypher


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TOKEN, max_size=30).map("".join))
def test_random_token_streams(text: str) -> None:
    _check(text)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TOKEN, max_size=30).map(lambda toks: "G." + "".join(toks)))
def test_random_after_g(text: str) -> None:
    _check(text)


VALUE = st.one_of(st.integers(-5, 5), st.sampled_from(["'a'", "'Node4'", "'intf'", "true"]))
PRED = st.builds(lambda name, args: f"{name}({', '.join(args)})",
                 st.sampled_from(sorted(PREDICATES)),
                 st.lists(VALUE.map(str), max_size=3))
ARG = st.one_of(VALUE.map(str), PRED, st.sampled_from(list(KEYWORDS)),
                st.sampled_from(["'Value'", "'Name'", "'@ID'", "'Type'", "'Map.a'"]))
STEP = st.builds(lambda name, args: f".{name}({', '.join(args)})",
                 st.sampled_from(sorted(STEPS)), st.lists(ARG, max_size=4))
QUERY = st.builds(lambda steps: "G" + "".join(steps), st.lists(STEP, max_size=6))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(QUERY)
def test_random_dialect_queries(text: str) -> None:
    _check(text)
