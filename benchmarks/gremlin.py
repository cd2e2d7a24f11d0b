"""Benchmark: Gremlin through the REST API vs hand-written Cypher (issue 17 point 5).

Starts a fresh embedded server, loads a synthetic 10,000-interface host
(100 namespaces x 100 interfaces, one bridge per namespace linked over
layer2 to the namespace's eth0 and to a core bridge) through the store's
batch writer, then 100,000 flows captured on those interfaces (`UNWIND` of
rows shaped by flowschema's `flow_properties`, each linked to its interface
as the flow store links it; the fill is setup, not measured). It runs
`skygraph analyzer` as a separate process on that database and asks ten
questions, topology and flows, both ways, interleaved (the order alternating
run by run): `POST /api/topology {"GremlinQuery": ...}` over one keep-alive
HTTP connection, the response decoded, against the same question in
hand-written Cypher through the neo4j driver in this process (one session,
a read transaction per question, the records fetched). Every run asks about
another interface, namespace or address (the same one both ways), so
nothing is answered from a cache of one query text. It prints p50/p99 of
each side, the REST/Cypher ratio at p50 beside the target (<= 1.3), and the
load average; answers of both sides must agree in size.

    .venv/bin/python benchmarks/gremlin.py [--namespaces 100] [--interfaces 100]
        [--flows 100000] [--runs 60]

Exit status: 0 when every ratio meets the target, 1 when one is missed, 2
when the benchmark cannot run.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, NamedTuple

import neo4j

from skygraph.topology.embedded import USER, EmbeddedConfig, EmbeddedServer, free_port
from skygraph.topology.flowschema import flow_properties
from skygraph.topology.graph import Graph
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, NodeAdded, StoreMutation
from skygraph.topology.store import GraphStore

NOW = 1_700_000_000_000
TARGET = 1.3
SERVERS = 500
FLOW_BATCH = 5_000
FILL_FLOWS = (
    "UNWIND $rows AS r CREATE (f:Flow) SET f = r.props "
    "WITH f, r MATCH (n:Node {TID: r.tid}) CREATE (f)-[:CAPTURED_ON]->(n)"
)

Values = dict[str, str]


class Case(NamedTuple):
    """One question: Gremlin and hand-written Cypher, both formatted with the
    run's values (`{ns}`, `{iface}`, ...); Cypher parameters name the values.
    (A NamedTuple, not a dataclass: benchmarks/api.py loads this file by path.)"""

    label: str
    gremlin: str
    cypher: str
    params: dict[str, str]  # Cypher parameter -> name of a run value

    def rest_query(self, v: Values) -> str:
        return self.gremlin.format(**v)

    def cypher_params(self, v: Values) -> dict[str, Any]:
        return {p: v[name] for p, name in self.params.items()}


# The hand-written side is the fastest form found on the embedded server (no
# label on the far end of a hop: a label there makes it scan the label).
CASES = [
    Case("node by name", "G.V().Has('Name', '{iface}')",
         "MATCH (n:Node {Name: $n}) RETURN properties(n) AS p", {"n": "iface"}),
    Case("children of a netns", "G.V().Has('Name', '{ns}').Out()",
         "MATCH (a:Node {Name: $a})-->(b) RETURN properties(b) AS p", {"a": "ns"}),
    Case("count by type", "G.V().Has('Type', 'netns').Count()",
         "MATCH (n:Node {Type: 'netns'}) RETURN count(*) AS c", {}),
    Case("layer2 edges of a bridge", "G.V().Has('Name', '{br}').OutE('RelationType', "
         "'layer2').OutV()",
         "MATCH (a:Node {Name: $a})-[e:LAYER2]->(b) RETURN properties(b) AS p", {"a": "br"}),
    Case("MACs in a netns", "G.V().Has('Name', '{ns}').Out().Values('MAC')",
         "MATCH (a:Node {Name: $a})-->(b) WHERE b.MAC IS NOT NULL RETURN b.MAC AS m",
         {"a": "ns"}),
    Case("shortest layer2 path",
         "G.V().Has('Name', '{eth0}').ShortestPathTo(Metadata('Name', '{eth0b}'), "
         "Metadata('RelationType', 'layer2'))",
         "MATCH (a:Node {Name: $a}), (b:Node {Name: $b}) "
         "MATCH p = shortestPath((a)-[:LAYER2*..10]-(b)) "
         "RETURN [x IN nodes(p) | properties(x)] AS path", {"a": "eth0", "b": "eth0b"}),
    Case("flows by Network.A", "G.Flows().Has('Network.A', '{ip}')",
         "MATCH (f:Flow {`Network.A`: $ip}) RETURN properties(f) AS p", {"ip": "ip"}),
    Case("flows of an address", "G.Flows().Has('Network', '{ip}')",
         "MATCH (f:Flow {`Network.A`: $ip}) RETURN properties(f) AS p UNION ALL "
         "MATCH (f:Flow {`Network.B`: $ip}) WHERE f.`Network.A` <> $ip "
         "RETURN properties(f) AS p", {"ip": "ip"}),
    Case("DNS flows count", "G.Flows().Has('Application', 'DNS').Count()",
         "MATCH (f:Flow {Application: 'DNS'}) RETURN count(*) AS c", {}),
    Case("flows of an interface", "G.V().Has('Name', '{iface}').Flows()",
         "MATCH (n:Node {Name: $n})<-[:CAPTURED_ON]-(f) RETURN properties(f) AS p",
         {"n": "iface"}),
]


def interface_ip(i: int, j: int) -> str:
    return f"10.{i}.{j}.1"


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
                "MAC": f"02:00:00:00:{i:02x}:{j:02x}", "IPV4": [f"{interface_ip(i, j)}/24"],
                "TID": f"tid-{i}-{j}", "Metric": {"RxBytes": i * j}}, Host="host1")))
            add(EdgeAdded(Edge(f"{ns}-{name}", ns, name, {"RelationType": "ownership"})))
        add(EdgeAdded(Edge(f"{br}-eth0", br, f"ns{i}-eth0", {"RelationType": "layer2"})))
    return out


def synthetic_flow(k: int, namespaces: int, interfaces: int, written_ms: int) -> dict[str, Any]:
    """Flow k, captured on interface k mod (namespaces x interfaces), from its
    address to one of SERVERS servers: 2 % ICMPv4, 15 % DNS, 25 % UDP, 58 % TCP."""
    iface = k % (namespaces * interfaces)
    i, j = divmod(iface, interfaces)
    s = (k * 7919) % SERVERS
    r = k * 37 % 100
    app = "ICMPv4" if r < 2 else "DNS" if r < 17 else "UDP" if r < 42 else "TCP"
    start = NOW + k * 12
    last = start + (k * 104_729) % 120_000
    tracking = f"{(k * 0x9E3779B97F4A7C15) % 2**64:016x}"
    flow: dict[str, Any] = {
        "UUID": f"{k:016x}", "LayersPath": {
            "ICMPv4": "Ethernet/IPv4/ICMPv4", "DNS": "Ethernet/IPv4/UDP/DNS",
            "UDP": "Ethernet/IPv4/UDP", "TCP": "Ethernet/IPv4/TCP"}[app],
        "Application": app,
        "Link": {"Protocol": "ETHERNET", "A": f"02:00:00:00:{i:02x}:{j:02x}",
                 "B": f"02:01:00:00:{s >> 8:02x}:{s & 255:02x}", "ID": 0},
        "Network": {"Protocol": "IPV4", "A": interface_ip(i, j),
                    "B": f"172.16.{s >> 8}.{(s & 255) + 1}", "ID": 0},
        "LastUpdateMetric": {"ABPackets": 3, "ABBytes": 280, "BAPackets": 3, "BABytes": 300,
                             "Start": last - 10_000, "Last": last},
        "Metric": {"ABPackets": 30, "ABBytes": 2800, "BAPackets": 30, "BABytes": 3000,
                   "Start": start, "Last": last},
        "Start": start, "Last": last, "TrackingID": tracking,
        "L3TrackingID": tracking[::-1], "ParentUUID": "", "NodeTID": f"tid-{i}-{j}",
        "CaptureID": f"capture-{i % 10}", "RawPacketsCaptured": 0,
        "FinishType": "NOT_FINISHED",
    }
    if app == "ICMPv4":
        flow["ICMP"] = {"Type": "ECHO", "ID": k % 65536}
    else:
        flow["Transport"] = {"Protocol": "TCP" if app == "TCP" else "UDP",
                             "A": 1024 + k % 60_000, "B": 53 if app == "DNS" else 443, "ID": 0}
    return {"props": flow_properties(flow, "host1", written_ms), "tid": flow["NodeTID"]}


def run_values(rng: random.Random, namespaces: int, interfaces: int) -> Values:
    """The run's interface, namespace, bridge and address (another one every run)."""
    i, j = rng.randrange(namespaces), rng.randrange(interfaces)
    i2 = (i + 1 + rng.randrange(namespaces - 1)) % namespaces if namespaces > 1 else i
    return {"iface": f"ns{i}-eth{j}", "ns": f"ns{i}", "br": f"br{i}", "eth0": f"ns{i}-eth0",
            "eth0b": f"ns{i2}-eth0", "ip": interface_ip(i, j)}


# ---------------------------------------------------------------- the two sides

class Rest:
    """POST /api/topology over one keep-alive connection; the decoded answer."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def ask(self, gremlin: str) -> Any:
        self.conn.request("POST", "/api/topology", json.dumps({"GremlinQuery": gremlin}),
                          {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{gremlin}: HTTP {resp.status}: {data[:300]!r}")
        return json.loads(data)


def bolt(session: neo4j.Session, cypher: str, params: dict[str, Any]) -> list[Any]:
    def work(tx: neo4j.ManagedTransaction) -> list[Any]:
        return [r.values() for r in tx.run(cypher, params)]
    return session.execute_read(work)


def size(answer: Any) -> int:
    """What must agree between both sides: a count, or how many results (paths
    for a path question)."""
    if isinstance(answer, int):
        return answer
    if isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], list) and \
            len(answer[0]) == 1 and isinstance(answer[0][0], int):
        return answer[0][0]  # a Cypher count row
    return len(answer) if isinstance(answer, list) else -1


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def loadavg() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def commit() -> str:
    here = Path(__file__).parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=here, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=here,
                               check=False).stdout.strip()
        return out + (" (working tree modified)" if dirty else "")
    except OSError:
        return "?"


# ---------------------------------------------------------------- setup

async def load(server: EmbeddedServer, args: argparse.Namespace) -> tuple[int, int]:
    store = await GraphStore.open(server.uri, USER, server.password)
    try:
        await store.bootstrap()
        muts = topology(args.namespaces, args.interfaces)
        for i in range(0, len(muts), 2000):
            await store.apply(muts[i:i + 2000])
        written = int(time.time() * 1000)  # retention counts from here (none set anyway)
        for first in range(0, args.flows, FLOW_BATCH):
            rows = [synthetic_flow(k, args.namespaces, args.interfaces, written)
                    for k in range(first, min(args.flows, first + FLOW_BATCH))]
            await store.run(FILL_FLOWS, {"rows": rows}, 600)
        nodes = (await store.read("MATCH (n:Node) RETURN count(n) AS c", {}, 60))[0]["c"]
        flows = (await store.read("MATCH (f:Flow) RETURN count(f) AS c", {}, 60))[0]["c"]
        return int(nodes), int(flows)
    finally:
        await store.close()


def start_analyzer(server: EmbeddedServer, work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cfg = work / "analyzer.yml"
    cfg.write_text(f"analyzer:\n  listen: 127.0.0.1:{port}\n"
                   f"  rpc:\n    listen: 127.0.0.1:{free_port()}\n"
                   f"graph:\n  uri: {server.uri}\n  user: {USER}\n"
                   f"  password: {server.password}\nflow:\n  retention: 0\n"
                   "logging:\n  level: WARNING\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGRAPH_")}
    proc = subprocess.Popen([sys.executable, "-m", "skygraph.cli", "-c", str(cfg),
                             "analyzer"], env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the analyzer exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("the analyzer did not answer /health")


# ---------------------------------------------------------------- measure

def measure(rest: Rest, session: neo4j.Session, args: argparse.Namespace) -> list[str]:
    rng = random.Random(17)
    misses: list[str] = []
    print(f"{'query':<26}{'rest p50':>10}{'p99':>9}{'cypher p50':>12}{'p99':>9}"
          f"{'ratio':>8}  target  results")
    ratios = []
    for case in CASES:
        def one(v: Values, c: Case = case) -> tuple[float, float, Any, Any]:
            query, params = c.rest_query(v), c.cypher_params(v)
            t0 = time.perf_counter()
            got = rest.ask(query)
            t1 = time.perf_counter()
            want = bolt(session, c.cypher, params)
            t2 = time.perf_counter()
            return (t1 - t0) * 1000, (t2 - t1) * 1000, got, want

        def flipped(v: Values, c: Case = case) -> tuple[float, float, Any, Any]:
            query, params = c.rest_query(v), c.cypher_params(v)
            t0 = time.perf_counter()
            want = bolt(session, c.cypher, params)
            t1 = time.perf_counter()
            got = rest.ask(query)
            t2 = time.perf_counter()
            return (t2 - t1) * 1000, (t1 - t0) * 1000, got, want

        for _ in range(args.warmup):
            one(run_values(rng, args.namespaces, args.interfaces))
        rs: list[float] = []
        cs: list[float] = []
        sizes: set[int] = set()
        mismatch = ""
        for k in range(args.runs):
            v = run_values(rng, args.namespaces, args.interfaces)
            r_ms, c_ms, got, want = (one if k % 2 == 0 else flipped)(v)
            rs.append(r_ms)
            cs.append(c_ms)
            if size(got) != size(want):
                mismatch = f"{case.rest_query(v)}: REST {size(got)}, Cypher {size(want)}"
            sizes.add(size(got))
        ratio = statistics.median(rs) / statistics.median(cs)
        ratios.append(ratio)
        ok = ratio <= TARGET and not mismatch
        if ratio > TARGET:
            misses.append(f"{case.label}: {ratio:.2f}")
        if mismatch:
            misses.append(f"{case.label}: answers differ ({mismatch})")
        shown = f"{min(sizes)}" if len(sizes) == 1 else f"{min(sizes)}-{max(sizes)}"
        print(f"{case.label:<26}{pct(rs, .5):>8.2f}ms{pct(rs, .99):>7.2f}ms"
              f"{pct(cs, .5):>10.2f}ms{pct(cs, .99):>7.2f}ms{ratio:>8.2f}  "
              f"{'PASS' if ok else 'FAIL':<6}  {shown}{' MISMATCH' if mismatch else ''}",
              flush=True)
    print(f"\nratio at p50: median {statistics.median(ratios):.2f}, max {max(ratios):.2f} "
          f"(target <= {TARGET:g} each)")
    return misses


def main(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="skygraph-bench-gremlin-"))
    server = EmbeddedServer(EmbeddedConfig(data_dir=work / "db", bolt_port=free_port(),
                                           http_port=free_port(), heap=args.heap))
    loop = asyncio.new_event_loop()
    proc: subprocess.Popen[bytes] | None = None
    driver: neo4j.Driver | None = None
    print(f"gremlin at {commit()}, load average {loadavg()} at the start; "
          f"{os.cpu_count()} CPUs; server heap {args.heap}; {args.runs} runs per query")
    try:
        try:
            loop.run_until_complete(server.start())
            start = time.perf_counter()
            nodes, flows = loop.run_until_complete(load(server, args))
            print(f"loaded {nodes:,} nodes and {flows:,} flows in "
                  f"{time.perf_counter() - start:.1f} s (setup, not measured)")
            proc, port = start_analyzer(server, work)
            driver = neo4j.GraphDatabase.driver(server.uri, auth=(USER, server.password))
            driver.verify_connectivity()
        except Exception as exc:  # any reason it cannot run
            print(f"cannot run: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        print(f"analyzer pid {proc.pid} on port {port}; load average {loadavg()}\n")
        rest = Rest(port)
        with driver.session(database=server.config.database) as session:
            misses = measure(rest, session, args)
        rest.conn.close()
        print(f"load average {loadavg()} after the queries")
    finally:
        if driver is not None:
            driver.close()
        if proc is not None:
            proc.terminate()
            proc.wait(60)
        loop.run_until_complete(server.stop())
        loop.close()
        shutil.rmtree(work, ignore_errors=True)
    if misses:
        print("MISSED: " + "; ".join(misses))
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--namespaces", type=int, default=100)
    ap.add_argument("--interfaces", type=int, default=100)
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--heap", default="1g", help="the embedded server's heap")
    raise SystemExit(main(ap.parse_args()))
