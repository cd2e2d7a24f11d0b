"""The fabric probe (SPEC §1a; Skydive topology/probes/fabric): the analyzer's
`analyzer.topology.fabric` lines describe what no agent sees (top-of-rack
switches, their ports, the cables to the hosts) and this probe keeps them in
the graph.

Line syntax (Skydive's):

    TOR1[Name=tor1] -> TOR1_PORT1[MTU=1500]     fabric node -> fabric node:
                                                ownership + layer2 (Type: fabric)
    TOR1 --> TOR2                               layer2 only
    TOR1 ->[Speed=10G] TOR1_PORT9               `->[k=v,...]`: link metadata
    TOR1_PORT1 -> *[Type=host,Name=agent1]/eth1 fabric node -> agents' interfaces:
                                                a layer2 link to every `eth1` owned
                                                by a node matching `[Type=host,...]`

A fabric node `X[k=v,...]` has ID UUIDv5(OID, "fabric" + X), `Name` X unless
given, `Type` "device" unless given, `Probe` "fabric" and `TID` = its ID.
Attribute values are strings, as in Skydive; a pattern `k=v` matches a node
whose value at `k` prints as `v` (so `MTU=1500` matches the integer 1500).

The probe's elements have an empty `Host` (they belong to no agent, so an
agent's resync never deletes them and no capture is placed on them) and
`Origin` "analyzer.fabric". At start the probe announces its nodes and edges
(a no-op when the stored graph has them already) and deletes the fabric
elements a previous configuration left; then it follows the graph's changes
and links each interface that comes to match a wildcard line, and unlinks
one that stops matching (an interface deleted takes its links with it).

`parse` is pure; `FabricProbe` works on anything shaped like the analyzer's
API service (`FabricGraph`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from skygraph.topology import ids
from skygraph.topology.bus import Subscription
from skygraph.topology.errors import TopologyError
from skygraph.topology.graph import Graph
from skygraph.topology.model import LAYER2, OWNERSHIP, Edge, Node
from skygraph.topology.mutations import (
    EdgeAdded,
    EdgeDeleted,
    Mutation,
    NodeAdded,
    NodeDeleted,
    NodeUpdated,
    StoreMutation,
)

log = logging.getLogger("skygraph.fabric")

KEY = "analyzer.topology.fabric"
ORIGIN = "analyzer.fabric"
PROBE = "fabric"
DEFAULT_TYPE = "device"
LINK_TYPE = "fabric"      # `Type` of the layer2 edges the probe creates


class FabricError(ValueError):
    """A fabric line that cannot be read; the message names the line."""


# ---------------------------------------------------------------- parsing
@dataclass(frozen=True, slots=True)
class FabricNode:
    name: str                       # as written before `[`; the ID derives from it
    metadata: Mapping[str, Any]

    @property
    def id(self) -> str:
        return node_id(self.name)


@dataclass(frozen=True, slots=True)
class Pattern:
    """`*[Type=host,Name=agent1]/eth1`: a node matching `parent` owning (or linked to)
    a node matching `child`."""

    parent: Mapping[str, str]
    child: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class FabricLink:
    line: int                       # 1-based position in the configured list
    parent: str                     # fabric node name
    child: str | Pattern            # fabric node name, or the agents' interfaces to link
    layer2_only: bool
    metadata: Mapping[str, str]     # of the layer2 edge (with Type: fabric)


@dataclass(frozen=True)
class Fabric:
    nodes: Mapping[str, FabricNode] = field(default_factory=dict)   # by name
    links: tuple[FabricLink, ...] = ()

    @property
    def wildcards(self) -> list[tuple[FabricNode, Pattern, FabricLink]]:
        return [(self.nodes[k.parent], k.child, k) for k in self.links
                if isinstance(k.child, Pattern)]


def node_id(name: str) -> str:
    """Skydive's fabric node ID: UUIDv5(NamespaceOID, "fabric" + name)."""
    return ids.uuid5("fabric" + name)


def parse(lines: Sequence[str], key: str = KEY) -> Fabric:
    """Read the fabric lines; raise FabricError naming the line (`key` line N) on the
    first one that cannot be read."""
    nodes: dict[str, dict[str, Any]] = {}
    given: dict[tuple[str, str], int] = {}    # (node, attribute) -> line that set it
    links: list[FabricLink] = []
    for number, text in enumerate(lines, 1):
        where = f"{key} line {number} ({text!r})"
        if not isinstance(text, str):
            raise FabricError(f"{key} line {number}: expected a string, got {text!r}")
        link, defs = _parse_line(text, number, where)
        for name, attrs in defs:
            meta = nodes.setdefault(name, {"Name": name, "Type": DEFAULT_TYPE})
            for k, v in attrs.items():
                first = given.get((name, k))
                if first is not None and meta[k] != v:
                    raise FabricError(f"{where}: {name}: {k}={v} conflicts with {k}={meta[k]} "
                                      f"given on line {first}")
                given.setdefault((name, k), number)
                meta[k] = v
        links.append(link)
    out = {name: FabricNode(name, {**meta, "Probe": PROBE, "TID": node_id(name)})
           for name, meta in nodes.items()}
    return Fabric(out, tuple(links))


def _parse_line(text: str, number: int, where: str
                ) -> tuple[FabricLink, list[tuple[str, dict[str, str]]]]:
    layer2_only = "-->" in text
    parts = text.split("-->") if layer2_only else text.split("->")
    if len(parts) != 2:
        raise FabricError(f"{where}: expected two ends joined by '->' (ownership and layer2) "
                          f"or '-->' (layer2 only)")
    parent_def, child_def = parts[0].strip(), parts[1].strip()
    link_meta: dict[str, str] = {}
    if child_def.startswith("["):
        end = child_def.find("]")
        if end < 0:
            raise FabricError(f"{where}: link attributes: '[' without ']'")
        link_meta = _attributes(child_def[1:end], where)
        child_def = child_def[end + 1:].strip()
    for meta_key in ("RelationType",):
        if meta_key in link_meta:
            raise FabricError(f"{where}: link attributes: {meta_key} is set by the probe")
    if parent_def.startswith("*"):
        raise FabricError(f"{where}: the parent cannot be a wildcard ('*'): put the fabric "
                          f"node first, the agents' interfaces after the arrow")
    parent, parent_attrs = _node_def(parent_def, where, "parent")
    defs = [(parent, parent_attrs)]
    child: str | Pattern
    if child_def.startswith("*"):
        host_def, slash, intf_def = child_def.partition("/")
        if not slash or not intf_def.strip():
            raise FabricError(f"{where}: a wildcard needs a node and an interface: "
                              f"*[Type=host,Name=agent1]/eth1")
        child = Pattern(_pattern(host_def.strip(), where), _pattern(intf_def.strip(), where))
    else:
        child, child_attrs = _node_def(child_def, where, "child")
        defs.append((child, child_attrs))
    return FabricLink(number, parent, child, layer2_only, {"Type": LINK_TYPE, **link_meta}), defs


def _node_def(text: str, where: str, end: str) -> tuple[str, dict[str, str]]:
    """`NAME[k=v,...]` -> (NAME, {k: v})."""
    name, attrs = _split_brackets(text, where, end)
    if not name:
        raise FabricError(f"{where}: the {end} node has no name")
    if name == "*" or "/" in name:
        raise FabricError(f"{where}: {end} node {name!r}: only the child may be a wildcard "
                          f"(*[...]/interface)")
    return name, _attributes(attrs, where) if attrs is not None else {}


def _pattern(text: str, where: str) -> dict[str, str]:
    """`*[k=v,...]` or `NAME[k=v,...]` (Name=NAME) -> the metadata to match."""
    name, attrs = _split_brackets(text, where, "wildcard")
    if not name:
        raise FabricError(f"{where}: {text!r}: expected a name or '*' before '['")
    meta = {} if name == "*" else {"Name": name}
    if attrs is not None:
        meta.update(_attributes(attrs, where))
    return meta


def _split_brackets(text: str, where: str, end: str) -> tuple[str, str | None]:
    if "[" not in text:
        if "]" in text:
            raise FabricError(f"{where}: {end} {text!r}: ']' without '['")
        return text.strip(), None
    name, _, rest = text.partition("[")
    if not rest.endswith("]") or "[" in rest or rest.count("]") != 1:
        raise FabricError(f"{where}: {end} {text!r}: expected NAME[key=value,...]")
    return name.strip(), rest[:-1]


def _attributes(text: str, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in text.split(","):
        k, eq, v = pair.strip().partition("=")
        k, v = k.strip().strip('"'), v.strip().strip('"')
        if not eq or not k or "=" in v:
            raise FabricError(f"{where}: attributes must be key=value pairs separated by ','; "
                              f"got {pair.strip()!r}")
        out[k] = v
    return out


# ---------------------------------------------------------------- matching
def matches(node: Node, pattern: Mapping[str, str]) -> bool:
    """Every `k=v` of `pattern` holds on the node's metadata (dotted keys reach into
    maps; a value matches when it prints as `v`)."""
    for k, want in pattern.items():
        value: Any = node.Metadata
        for part in k.split("."):
            if not isinstance(value, Mapping) or part not in value:
                return False
            value = value[part]
        if isinstance(value, bool):
            value = "true" if value else "false"
        if isinstance(value, (Mapping, list)) or str(value) != want:
            return False
    return True


def wanted_links(fabric: Fabric, graph: Graph, edge: Edge) -> list[tuple[FabricNode, Node,
                                                                          FabricLink]]:
    """The (fabric node, interface, line) links `edge` calls for: its parent matches a
    wildcard's node pattern and its child the interface pattern."""
    parent, child = graph.nodes.get(edge.Parent), graph.nodes.get(edge.Child)
    if parent is None or child is None or edge.Origin == ORIGIN:
        return []
    return [(fnode, child, link) for fnode, pattern, link in fabric.wildcards
            if matches(parent, pattern.parent) and matches(child, pattern.child)]


def static_elements(fabric: Fabric) -> tuple[list[Node], list[Edge]]:
    """The fabric nodes and the edges between them."""
    nodes = [Node(n.id, dict(n.metadata), Host="", Origin=ORIGIN) for n in fabric.nodes.values()]
    edges: dict[str, Edge] = {}
    for link in fabric.links:
        if isinstance(link.child, Pattern):
            continue
        parent, child = node_id(link.parent), node_id(link.child)
        if not link.layer2_only:
            e = _edge(parent, child, OWNERSHIP, {})
            edges[e.ID] = e
        e = _edge(parent, child, LAYER2, link.metadata)
        edges[e.ID] = e
    return nodes, list(edges.values())


def _edge(parent: str, child: str, relation: str, meta: Mapping[str, str]) -> Edge:
    return Edge(ids.edge_id(parent, child, relation), parent, child,
                {"RelationType": relation, **meta}, Host="", Origin=ORIGIN)


# ---------------------------------------------------------------- probe
class FabricGraph(Protocol):
    """What the probe needs of the analyzer (skygraph.api.service.Api matches)."""

    @property
    def graph(self) -> Graph: ...

    async def apply(self, mutations: Iterable[Mutation]) -> list[StoreMutation]: ...

    def subscribe(self, maxsize: int = 10_000) -> Subscription[StoreMutation]: ...


class FabricProbe:
    def __init__(self, target: FabricGraph, fabric: Fabric) -> None:
        self.target = target
        self.fabric = fabric
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # subscribed before the scan, so that no change falls in between
        sub = self.target.subscribe() if self.fabric.wildcards else None
        nodes, edges = static_elements(self.fabric)
        keep = {n.ID for n in nodes} | {e.ID for e in edges}
        g = self.target.graph
        for e in [e for e in g.edges.values() if e.Origin == ORIGIN and e.ID not in keep
                  and _is_fabric(g, e.Child)]:
            await self._apply(EdgeDeleted(e))
        for n in [n for n in g.nodes.values() if n.Origin == ORIGIN and n.ID not in keep]:
            await self._apply(NodeDeleted(n))
        for n in nodes:
            await self._apply(NodeAdded(n))
        for e in edges:
            await self._apply(EdgeAdded(e))
        for ident in [i for i in g.nodes if not _is_fabric(g, i)]:
            await self._reconcile(ident)
        log.info("fabric: %d nodes, %d edges between them, %d wildcard lines", len(nodes),
                 len(edges), len(self.fabric.wildcards))
        if sub is not None:
            self._task = asyncio.create_task(self._follow(sub), name="fabric probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self, sub: Subscription[StoreMutation]) -> None:
        try:
            while True:
                m = await sub.get()
                try:
                    match m:
                        case EdgeAdded(edge=e) if e.Origin != ORIGIN:
                            await self._reconcile(e.Child)
                        case NodeAdded(node=n) | NodeUpdated(node=n) if n.Origin != ORIGIN:
                            await self._reconcile(n.ID)
                            for e in self.target.graph.edges_of(n.ID):
                                if e.Parent == n.ID and e.Origin != ORIGIN:
                                    await self._reconcile(e.Child)
                except Exception:   # one bad event must not end the probe
                    log.exception("fabric: handling %s failed", type(m).__name__)
        finally:
            sub.close()

    async def _reconcile(self, ident: str) -> None:
        """Make node `ident`'s fabric links exactly what its incoming edges call for."""
        g = self.target.graph
        if ident not in g.nodes or _is_fabric(g, ident):
            return
        wanted: dict[str, Edge] = {}
        for e in g.edges_of(ident):
            if e.Child == ident:
                for fnode, child, link in wanted_links(self.fabric, g, e):
                    link_edge = _edge(fnode.id, child.ID, LAYER2, link.metadata)
                    wanted[link_edge.ID] = link_edge
        for e in g.edges_of(ident):
            if e.Origin == ORIGIN and e.Child == ident and e.ID not in wanted:
                await self._apply(EdgeDeleted(e))
        for e in wanted.values():
            current = g.edges.get(e.ID)
            if current is None or dict(current.Metadata) != dict(e.Metadata):
                await self._apply(EdgeAdded(e))

    async def _apply(self, m: Mutation) -> None:
        try:
            await self.target.apply([m])
        except TopologyError as exc:
            log.warning("fabric: %s: %s", type(m).__name__, exc)


def _is_fabric(g: Graph, ident: str) -> bool:
    node = g.nodes.get(ident)
    return node is not None and node.Origin == ORIGIN
