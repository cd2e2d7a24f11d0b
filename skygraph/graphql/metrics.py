"""The GraphQL `metrics` and `rawPackets` queries: a flow's metric history and
kept packets, an interface's counters over time, and packets as a pcap.

- `metrics(flows, nodes, key, since, until, aggregate)`: the metric samples
  of the flows matching `flows` (a `FlowFilter`: every stored
  `LastUpdateMetric` sample, docs/graph-model.md), or, with `nodes` (a
  `NodeFilter`), the interface metric `key` (`LastUpdateMetric` by default,
  `SFlow`, `Ovs`) of every revision of the matching nodes; only the metrics
  whose window lies in [since, until]. One series per flow UUID or node ID,
  metrics by time, as Skydive's JSON (`ABPackets`..., `RxBytes`..., `Start`,
  `Last`); `aggregate: s` re-buckets them into one series `Aggregated` of
  `s`-second slices aligned on `since` (Gremlin's `Aggregates`); `total` is
  their sum (Gremlin's `Sum()`).
- `rawPackets(filter, since, until, bpf)`: the packets kept with the matching
  flows (`RawPacketLimit`) whose timestamp is in [since, until], by flow and
  `Index`, optionally filtered by a BPF expression (libpcap syntax); `pcap`
  is the capture file of them all, base64-encoded: the bytes the REST API
  returns for `Accept: application/vnd.tcpdump.pcap` (gremlin/packets.py).

The arithmetic and the file format are Gremlin's (gremlin/metrics.py,
gremlin/packets.py); reads go through `api.store.read` (flows) and
`api.reads` (node revisions).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import strawberry
from strawberry.scalars import JSON

from skygraph.api.service import compile_bpf
from skygraph.graphql import filters as f
from skygraph.graphql.flows import FlowFilterInput, flows_match, time_arg
from skygraph.graphql.scalars import Long
from skygraph.graphql.types import Info, field
from skygraph.gremlin import GremlinError, LimitExceededError
from skygraph.gremlin import metrics as m
from skygraph.gremlin import packets as p
from skygraph.gremlin.predicates import Params
from skygraph.topology import schema
from skygraph.topology.flowschema import packet_json, sample_json

HAS_METRIC = schema.quote(schema.HAS_METRIC)
HAS_PACKET = schema.quote(schema.HAS_PACKET)


@strawberry.type(description="The metrics of one flow (its UUID) or one node (its ID), "
                             "by time; or `Aggregated` after `aggregate`.")
class MetricSeries:
    id: str
    metrics: list[JSON] = strawberry.field(
        description="Skydive's metric JSON: ABPackets, ABBytes, BAPackets, BABytes (flows) "
                    "or RxBytes, TxPackets... (interfaces), with Start and Last (ms)")


@strawberry.type(description="Metric series and their sum.")
class Metrics:
    series: list[MetricSeries]
    total: JSON | None = strawberry.field(
        description="every metric added (Start the earliest, Last the latest); null if none")


@strawberry.type(name="RawPacket", description="A packet kept with its flow.")
class RawPacketType:
    index: int = strawberry.field(description="1-based, per flow")
    timestamp: Long = strawberry.field(description="ms since the epoch, when it was captured")
    link_type: int = strawberry.field(description="pcap link type: 1 Ethernet, 228 raw IPv4, "
                                                  "229 raw IPv6")
    data: str = strawberry.field(description="the packet, base64")


@strawberry.type(description="The kept packets of one flow.")
class FlowPackets:
    flow: strawberry.ID = strawberry.field(description="the flow's UUID")
    packets: list[RawPacketType]


@strawberry.type(description="Raw packets of flows, and the same as a capture file.")
class RawPackets:
    series: strawberry.Private[dict[str, list[dict[str, Any]]]]

    @field(description="how many packets")
    def count(self) -> int:
        return sum(len(ps) for ps in self.series.values())

    @strawberry.field
    def flows(self) -> list[FlowPackets]:
        return [FlowPackets(flow=strawberry.ID(uuid), packets=[
            RawPacketType(index=x["Index"], timestamp=Long(x["Timestamp"]),
                          link_type=x["LinkType"], data=x["Data"]) for x in ps])
            for uuid, ps in self.series.items()]

    @field(description="the packets as a pcap file (packets in time order, original "
                       "timestamps and link type; pcapng when link types other than "
                       "Ethernet and raw IP are mixed), base64")
    def pcap(self) -> str:
        return base64.b64encode(p.render([self.series] if self.series else [])).decode()


# ---------------------------------------------------------------- reads

def flow_metrics_query(filt: FlowFilterInput | None, since: int | None, until: int | None,
                       limit: int) -> tuple[str, dict[str, Any]]:
    params = Params()
    match = flows_match(filt, since, until, params)
    conds = []
    if since is not None:
        conds.append(f"x.Start >= {params.add(since)}")
    if until is not None:
        conds.append(f"x.Last <= {params.add(until)}")
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    return (f"{match} MATCH (f)-[:{HAS_METRIC}]->(x){where} WITH f, x LIMIT "
            f"{params.add(limit)} RETURN f.UUID AS id, properties(x) AS p", dict(params.values))


def raw_packets_query(filt: FlowFilterInput | None, since: int | None, until: int | None,
                      limit: int) -> tuple[str, dict[str, Any]]:
    params = Params()
    match = flows_match(filt, since, until, params)
    conds = []
    if since is not None:
        conds.append(f"x.Timestamp >= {params.add(since)}")
    if until is not None:
        conds.append(f"x.Timestamp <= {params.add(until)}")
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    return (f"{match} MATCH (f)-[:{HAS_PACKET}]->(x){where} WITH f, x LIMIT "
            f"{params.add(limit)} RETURN f.UUID AS id, properties(x) AS p", dict(params.values))


async def _rows(info: Info, cypher: str, params: dict[str, Any], what: str
                ) -> list[dict[str, Any]]:
    api = info.context.api
    timeout = api.limits.timeout_s
    try:
        rows = await asyncio.wait_for(api.store.read(cypher, params, timeout), timeout + 1.0)
    except TimeoutError:
        raise LimitExceededError(f"read timed out after {timeout:g} s: narrow the filter") \
            from None
    if len(rows) > api.limits.max_results:
        raise LimitExceededError(f"more than {api.limits.max_results} {what}: narrow the "
                                 f"filter or the time range")
    return [dict(r) for r in rows]


def _range(info: Info, since: str | None, until: str | None) -> tuple[int | None, int | None]:
    start, end = time_arg(info, "since", since), time_arg(info, "until", until)
    if start is not None and end is not None and start > end:
        raise f.UserError("since is after until")
    return start, end


# ---------------------------------------------------------------- resolvers

async def metrics(info: Info, flows: FlowFilterInput | None, nodes: f.NodeFilterInput | None,
                  key: str | None, since: str | None, until: str | None,
                  aggregate: int | None) -> Metrics:
    start, end = _range(info, since, until)
    limit = info.context.api.limits.max_results + 1
    series: m.Series = {}
    if nodes is not None:
        if flows is not None:
            raise f.UserError("give flows or nodes, not both")
        prefix = m.NODE_KEYS.get(key or "LastUpdateMetric", key or "")
        if prefix != "LastUpdateMetric" and not prefix.endswith(".LastUpdateMetric"):
            raise f.UserError(f"key: LastUpdateMetric, SFlow, Ovs or a key ending in "
                              f".LastUpdateMetric, got {key!r}")
        found = await info.context.api.reads.node_metrics(f.node_filter(nodes), prefix, start,
                                                          end)
        series = m.series_of(found)
    else:
        if key not in (None, "LastUpdateMetric"):
            raise f.UserError(f"key: flows have LastUpdateMetric samples only, got {key!r}")
        cypher, params = flow_metrics_query(flows, start, end, limit)
        samples = sorted(((str(r["id"]), sample_json(r["p"]))
                          for r in await _rows(info, cypher, params, "metrics")),
                         key=lambda x: (x[1]["Last"], x[1]["Start"]))
        series = m.series_of(samples)
    if aggregate is not None:
        if aggregate <= 0:
            raise f.UserError(f"aggregate: a number of seconds > 0, got {aggregate}")
        first, latest = m.bounds(series)
        try:
            series = m.aggregate(series, start if start is not None else first,
                                 end if end is not None else latest, aggregate * 1000, 1)
        except GremlinError as exc:
            raise f.UserError(f"aggregate: {exc.message}") from None
    total = m.total(series)
    return Metrics(series=[MetricSeries(id=ident, metrics=[JSON(x) for x in ms])
                           for ident, ms in series.items()],
                   total=JSON(total) if total is not None else None)


async def raw_packets(info: Info, filter: FlowFilterInput | None, since: str | None,
                      until: str | None, bpf: str | None) -> RawPackets:
    start, end = _range(info, since, until)
    cypher, params = raw_packets_query(filter, start, end,
                                       info.context.api.limits.max_results + 1)
    series: dict[str, list[dict[str, Any]]] = {}
    for row in await _rows(info, cypher, params, "raw packets"):
        series.setdefault(str(row["id"]), []).append(packet_json(row["p"]))
    for ps in series.values():
        ps.sort(key=lambda x: x["Index"])
    if bpf:
        try:
            # checked even when no packet is there to filter
            await asyncio.to_thread(compile_bpf, bpf, p.LINKTYPE_ETHERNET)
            found = await p.apply_filters([series] if series else [], ((bpf, 1),), compile_bpf)
        except ValueError as exc:
            raise f.UserError(f"bpf: {exc}") from None
        except GremlinError as exc:
            raise f.UserError(f"bpf: {exc.message.removeprefix('BPF(): ')}") from None
        series = found[0] if found else {}
    return RawPackets(series=series)
