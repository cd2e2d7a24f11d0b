"""Benchmark: the graph writers against hand-written `UNWIND` Cypher (issue 17 point 2).

One fresh embedded server, one run, the same rows for both sides:

1. topology through the `BatchWriter`: `--nodes` interface nodes + two
   layer2 edges each, then one metadata update per node (each update also
   archives the previous revision: history);
2. flow updates through the analyzer's `FlowSink` (`put` of Skydive flow JSON,
   then `flush`): `--flows` flows, a tenth of them inner (tunnelled) flows
   with a parent, every flow captured on one of 100 interfaces (`NodeTID`),
   sent `--rounds` times, each update with its metric sample (LastUpdateMetric);
   so each update is a `(:Flow)` with its `CAPTURED_ON` edge, its `INSIDE`
   edge (inner flows) and a `(:FlowMetric)` sample;
3. both writers at once (topology updates while flows keep coming, as in the
   analyzer), counting the transient `DeadlockDetected` errors (ArcadeDB's
   answer to a write-write conflict) and every retry;
4. the database cleared, then the same rows as plain `UNWIND ... CREATE` /
   `MATCH ... SET` / `MERGE` batches of the same size, one write transaction each
   (no history, no stale-update guard, rows prepared before the clock starts).

Prints each figure beside its target and its hand-written anchor, the load
average, server and client CPU per element, and peak RSS.

    .venv/bin/python benchmarks/store_write.py [--nodes 10000] [--batch 2000]
        [--flows 10000] [--rounds 2] [--flow-batch 1000]

Exit status 0 when every target is met, 1 when one is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from skygraph.topology.batch import edge_properties, node_properties
from skygraph.topology.embedded import USER, EmbeddedConfig, EmbeddedServer, free_port
from skygraph.topology.flowschema import write_row
from skygraph.topology.flowstore import FlowSink, FlowStore
from skygraph.topology.graph import Graph
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, NodeAdded, NodeUpdated, StoreMutation
from skygraph.topology.store import BatchWriter, GraphStore

RATIO_TARGET = 0.8
FLOW_RATE_TARGET = 20_000.0
T0 = 1_700_000_000_000
INTERFACES_WITH_FLOWS = 100
HOST = "bench"


def server_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (robust to other load on the machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


Reading = tuple[float, float, float]  # wall s, server CPU s, client CPU s


async def measured(pid: int, work: Callable[[], Awaitable[Any]]) -> Reading:
    t, srv, cli = time.perf_counter(), cpu_seconds(pid), own_cpu()
    await work()
    return time.perf_counter() - t, cpu_seconds(pid) - srv, own_cpu() - cli


# ---------------------------------------------------------------- workloads

def interface(i: int, rx: int = 0) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "Type": "veth", "Name": f"veth{i}", "IfIndex": i + 2, "MTU": 1500,
        "MAC": f"02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
        "State": "UP", "LinkFlags": ["UP", "BROADCAST", "MULTICAST"], "Driver": "veth",
        "IPV4": [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/16"],
        "Metric": {"RxBytes": rx, "TxBytes": rx // 2, "RxPackets": rx // 100}}
    if i < INTERFACES_WITH_FLOWS:
        meta["TID"] = f"tid-{i}"
    return meta


def topology(n: int) -> tuple[list[StoreMutation], list[StoreMutation], list[StoreMutation]]:
    """Creates (nodes, then edges), a first round of updates, a second one."""
    clock = [1_000_000]
    g = Graph(clock=lambda: clock[0])
    creates: list[StoreMutation] = []
    for i in range(n):
        creates += g.apply_nowait(NodeAdded(Node(f"if-{i}", interface(i), Host=HOST)))
    for i in range(n):
        for k, j in enumerate(((i + 1) % n, (i + 7) % n)):
            creates += g.apply_nowait(EdgeAdded(Edge(f"l2-{i}-{k}", f"if-{i}", f"if-{j}",
                                                     {"RelationType": "layer2"}, Host=HOST)))
    rounds: list[list[StoreMutation]] = []
    for r in (1, 2):
        clock[0] += 1000
        ups: list[StoreMutation] = []
        for i in range(n):
            ups += g.apply_nowait(NodeUpdated(Node(f"if-{i}", interface(i, rx=1000 * r + i))))
        rounds.append(ups)
    return creates, rounds[0], rounds[1]


def flow_json(i: int, n: int, r: int) -> dict[str, Any]:
    """Update `r` (from 0) of flow `i` of `n`, as an agent sends it. Flows of the
    last tenth are inner flows of an outer flow."""
    start = T0 + i * 10
    last = start + 10_000 * (r + 1)
    inner = i >= n - n // 10
    packets = 10 * (r + 1)
    return {
        "UUID": f"flow-{i:08x}", "LayersPath": "Ethernet/IPv4/TCP", "Application": "TCP",
        "Link": {"Protocol": "ETHERNET", "A": "02:00:00:00:00:01", "B": "02:00:00:00:00:02",
                 "ID": 0},
        "Network": {"Protocol": "IPV4", "A": f"10.0.{i >> 8 & 255}.{i & 255}",
                    "B": "172.16.0.1", "ID": 0},
        "Transport": {"Protocol": "TCP", "A": 1024 + i % 60000, "B": 443, "ID": 0},
        "LastUpdateMetric": {"ABPackets": 5, "ABBytes": 700, "BAPackets": 5, "BABytes": 900,
                             "Start": last - 10_000, "Last": last},
        "Metric": {"ABPackets": packets, "ABBytes": 140 * packets, "BAPackets": packets,
                   "BABytes": 180 * packets, "Start": start, "Last": last},
        "Start": start, "Last": last, "TrackingID": f"t-{i}", "L3TrackingID": f"l3-{i}",
        "ParentUUID": f"flow-{i - n // 2:08x}" if inner else "",
        "NodeTID": f"tid-{i % INTERFACES_WITH_FLOWS}", "CaptureID": "capture-1",
        "RawPacketsCaptured": 0, "FinishType": "NOT_FINISHED",
    }


def flow_rounds(n: int, rounds: int) -> list[list[dict[str, Any]]]:
    return [[flow_json(i, n, r) for i in range(n)] for r in range(rounds)]


# ---------------------------------------------------------------- the writers

LOGGERS = ("skygraph.store", "skygraph.flows")  # where the writers log a retried error


class ErrorCount(logging.Handler):
    """Counts the writers' 'not written yet' warnings that name a deadlock."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.deadlocks = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "DeadlockDetected" in record.getMessage():
            self.deadlocks += 1


async def writer_side(store: GraphStore, pid: int, creates: list[StoreMutation],
                      updates: list[StoreMutation], updates2: list[StoreMutation],
                      flows: list[list[dict[str, Any]]], last_flows: list[dict[str, Any]],
                      batch: int, flow_batch: int) -> dict[str, Any]:
    writer = BatchWriter(store, max_batch=batch, max_delay=0.05)
    sink = FlowSink(FlowStore(store), max_batch=flow_batch)
    counter = ErrorCount()
    for name in LOGGERS:
        logging.getLogger(name).addHandler(counter)
    await writer.start()
    await sink.start()
    out: dict[str, Any] = {}

    async def write(mutations: list[StoreMutation]) -> None:
        await writer.submit_all(mutations)
        await writer.flush()

    async def put_flows(rounds: list[list[dict[str, Any]]]) -> None:
        for docs in rounds:
            await sink.put(HOST, docs)
        await sink.flush()

    out["create"] = await measured(pid, lambda: write(creates))
    out["update"] = await measured(pid, lambda: write(updates))
    out["flows"] = await measured(pid, lambda: put_flows(flows))

    async def both() -> None:
        await asyncio.gather(write(updates2), put_flows([last_flows]))
    out["concurrent"] = await measured(pid, both)
    await writer.stop()
    await sink.stop()
    for name in LOGGERS:
        logging.getLogger(name).removeHandler(counter)
    out["deadlocks"] = counter.deadlocks
    out["retries"] = writer.stats.retries + sink.stats.retries
    archived = (await store.run("MATCH (a:ArchivedNode) RETURN count(a) AS c"))[0]["c"]
    assert archived == 2 * len(updates), archived
    n_flows = len(last_flows)
    linked = (await store.run("MATCH (f:Flow)-[:CAPTURED_ON]->(:Node) RETURN count(f) AS c"
                              ))[0]["c"]
    inside = (await store.run("MATCH (:Flow)-[:INSIDE]->(:Flow) RETURN count(*) AS c"))[0]["c"]
    samples = (await store.run("MATCH (:Flow)-[:HAS_METRIC]->(m:FlowMetric) "
                               "RETURN count(m) AS c"))[0]["c"]
    assert (linked, inside, samples) == (n_flows, n_flows // 10, n_flows * (len(flows) + 1)), \
        (linked, inside, samples)
    assert writer.stats.rejected == sink.stats.rejected == 0
    return out


HAND_NODES = "UNWIND $rows AS r CREATE (n:Node:Interface) SET n = r.p"
HAND_EDGES = ("UNWIND $rows AS r MATCH (a:Node {ID: r.a}) MATCH (b:Node {ID: r.b}) "
              "CREATE (a)-[e:LAYER2]->(b) SET e = r.p")
HAND_UPDATES = "UNWIND $rows AS r MATCH (n:Node {ID: r.id}) SET n += r.p"
# One flow update: the flow, its interface edge, its parent edge, its sample.
HAND_FLOWS = "UNWIND $rows AS r MERGE (f:Flow {UUID: r.UUID}) SET f = r.props"
HAND_CAPTURED_ON = ("UNWIND $rows AS r MATCH (f:Flow {UUID: r.UUID}) "
                    "MATCH (n:Node {TID: r.tid}) MERGE (f)-[:CAPTURED_ON]->(n)")
HAND_INSIDE = ("UNWIND $rows AS r MATCH (f:Flow {UUID: r.UUID}) "
               "MATCH (p:Flow {UUID: r.parent}) MERGE (f)-[:INSIDE]->(p)")
HAND_SAMPLES = ("UNWIND $rows AS r MATCH (f:Flow {UUID: r.UUID}) "
                "CREATE (f)-[:HAS_METRIC]->(m:FlowMetric) SET m = r.props")


async def handwritten_side(store: GraphStore, pid: int, creates: list[StoreMutation],
                           updates: list[StoreMutation], flows: list[list[dict[str, Any]]],
                           batch: int, flow_batch: int) -> dict[str, Any]:
    nodes = [{"p": node_properties(m.node)} for m in creates if isinstance(m, NodeAdded)]
    edges = [{"a": m.edge.Parent, "b": m.edge.Child, "p": edge_properties(m.edge)}
             for m in creates if isinstance(m, EdgeAdded)]
    ups = [{"id": m.node.ID, "p": node_properties(m.node)} for m in updates
           if isinstance(m, NodeUpdated)]
    flow_rows = [[write_row(doc, HOST, T0) for doc in docs] for docs in flows]
    for rows in flow_rows:  # samples carry their write time, as the writer's do
        for r in rows:
            r["sample"]["props"]["UpdatedAt"] = T0

    async def batches(cypher: str, rows: list[dict[str, Any]]) -> None:
        for i in range(0, len(rows), batch):
            await store.run(cypher, {"rows": rows[i:i + batch]})

    async def topology_creates() -> None:
        await batches(HAND_NODES, nodes)
        await batches(HAND_EDGES, edges)

    async def flow_updates() -> None:
        for rows in flow_rows:
            for i in range(0, len(rows), flow_batch):
                part = rows[i:i + flow_batch]
                await store.run_all([
                    (HAND_FLOWS, {"rows": [{"UUID": r["UUID"], "props": r["props"]}
                                           for r in part]}),
                    (HAND_CAPTURED_ON, {"rows": [{"UUID": r["UUID"], "tid": r["tid"]}
                                                 for r in part if r["tid"]]}),
                    (HAND_INSIDE, {"rows": [{"UUID": r["UUID"], "parent": r["parent"]}
                                            for r in part if r["parent"]]}),
                    (HAND_SAMPLES, {"rows": [r["sample"] for r in part]})])

    return {"create": await measured(pid, topology_creates),
            "update": await measured(pid, lambda: batches(HAND_UPDATES, ups)),
            "flows": await measured(pid, flow_updates)}


async def warm_up(store: GraphStore, pid: int, batch: int, flow_batch: int) -> None:
    """Both sides once on a fifth of the default workload, so the server's JIT has
    compiled both sides' statements before either is timed."""
    creates, updates, updates2 = topology(2000)
    flows = flow_rounds(2000, 3)
    await writer_side(store, pid, creates, updates, updates2, flows[:-1], flows[-1], batch,
                      flow_batch)
    await store.clear()
    await handwritten_side(store, pid, creates, updates, flows[:-1], batch, flow_batch)
    await store.clear()


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    creates, updates, updates2 = topology(args.nodes)
    flows = flow_rounds(args.flows, args.rounds + 1)
    server = EmbeddedServer(EmbeddedConfig(data_dir=tmp / "db", bolt_port=free_port(),
                                           http_port=free_port(), heap="2g"))
    await server.start()
    try:
        assert server.proc is not None
        pid = server.proc.pid
        store = await GraphStore.open(server.uri, USER, server.password)
        await store.bootstrap()
        await warm_up(store, pid, args.batch, args.flow_batch)
        w = await writer_side(store, pid, creates, updates, updates2, flows[:-1], flows[-1],
                              args.batch, args.flow_batch)
        await store.clear()
        h = await handwritten_side(store, pid, creates, updates, flows[:-1], args.batch,
                                   args.flow_batch)
        await store.close()
        return {"writer": w, "hand": h, "server_mb": server_hwm_mb(pid),
                "counts": {"create": len(creates), "update": len(updates),
                           "flows": args.flows * args.rounds,
                           "concurrent": len(updates2) + args.flows}}
    finally:
        await server.stop()


def report(args: argparse.Namespace, res: dict[str, Any]) -> bool:
    w, h, n = res["writer"], res["hand"], res["counts"]
    print(f"workload: {args.nodes} interface nodes + {2 * args.nodes} edges, then "
          f"{n['update']} updates (batches of {args.batch}); {args.flows} flows x "
          f"{args.rounds} updates, each with its interface edge, a tenth with a parent "
          f"edge, all with a metric sample (batches of {args.flow_batch})")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on "
          f"{os.cpu_count()} CPUs")
    print(f"{'':28}{'writer':>10}{'hand UNWIND':>13}{'ratio':>7}   target        "
          f"{'server CPU us/elem':>20}{'client CPU us/elem':>20}")
    ok: bool = True
    rows = (("create", "topology create (elem/s)", True),
            ("update", "topology update (upd/s)", False),
            ("flows", "flow updates (upd/s)", True))
    for phase, label, target in rows:
        (wt, ws, wc), (ht, hs, hc) = w[phase], h[phase]
        count = n[phase]
        ratio = ht / wt
        met = ratio >= RATIO_TARGET
        if target:
            ok = ok and met
            verdict = f">= {RATIO_TARGET} {'met' if met else 'MISSED'}"
        else:
            verdict = "(information)"
        print(f"{label:28}{count / wt:10.0f}{count / ht:13.0f}{ratio:7.2f}   {verdict:14}"
              f"{1e6 * ws / count:9.0f} vs {1e6 * hs / count:<7.0f}"
              f"{1e6 * wc / count:9.0f} vs {1e6 * hc / count:<7.0f}")
    rate = n["flows"] / w["flows"][0]
    met = rate >= FLOW_RATE_TARGET
    ok = ok and met
    print(f"flow ingest through the sink: {rate:.0f} flow updates/s, target >= "
          f"{FLOW_RATE_TARGET:.0f} {'met' if met else 'MISSED'} (anchor: hand UNWIND "
          f"{n['flows'] / h['flows'][0]:.0f}/s)")
    cw = w["concurrent"][0]
    met = w["deadlocks"] == 0
    ok = ok and met
    print(f"both writers at once: {n['concurrent']} updates in {cw:.2f}s "
          f"({n['concurrent'] / cw:.0f}/s); over the writers' whole run "
          f"{w['deadlocks']} DeadlockDetected, {w['retries']} retries; target 0 deadlocks "
          f"{'met' if met else 'MISSED'}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: server {res['server_mb']:.0f} MB, python {rss:.0f} MB")
    print("the writer also archives every replaced revision (history) and skips stale "
          "updates; the hand-written statements do not")
    print("all targets met" if ok else "a target was MISSED")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--flows", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--flow-batch", type=int, default=1000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="skygraph-bench-"))
    try:
        res = asyncio.run(run(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if report(args, res) else 1


if __name__ == "__main__":
    sys.exit(main())
