"""Graph elements: Node and Edge with Skydive's fields, their JSON shape and
validation (SPEC §1a, statics/schemas/node.schema and edge.schema).

Metadata is a JSON-like tree (str, int, float, bool, None, lists, maps with
string keys). Elements are values: mutating one means building a new one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from skygraph.topology.errors import ValidationError

Metadata = Mapping[str, Any]

# Fields of the element itself; metadata may not use these names at its top
# level, because the graph store keeps both side by side as properties.
ELEMENT_FIELDS = frozenset(
    {"ID", "Host", "Origin", "CreatedAt", "UpdatedAt", "DeletedAt", "Revision",
     "ArchivedAt", "Parent", "Child"}
)
# Property names the store keeps for itself (see docs/graph-model.md).
STORE_FIELDS = frozenset({"_json", "_key"})
RESERVED_KEYS = ELEMENT_FIELDS | STORE_FIELDS

OWNERSHIP = "ownership"
LAYER2 = "layer2"


@dataclass(frozen=True, slots=True)
class Node:
    ID: str
    Metadata: Metadata = field(default_factory=dict)
    Host: str = ""
    Origin: str = ""
    CreatedAt: int = 0
    UpdatedAt: int = 0
    Revision: int = 0
    DeletedAt: int | None = None

    @property
    def type(self) -> str:
        return str(self.Metadata.get("Type", ""))

    @property
    def name(self) -> str:
        return str(self.Metadata.get("Name", ""))

    def with_(self, **changes: Any) -> Node:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ID": self.ID, "Metadata": dict(self.Metadata), "Host": self.Host,
            "Origin": self.Origin, "CreatedAt": self.CreatedAt or None,
            "UpdatedAt": self.UpdatedAt or None, "Revision": self.Revision,
        }
        if self.DeletedAt:
            out["DeletedAt"] = self.DeletedAt
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "node") -> Node:
        if not isinstance(data, Mapping):
            raise ValidationError(where, "", f"expected an object, got {type(data).__name__}")
        ident = _id_field(data, "ID", where)
        where = f"node {ident}"
        node = cls(
            ID=ident, Metadata=_metadata_field(data, where), Host=_str_field(data, "Host", where),
            Origin=_str_field(data, "Origin", where),
            CreatedAt=_time_field(data, "CreatedAt", where) or 0,
            UpdatedAt=_time_field(data, "UpdatedAt", where) or 0,
            Revision=_time_field(data, "Revision", where) or 0,
            DeletedAt=_time_field(data, "DeletedAt", where),
        )
        validate_node(node)
        return node


@dataclass(frozen=True, slots=True)
class Edge:
    ID: str
    Parent: str
    Child: str
    Metadata: Metadata = field(default_factory=dict)
    Host: str = ""
    Origin: str = ""
    CreatedAt: int = 0
    UpdatedAt: int = 0
    Revision: int = 0
    DeletedAt: int | None = None

    @property
    def relation_type(self) -> str:
        return str(self.Metadata.get("RelationType", ""))

    def with_(self, **changes: Any) -> Edge:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ID": self.ID, "Metadata": dict(self.Metadata), "Parent": self.Parent,
            "Child": self.Child, "Host": self.Host, "Origin": self.Origin,
            "CreatedAt": self.CreatedAt or None, "UpdatedAt": self.UpdatedAt or None,
            "Revision": self.Revision,
        }
        if self.DeletedAt:
            out["DeletedAt"] = self.DeletedAt
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "edge") -> Edge:
        if not isinstance(data, Mapping):
            raise ValidationError(where, "", f"expected an object, got {type(data).__name__}")
        ident = _id_field(data, "ID", where)
        where = f"edge {ident}"
        edge = cls(
            ID=ident, Parent=_id_field(data, "Parent", where), Child=_id_field(data, "Child", where),
            Metadata=_metadata_field(data, where), Host=_str_field(data, "Host", where),
            Origin=_str_field(data, "Origin", where),
            CreatedAt=_time_field(data, "CreatedAt", where) or 0,
            UpdatedAt=_time_field(data, "UpdatedAt", where) or 0,
            Revision=_time_field(data, "Revision", where) or 0,
            DeletedAt=_time_field(data, "DeletedAt", where),
        )
        validate_edge(edge)
        return edge


def validate_node(node: Node) -> None:
    """Raise ValidationError naming the node and the field when `node` is malformed."""
    where = f"node {node.ID or '<no ID>'}"
    if not node.ID:
        raise ValidationError(where, "ID", "required")
    _check_metadata(node.Metadata, where)
    for key in ("Type", "Name"):
        _require_string(node.Metadata, key, where)
    if node.type == "netns":
        _require_string(node.Metadata, "Path", where)
    elif node.type == "ovsport":
        _require_string(node.Metadata, "UUID", where)


def validate_edge(edge: Edge) -> None:
    """Raise ValidationError naming the edge and the field when `edge` is malformed."""
    where = f"edge {edge.ID or '<no ID>'}"
    if not edge.ID:
        raise ValidationError(where, "ID", "required")
    if not edge.Parent:
        raise ValidationError(where, "Parent", "required")
    if not edge.Child:
        raise ValidationError(where, "Child", "required")
    _check_metadata(edge.Metadata, where)
    _require_string(edge.Metadata, "RelationType", where)


def _require_string(meta: Metadata, key: str, where: str) -> None:
    value = meta.get(key)
    if value is None:
        raise ValidationError(where, f"Metadata.{key}", "required")
    if not isinstance(value, str) or not value:
        raise ValidationError(where, f"Metadata.{key}", "must be a non-empty string")


def _check_metadata(meta: Any, where: str) -> None:
    if not isinstance(meta, Mapping):
        raise ValidationError(where, "Metadata", f"expected an object, got {type(meta).__name__}")
    for key in meta:
        if key in RESERVED_KEYS:
            raise ValidationError(
                where, f"Metadata.{key}", "reserved: the element itself has a field of this name")
    _check_value(meta, where, "Metadata")


def _check_value(value: Any, where: str, path: str) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(where, path, f"number {value!r} is not finite")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str) or not k:
                raise ValidationError(where, path, f"map key {k!r} is not a non-empty string")
            _check_value(v, where, f"{path}.{k}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_value(v, where, f"{path}[{i}]")
        return
    raise ValidationError(where, path, f"unsupported value of type {type(value).__name__}")


def _id_field(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ValidationError(where, key, "required, a non-empty string")
    return value


def _str_field(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError(where, key, f"expected a string, got {type(value).__name__}")
    return value


def _time_field(data: Mapping[str, Any], key: str, where: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(where, key, f"expected a non-negative integer, got {value!r}")
    return value


def _metadata_field(data: Mapping[str, Any], where: str) -> Metadata:
    meta = data.get("Metadata")
    if meta is None:
        raise ValidationError(where, "Metadata", "required")
    if not isinstance(meta, Mapping):
        raise ValidationError(where, "Metadata", f"expected an object, got {type(meta).__name__}")
    return dict(meta)
