"""Benchmark: the topology probes on a real (namespaced) host.

(a) Latency from a change to its node in the agent's graph, p50/p99 over
    `--changes` changes of each kind: `ip link add` of a veth pair, and
    `ovs-vsctl --no-wait add-port` of an internal port (time from the command's
    start to the node's presence).
(b) Scale: a host with `--namespaces` namespaces x `--pairs` veth pairs (one
    end in the namespace, its peer in the host namespace) and `--ovs-ports`
    OVS internal ports, built before the agent starts: initial sync time
    (probes started + first OVSDB snapshot applied), agent RSS, and CPU at
    rest over `--idle` seconds (counters refreshed every 5 s meanwhile).

Everything lives in a private "host" namespace, namespace run directory and
OVS daemons (userspace datapath), all removed at the end. Run as root:

    .venv/bin/python benchmarks/probes.py [--changes 100] [--namespaces 100] [--pairs 10]

Targets (issue 4): p99 < 1 s; sync < 30 s; idle CPU < 2 %.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from skygraph.probes import host
from skygraph.probes.elements import Writer
from skygraph.probes.netns.probe import NetnsProbe
from skygraph.probes.ovs.probe import OvsProbe
from skygraph.topology.graph import Graph
from tests.conftest import LoopThread
from tests.integration.probes.conftest import Lab, Ovs


class Agent:
    def __init__(self, lab: Lab, ovsdb: str, metrics_update: float) -> None:
        self.loop = LoopThread()
        self.graph = Graph()
        self.writer = Writer(self.graph, "bench")
        self.host = host.node_id("bench")
        self.netns = NetnsProbe(self.writer, self.host, str(lab.run_dir), lab.host,
                                metrics_update)
        self.ovs = OvsProbe(self.writer, self.host, ovsdb)

    def start(self, ovs_ports: int) -> float:
        async def go() -> float:
            t0 = time.monotonic()
            await self.writer.put(self.host, host.host_metadata("bench", host.read_facts(), {}))
            await self.netns.start()
            await self.ovs.start()
            while sum(1 for n in self.graph.nodes.values() if n.type == "ovsport") < ovs_ports:
                await asyncio.sleep(0.005)
            return time.monotonic() - t0
        return self.loop.run(go(), timeout=600)

    def wait_named(self, name: str, type_: str | None = None, timeout: float = 10.0) -> None:
        async def poll() -> None:
            deadline = time.monotonic() + timeout
            while not any(type_ is None or n.type == type_ for n in self.writer.named(name)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not in the graph after {timeout}s")
                await asyncio.sleep(0.001)
        self.loop.run(poll(), timeout + 5)

    def stop(self) -> None:
        self.loop.run(self.ovs.stop())
        self.loop.run(self.netns.stop())
        self.loop.close()


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(
        values) > 1 else values[0]


def latency(lab: Lab, ovs: Ovs, changes: int) -> None:
    bridge = "lbr"
    ovs.add_bridge(bridge)
    agent = Agent(lab, ovs.db, 0)
    agent.start(1)
    try:
        for kind in ("ip link add", "ovs-vsctl add-port"):
            samples: list[float] = []
            for i in range(changes):
                t0 = time.monotonic()
                if kind == "ip link add":
                    name = f"la{i}"
                    lab.sh(f"ip link add {name} type veth peer name lb{i}")
                    agent.wait_named(name)
                else:
                    name = f"lp{i}"
                    lab.sh(f"ovs-vsctl --db={ovs.db} --no-wait add-port {bridge} {name} "
                           f"-- set interface {name} type=internal")
                    agent.wait_named(name, "ovsport")
                samples.append(time.monotonic() - t0)
            print(f"(a) {kind:20s} n={changes}  p50 {pct(samples, 50) * 1000:7.1f} ms  "
                  f"p99 {pct(samples, 99) * 1000:7.1f} ms  max {max(samples) * 1000:7.1f} ms")
    finally:
        agent.stop()


def scale(lab: Lab, ovs: Ovs, namespaces: int, pairs: int, ovs_ports: int, idle: float) -> None:
    t0 = time.monotonic()
    batch = []
    for i in range(namespaces):
        path = lab.netns(f"n{i:03d}")
        for j in range(pairs):
            batch.append(f"link add h{i:03d}v{j} type veth peer name e{j} netns {path}")
    script = lab.base / "batch"
    script.write_text("\n".join(batch) + "\n")
    lab.sh(f"ip -batch {script}")
    ovs.add_bridge("sbr")
    ports = " ".join(f"-- add-port sbr sp{k} -- set interface sp{k} type=internal"
                     for k in range(ovs_ports))
    ovs.vsctl(ports)
    print(f"(b) built {namespaces} namespaces x {pairs} veth pairs + {ovs_ports} OVS ports "
          f"in {time.monotonic() - t0:.1f}s")
    agent = Agent(lab, ovs.db, 5.0)
    try:
        sync = agent.start(ovs_ports + 1)
        n_nodes, n_edges = len(agent.graph.nodes), len(agent.graph.edges)
        rss = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) // 1024
        print(f"(b) initial sync {sync:.2f}s: {n_nodes} nodes, {n_edges} edges; RSS {rss} MB")
        time.sleep(1.0)
        c0, w0 = sum(os.times()[:2]), time.monotonic()
        time.sleep(idle)
        cpu = (sum(os.times()[:2]) - c0) / (time.monotonic() - w0) * 100
        print(f"(b) CPU at rest over {idle:.0f}s: {cpu:.2f} % "
              f"(max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB)")
    finally:
        agent.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--namespaces", type=int, default=100)
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--ovs-ports", type=int, default=50)
    ap.add_argument("--idle", type=float, default=15.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks/probes.py needs root (namespaces, OVS)")
    for part in ("latency", "scale"):
        base = Path(tempfile.mkdtemp(prefix=f"sgbench{os.getpid()}-"))
        lab = Lab(base, "b")
        ovs = None
        try:
            ovs = Ovs(lab)
            if part == "latency":
                latency(lab, ovs, args.changes)
            else:
                scale(lab, ovs, args.namespaces, args.pairs, args.ovs_ports, args.idle)
        finally:
            if ovs is not None:
                ovs.close()
            lab.close()


if __name__ == "__main__":
    main()
