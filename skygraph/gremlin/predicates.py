"""Metadata filters -> Cypher conditions (SPEC §1f "Predicates").

Owns three rules of Skydive's filters: a term matches a field equal to it
*or* a list field containing it; keys are dotted metadata paths (`@ID`…
name element fields, a `Metadata.` prefix is dropped); and every value is a
query parameter — only validated, backquoted keys enter the Cypher text.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from skygraph.gremlin.ast import Arg, Call, Keyword, Literal, Step, describe
from skygraph.gremlin.errors import GremlinQueryError
from skygraph.topology import schema
from skygraph.topology.model import RESERVED_KEYS

# Special query keys naming element fields (SPEC §1a).
ELEMENT_KEYS = {
    "@ID": "ID", "@Host": "Host", "@Origin": "Origin", "@CreatedAt": "CreatedAt",
    "@UpdatedAt": "UpdatedAt", "@DeletedAt": "DeletedAt", "@Revision": "Revision",
}
# Keys whose values are always single strings, so a term is a plain equality
# that the store's indexes serve (a list-aware test scans every node). Name and
# Type are validated as strings on every node (model.validate_node);
# RelationType on every edge; TID and MAC are strings by every probe's contract.
SCALAR_KEYS = frozenset({"Name", "Type", "TID", "MAC", "RelationType"})
MAX_KEY_LENGTH = 256
_BAD_KEY = re.compile(r"[`\x00-\x1f\x7f]")
_LIST = "IS :: LIST<ANY> NOT NULL"


@dataclass
class Params:
    """Allocates `$pN` parameter names for literal values."""

    values: dict[str, Any] = field(default_factory=dict)

    def add(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return "$" + name


@dataclass(frozen=True, slots=True)
class Key:
    """A validated query key: `prop` is the stored property name, None when it can
    never exist (a metadata key shadowed by an element field); `single` when its
    value is known to be one scalar, never a list (flow fields)."""

    text: str
    prop: str | None
    single: bool = False

    @property
    def scalar(self) -> bool:
        return self.single or self.prop in SCALAR_KEYS or self.text in ELEMENT_KEYS

    def expr(self, var: str) -> str:
        return f"{var}.{schema.quote(self.prop)}" if self.prop is not None else "null"


def parse_key(arg: Arg) -> Key:
    """Validate a key argument (a string literal) and map it to a property name."""
    if not isinstance(arg, Literal) or not isinstance(arg.value, str):
        raise GremlinQueryError(f"expected a key (a string), got {describe(arg)}", arg.column)
    text = arg.value
    if text in ELEMENT_KEYS:
        return Key(text, ELEMENT_KEYS[text])
    path = text[len("Metadata."):] if text.startswith("Metadata.") else text
    if not path or len(path) > MAX_KEY_LENGTH or _BAD_KEY.search(path) \
            or path.startswith(".") or path.endswith(".") or ".." in path:
        raise GremlinQueryError(f"invalid key {text!r}", arg.column)
    if path.split(".")[0] in RESERVED_KEYS or path.startswith("@"):
        return Key(text, None)
    return Key(text, path)


def has_key(key: Key, var: str, params: Params) -> str:
    """The key exists: a stored property, or a map whose flattened children exist."""
    if key.prop is None:
        return "false"
    if key.scalar:
        return f"{key.expr(var)} IS NOT NULL"
    prefix = params.add(key.prop + ".")
    return (f"({key.expr(var)} IS NOT NULL OR "
            f"any(_k IN keys({var}) WHERE _k STARTS WITH {prefix}))")


def pairs_condition(args: Sequence[Arg], var: str, params: Params, *, either: bool,
                    step: str, column: int) -> str:
    """`Has(k, v, …)` (AND) or `HasEither(k, v, …)` (OR); `Has(k)` alone = key exists."""
    if len(args) == 1 and not either:
        return has_key(parse_key(args[0]), var, params)
    if len(args) % 2:
        raise GremlinQueryError(
            f"{step}() takes a key alone or key, value pairs; got {len(args)} arguments",
            column)
    conds = [value_condition(parse_key(args[i]), args[i + 1], var, params)
             for i in range(0, len(args), 2)]
    if not conds:
        return "true"
    joiner = " OR " if either else " AND "
    return "(" + joiner.join(conds) + ")"


def value_condition(key: Key, arg: Arg, var: str, params: Params) -> str:
    """One key compared with a literal (term match) or a predicate call."""
    x = key.expr(var)
    if isinstance(arg, Literal):
        return _guarded(key, [arg.value], var, params,
                        _term(x, params.add(arg.value), key.scalar))
    if isinstance(arg, Keyword):
        raise GremlinQueryError(f"unexpected keyword {arg.name} as a value", arg.column)
    if arg.name in ("Ne", "Nee"):
        # "exists" includes a map whose children are flattened (`Map.a`)
        exists = has_key(key, var, params)
        value = literal(arg.args[0], arg.name)
        differs = negate(_guarded(key, [value], var, params,
                                  _term(x, params.add(value), key.scalar)))
        if arg.name == "Ne":
            return f"({exists} AND {differs})"
        return f"({negate(exists)} OR {differs})"
    if arg.name in ("Within", "Without"):
        values = [literal(a, arg.name) for a in arg.args]
        cond = _guarded(key, values, var, params, _within(x, params.add(values), key.scalar))
        return cond if arg.name == "Within" else negate(cond)
    return _predicate(x, arg, params, key.scalar)


def _guarded(key: Key, values: list[Any], var: str, params: Params, cond: str) -> str:
    guard = _json_guard(key, values, var, params)
    return f"({cond} AND {guard})" if guard else cond


def negate(cond: str) -> str:
    """True when `cond` is false or null (a missing key fails every test).

    Written as `coalesce(c, false) = false`: the embedded server mis-evaluates
    `NOT coalesce(c, false)` inside WHERE when `c` contains a list predicate.
    """
    return f"coalesce({cond}, false) = false"


def _json_guard(key: Key, values: list[Any], var: str, params: Params) -> str:
    """Values the store cannot keep natively (null, maps, lists of maps) are
    stored as JSON text; a string literal equal to such a text (`'null'`) must
    not match it. Only literals that read as JSON non-strings need the guard."""
    if key.prop is None or key.scalar or not any(_reads_as_json(v) for v in values):
        return ""
    path = params.add(json.dumps(key.prop.split("."), separators=(",", ":")))
    return negate(f"{path} IN coalesce({var}.{schema.quote(schema.JSON_KEYS)}, [])")


def _reads_as_json(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return not isinstance(json.loads(value), str)
    except ValueError:
        return False


def _items(x: str) -> str:
    """The field as a list: itself when it is one, else a one-element list.

    Guarding with a CASE on the list itself (not on the predicate) matters: the
    embedded server evaluates list predicates even where AND/CASE would skip them.
    """
    return f"(CASE WHEN {x} {_LIST} THEN {x} ELSE [{x}] END)"


def _term(x: str, p: str, scalar: bool) -> str:
    if scalar:
        return f"{x} = {p}"
    return f"({x} = {p} OR {p} IN {_items(x)})"


def _within(x: str, p: str, scalar: bool) -> str:
    if scalar:
        return f"{x} IN {p}"
    return f"({x} IN {p} OR any(_y IN {_items(x)} WHERE _y IN {p}))"


def _predicate(x: str, call: Call, params: Params, scalar: bool) -> str:
    name = call.name
    if name == "Metadata":
        raise GremlinQueryError("Metadata(...) is not a value predicate", call.column)
    if name in ("Lt", "Gt", "Lte", "Gte"):
        op = {"Lt": "<", "Gt": ">", "Lte": "<=", "Gte": ">="}[name]
        return f"{x} {op} {params.add(integer(call.args[0], name))}"
    if name in ("Inside", "Between", "Outside"):
        low = params.add(integer(call.args[0], name))
        high = params.add(integer(call.args[1], name))
        if name == "Inside":
            return f"({x} > {low} AND {x} < {high})"
        if name == "Between":
            return f"({x} >= {low} AND {x} < {high})"
        return f"({x} < {low} OR {x} > {high})"
    if name == "Regex":
        p = params.add(regex(call.args[0]))
        if scalar:
            return f"{x} =~ {p}"
        return f"any(_y IN {_items(x)} WHERE _y IS :: STRING NOT NULL AND _y =~ {p})"
    if name == "Ipv4Range":
        low_ip, high_ip = ipv4_range(call.args[0])
        return _ipv4_in(x, params.add(low_ip), params.add(high_ip))
    raise GremlinQueryError(f"unknown predicate {name}", call.column)  # pragma: no cover


def _ipv4_in(x: str, low: str, high: str) -> str:
    octets = "split(split(_s, '/')[0], '.')"
    value = f"reduce(_a = 0, _o IN {octets} | _a * 256 + toInteger(_o))"
    return (f"any(_s IN {_items(x)} WHERE "
            f"_s IS :: STRING NOT NULL AND size({octets}) = 4 AND "
            f"all(_o IN {octets} WHERE toInteger(_o) >= 0 AND toInteger(_o) <= 255) AND "
            f"{value} >= {low} AND {value} <= {high})")


def literal(arg: Arg, where: str) -> str | int | float | bool:
    if isinstance(arg, Literal):
        return arg.value
    raise GremlinQueryError(f"{where}() expects a value, got {describe(arg)}", arg.column)


def integer(arg: Arg, where: str) -> int:
    """Numeric predicate arguments are cast to int64, as Skydive does."""
    if isinstance(arg, Literal) and not isinstance(arg.value, bool):
        value = arg.value
        if isinstance(value, (int, float)):
            return int(value)
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise GremlinQueryError(f"{where}() expects a number, got {describe(arg)}", arg.column)


def regex(arg: Arg) -> str:
    """Validate a regex; the database matches it anchored (`=~` is a full match)."""
    if not isinstance(arg, Literal) or not isinstance(arg.value, str):
        raise GremlinQueryError(f"Regex() expects a string, got {describe(arg)}", arg.column)
    try:
        re.compile(arg.value)
    except re.error as err:
        raise GremlinQueryError(f"invalid regex {arg.value!r}: {err}", arg.column) from None
    return arg.value


def ipv4_range(arg: Arg) -> tuple[int, int]:
    if isinstance(arg, Literal) and isinstance(arg.value, str):
        try:
            net = ipaddress.IPv4Network(arg.value, strict=False)
        except ValueError:
            pass
        else:
            return int(net.network_address), int(net.broadcast_address)
    raise GremlinQueryError(f"Ipv4Range() expects an IPv4 CIDR, got {describe(arg)}",
                            arg.column)



def sort_args(step: Step) -> tuple[str, Arg | None]:
    """`Sort([ASC|DESC,] [key])` -> (order, key argument or None for the default)."""
    order, args = "ASC", list(step.args)
    if args and isinstance(args[0], Keyword):
        kw = args.pop(0)
        assert isinstance(kw, Keyword)
        if kw.name not in ("ASC", "DESC"):
            raise GremlinQueryError(f"Sort() order must be ASC or DESC, got {kw.name}",
                                    kw.column)
        order = kw.name
    if len(args) > 1:
        raise GremlinQueryError("Sort() takes [ASC|DESC,] key", step.column)
    return order, (args[0] if args else None)
