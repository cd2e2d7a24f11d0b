"""Skydive's topology JSON (`{"Nodes": [...], "Edges": [...]}`), read and written.

Reading validates every element and names the one at fault
(`Nodes[3] (node abc): field 'Metadata.Name': required`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from skygraph.topology.errors import ValidationError
from skygraph.topology.model import Edge, Node


def parse(text: str, where: str = "topology") -> tuple[list[Node], list[Edge]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(where, "", f"not JSON: {exc.msg} at line {exc.lineno} "
                                         f"column {exc.colno}") from exc
    return from_json(data, where)


def from_json(data: Any, where: str = "topology") -> tuple[list[Node], list[Edge]]:
    if not isinstance(data, dict):
        raise ValidationError(where, "", "expected an object with Nodes and Edges")
    unknown = set(data) - {"Nodes", "Edges"}
    if unknown:
        raise ValidationError(where, sorted(unknown)[0], "unknown key (expected Nodes, Edges)")
    nodes = [Node.from_json(n, f"{where}: Nodes[{i}]") for i, n in enumerate(_list(data, "Nodes",
                                                                                   where))]
    edges = [Edge.from_json(e, f"{where}: Edges[{i}]") for i, e in enumerate(_list(data, "Edges",
                                                                                   where))]
    return nodes, edges


def to_json(nodes: Iterable[Node], edges: Iterable[Edge]) -> dict[str, Any]:
    return {"Nodes": [n.to_json() for n in sorted(nodes, key=lambda n: (n.ID, n.Revision))],
            "Edges": [e.to_json() for e in sorted(edges, key=lambda e: (e.ID, e.Revision))]}


def _list(data: dict[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise ValidationError(where, key, f"expected a list, got {type(value).__name__}")
    return value
