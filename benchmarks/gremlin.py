"""Benchmark: Gremlin queries through the translator vs hand-written Cypher.

Starts a fresh embedded server, loads a synthetic 10,000-interface host
(100 namespaces x 100 interfaces, one bridge per namespace linked over
layer2 to the namespace's eth0 and to a core bridge), then runs ten typical
questions both ways, interleaved, and prints p50/p99 latency of each and the
translated/hand-written ratio at p50. The translated side includes parsing
and translation on every run (the whole `execute` path).

    .venv/bin/python benchmarks/gremlin.py [--namespaces 100] [--interfaces 100] [--runs 60]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from skygraph.gremlin import execute
from skygraph.topology.embedded import USER, EmbeddedConfig, EmbeddedServer, free_port
from skygraph.topology.graph import Graph
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, NodeAdded, StoreMutation
from skygraph.topology.store import GraphStore

NOW = 1_700_000_000_000

# (label, gremlin, hand-written cypher, params, single hop?). The hand-written
# side is the fastest form found on the embedded server (no label on the far
# end of a hop: a label there makes it scan the label).
QUERIES: list[tuple[str, str, str, dict[str, Any], bool]] = [
    ("node by name", "G.V().Has('Name', 'ns42-eth7')",
     "MATCH (n:Node {Name: $n}) RETURN properties(n) AS p", {"n": "ns42-eth7"}, False),
    ("seed: netns -> intf", "G.V().Has('Name', 'ns42').Out().Has('Name', 'ns42-eth7')",
     "MATCH (a:Node {Name: $a})-->(b {Name: $b}) RETURN properties(b) AS p",
     {"a": "ns42", "b": "ns42-eth7"}, True),
    ("children of a netns", "G.V().Has('Name', 'ns42').Out()",
     "MATCH (a:Node {Name: $a})-->(b) RETURN properties(b) AS p", {"a": "ns42"}, True),
    ("parents of an intf", "G.V().Has('Name', 'ns42-eth7').In()",
     "MATCH (a:Node {Name: $a})<--(b) RETURN properties(b) AS p", {"a": "ns42-eth7"},
     True),
    ("count by type", "G.V().Has('Type', 'netns').Count()",
     "MATCH (n:Node {Type: $t}) RETURN count(*) AS c", {"t": "netns"}, False),
    ("layer2 edges of a bridge", "G.V().Has('Name', 'br7').OutE('RelationType', 'layer2').OutV()",
     "MATCH (a:Node {Name: $a})-[e:LAYER2]->(b) RETURN properties(b) AS p", {"a": "br7"},
     True),
    ("MACs in a netns", "G.V().Has('Name', 'ns42').Out().Values('MAC')",
     "MATCH (a:Node {Name: $a})-->(b) WHERE b.MAC IS NOT NULL RETURN b.MAC AS m",
     {"a": "ns42"}, True),
    ("regex count", "G.V().Has('Name', Regex('ns42-eth1.*')).Count()",
     "MATCH (n:Node) WHERE n.Name =~ $r RETURN count(*) AS c", {"r": "ns42-eth1.*"}, False),
    ("ownership descendants", "G.V().Has('Name', 'ns42').Descendants()",
     "MATCH (a:Node {Name: $a})-[:OWNERSHIP*0..1]->(b) WITH DISTINCT b "
     "RETURN properties(b) AS p", {"a": "ns42"}, False),
    ("shortest layer2 path",
     "G.V().Has('Name', 'ns42-eth0').ShortestPathTo(Metadata('Name', 'ns43-eth0'), "
     "Metadata('RelationType', 'layer2'))",
     "MATCH (a:Node {Name: $a}), (b:Node {Name: $b}) "
     "MATCH p = shortestPath((a)-[:LAYER2*..10]-(b)) "
     "RETURN [x IN nodes(p) | properties(x)] AS path", {"a": "ns42-eth0", "b": "ns43-eth0"},
     False),
]


def topology(namespaces: int, interfaces: int) -> list[StoreMutation]:
    g = Graph(clock=lambda: NOW)
    out: list[StoreMutation] = []

    def add(m: Any) -> None:
        out.extend(g.apply_nowait(m))

    add(NodeAdded(Node("host", {"Name": "host1", "Type": "host"}, Host="host1")))
    add(NodeAdded(Node("br-core", {"Name": "br-core", "Type": "bridge"}, Host="host1")))
    add(EdgeAdded(Edge("host-br-core", "host", "br-core", {"RelationType": "ownership"})))
    for i in range(namespaces):
        ns, br = f"ns{i}", f"br{i}"
        add(NodeAdded(Node(ns, {"Name": ns, "Type": "netns", "Path": f"/run/netns/{ns}"},
                           Host="host1")))
        add(NodeAdded(Node(br, {"Name": br, "Type": "bridge", "MTU": 1500}, Host="host1")))
        add(EdgeAdded(Edge(f"host-{ns}", "host", ns, {"RelationType": "ownership"})))
        add(EdgeAdded(Edge(f"host-{br}", "host", br, {"RelationType": "ownership"})))
        add(EdgeAdded(Edge(f"core-{br}", "br-core", br, {"RelationType": "layer2"})))
        for j in range(interfaces):
            name = f"ns{i}-eth{j}"
            add(NodeAdded(Node(name, {
                "Name": name, "Type": "veth", "MTU": 1500, "State": "UP",
                "MAC": f"02:00:00:00:{i:02x}:{j:02x}", "IPV4": [f"10.{i}.{j}.1/24"],
                "Metric": {"RxBytes": i * j}}, Host="host1")))
            add(EdgeAdded(Edge(f"{ns}-{name}", ns, name, {"RelationType": "ownership"})))
        add(EdgeAdded(Edge(f"{br}-eth0", br, f"ns{i}-eth0", {"RelationType": "layer2"})))
    return out


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return (time.perf_counter() - start) * 1000


async def main(args: argparse.Namespace) -> int:
    data = Path(tempfile.mkdtemp(prefix="skygraph-bench-gremlin-"))
    server = EmbeddedServer(EmbeddedConfig(data_dir=data, bolt_port=free_port(),
                                           http_port=free_port(), heap="1g"))
    await server.start()
    store = await GraphStore.open(server.uri, USER, server.password)
    try:
        await store.bootstrap()
        muts = topology(args.namespaces, args.interfaces)
        start = time.perf_counter()
        for i in range(0, len(muts), 2000):
            await store.apply(muts[i:i + 2000])
        nodes = (await store.read("MATCH (n:Node) RETURN count(n) AS c", {}, 60))[0]["c"]
        print(f"loaded {nodes} nodes ({len(muts)} mutations) in "
              f"{time.perf_counter() - start:.1f} s\n")
        print(f"{'query':<26}{'gremlin p50':>12}{'p99':>9}{'cypher p50':>12}{'p99':>9}"
              f"{'ratio':>8}")
        ratios, worst_single = [], 0.0
        for label, gremlin, cypher, params, single in QUERIES:
            async def g(q: str = gremlin) -> Any:
                return await execute(q, store.read, NOW)

            async def c(text: str = cypher, p: dict[str, Any] = params) -> Any:
                return await store.read(text, dict(p), 10.0)

            for _ in range(args.warmup):
                await g()
                await c()
            gs: list[float] = []
            cs: list[float] = []
            for _ in range(args.runs):
                gs.append(await timed(g))
                cs.append(await timed(c))
            ratio = statistics.median(gs) / statistics.median(cs)
            ratios.append(ratio)
            if single:
                worst_single = max(worst_single, statistics.median(gs))
            print(f"{label:<26}{pct(gs, .5):>10.2f}ms{pct(gs, .99):>7.2f}ms"
                  f"{pct(cs, .5):>10.2f}ms{pct(cs, .99):>7.2f}ms{ratio:>8.2f}")
        print(f"\nratio at p50: median {statistics.median(ratios):.2f}, max {max(ratios):.2f} "
              f"(target <= 1.3); single-hop gremlin p50 max {worst_single:.2f} ms "
              f"(target < 20 ms)")
    finally:
        await store.close()
        await server.stop()
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--namespaces", type=int, default=100)
    ap.add_argument("--interfaces", type=int, default=100)
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    raise SystemExit(asyncio.run(main(ap.parse_args())))
