"""What the translator produces and the limits it honours.

A `Plan` is Cypher text, its parameters, optional existence checks run
first (`V('id')`), and a pure `finish(records)` that turns the records into
Skydive's JSON result (and applies the steps Cypher cannot express).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Record = Mapping[str, Any]
Finish = Callable[[list[Record]], Any]

# What a query's steps have selected so far, and so what its result is (`Plan.output`).
GRAPH, NODES, EDGES, PATHS, SUBGRAPH = "graph", "nodes", "edges", "paths", "subgraph"
VALUES, COUNT, MAPS, KEYS, SUM = "values", "count", "valuemap", "keys", "sum"
FLOWS, GROUPS, FLOW_KEYS, FLOW_SUM = "flows", "groups", "flowkeys", "flowsum"
METRICS, METRIC_VALUE, RAW_PACKETS = "metrics", "metricvalue", "rawpackets"


DEFAULT_MAX_RESULTS = 10_000
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_DEPTH = 10
DEFAULT_FLOW_EXPIRE_S = 600.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Safety bounds (results returned, seconds per query, hops of variable-length
    walks) and the flow table's expiry the flow steps need."""

    max_results: int = DEFAULT_MAX_RESULTS
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_depth: int = DEFAULT_MAX_DEPTH
    # Also LIMIT the Cypher to max_results + 1 rows, so the server stops early.
    # Cheap on Neo4j; on the embedded server a LIMIT doubles a one-hop query's
    # time, so by default the cap is checked on the records received.
    cap_in_query: bool = False
    # `flow.expire` (s): a time-context Flows() also returns flows that ended up to
    # this long before the window, as the agents would still hold them (SPEC §1h).
    flow_expire_s: float = DEFAULT_FLOW_EXPIRE_S


@dataclass(frozen=True, slots=True)
class Check:
    """A query that must return a row, else the user gets `message`."""

    cypher: str
    params: Mapping[str, Any]
    message: str


@dataclass(frozen=True, slots=True)
class Plan:
    cypher: str
    params: Mapping[str, Any]
    finish: Finish
    checks: tuple[Check, ...] = field(default=())
    output: str = "nodes"
    # BPF(filter) steps on raw packets: (expression, column), applied by `execute`
    # (compiling a filter needs libpcap, which the caller provides).
    packet_filters: tuple[tuple[str, int], ...] = field(default=())
