"""The API service: one object GraphQL and REST both sit on.

Owns the analyzer's live topology path (in-memory graph with Skydive's rules
-> batched writer -> event bus, in that order, so a subscriber never sees a
change the store will not get), Gremlin execution with the API's limits,
time arguments, and the status document (its `Graph` counts are what the
database holds, counted when asked). Reads go through `Reads` (filters,
pages, batched neighbour loads); captures through `Captures`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from skygraph import __version__
from skygraph.api.captures import Captures
from skygraph.api.reads import Reads
from skygraph.capture.bpf import compile_filter
from skygraph.gremlin import Limits, execute, parse
from skygraph.gremlin.ast import Literal
from skygraph.gremlin.errors import GremlinQueryError
from skygraph.gremlin.timeparse import time_point_ms
from skygraph.topology.bus import EventBus, Subscription
from skygraph.topology.graph import Graph, wall_clock_ms
from skygraph.topology.mutations import Mutation, StoreMutation
from skygraph.topology.schema import FLOW_LABEL, FLOW_METRIC_LABEL, NODE_LABEL, RAW_PACKET_LABEL
from skygraph.topology.store import BatchWriter, GraphStore

if TYPE_CHECKING:
    from skygraph.api.injections import Injections

StatusExtra = Callable[[], Awaitable[dict[str, Any]]]

# `/api/status` Graph counts: what the database holds. A label count is answered from
# the label's own count (about 1 ms for 200,000 flows on the embedded server); live
# edges are relationships between `:Node`s (as the analyzer loads them; flows' links
# are not), one pass over them (about 40 ms for 50,000 edges), whatever the flows.
COUNTS = {
    "Nodes": f"MATCH (x:{NODE_LABEL}) RETURN count(x) AS n",
    "Edges": f"MATCH (:{NODE_LABEL})-[x]->(:{NODE_LABEL}) RETURN count(x) AS n",
    "Flows": f"MATCH (x:{FLOW_LABEL}) RETURN count(x) AS n",
    "FlowMetrics": f"MATCH (x:{FLOW_METRIC_LABEL}) RETURN count(x) AS n",
    "RawPackets": f"MATCH (x:{RAW_PACKET_LABEL}) RETURN count(x) AS n",
}
COUNT_TIMEOUT_S = 5.0


class Api:
    def __init__(self, store: GraphStore, writer: BatchWriter, *, backend: str = "",
                 limits: Limits | None = None,
                 max_raw_packets: int = 10, clock: Callable[[], int] = wall_clock_ms,
                 status_extra: StatusExtra | None = None) -> None:
        self.store = store
        self.writer = writer
        self.backend = backend
        self.limits = limits or Limits()
        self.clock = clock
        self.bus: EventBus[StoreMutation] = EventBus()
        # Flow updates (Skydive flow JSON dicts, one per flow per update tick), once
        # agents send flows (next issue); GraphQL `flowUpdates` subscribes here.
        self.flow_bus: EventBus[dict[str, Any]] = EventBus()
        self.graph = Graph(None, clock)
        self.reads = Reads(store.read, self.limits)
        self.captures = Captures(store, self.count_active, max_raw_packets=max_raw_packets,
                                 clock=clock)
        # packet injections, set by the analyzer once the agents' link exists
        self.injections: Injections | None = None
        # (host, flow JSON documents) -> accepted: the flow store, set by the analyzer
        self.put_flows: Callable[[str, list[dict[str, Any]]], Awaitable[int]] | None = None
        self.started = time.time()
        self._status_extra = status_extra

    async def load(self) -> None:
        """Load the live graph from the store into memory (analyzer start)."""
        nodes, edges = await self.store.graph()
        self.graph.load(nodes, edges)

    def count_active(self, capture_id: str) -> int:
        """Nodes whose `Captures` metadata has `capture_id` in state `active`."""
        n = 0
        for node in self.graph.nodes.values():
            caps = node.Metadata.get("Captures")
            if isinstance(caps, list) and any(
                    isinstance(c, dict) and c.get("ID") == capture_id and c.get("State") == "active"
                    for c in caps):
                n += 1
        return n

    # ------------------------------------------------------------ time
    def now_ms(self) -> int:
        return self.clock()

    def time_point(self, text: str | int | None) -> int | None:
        """A user time point (`-1s`, `NOW`, RFC 1123, epoch s or ms) in ms, None for none.

        Raises GremlinQueryError naming the value when it is not a time."""
        if text is None or text == "":
            return None
        value: str | int = text
        if isinstance(text, str) and text.strip().lstrip("-").isdigit():
            value = int(text)
        if isinstance(value, str) and value.strip().upper() == "NOW":
            return self.now_ms()
        return time_point_ms(Literal(value, 1), self.now_ms())

    # ------------------------------------------------------------ queries
    async def gremlin(self, query: str, at: str | int | None = None) -> Any:
        """Run a Gremlin query; `at` (a time point) reads the graph as it was then,
        unless the query has its own `At`/`Context`."""
        text = query
        t = self.time_point(at)
        if t is not None:
            text = _with_at(query, t)
        return await execute(text, self.store.read, self.now_ms(), self.limits,
                             compile_bpf=compile_bpf)

    # ------------------------------------------------------------ topology changes
    async def apply(self, mutations: Iterable[Mutation]) -> list[StoreMutation]:
        """Apply changes with Skydive's rules, queue them for the store, publish them.

        Raises the graph's ValidationError/NotFoundError before anything is applied
        for the failing mutation (earlier ones of the same call stay applied)."""
        out: list[StoreMutation] = []
        for m in mutations:
            applied = self.graph.apply_nowait(m)
            await self.writer.submit_all(applied)
            for a in applied:
                await self.bus.publish(a)
            out.extend(applied)
        return out

    def subscribe(self, maxsize: int = 10_000) -> Subscription[StoreMutation]:
        return self.bus.subscribe(maxsize)

    # ------------------------------------------------------------ status
    async def graph_health(self) -> tuple[bool, str]:
        try:
            await self.store.run("RETURN 1", timeout=2.0)
            return True, "ok"
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"

    async def graph_counts(self) -> dict[str, int | None]:
        """How many nodes, edges, flows, metric samples and raw packets the database
        holds (COUNTS); None for a count the database did not give."""
        counts: dict[str, int | None] = {}
        for name, cypher in COUNTS.items():
            try:
                records = await self.store.read(cypher, {}, timeout=COUNT_TIMEOUT_S)
                counts[name] = int(records[0]["n"]) if records else 0
            except Exception:  # reported by Healthy/Detail; a status never fails
                counts[name] = None
        return counts

    async def status(self) -> dict[str, Any]:
        healthy, detail = await self.graph_health()
        counts: dict[str, int | None] = (await self.graph_counts() if healthy
                                         else dict.fromkeys(COUNTS))
        doc: dict[str, Any] = {
            "Version": __version__,
            "Uptime": int(time.time() - self.started),
            "Graph": {"Backend": self.backend, "Server": self.store.dialect.server_agent,
                      "URI": self.store.uri, "Healthy": healthy, "Detail": detail,
                      **counts,
                      # the analyzer's in-memory live graph (what `Nodes`/`Edges` were)
                      "InMemoryNodes": len(self.graph.nodes),
                      "InMemoryEdges": len(self.graph.edges)},
            "Writer": dataclasses.asdict(self.writer.stats),
            "Agents": {},
        }
        if self._status_extra is not None:
            doc.update(await self._status_extra())
        return doc


def _with_at(query: str, t: int) -> str:
    """`G.At(t)...` for a query starting with `G.`/`g.` and no time step of its own."""
    ast = parse(query)  # parse errors surface with their column
    if any(s.name in ("At", "Context") for s in ast.steps):
        raise GremlinQueryError("the query has its own At/Context: leave `at` empty", 1)
    head, dot, rest = query.lstrip().partition(".")
    return f"{head}.At({int(t)}){dot}{rest}"


@functools.lru_cache(maxsize=64)
def compile_bpf(expression: str, link_type: int) -> Callable[[bytes], bool]:
    """Gremlin's `BPF(filter)` on raw packets: libpcap's program for the packets'
    link type (snaplen 256, as Skydive), run in userspace; cached, since a
    download is often repeated. Raises BPFError (a ValueError) with libpcap's message."""
    return compile_filter(expression, link_type, 256).matches
