"""Records -> Skydive's JSON result shapes.

Nodes and edges come back as their stored properties and leave as Skydive
topology elements (`{"ID","Metadata","Host","Origin","CreatedAt",
"UpdatedAt","Revision"[,"DeletedAt"]}`, edges also `"Parent","Child"`),
with metadata rebuilt by `schema.from_properties`. The `finish` halves of
plans live here too: they shape records, apply the steps that follow
`Values()`, and enforce the result cap.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from skygraph.gremlin import shapes
from skygraph.gremlin.errors import LimitExceededError
from skygraph.gremlin.plan import Record
from skygraph.gremlin.predicates import Key
from skygraph.topology import schema

Post = Callable[[list[Any]], Any]

AT_KEYS = ("@ID", "@Host", "@Origin", "@CreatedAt", "@UpdatedAt", "@DeletedAt", "@Revision")


def _int(props: Mapping[str, Any], key: str) -> int:
    value = props.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def node_json(props: Mapping[str, Any]) -> dict[str, Any]:
    """`Node(...).to_json()` of stored properties, without building the Node
    (the hot path of every node result: tests/unit/gremlin/test_shapes.py keeps
    it equal to the model's)."""
    return _element(props, {"ID": str(props.get("ID", "")), "Metadata": shapes.metadata(props)})


def edge_json(props: Mapping[str, Any]) -> dict[str, Any]:
    """`Edge(...).to_json()` of stored properties (as `node_json`)."""
    return _element(props, {"ID": str(props.get("ID", "")), "Metadata": shapes.metadata(props),
                            "Parent": str(props.get("Parent", "")),
                            "Child": str(props.get("Child", ""))})


def _element(props: Mapping[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """The fields nodes and edges share, after their own (the models' key order)."""
    out.update(Host=str(props.get("Host") or ""), Origin=str(props.get("Origin") or ""),
               CreatedAt=_int(props, "CreatedAt") or None,
               UpdatedAt=_int(props, "UpdatedAt") or None, Revision=_int(props, "Revision"))
    deleted = props.get("DeletedAt")
    if deleted:
        out["DeletedAt"] = deleted
    return out


def element_json(props: Mapping[str, Any]) -> dict[str, Any]:
    return edge_json(props) if "Parent" in props and "Child" in props else node_json(props)


def lookup(meta: Mapping[str, Any], path: str) -> Any:
    """A dotted path inside metadata, or None."""
    cur: Any = meta
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def field_value(props: Mapping[str, Any], key: str, prop: str | None) -> Any:
    """The value of a query key (`@ID` or a dotted metadata path) on stored properties."""
    if prop is None:
        return None
    if key.startswith("@"):
        return props.get(prop)
    if prop in props:
        value = props[prop]
        if isinstance(value, str) and prop in json_props(props):
            return json.loads(value)
        return value
    return lookup(shapes.metadata(props), prop)


def json_props(props: Mapping[str, Any]) -> set[str]:
    return {".".join(json.loads(p)) for p in props.get(schema.JSON_KEYS) or []}


def is_empty(value: Any) -> bool:
    return isinstance(value, (list, dict)) and not value


def top_level_keys(prop_names: list[str]) -> list[str]:
    """Keys() over nodes: the union of top-level metadata keys plus the `@` keys."""
    keys = {name.split(".")[0] for name in prop_names
            if name not in schema.INTERNAL_PROPERTIES}
    return sorted(keys) + list(AT_KEYS)


# ---------------------------------------------------------------- plan finishers

def check_cap(rows: list[Record], cap: int) -> None:
    if len(rows) > cap:
        raise LimitExceededError(
            f"more than {cap} results: narrow the query or add Limit()")


def elements(conv: Callable[[Any], Any] | None, cap: int) -> Callable[[list[Record]], Any]:
    def finish(rows: list[Record]) -> list[Any]:
        check_cap(rows, cap)
        if conv is None:
            return [[node_json(p) for p in row["path"]] for row in rows
                    if row["path"] is not None]
        return [conv(row["element"]) for row in rows]
    return finish


def subgraph(rows: list[Record]) -> dict[str, Any]:
    if not rows:
        return {"Nodes": [], "Edges": []}
    row = rows[0]
    return {"Nodes": [node_json(p) for p in row["nodes"]],
            "Edges": [edge_json(p) for p in row["edges"]]}


def count(rows: list[Record]) -> int:
    return int(rows[0]["count"]) if rows else 0


def total(rows: list[Record]) -> int:
    return int(rows[0]["total"] or 0) if rows else 0


def keys(rows: list[Record]) -> list[str]:
    return top_level_keys([str(r["key"]) for r in rows])


def dedup_values(items: list[Any]) -> list[Any]:
    seen: set[str] = set()
    out = []
    for item in items:
        mark = json.dumps(item, sort_keys=True, default=str)
        if mark not in seen:
            seen.add(mark)
            out.append(item)
    return out


def values(key: Key, cap: int, post: list[Post]) -> Callable[[list[Record]], Any]:
    def finish(rows: list[Record]) -> Any:
        check_cap(rows, cap)
        items: list[Any] = []
        for row in rows:
            value = row["value"]
            if value is None and row["props"] is not None:
                value = field_value(row["props"], key.text, key.prop)
            elif isinstance(value, str) and key.prop and row["json"] and \
                    key.prop in json_props({schema.JSON_KEYS: row["json"]}):
                value = json.loads(value)
            if value is None or is_empty(value):
                continue
            items.append(value)
        out: Any = items
        for step in post:
            out = step(out)
        return out
    return finish


def value_maps(keys: list[Key], cap: int) -> Callable[[list[Record]], Any]:
    def finish(rows: list[Record]) -> list[dict[str, Any]]:
        check_cap(rows, cap)
        out = []
        for row in rows:
            props = row["props"]
            if not keys:
                out.append(shapes.metadata(props))
                continue
            entry = {}
            for key in keys:
                value = field_value(props, key.text, key.prop)
                if value is not None:
                    entry[key.text] = value
            out.append(entry)
        return out
    return finish

