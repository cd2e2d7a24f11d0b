"""Mutations: the changes producers make to the graph, as values.

A mutation carries the element's full new state (or, for partial updates,
the metadata operations); the in-memory graph resolves partial updates into
full states before anything reaches the store, so the store only ever sees
`NodeAdded`/`NodeUpdated`/`NodeDeleted` and the edge equivalents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skygraph.topology.model import Edge, Node


@dataclass(frozen=True, slots=True)
class MetadataOp:
    """One partial-update operation: set `key` (dotted path) to `value`, or delete it."""

    key: str
    value: Any = None
    delete: bool = False


@dataclass(frozen=True, slots=True)
class NodeAdded:
    node: Node


@dataclass(frozen=True, slots=True)
class NodeUpdated:
    node: Node


@dataclass(frozen=True, slots=True)
class NodePartiallyUpdated:
    id: str
    ops: tuple[MetadataOp, ...]
    updated_at: int = 0


@dataclass(frozen=True, slots=True)
class NodeDeleted:
    node: Node  # the node as it was, with DeletedAt set


@dataclass(frozen=True, slots=True)
class EdgeAdded:
    edge: Edge


@dataclass(frozen=True, slots=True)
class EdgeUpdated:
    edge: Edge


@dataclass(frozen=True, slots=True)
class EdgePartiallyUpdated:
    id: str
    ops: tuple[MetadataOp, ...]
    updated_at: int = 0


@dataclass(frozen=True, slots=True)
class EdgeDeleted:
    edge: Edge  # the edge as it was, with DeletedAt set


Mutation = (NodeAdded | NodeUpdated | NodePartiallyUpdated | NodeDeleted
            | EdgeAdded | EdgeUpdated | EdgePartiallyUpdated | EdgeDeleted)
# What the store accepts: full states only.
StoreMutation = NodeAdded | NodeUpdated | NodeDeleted | EdgeAdded | EdgeUpdated | EdgeDeleted


def apply_ops(metadata: dict[str, Any], ops: tuple[MetadataOp, ...]) -> dict[str, Any]:
    """Return a copy of `metadata` with the partial-update operations applied."""
    out: dict[str, Any] = _deep_copy(metadata)
    for op in ops:
        path = op.key.split(".")
        cur = out
        for part in path[:-1]:
            nxt = cur.get(part)
            if not isinstance(nxt, dict):
                if op.delete:
                    break
                nxt = {}
                cur[part] = nxt
            cur = nxt
        else:
            if op.delete:
                cur.pop(path[-1], None)
            else:
                cur[path[-1]] = op.value
    return out


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
