"""Raw packets and metrics through the analyzer's APIs: an agent (the real gRPC
link) sends the flow updates a capture with RawPacketLimit makes of the
reference traces; the packets come back as a pcap from REST (`Accept:
application/vnd.tcpdump.pcap`, as Skydive), from `skygraph query --format
pcap` (through the analyzer, and on the database directly) and from GraphQL
(`rawPackets { pcap }`, base64), and tcpdump reads them; GraphQL `metrics`
gives the flows' and the interfaces' metric history."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, NodeAdded
from tests.conftest import BoltServer
from tests.integration.api.conftest import Served
from tests.integration.gremlin.traces import Replay, replay, tcpdump
from tests.integration.rpc.conftest import Agent, eventually

PCAP = "application/vnd.tcpdump.pcap"
GRE = replay("gre-gre-icmpv4.pcap", "tid-gre", limit=9)
PING = replay("layer-key-mode.pcap", "tid-eth", limit=9)
TCP = replay("simple-tcpv4.pcap", "tid-eth")
HOST = "rp-agent"
SKYGRAPH = [sys.executable, "-m", "skygraph.cli"]


def feed(a: Served, *replays: Replay) -> None:
    """An agent with one interface per capture sends every update over the agent link."""
    async def run() -> None:
        agent = Agent(HOST)
        agent.graph.apply_nowait(NodeAdded(Node("rp-host", {"Name": HOST, "Type": "host"})))
        for tid in sorted({r.tid for r in replays}):
            agent.graph.apply_nowait(NodeAdded(Node(f"rp-{tid}", {
                "Name": tid, "Type": "veth", "TID": tid})))
            agent.graph.apply_nowait(EdgeAdded(Edge(f"rp-own-{tid}", "rp-host", f"rp-{tid}",
                                                    {"RelationType": "ownership"})))
        async with agent.running(agent.client(a.rpc)) as client:
            assert await client.wait_connected(30)
            for r in replays:
                for update in r.updates:   # one update tick at a time, as captures send
                    client.flows("rp-capture", [update])
            await eventually(lambda: client.buffered_flows == 0, timeout=60,
                             what="the flows delivered")
    asyncio.run(run())
    total = sum(len(r.updates) for r in replays)
    deadline = time.monotonic() + 60
    while a.request("GET", "/api/status").json()["Flows"]["written"] < total:
        assert time.monotonic() < deadline, "flows not written"
        time.sleep(0.1)


def gremlin_pcap(a: Served, query: str) -> Any:
    return a.request("POST", "/api/topology", {"GremlinQuery": query}, headers={"Accept": PCAP})


def graphql(a: Served, query: str, **variables: Any) -> dict[str, Any]:
    r = a.request("POST", "/graphql", {"query": query, "variables": variables})
    body = r.json()
    assert r.status == 200, body
    return dict(body)


def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SKYGRAPH_")}
    return subprocess.run([*SKYGRAPH, *args], capture_output=True, timeout=120, env=clean,
                          check=False)


def test_pcap_from_rest_cli_and_graphql(analyzer_at: Any, bolt_server: BoltServer,
                                        tmp_path: Path) -> None:
    with analyzer_at() as a:
        feed(a, GRE, PING)
        # the seed's query, in a window holding both traces (2012 and 2018)
        since = (PING.last_ms - GRE.first_ms) // 1000 + 10
        seed = (f"G.At({PING.last_ms + 1000}, {since}).Flows().Has('Application', 'ICMPv4')"
                f".RawPackets()")
        r = gremlin_pcap(a, seed)
        assert r.status == 200, r.body
        headers = {k.lower(): v for k, v in r.headers.items()}
        assert headers["content-type"] == PCAP
        assert headers["content-disposition"] == 'attachment; filename="rawpackets.pcap"'
        rest = tmp_path / "rest.pcap"
        rest.write_bytes(r.body)
        lines = tcpdump(rest)
        assert len(lines) == 13  # the ping's 4 and the 9 inner GRE packets kept
        assert sum("ICMP echo reply" in line for line in lines) == 6
        # the same through BPF, and what is not raw packets
        replies = gremlin_pcap(a, seed + ".BPF('icmp[icmptype] == 0')")
        (tmp_path / "replies.pcap").write_bytes(replies.body)
        assert len(tcpdump(tmp_path / "replies.pcap")) == 6
        bad = gremlin_pcap(a, "G.Flows()")
        assert bad.status == 406 and "RawPackets()" in bad.json()["error"]
        wrong = gremlin_pcap(a, "G.Flows().RawPackets().BPF('icmp or')")
        assert wrong.status == 400 and "BPF()" in wrong.json()["error"]

        # skygraph query --format pcap, through the analyzer: to a file and to stdout
        out = tmp_path / "cli.pcap"
        done = cli("query", seed, "--format", "pcap", "-o", str(out), "--analyzer", a.endpoint)
        assert done.returncode == 0, done.stderr
        assert out.read_bytes() == r.body
        piped = cli("query", seed, "--format", "pcap", "--analyzer", a.endpoint)
        assert piped.returncode == 0 and piped.stdout == r.body
        not_packets = cli("query", "G.V()", "--format", "pcap", "--analyzer", a.endpoint)
        assert not_packets.returncode == 1 and b"406" in not_packets.stderr

        # ... and on the graph database directly (no analyzer), with BPF
        graph = ["--graph-uri", bolt_server.uri, "--graph-user", bolt_server.user,
                 f"--graph-password={bolt_server.password}"]
        local = tmp_path / "local.pcap"
        done = cli("query", seed + ".BPF('icmp[icmptype] == 0')", "--format", "pcap", "-o",
                   str(local), *graph)
        assert done.returncode == 0, done.stderr
        assert local.read_bytes() == replies.body
        refused = cli("query", "G.Flows()", "--format", "pcap", *graph)
        assert refused.returncode == 2 and b"RawPackets()" in refused.stderr

        # GraphQL: the packets, by flow, and the same file in base64
        body = graphql(a, '{ rawPackets(filter: {application: "ICMPv4"}) { count pcap '
                          'flows { flow packets { index timestamp linkType data } } } }')
        got = body["data"]["rawPackets"]
        assert got["count"] == 13
        assert base64.b64decode(got["pcap"]) == r.body
        ping = {u for u, f in PING.final().items()}
        by_flow = {x["flow"]: x["packets"] for x in got["flows"]}
        assert [base64.b64decode(p["data"]) for u in sorted(ping, key=lambda u: PING.final()[u][
            "Start"]) for p in by_flow[u]] == [f.data for f in PING.frames]
        assert {p["linkType"] for u in ping for p in by_flow[u]} == {1}
        filtered = graphql(a, '{ rawPackets(filter: {application: "ICMPv4"}, '
                              'bpf: "icmp[icmptype] == 0") { count pcap } }')
        assert filtered["data"]["rawPackets"]["count"] == 6
        assert base64.b64decode(filtered["data"]["rawPackets"]["pcap"]) == replies.body
        window = graphql(a, "query($s: String, $u: String) { rawPackets(since: $s, until: $u) "
                            "{ count } }", s=str(PING.first_ms), u=str(PING.first_ms + 1))
        assert window["data"]["rawPackets"]["count"] == 2  # the first echo and its reply
        bad_bpf = graphql(a, '{ rawPackets(bpf: "icmp or") { count } }')
        assert "bpf: BPF filter 'icmp or'" in bad_bpf["errors"][0]["message"]


def test_graphql_metrics(analyzer_at: Any) -> None:
    with analyzer_at() as a:
        feed(a, TCP, GRE)
        (uuid, flow), = TCP.final().items()
        body = graphql(a, "query($t: String) { metrics(flows: {trackingID: $t}) "
                          "{ series { id metrics } total } }", t=flow["TrackingID"])
        metrics = body["data"]["metrics"]
        assert [s["id"] for s in metrics["series"]] == [uuid]
        samples = metrics["series"][0]["metrics"]
        assert [(m["Start"], m["Last"]) for m in samples] == [
            (u["LastUpdateMetric"]["Start"], u["LastUpdateMetric"]["Last"])
            for u in TCP.updates]
        m = flow["Metric"]
        total = metrics["total"]
        assert (total["ABPackets"], total["BAPackets"], total["ABBytes"], total["BABytes"]) == (
            m["ABPackets"], m["BAPackets"], m["ABBytes"], m["BABytes"])
        # re-bucketed into 1 s slices from `since`: nothing lost
        since, until = TCP.first_ms - 5000, TCP.last_ms + 30_000
        agg = graphql(a, "query($s: String, $u: String) { metrics(since: $s, until: $u, "
                         "aggregate: 1) { series { id metrics } total } }", s=str(since),
                      u=str(until))
        (series,) = agg["data"]["metrics"]["series"]
        assert series["id"] == "Aggregated"
        assert all((s["Start"] - since) % 1000 == 0 for s in series["metrics"])
        assert sum(s["ABPackets"] + s["BAPackets"] for s in series["metrics"]) == 8
        # the GRE flows, by time range: 3 flows, 10 packets each
        gre = graphql(a, "query($s: String, $u: String) { metrics(since: $s, until: $u) "
                         "{ series { id } total } }", s=str(GRE.first_ms - 1000),
                      u=str(GRE.last_ms + 30_000))["data"]["metrics"]
        assert len(gre["series"]) == 3
        assert gre["total"]["ABPackets"] + gre["total"]["BAPackets"] == 30
        errors = graphql(a, '{ metrics(flows: {}, nodes: {}) { total } }')["errors"]
        assert "flows or nodes, not both" in errors[0]["message"]
        errors = graphql(a, '{ metrics(aggregate: 0) { total } }')["errors"]
        assert "aggregate: a number of seconds > 0" in errors[0]["message"]


def test_graphql_interface_metrics(analyzer_at: Any) -> None:
    """An interface's LastUpdateMetric as the netlink probe sets it on every refresh,
    sent over the agent link: each revision's metric, in a time range, aggregated."""
    from skygraph.probes.netns.links import metric_delta
    from skygraph.topology.mutations import NodeUpdated

    with analyzer_at() as a:
        t0 = int(time.time() * 1000) - 120_000
        counters = [{"RxPackets": 10 * i, "RxBytes": 1000 * i} for i in range(5)]

        q = '{ metrics(nodes: {name: "rp-if0"}) { series { id metrics } total } }'

        async def run() -> dict[str, Any]:
            agent = Agent(HOST)
            agent.graph.apply_nowait(NodeAdded(Node("rp-if", {"Name": "rp-if0",
                                                              "Type": "veth"})))
            async with agent.running(agent.client(a.rpc)) as client:
                assert await client.wait_connected(30)
                for i in range(1, len(counters)):
                    node = agent.graph.nodes["rp-if"]
                    meta = {**node.Metadata, "Metric": counters[i], "LastUpdateMetric":
                            metric_delta(counters[i], counters[i - 1], t0 + 30_000 * (i - 1),
                                         t0 + 30_000 * i)}
                    await agent.graph.apply(NodeUpdated(node.with_(Metadata=meta)))
                deadline = time.monotonic() + 30
                while True:   # until the four refreshes are stored
                    got = (await asyncio.to_thread(graphql, a, q))["data"]["metrics"]
                    if got["total"] and got["total"]["RxPackets"] == 40:
                        return dict(got)
                    assert time.monotonic() < deadline, got
                    await asyncio.sleep(0.2)
        got = asyncio.run(run())
        assert [s["id"] for s in got["series"]] == ["rp-if"]
        assert [(x["Start"], x["RxPackets"]) for x in got["series"][0]["metrics"]] == [
            (t0 + 30_000 * i, 10) for i in range(4)]
        part = graphql(a, 'query($s: String, $u: String) { metrics(nodes: {name: "rp-if0"}, '
                          'since: $s, until: $u) { total } }', s=str(t0 + 30_000),
                       u=str(t0 + 90_000))
        assert part["data"]["metrics"]["total"]["RxPackets"] == 20
        agg = graphql(a, 'query($s: String, $u: String) { metrics(nodes: {name: "rp-if0"}, '
                         'since: $s, until: $u, aggregate: 60) { series { metrics } } }',
                      s=str(t0), u=str(t0 + 120_000))
        assert [x["RxPackets"] for x in agg["data"]["metrics"]["series"][0]["metrics"]] == [
            20, 20]
        # Gremlin says the same
        gremlin = a.request("POST", "/api/topology", {"GremlinQuery": (
            f"G.At({t0 + 120_001}, 200).V().Has('Name', 'rp-if0').Metrics().Sum('RxBytes')")})
        assert gremlin.json() == 4000
