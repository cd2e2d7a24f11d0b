"""Graphviz rendering of a node, edge, path or subgraph result (`--format dot`)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any


class NotRenderable(ValueError):
    """The result is not made of nodes and edges (a count, values, ...)."""


def _q(text: Any) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _is_node(item: Any) -> bool:
    return isinstance(item, Mapping) and "ID" in item and "Metadata" in item and \
        "Parent" not in item


def _is_edge(item: Any) -> bool:
    return isinstance(item, Mapping) and "Parent" in item and "Child" in item


def _node_line(node: Mapping[str, Any]) -> str:
    meta = node.get("Metadata") or {}
    label = "\n".join(str(meta[k]) for k in ("Name", "Type") if meta.get(k)) or node["ID"]
    return f"  {_q(node['ID'])} [label={_q(label)}];"


def _edge_line(edge: Mapping[str, Any], style: str = "") -> str:
    rel = (edge.get("Metadata") or {}).get("RelationType", "")
    attrs = f"label={_q(rel)}" + (f", style={style}" if style else "")
    return f"  {_q(edge['Parent'])} -> {_q(edge['Child'])} [{attrs}];"


def render(result: Any) -> str:
    """DOT text for a query result; raise NotRenderable for other shapes."""
    nodes: dict[str, Mapping[str, Any]] = {}
    lines: list[str] = []
    items: Sequence[Any]
    if isinstance(result, Mapping) and "Nodes" in result and "Edges" in result:
        items = [*result["Nodes"], *result["Edges"]]
    elif isinstance(result, list):
        items = result
    else:
        raise NotRenderable("--format dot needs a node, edge, path or subgraph result")
    for item in items:
        if _is_node(item):
            nodes.setdefault(item["ID"], item)
        elif _is_edge(item):
            lines.append(_edge_line(item))
            for end in (item["Parent"], item["Child"]):
                nodes.setdefault(end, {"ID": end, "Metadata": {}})
        elif isinstance(item, list) and all(_is_node(n) for n in item):
            for node in item:
                nodes.setdefault(node["ID"], node)
            for a, b in itertools.pairwise(item):
                lines.append(f"  {_q(a['ID'])} -> {_q(b['ID'])} [style=bold, dir=none];")
        else:
            raise NotRenderable("--format dot needs a node, edge, path or subgraph result")
    body = [_node_line(n) for n in nodes.values()] + lines
    return "digraph skygraph {\n" + "".join(line + "\n" for line in body) + "}\n"
