"""The analyzer's side of its agents: what a connected agent's sync, mutations,
flows and statistics do to the live topology (through `Api.apply`, so with
Skydive's rules, batched writes and events), and each agent's status.

This is the handler of the agent link (it matches
`skygraph.rpc.server.Handler` by shape; the analyzer wires the two).

- A sync is a resync (`resync_plan`, pure): everything the agent has is
  announced again (the graph turns a re-announcement into an update only if
  the metadata changed, so nothing is duplicated) and what the analyzer holds
  for that host but the agent no longer has is deleted.
- An agent changes only its own elements: an element whose `Host` names
  another host is refused (logged, skipped); an empty `Host` becomes the
  agent's.
- A mutation that fails validation is logged with the host and the element
  and skipped; the agent's stream goes on.
- The agent's host node (`Type` host, `Host` = host id) carries the link's
  state: `Status` "connected", or "disconnected" with `DisconnectedAt` (ms)
  once the stream ends. Nothing is deleted when an agent goes away, so its
  topology and history stay queryable.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from skygraph.api.service import Api
from skygraph.topology.errors import NotFoundError, TopologyError
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import (
    EdgeAdded,
    EdgeDeleted,
    EdgeUpdated,
    NodeAdded,
    NodeDeleted,
    NodeUpdated,
    StoreMutation,
)

log = logging.getLogger("skygraph.agents")

# (host id, flows of one update tick, each a Skydive flow JSON dict with CaptureID set)
FlowSink = Callable[[str, list[dict[str, Any]]], Awaitable[None]]
Listener = Callable[[str, bool], None]   # (host id, connected now)

STATUS = "Status"
DISCONNECTED_AT = "DisconnectedAt"


class StatsLike(Protocol):
    """What is read of an agent's capture statistics (skygraph.rpc.model.CaptureStats)."""

    @property
    def capture_id(self) -> str: ...

    @property
    def node_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ResyncPlan:
    mutations: list[StoreMutation]   # apply in this order
    refused: list[str]               # elements the agent may not touch, with the reason


def resync_plan(nodes_now: Mapping[str, Node], edges_now: Mapping[str, Edge], host_id: str,
                nodes: Sequence[Node], edges: Sequence[Edge]) -> ResyncPlan:
    """The changes that make the analyzer's elements of `host_id` exactly the agent's
    `nodes`/`edges`, leaving other hosts' elements alone.

    Stale edges go first (also an edge whose ends changed: an edge cannot change its
    ends), then stale nodes, then every node and edge of the agent is announced (a
    no-op for what is unchanged). Elements get `Host` = `host_id` when they have none."""
    refused: list[str] = []
    keep_nodes: dict[str, Node] = {}
    for n in nodes:
        n = n if n.Host else n.with_(Host=host_id)
        if problem := _foreign(n.Host, nodes_now.get(n.ID), host_id):
            refused.append(f"node {n.ID}: {problem}")
            continue
        keep_nodes[n.ID] = n
    keep_edges: dict[str, Edge] = {}
    for e in edges:
        e = e if e.Host else e.with_(Host=host_id)
        if problem := _foreign(e.Host, edges_now.get(e.ID), host_id):
            refused.append(f"edge {e.ID}: {problem}")
            continue
        keep_edges[e.ID] = e
    out: list[StoreMutation] = []
    for e in edges_now.values():
        if e.Host != host_id:
            continue
        new = keep_edges.get(e.ID)
        if new is None or (new.Parent, new.Child) != (e.Parent, e.Child):
            out.append(EdgeDeleted(e))
    out.extend(NodeDeleted(n) for n in nodes_now.values()
               if n.Host == host_id and n.ID not in keep_nodes)
    out.extend(NodeAdded(n) for n in keep_nodes.values())
    out.extend(EdgeAdded(e) for e in keep_edges.values())
    return ResyncPlan(out, refused)


def _foreign(host: str, current: Node | Edge | None, host_id: str) -> str:
    if host != host_id:
        return f"belongs to host {host!r}"
    if current is not None and current.Host != host_id:
        return f"exists as an element of host {current.Host!r}"
    return ""


@dataclass
class AgentInfo:
    connected: bool
    since: int                 # ms epoch of the last connect or disconnect
    version: int
    peer: str
    mutations: int = 0         # applied changes received (sync included)
    flows: int = 0
    stats: dict[tuple[str, str], Any] = field(default_factory=dict)   # latest per (capture, node)

    def to_json(self) -> dict[str, Any]:
        return {"Connected": self.connected, "Since": self.since, "Version": self.version,
                "Peer": self.peer, "Mutations": self.mutations, "Flows": self.flows}


class Agents:
    def __init__(self, api: Api, flow_sink: FlowSink | None = None) -> None:
        self.api = api
        self.flow_sink = flow_sink
        self.agents: dict[str, AgentInfo] = {}
        self.listeners: list[Listener] = []   # told of every connect and disconnect

    # ------------------------------------------------------------ reads
    def status(self) -> dict[str, dict[str, Any]]:
        """host id -> {Connected, Since, Version, Peer, Mutations, Flows} (the status
        document's "Agents")."""
        return {h: a.to_json() for h, a in sorted(self.agents.items())}

    def hosts_connected(self) -> list[str]:
        return sorted(h for h, a in self.agents.items() if a.connected)

    # ------------------------------------------------------------ handler
    async def on_connect(self, host_id: str, version: int, peer: str) -> None:
        self.agents[host_id] = AgentInfo(True, self.api.now_ms(), version, peer)
        await self._mark(host_id, connected=True)
        self._tell(host_id, True)

    async def on_disconnect(self, host_id: str) -> None:
        info = self.agents.get(host_id)
        if info is not None:
            info.connected = False
            info.since = self.api.now_ms()
        await self._mark(host_id, connected=False)
        self._tell(host_id, False)

    async def on_sync(self, host_id: str, nodes: list[Node], edges: list[Edge]) -> None:
        g = self.api.graph
        plan = resync_plan(g.nodes, g.edges, host_id, nodes, edges)
        for problem in plan.refused:
            log.warning("agent %s: %s: refused", host_id, problem)
        applied = await self._apply(host_id, plan.mutations)
        log.info("agent %s: synced %d nodes, %d edges (%d changes)", host_id, len(nodes), len(edges),
                 applied)

    async def on_mutations(self, host_id: str, mutations: list[StoreMutation]) -> None:
        allowed: list[StoreMutation] = []
        g = self.api.graph
        for m in mutations:
            element = _element(m)
            if not element.Host:
                element = element.with_(Host=host_id)
                m = _with_element(m, element)
            current = (g.nodes.get(element.ID) if isinstance(element, Node)
                       else g.edges.get(element.ID))
            if problem := _foreign(element.Host, current, host_id):
                log.warning("agent %s: %s %s: %s: refused", host_id, _kind(element), element.ID,
                            problem)
                continue
            allowed.append(m)
        await self._apply(host_id, allowed)

    async def on_flows(self, host_id: str, capture_id: str, flows: list[dict[str, Any]]) -> None:
        for f in flows:
            if capture_id and not f.get("CaptureID"):
                f["CaptureID"] = capture_id
        info = self.agents.get(host_id)
        if info is not None:
            info.flows += len(flows)
        if self.flow_sink is not None:
            await self.flow_sink(host_id, flows)
            return
        for f in flows:
            await self.api.flow_bus.publish(f)

    async def on_stats(self, host_id: str, stats: StatsLike) -> None:
        info = self.agents.get(host_id)
        if info is not None:
            info.stats[(stats.capture_id, stats.node_id)] = stats

    # ------------------------------------------------------------ helpers
    def _tell(self, host_id: str, connected: bool) -> None:
        for listener in list(self.listeners):
            try:
                listener(host_id, connected)
            except Exception:
                log.exception("agent %s: a connection listener failed", host_id)

    async def _apply(self, host_id: str, mutations: Iterable[StoreMutation]) -> int:
        """Apply one by one, so that a bad element costs only itself; return the number of
        changes made."""
        n = 0
        for m in mutations:
            m = self._decorate(host_id, m)
            try:
                n += len(await self.api.apply([m]))
            except NotFoundError as exc:
                if isinstance(m, (NodeDeleted, EdgeDeleted)):
                    log.debug("agent %s: %s: already gone", host_id, exc)
                else:
                    log.warning("agent %s: %s: skipped", host_id, exc)
            except TopologyError as exc:
                log.warning("agent %s: %s %s: %s: skipped", host_id, type(m).__name__,
                            _element(m).ID, exc)
        info = self.agents.get(host_id)
        if info is not None:
            info.mutations += n
        return n

    @staticmethod
    def _decorate(host_id: str, m: StoreMutation) -> StoreMutation:
        """The agent's own host node as the agent sends it, plus the link's state (an
        agent sends only while connected)."""
        if not isinstance(m, (NodeAdded, NodeUpdated)) or not _is_host_node(m.node, host_id):
            return m
        meta = {k: v for k, v in m.node.Metadata.items() if k != DISCONNECTED_AT}
        meta[STATUS] = "connected"
        return _with_element(m, m.node.with_(Metadata=meta))

    async def _mark(self, host_id: str, connected: bool) -> None:
        for node in [n for n in self.api.graph.nodes.values() if _is_host_node(n, host_id)]:
            meta = dict(node.Metadata)
            if connected:
                meta[STATUS] = "connected"
                meta.pop(DISCONNECTED_AT, None)
            else:
                meta.update({STATUS: "disconnected", DISCONNECTED_AT: self.api.now_ms()})
            if meta != dict(node.Metadata):
                try:
                    await self.api.apply([NodeUpdated(node.with_(Metadata=meta, UpdatedAt=0))])
                except TopologyError as exc:
                    log.warning("agent %s: cannot mark its host node %s: %s", host_id, node.ID, exc)


def _is_host_node(node: Node, host_id: str) -> bool:
    return node.Host == host_id and node.type == "host"


def _element(m: StoreMutation) -> Node | Edge:
    return m.node if isinstance(m, (NodeAdded, NodeUpdated, NodeDeleted)) else m.edge


def _kind(element: Node | Edge) -> str:
    return "node" if isinstance(element, Node) else "edge"


def _with_element(m: StoreMutation, element: Node | Edge) -> StoreMutation:
    if isinstance(element, Node) and isinstance(m, (NodeAdded, NodeUpdated, NodeDeleted)):
        return type(m)(element)
    if isinstance(element, Edge) and isinstance(m, (EdgeAdded, EdgeUpdated, EdgeDeleted)):
        return type(m)(element)
    raise TypeError(f"{type(element).__name__} does not fit {type(m).__name__}")
