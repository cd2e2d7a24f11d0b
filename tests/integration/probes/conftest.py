"""Fixtures for the probe integration tests: real network namespaces, veths,
Linux bridges and OVS daemons, all named with this run's prefix and removed
in finalizers, even when a test fails.

Isolation: each test gets its own "host" namespace (what the probes treat as
the root namespace) and its own namespace run directory, so tests never see
or touch the machine's links or other runs' namespaces.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from skygraph.gremlin import execute
from skygraph.probes import host
from skygraph.probes.elements import Writer
from skygraph.probes.netns.probe import NetnsProbe
from skygraph.probes.ovs.probe import OvsProbe
from skygraph.topology.bus import EventBus
from skygraph.topology.graph import Graph
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import StoreMutation
from skygraph.topology.store import BatchWriter
from tests.conftest import RUN_ID, BoltServer, LoopThread, open_store

_seq = itertools.count()


def sh(cmd: str, ns: str | None = None, check: bool = True) -> str:
    """Run a shell command (in the namespace at path `ns`); return its stdout."""
    argv = ["sh", "-c", cmd] if ns is None else ["nsenter", f"--net={ns}", "sh", "-c", cmd]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd!r} (netns {ns}) failed: {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class Lab:
    """Namespaces of one test. `host` is the namespace probes see as root."""

    base: Path
    prefix: str
    run_dir: Path = field(init=False)
    host: str = field(init=False)
    made: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run_dir = self.base / "netns"
        self.run_dir.mkdir()
        (self.base / "host").mkdir()
        self.host = self._mount(str(self.base / "host" / "root"))

    def name(self, suffix: str) -> str:
        """An interface or namespace name unique to this test (<= 15 chars)."""
        return f"{self.prefix}{suffix}"[:15]

    def _mount(self, path: str) -> str:
        Path(path).touch()
        self.made.append(path)
        sh(f"unshare --net={path} true")
        sh("ip link set lo up", ns=path)
        return path

    def netns(self, suffix: str) -> str:
        """Create a namespace in the watched run directory; return its path."""
        return self._mount(str(self.run_dir / self.name(suffix)))

    def remove_netns(self, path: str) -> None:
        sh(f"umount {path}", check=False)
        Path(path).unlink(missing_ok=True)
        if path in self.made:
            self.made.remove(path)

    def sh(self, cmd: str, ns: str | None = None, check: bool = True) -> str:
        """Run `cmd` in namespace `ns` (default: the lab's host namespace)."""
        return sh(cmd, ns or self.host, check)

    def close(self) -> None:
        for path in reversed(self.made):
            sh(f"umount {path}", check=False)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def lab() -> Iterator[Lab]:
    base = Path(tempfile.mkdtemp(prefix=f"{RUN_ID}-lab-"))
    lab = Lab(base, f"{RUN_ID[-5:]}{next(_seq)}")
    try:
        yield lab
    finally:
        lab.close()


class Agent:
    """The probes on their own event loop thread, feeding an in-memory graph whose
    mutations the batched writer copies into the real Bolt store, where
    `gremlin()` queries them through the Gremlin translator."""

    def __init__(self, lab: Lab, server: BoltServer, host_id: str = "testhost",
                 metrics_update: float = 0.0, metadata: dict[str, Any] | None = None,
                 ovsdb: str | None = None, ovs_stats: bool = False) -> None:
        self.loop = LoopThread()
        self.store = self.loop.run(open_store(server))
        self.batch = BatchWriter(self.store, max_delay=0.01)
        bus: EventBus[StoreMutation] = EventBus()
        self._sub = bus.subscribe()
        self.graph = Graph(bus)
        self.writer = Writer(self.graph, host_id)
        self.host_id = host.node_id(host_id)
        self.lab = lab
        self.netns = NetnsProbe(self.writer, self.host_id, str(lab.run_dir), lab.host,
                                metrics_update)
        self.ovs = OvsProbe(self.writer, self.host_id, ovsdb, ovs_stats) if ovsdb else None
        meta = host.host_metadata(host_id, host.read_facts(), metadata or {})
        self.loop.run(self._start(meta))

    async def _start(self, meta: dict[str, Any]) -> None:
        await self.batch.start()
        self._forward = asyncio.create_task(self._copy())
        await self.writer.put(self.host_id, meta)
        await self.netns.start()
        if self.ovs is not None:
            await self.ovs.start()

    async def _copy(self) -> None:
        while True:
            await self.batch.submit(await self._sub.get())

    def gremlin(self, query: str) -> Any:
        """Run a Gremlin query on the store, once what the probes did so far is written."""
        async def run() -> Any:
            while not self._sub.queue.empty():
                await asyncio.sleep(0.005)
            await self.batch.flush()
            return await execute(query, self.store.read, int(time.time() * 1000))
        return self.loop.run(run())

    def call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result
        return self.loop.run(run())

    def wait(self, pred: Callable[[Graph], Any], timeout: float = 10.0, what: str = "") -> Any:
        """Poll `pred(graph)` on the agent's loop until it is truthy; return its value."""
        async def poll() -> Any:
            deadline = time.monotonic() + timeout
            while True:
                value = pred(self.graph)
                if value:
                    return value
                if time.monotonic() > deadline:
                    return value
                await asyncio.sleep(0.02)
        value = self.loop.run(poll(), timeout + 10)
        assert value, f"timed out after {timeout}s waiting for {what or pred}"
        return value

    def close(self) -> None:
        try:
            if self.ovs is not None:
                self.loop.run(self.ovs.stop())
            self.loop.run(self.netns.stop())
            self._forward.cancel()
            self.loop.run(self.batch.stop())
            self.loop.run(self.store.close())
        finally:
            self.loop.close()


@pytest.fixture
def agent_factory(lab: Lab, bolt_server: BoltServer) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def make(**kwargs: Any) -> Agent:
        a = Agent(lab, bolt_server, **kwargs)
        agents.append(a)
        return a
    try:
        yield make
    finally:
        for a in agents:
            a.close()


@pytest.fixture
def agent(agent_factory: Callable[..., Agent]) -> Agent:
    return agent_factory()


# ---------------------------------------------------------------- OVS
@dataclass
class Ovs:
    """ovsdb-server + ovs-vswitchd (userspace datapath) in the lab's host namespace."""

    lab: Lab
    dir: Path = field(init=False)
    db: str = field(init=False)

    def __post_init__(self) -> None:
        self.dir = self.lab.base / "ovs"
        self.dir.mkdir()
        self.db = f"unix:{self.dir}/db.sock"
        sh(f"ovsdb-tool create {self.dir}/conf.db /usr/share/openvswitch/vswitch.ovsschema")
        self.start_db()
        self.vsctl("--no-wait init")
        d = self.dir
        self.lab.sh(f"OVS_RUNDIR={d} OVS_LOGDIR={d} OVS_DBDIR={d} ovs-vswitchd {self.db} "
                    f"--pidfile={d}/ovs-vswitchd.pid --log-file={d}/ovs-vswitchd.log "
                    f"--unixctl={d}/ovs-vswitchd.ctl --detach")

    def start_db(self) -> None:
        d = self.dir
        self.lab.sh(f"OVS_RUNDIR={d} OVS_LOGDIR={d} OVS_DBDIR={d} ovsdb-server {d}/conf.db "
                    f"--remote=punix:{d}/db.sock --pidfile={d}/ovsdb-server.pid "
                    f"--log-file={d}/ovsdb-server.log --unixctl={d}/ovsdb-server.ctl --detach")

    def stop_db(self) -> None:
        self._kill("ovsdb-server")

    def vsctl(self, args: str) -> str:
        return self.lab.sh(f"ovs-vsctl --db={self.db} --timeout=10 {args}")

    def add_bridge(self, name: str) -> None:
        self.vsctl(f"add-br {name} -- set bridge {name} datapath_type=netdev")

    def _kill(self, daemon: str) -> None:
        pidfile = self.dir / f"{daemon}.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not _alive(pid):
                    break
                time.sleep(0.02)
            else:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pidfile.unlink(missing_ok=True)

    def close(self) -> None:
        self._kill("ovs-vswitchd")
        self._kill("ovsdb-server")


def _alive(pid: int) -> bool:
    """Running (a detached daemon's zombie, which nobody may reap here, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def ovs(lab: Lab) -> Iterator[Ovs]:
    daemons = Ovs(lab)
    try:
        yield daemons
    finally:
        daemons.close()


@pytest.fixture
def ovs_agent(agent_factory: Callable[..., Agent], ovs: Ovs) -> Agent:
    return agent_factory(ovsdb=ovs.db)


# ---------------------------------------------------------------- graph reads
def nodes(g: Graph, **meta: Any) -> list[Node]:
    return [n for n in g.nodes.values() if all(n.Metadata.get(k) == v for k, v in meta.items())]


def one(g: Graph, **meta: Any) -> Node | None:
    found = nodes(g, **meta)
    return found[0] if len(found) == 1 else None


def edges(g: Graph, parent: Node | None, child: Node | None, relation: str,
          **meta: Any) -> list[Edge]:
    if parent is None or child is None:
        return []
    return [e for e in g.edges.values() if e.Parent == parent.ID and e.Child == child.ID
            and e.relation_type == relation
            and all(e.Metadata.get(k) == v for k, v in meta.items())]


def owner(g: Graph, n: Node | None) -> Node | None:
    if n is None:
        return None
    for e in g.edges.values():
        if e.Child == n.ID and e.relation_type == "ownership":
            return g.nodes[e.Parent]
    return None
