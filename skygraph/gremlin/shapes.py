"""Stored properties -> Skydive's JSON documents, one compiled layout per key set.

`schema.from_properties` and `flowschema.flow_json` rebuild a document key by
key (split each dotted name, walk the path, sort a flow's extra keys); the
rows of one result mostly share one key set, and what those functions build
depends on the key set alone (property values are scalars or lists, so no
value changes the nesting), except for JSON-encoded properties (`_json`).
So the layout of a key set is computed once, by running those very
functions on placeholders that name their source property, and a row is
then built by copying values into that layout. Rows with JSON-encoded
properties take the functions themselves. Output is identical, key order
included (tests/unit/gremlin/test_shapes.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from skygraph.topology import flowschema, schema

# (name, kind, what): kind LEAF copies property `what`, TREE builds the layout
# `what`, CONST puts `what` (an immutable default such as a flow's "" ParentUUID).
LEAF, TREE, CONST = 0, 1, 2
Layout = tuple[tuple[str, int, Any], ...]
LAYOUTS = 1024  # key sets remembered per kind of document


class _Source:
    """A placeholder value: the property it stands for."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key


def _compile(doc: Mapping[str, Any]) -> Layout:
    out: list[tuple[str, int, Any]] = []
    for name, value in doc.items():
        if isinstance(value, _Source):
            out.append((name, LEAF, value.key))
        elif isinstance(value, dict):
            out.append((name, TREE, _compile(value)))
        else:
            out.append((name, CONST, value))
    return tuple(out)


def _build(layout: Layout, props: Mapping[str, Any]) -> dict[str, Any]:
    return {name: props[what] if kind == LEAF else _build(what, props) if kind == TREE
            else what for name, kind, what in layout}


def _layout_of(rebuild: Callable[[Mapping[str, Any]], dict[str, Any]]
               ) -> Callable[[tuple[str, ...]], Layout]:
    @functools.lru_cache(maxsize=LAYOUTS)
    def layout(keys: tuple[str, ...]) -> Layout:
        return _compile(rebuild({k: _Source(k) for k in keys}))
    return layout


_metadata_layout = _layout_of(schema.from_properties)
_flow_layout = _layout_of(flowschema.flow_json)


def metadata(props: Mapping[str, Any]) -> dict[str, Any]:
    """`schema.from_properties(props)`."""
    if schema.JSON_KEYS in props:
        return schema.from_properties(props)
    return _build(_metadata_layout(tuple(props)), props)


def flow(props: Mapping[str, Any]) -> dict[str, Any]:
    """`flowschema.flow_json(props)`."""
    if schema.JSON_KEYS in props:
        return flowschema.flow_json(props)
    return _build(_flow_layout(tuple(props)), props)
