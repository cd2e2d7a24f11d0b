"""What the OVS bridge capture types (`ovssflow`, `ovsnetflow`) share.

Owns the node check (SPEC §1b: a node of Type `ovsbridge` with its OVS
`UUID` and a `TID`; up or not, OVS samples what crosses it), the choice
between a local collector and the capture's own `Target` (OVS then exports
straight to it and the agent only writes the row: `DirectExport`), the UDP
socket of a local collector (bound in the bridge's namespace, where
ovs-vswitchd runs, on the configured address and the first free port of
the configured range, read by a `UdpReader` thread), removing a capture's
OVSDB rows when it stops, and `Wrapping`, the part of a type that runs
another type's source (ovssflow: an sflow collector; ovsmirror: afpacket).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
from collections.abc import Callable
from typing import Any

from skygraph.capture import ovsdb
from skygraph.capture.sources.base import LOCAL_TARGET_TYPES, CaptureNode, CaptureStats, SourceContext
from skygraph.capture.sources.pipeline import Reader, WakePipe
from skygraph.topology.netns import run_in

log = logging.getLogger("skygraph.capture.ovs")

BRIDGE_TYPES = frozenset({"ovsbridge"})
RECV_BUFFER = 4 << 20


def bridge_node(ctx: SourceContext, kind: str) -> CaptureNode:
    """The capture's node, checked: an OVS bridge with `UUID` and `TID`."""
    return CaptureNode.from_metadata(ctx.node_id, ctx.metadata, ctx.netns, kind,
                                     require=("TID", "UUID"), node_types=BRIDGE_TYPES,
                                     require_up=False)


def direct_target(ctx: SourceContext, kind: str, export_type: str) -> str | None:
    """The collector OVS sends to itself (the capture's `Target`), or None: a local
    collector in the agent.  `export_type` is the `TargetType` naming what OVS sends
    (`sflow`, `netflowv5`); a `Target` with a local `TargetType` also goes direct
    (Skydive); any other `TargetType` is refused."""
    spec = ctx.spec
    if spec.target_type not in LOCAL_TARGET_TYPES and spec.target_type != export_type:
        raise ctx.error(f"{kind}: OVS exports {export_type}, TargetType "
                        f"{spec.target_type!r} is not possible")
    if spec.target_type == export_type and not spec.target.strip():
        raise ctx.error(f"{kind}: TargetType {export_type} needs a Target (ip:port)")
    return spec.target.strip() or None


def bind_udp(netns: str | None, host: str, ports: tuple[int, int]) -> socket.socket:
    """A UDP socket on the first free port of `ports` (inclusive) in namespace `netns`;
    OSError naming the address, or the range when every port is taken."""
    first, last = ports
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    def bind() -> socket.socket:
        for port in range(first, last + 1):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
                sock.bind((host, port))
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise OSError(exc.errno, f"{host}:{port}: {exc.strerror}") from None
            return sock
        raise OSError(errno.EADDRINUSE, f"no free UDP port on {host} in {first}-{last}")
    return run_in(netns, bind)


def collector_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def write_rows(ctx: SourceContext, what: str, write: Callable[[], Any]) -> Any:
    """Run an OVSDB write; its failure is the capture's error."""
    try:
        return write()
    except ovsdb.OvsdbError as exc:
        raise ctx.error(f"{what}: {exc}") from exc


def remove_rows(ctx: SourceContext) -> None:
    """Take the capture's rows out of OVSDB; a failure is logged (the next agent
    start removes what is left)."""
    try:
        ovsdb.remove_capture(ctx.agent.ovsdb, ctx.spec.id)
    except ovsdb.OvsdbError as exc:
        log.warning("capture %s on %s: rows left in OVSDB: %s", ctx.spec.id, ctx.node_id, exc)


class DirectExport:
    """OVS exports straight to the capture's `Target`: the capture is the OVSDB row."""

    def __init__(self, ctx: SourceContext, write: Callable[[], None]) -> None:
        self.ctx = ctx
        self._write = write
        self._running = False

    @property
    def id(self) -> str:
        return self.ctx.spec.id

    @property
    def running(self) -> bool:
        return self._running

    @property
    def error(self) -> str | None:
        return None

    def start(self) -> None:
        self._write()
        self._running = True

    def stop(self, timeout: float = 10.0) -> None:
        if self._running:
            self._running = False
            remove_rows(self.ctx)

    def stats(self) -> CaptureStats:
        return CaptureStats()

    def metadata(self) -> dict[str, Any]:
        return {}


class UdpReader(Reader):
    """A reader thread on a UDP socket (`_open` sets `self.sock` and calls
    `_ready()`); `_datagram(data, now_ms)` gets each datagram."""

    MAX_DATAGRAM = 65535
    MAX_BATCH = 256  # datagrams per read before looking at the clock

    def __init__(self, ctx: SourceContext) -> None:
        super().__init__(ctx)
        self.sock: socket.socket | None = None
        self.datagrams = 0
        self._wake = WakePipe()

    def _ready(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._wake.open()

    def _datagram(self, data: bytes, now_ms: int) -> None:
        raise NotImplementedError

    def _read(self) -> None:
        sock = self.sock
        assert sock is not None
        clock = self.ctx.clock
        for _ in range(self.MAX_BATCH):
            try:
                data = sock.recv(self.MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            self.datagrams += 1
            self._datagram(data, clock())

    def _wait(self, timeout_ms: int) -> None:
        assert self.sock is not None
        ready, _, _ = select.select([self.sock.fileno(), self._wake.fd], [], [],
                                    max(timeout_ms, 0) / 1000)
        if self._wake.fd in ready:
            self._wake.drain()

    def _wakeup(self) -> None:
        self._wake.wake()

    def _close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self._wake.close()


class Wrapping:
    """A capture type around another type's source (`self.inner`, set once started):
    its state and counters are the inner source's (the last ones once stopped)."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.inner: Reader | None = None
        self._last = CaptureStats()

    @property
    def id(self) -> str:
        return self.ctx.spec.id

    @property
    def running(self) -> bool:
        return self.inner is not None and self.inner.running

    @property
    def error(self) -> str | None:
        return self.inner.error if self.inner is not None else None

    def stats(self) -> CaptureStats:
        if self.inner is not None:
            self._last = self.inner.stats()
        return self._last

    def _stop_inner(self, timeout: float) -> bool:
        """Stop the inner source (its final flows out); False: none was running."""
        inner, self.inner = self.inner, None
        if inner is None:
            return False
        inner.stop(timeout)
        self._last = inner.stats()
        return True
