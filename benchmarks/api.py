"""Benchmark: the analyzer's API (GraphQL and REST Gremlin) against the same
questions asked straight over Bolt with the official driver (the floor: what
the database alone costs), on a 10,000-interface graph.

Starts a fresh embedded server, loads the synthetic host of
benchmarks/gremlin.py (100 namespaces x 100 interfaces), runs `skygraph
analyzer` as a separate process on it, then for 1 and 8 concurrent clients
(threads with keep-alive connections; Bolt: one session per thread) asks
two questions with a different name each time:
- node lookup by name;
- one-hop neighbours of a namespace (its 100 interfaces + bridge).
Prints p50/p99 latency (ms) and requests/s per (question, path, clients),
and the API/Bolt ratio at p50.

    .venv/bin/python benchmarks/api.py [--namespaces 100] [--interfaces 100] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.client
import importlib.util
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import neo4j

from skygraph.topology.embedded import USER, EmbeddedConfig, EmbeddedServer, free_port
from skygraph.topology.store import GraphStore

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_gremlin", HERE / "gremlin.py")
assert _spec is not None and _spec.loader is not None
bench_gremlin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_gremlin)

LOOKUP_GQL = ("query($n: String!) { nodes(filter: {name: $n}, first: 1) "
              "{ edges { node { id name type } } } }")
NEIGHBOURS_GQL = ("query($n: String!) { nodes(filter: {name: $n}, first: 1) { edges { node "
                  "{ neighbors(direction: OUT) { id name type } } } } }")
LOOKUP_CYPHER = "MATCH (n:Node {Name: $n}) RETURN properties(n) AS p"
NEIGHBOURS_CYPHER = "MATCH (a:Node {Name: $n})-->(b) RETURN properties(b) AS p"

Ask = Callable[[str], None]


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


class HttpClient:
    """One keep-alive connection (one per thread)."""

    def __init__(self, host: str, port: int) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=60)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        self.conn.request("POST", path, json.dumps(body),
                          {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path}: HTTP {resp.status}: {data[:300]!r}")
        return json.loads(data)


def graphql(client: HttpClient, query: str, check: Callable[[Any], bool]) -> Ask:
    def ask(name: str) -> None:
        out = client.post("/graphql", {"query": query, "variables": {"n": name}})
        if "errors" in out or not check(out["data"]):
            raise RuntimeError(f"graphql: unexpected answer {str(out)[:300]}")
    return ask


def rest(client: HttpClient, gremlin: str, check: Callable[[Any], bool]) -> Ask:
    def ask(name: str) -> None:
        out = client.post("/api/topology", {"GremlinQuery": gremlin.replace("NAME", name)})
        if not check(out):
            raise RuntimeError(f"rest: unexpected answer {str(out)[:300]}")
    return ask


def bolt(session: neo4j.Session, cypher: str, check: Callable[[Any], bool]) -> Ask:
    def ask(name: str) -> None:
        rows = session.execute_read(lambda tx: list(tx.run(cypher, n=name)))
        if not check(rows):
            raise RuntimeError("bolt: unexpected answer")
    return ask


def run_load(make_ask: Callable[[], tuple[Ask, Callable[[], None]]], names: Callable[[], str],
             clients: int, seconds: float) -> tuple[list[float], float]:
    """`clients` threads asking as fast as they can for `seconds`; latencies (ms), req/s."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    errors: list[BaseException] = []

    def worker() -> None:
        ask, close = make_ask()
        mine: list[float] = []
        try:
            ask(names())  # warm the connection
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                ask(names())
                mine.append((time.perf_counter() - t0) * 1000)
        except BaseException as exc:
            errors.append(exc)
        finally:
            close()
            with lock:
                latencies.extend(mine)
    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return latencies, len(latencies) / (time.monotonic() - start)


async def load_graph(server: EmbeddedServer, namespaces: int, interfaces: int) -> int:
    store = await GraphStore.open(server.uri, USER, server.password)
    try:
        await store.bootstrap()
        await store.clear()
        mutations = bench_gremlin.topology(namespaces, interfaces)
        for i in range(0, len(mutations), 2000):
            await store.apply(mutations[i:i + 2000])
        return len(mutations)
    finally:
        await store.close()


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"analyzer exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("analyzer did not answer /health")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--namespaces", type=int, default=100)
    ap.add_argument("--interfaces", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    args = ap.parse_args()

    data = Path(tempfile.mkdtemp(prefix="skygraph-bench-api-"))
    server = EmbeddedServer(EmbeddedConfig(data_dir=data / "db", bolt_port=free_port(),
                                           http_port=free_port(), heap="2g",
                                           database="skygraph"))
    loop = asyncio.new_event_loop()
    proc: subprocess.Popen[bytes] | None = None
    try:
        loop.run_until_complete(server.start())
        n = loop.run_until_complete(load_graph(server, args.namespaces, args.interfaces))
        port = free_port()
        cfg = data / "analyzer.yml"
        cfg.write_text(f"analyzer:\n  listen: 127.0.0.1:{port}\n"
                       f"graph:\n  uri: {server.uri}\n  user: {USER}\n"
                       f"  password: {server.password}\nlogging:\n  level: WARNING\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGRAPH_")}
        proc = subprocess.Popen([sys.executable, "-m", "skygraph.cli", "-c", str(cfg),
                                 "analyzer"], env=env)
        wait_http(f"http://127.0.0.1:{port}", proc)
        print(f"graph: {n} mutations ({args.namespaces} namespaces x {args.interfaces} "
              f"interfaces); analyzer pid {proc.pid}; {os.cpu_count()} CPUs")

        rng = random.Random(7)
        lock = threading.Lock()

        def iface() -> str:
            with lock:
                return f"ns{rng.randrange(args.namespaces)}-eth{rng.randrange(args.interfaces)}"

        def netns() -> str:
            with lock:
                return f"ns{rng.randrange(args.namespaces)}"

        def one(data: Any) -> bool:
            return len(data["nodes"]["edges"]) == 1

        def hop(data: Any) -> bool:
            return len(data["nodes"]["edges"][0]["node"]["neighbors"]) >= args.interfaces

        driver = neo4j.GraphDatabase.driver(server.uri, auth=(USER, server.password))

        def http_path(kind: str, question: str) -> tuple[Ask, Callable[[], None]]:
            c = HttpClient("127.0.0.1", port)
            if kind == "graphql":
                ask = graphql(c, LOOKUP_GQL, one) if question == "lookup" else \
                    graphql(c, NEIGHBOURS_GQL, hop)
            else:
                ask = rest(c, "G.V().Has('Name', 'NAME')", lambda r: len(r) == 1) \
                    if question == "lookup" else \
                    rest(c, "G.V().Has('Name', 'NAME').Out()",
                         lambda r: len(r) >= args.interfaces)
            return ask, c.conn.close

        def bolt_path(question: str) -> tuple[Ask, Callable[[], None]]:
            s = driver.session(database="skygraph")
            ask = bolt(s, LOOKUP_CYPHER, lambda r: len(r) == 1) if question == "lookup" else \
                bolt(s, NEIGHBOURS_CYPHER, lambda r: len(r) >= args.interfaces)
            return ask, s.close

        print(f"\n{'question':<11} {'path':<13} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'req/s':>8} {'p50 / bolt':>10}")
        for question, names in (("lookup", iface), ("neighbours", netns)):
            for clients in (1, 8):
                results: dict[str, tuple[list[float], float]] = {}
                for path in ("bolt (floor)", "graphql", "rest gremlin"):
                    results[path] = run_load(
                        functools.partial(bolt_path, question) if path.startswith("bolt")
                        else functools.partial(http_path, path.split()[0], question),
                        names, clients, args.seconds)
                floor = statistics.median(results["bolt (floor)"][0])
                for path, (lat, rate) in results.items():
                    print(f"{question:<11} {path:<13} {clients:>7} {pct(lat, 0.5):>8.2f} "
                          f"{pct(lat, 0.99):>8.2f} {rate:>8.0f} "
                          f"{statistics.median(lat) / floor:>10.2f}")
        driver.close()
        return 0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
        loop.run_until_complete(server.stop())
        loop.close()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
