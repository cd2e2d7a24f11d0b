"""Benchmark: the batched writer against the best hand-written Cypher.

Each run starts a fresh embedded server, then, through the BatchWriter:
10,000 interface nodes + 20,000 layer2 edges, then 10,000 metadata updates
(each one also archives the previous revision: history). The same work is
then done on another fresh server with plain `UNWIND ... CREATE` /
`MATCH ... SET` batches of the same size, one write transaction each (no
history), and the ratios are
printed. Peak RSS is that of this process and of each server process.

    .venv/bin/python benchmarks/store_write.py [--nodes 10000] [--batch 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from skygraph.topology.embedded import USER, EmbeddedConfig, EmbeddedServer, free_port
from skygraph.topology.graph import Graph
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, NodeAdded, NodeUpdated, StoreMutation
from skygraph.topology.store import BatchWriter, GraphStore


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


class Meter:
    """Wall-clock seconds and CPU seconds of the server and of this process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t, self.srv, self.cli = time.perf_counter(), cpu_seconds(pid), own_cpu()

    def read(self) -> tuple[float, float, float]:
        return (time.perf_counter() - self.t, cpu_seconds(self.pid) - self.srv,
                own_cpu() - self.cli)


def interface(i: int, rx: int = 0) -> dict[str, Any]:
    return {"Type": "veth", "Name": f"veth{i}", "IfIndex": i + 2, "MTU": 1500,
            "MAC": f"02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
            "State": "UP", "LinkFlags": ["UP", "BROADCAST", "MULTICAST"], "Driver": "veth",
            "IPV4": [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/16"],
            "Metric": {"RxBytes": rx, "TxBytes": rx // 2, "RxPackets": rx // 100}}


def workload(n: int) -> tuple[list[StoreMutation], list[StoreMutation]]:
    clock = [1_000_000]
    g = Graph(clock=lambda: clock[0])
    creates: list[StoreMutation] = []
    for i in range(n):
        creates += g.apply_nowait(NodeAdded(Node(f"if-{i}", interface(i), Host="bench")))
    for i in range(n):
        for k, j in enumerate(((i + 1) % n, (i + 7) % n)):
            creates += g.apply_nowait(EdgeAdded(Edge(f"l2-{i}-{k}", f"if-{i}", f"if-{j}",
                                                     {"RelationType": "layer2"}, Host="bench")))
    clock[0] += 1000
    updates: list[StoreMutation] = []
    for i in range(n):
        updates += g.apply_nowait(NodeUpdated(Node(f"if-{i}", interface(i, rx=1000 + i))))
    return creates, updates


async def fresh_server(tmp: Path, name: str) -> EmbeddedServer:
    server = EmbeddedServer(EmbeddedConfig(data_dir=tmp / name, bolt_port=free_port(),
                                           http_port=free_port(), heap="2g"))
    await server.start()
    return server


async def run_writer(tmp: Path, creates: list[StoreMutation], updates: list[StoreMutation],
                     batch: int) -> dict[str, float]:
    server = await fresh_server(tmp, "writer")
    store = await GraphStore.open(server.uri, USER, server.password)
    await store.bootstrap()
    writer = BatchWriter(store, max_batch=batch, max_delay=0.05)
    await writer.start()
    assert server.proc is not None
    m = Meter(server.proc.pid)
    await writer.submit_all(creates)
    await writer.flush()
    create = m.read()
    m = Meter(server.proc.pid)
    await writer.submit_all(updates)
    await writer.flush()
    update = m.read()
    await writer.stop()
    archived = (await store.run("MATCH (a:ArchivedNode) RETURN count(a) AS c"))[0]["c"]
    assert archived == len(updates), archived
    await store.close()
    assert server.proc is not None
    hwm = server_hwm_mb(server.proc.pid)
    await server.stop()
    return {"create": create, "update": update, "server_mb": hwm}


async def run_handwritten(tmp: Path, creates: list[StoreMutation], updates: list[StoreMutation],
                          batch: int) -> dict[str, float]:
    server = await fresh_server(tmp, "handwritten")
    store = await GraphStore.open(server.uri, USER, server.password)
    await store.bootstrap()  # the same constraints and indexes
    from skygraph.topology.batch import edge_properties, node_properties
    nodes = [{"p": node_properties(m.node)} for m in creates if isinstance(m, NodeAdded)]
    edges = [{"a": m.edge.Parent, "b": m.edge.Child, "p": edge_properties(m.edge)}
             for m in creates if isinstance(m, EdgeAdded)]
    ups = [{"id": m.node.ID, "p": node_properties(m.node)} for m in updates
           if isinstance(m, NodeUpdated)]

    async def batches(cypher: str, rows: list[dict[str, Any]]) -> None:
        for i in range(0, len(rows), batch):
            await store.run(cypher, {"rows": rows[i:i + batch]})

    assert server.proc is not None
    m = Meter(server.proc.pid)
    await batches("UNWIND $rows AS r CREATE (n:Node:Interface) SET n = r.p", nodes)
    await batches("UNWIND $rows AS r MATCH (a:Node {ID: r.a}) MATCH (b:Node {ID: r.b}) "
                  "CREATE (a)-[e:LAYER2]->(b) SET e = r.p", edges)
    create = m.read()
    m = Meter(server.proc.pid)
    await batches("UNWIND $rows AS r MATCH (n:Node {ID: r.id}) SET n += r.p", ups)
    update = m.read()
    await store.close()
    hwm = server_hwm_mb(server.proc.pid)
    await server.stop()
    return {"create": create, "update": update, "server_mb": hwm}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=2000)
    args = ap.parse_args()
    creates, updates = workload(args.nodes)
    n_create, n_update = len(creates), len(updates)
    tmp = Path(tempfile.mkdtemp(prefix="skygraph-bench-"))
    try:
        w = await run_writer(tmp, creates, updates, args.batch)
        h = await run_handwritten(tmp, creates, updates, args.batch)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"workload: {args.nodes} interface nodes + {n_create - args.nodes} edges, then "
          f"{n_update} updates; batches of {args.batch}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'':26}{'writer':>10}{'hand-written':>14}{'ratio':>7}"
          f"{'server CPU us/elem':>22}{'client CPU us/elem':>22}")
    rates = {}
    for phase, n, label in (("create", n_create, "create (elements/s)"),
                            ("update", n_update, "update (updates/s)")):
        (wt, ws, wcl), (ht, hs, hcl) = w[phase], h[phase]
        rates[phase] = (n / wt, n / ht)
        print(f"{label:26}{n / wt:10.0f}{n / ht:14.0f}{ht / wt:7.2f}"
              f"{1e6 * ws / n:11.0f} vs {1e6 * hs / n:<8.0f}{1e6 * wcl / n:11.0f} vs "
              f"{1e6 * hcl / n:<8.0f}")
    print(f"{'server peak RSS (MB)':26}{w['server_mb']:10.0f}{h['server_mb']:14.0f}")
    print(f"python peak RSS (MB): {rss:.0f}")
    print("the writer also archives every replaced revision (history); the hand-written "
          "updates do not")
    wc, hc = rates["create"]
    wu, _ = rates["update"]
    print(f"targets: create ratio >= 0.8 [{'met' if wc / hc >= 0.8 else 'NOT met'}], "
          f"updates >= 10000/s [{'met' if wu >= 10_000 else 'NOT met'}]")


if __name__ == "__main__":
    asyncio.run(main())
