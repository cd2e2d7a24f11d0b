"""Fixtures for live capture tests: two network namespaces joined by a veth pair,
named with this run's prefix, removed in finalizers even when a test fails.
Only traffic between these namespaces is captured."""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from skygraph.capture.options import TableSettings
from skygraph.capture.sources import source_for
from skygraph.capture.sources.base import CaptureSource, CaptureSpec, SourceContext
from skygraph.topology.flow import Flow
from skygraph.topology.netns import run_in
from tests.conftest import RUN_ID

_seq = itertools.count()


def sh(cmd: str, ns: str | None = None, check: bool = True) -> str:
    """Run a shell command (in the namespace at path `ns`); return its stdout."""
    argv = ["sh", "-c", cmd] if ns is None else ["nsenter", f"--net={ns}", "sh", "-c", cmd]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd!r} (netns {ns}) failed: {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class VethPair:
    """Namespaces `a` and `b` (paths), veth `a_if` in a (10.77.0.1) and `b_if` in b
    (10.77.0.2)."""

    base: Path
    prefix: str
    a: str = ""
    b: str = ""
    a_if: str = ""
    b_if: str = ""
    a_ip: str = "10.77.0.1"
    b_ip: str = "10.77.0.2"
    made: list[str] = field(default_factory=list)

    def setup(self) -> None:
        self.a = self.netns("a")
        self.b = self.netns("b")
        self.a_if, self.b_if = self.name("va"), self.name("vb")
        sh(f"ip link add {self.a_if} type veth peer name {self.b_if} && "
           f"ip link set {self.b_if} netns {self.b}", self.a)
        sh(f"ip addr add {self.a_ip}/24 dev {self.a_if} && ip link set {self.a_if} up", self.a)
        sh(f"ip addr add {self.b_ip}/24 dev {self.b_if} && ip link set {self.b_if} up", self.b)

    def name(self, suffix: str) -> str:
        return f"{self.prefix}{suffix}"[:15]

    def netns(self, suffix: str) -> str:
        path = str(self.base / self.name(suffix))
        Path(path).touch()
        self.made.append(path)
        sh(f"unshare --net={path} true")
        sh("ip link set lo up", path)
        return path

    def remove_netns(self, path: str) -> None:
        sh(f"umount {path}", check=False)
        Path(path).unlink(missing_ok=True)
        if path in self.made:
            self.made.remove(path)

    def ifindex(self, ns: str, name: str) -> int:
        return run_in(ns, lambda: socket.if_nametoindex(name))

    def metadata(self, ns: str | None = None, name: str | None = None, **extra: Any) -> dict[str, Any]:
        """Interface node metadata as the netlink probe writes it."""
        ns = ns or self.a
        name = name or self.a_if
        meta = {"Name": name, "Type": "veth", "EncapType": "ether", "TID": f"tid-{name}",
                "LinkFlags": ["UP", "BROADCAST", "MULTICAST"], "IfIndex": self.ifindex(ns, name)}
        meta.update(extra)
        return meta

    def ping(self, count: int, ns: str | None = None, dst: str | None = None) -> None:
        sh(f"ping -c {count} -i 0.2 -W 2 {dst or self.b_ip}", ns or self.a)

    def udp(self, port: int, count: int = 1, ns: str | None = None, dst: str | None = None) -> None:
        """Send `count` UDP datagrams to `dst:port` from namespace `ns` (default a)."""
        target = (dst or self.b_ip, port)

        def send() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for _ in range(count):
                    s.sendto(b"skygraph", target)
        run_in(ns or self.a, send)

    def listen_udp(self, port: int, ns: str | None = None) -> socket.socket:
        """A UDP socket bound in namespace `ns` (default b), so datagrams to `port`
        draw no ICMP port-unreachable."""
        def bind() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("0.0.0.0", port))
            return s
        return run_in(ns or self.b, bind)

    def close(self) -> None:
        for path in reversed(self.made):
            sh(f"umount {path}", check=False)
        shutil.rmtree(self.base, ignore_errors=True)


class Collector:
    """A sink: flows by batch, as the reader thread hands them over."""

    def __init__(self) -> None:
        self.batches: list[list[Flow]] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, flows: list[Flow]) -> None:
        with self._lock:
            self.batches.append(flows)
            self.threads.add(threading.current_thread().name)

    def flows(self) -> list[Flow]:
        with self._lock:
            return [f for b in self.batches for f in b]

    def latest(self) -> dict[str, Flow]:
        """The last version of every flow, by UUID."""
        return {f.uuid: f for f in self.flows()}

    def wait(self, pred: Callable[[dict[str, Flow]], bool], timeout: float = 10) -> dict[str, Flow]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = self.latest()
            if pred(latest):
                return latest
            time.sleep(0.05)
        raise AssertionError(f"flows never matched: {[f.to_json() for f in self.latest().values()]}")


def context(spec: dict[str, Any], meta: dict[str, Any], netns: str | None, sink: Collector,
            settings: TableSettings | None = None, **kwargs: Any) -> SourceContext:
    """A capture context as the manager builds it (capture id `cap-1`, node `node-1`)."""
    return SourceContext(CaptureSpec.from_json({"UUID": "cap-1", **spec}), "node-1", meta, netns,
                         settings or TableSettings(update=1, expire=600),
                         kwargs.pop("exclude", []), sink, **kwargs)


@contextmanager
def running(spec: dict[str, Any], meta: dict[str, Any], netns: str | None,
            **kwargs: Any) -> Iterator[tuple[CaptureSource, Collector]]:
    """A started capture source of `spec["Type"]` and its flow collector; stopped at exit."""
    sink = Collector()
    source = source_for(context(spec, meta, netns, sink, **kwargs))
    source.start()
    try:
        yield source, sink
    finally:
        source.stop()


@pytest.fixture
def pair() -> Iterator[VethPair]:
    base = Path(tempfile.mkdtemp(prefix=f"{RUN_ID}-cap-"))
    p = VethPair(base, f"{RUN_ID[-5:]}{next(_seq)}")
    try:
        p.setup()
        yield p
    finally:
        p.close()
