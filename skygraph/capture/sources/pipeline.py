"""Where a capture's packets go, and the reader thread every capture type runs.

`Pipeline` owns the route of captured packets: the capture's flow table
(flows to the local sink on update/expire ticks, never per packet) and/or a
capture target (every frame to `Target.packets`, the table's output to
`Target.flows` instead of the sink).  Packets come in either as blocks of
pcap records (the batch path, `fastpath`) or one by one.

`Reader` owns one capture's thread: `start()` runs the type's blocking
`_open()` then starts the thread; the thread alternates between the type's
`_read()` (hand what is ready to the pipeline) and `_wait()` (sleep until
data, `_wakeup()` or the next tick), ticks the table by the injected clock,
and on stop reads what is left, flushes the table and calls `_close()`.
`stop()` blocks until that is done.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from skygraph.capture.bpf import BPFError, Program, compile_filter
from skygraph.capture.decoder import DecoderConfig, decode
from skygraph.capture.fastpath import FastPath
from skygraph.capture.pcapfile import Block, PcapInfo
from skygraph.capture.sources.base import (
    CaptureError,
    CaptureNode,
    CaptureStats,
    SourceContext,
    Target,
    TargetRequest,
    parse_target,
)
from skygraph.capture.table import FlowTable, PacketFilter
from skygraph.topology.flow import Flow

log = logging.getLogger("skygraph.capture.pipeline")

MAX_WAIT_MS = 500  # longest sleep of a reader between two looks at the clock
_RECORD = {"<": struct.Struct("<IIII"), ">": struct.Struct(">IIII")}


def open_target(ctx: SourceContext, node: CaptureNode, link_type: int,
                agent_ip: str = "") -> Target | None:
    """The capture's target when it has a `TargetType` (None: local flows)."""
    spec = ctx.spec
    if not spec.has_target:
        return None
    if ctx.make_target is None:
        raise ctx.error(f"TargetType {spec.target_type!r}: this agent has no capture targets")
    request = TargetRequest(
        target_type=spec.target_type, target=spec.target, if_index=node.if_index,
        name=node.name, agent_ip=agent_ip or ctx.agent.agent_ip or local_address(spec.target),
        mac=node.mac,
        header_size=spec.header_size, sampling_rate=spec.sampling_rate,
        polling_interval=spec.polling_interval, session_id=spec.session_id,
        link_type=link_type)
    try:
        return ctx.make_target(request)
    except (ValueError, OSError) as exc:
        raise ctx.error(f"TargetType {spec.target_type!r}: {exc}") from exc


def local_address(target: str) -> str:
    """This host's address towards `target` (`ip:port`), as the kernel routes it
    ("" when it cannot tell): the agent address a target announces."""
    endpoint = parse_target(target)
    if endpoint is None:
        return ""
    host, port = endpoint
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, port or 9))  # UDP: no packet is sent
            return str(s.getsockname()[0])
    except (OSError, UnicodeError):
        return ""


def excluded(ctx: SourceContext) -> list[tuple[str, int]]:
    """skygraph's own endpoints (analyzers) plus the capture's target."""
    target = parse_target(ctx.spec.target)
    return [*ctx.exclude, *([target] if target else [])]


class WakePipe:
    """A self-pipe that interrupts a reader blocked in select/poll: `wake()` from any
    thread, `drain()` by the reader once `fd` is readable. Closed once, under a lock,
    so a late `wake()` never writes to a descriptor number given back."""

    def __init__(self) -> None:
        self.fd = -1          # the read end, to watch
        self._w = -1
        self._lock = threading.Lock()

    def open(self) -> None:
        self.fd, self._w = os.pipe()
        os.set_blocking(self.fd, False)

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 64):
                pass

    def wake(self) -> None:
        with self._lock:
            if self._w >= 0:
                with contextlib.suppress(OSError):
                    os.write(self._w, b"\0")

    def close(self) -> None:
        with self._lock:
            for fd in (self.fd, self._w):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self.fd = self._w = -1


class Pipeline:
    """Packets of one capture -> its flow table and/or its target."""

    def __init__(self, ctx: SourceContext, tid: str, link_type: int,
                 target: Target | None = None,
                 packet_filter: PacketFilter | None = None) -> None:
        self.ctx = ctx
        self.link_type = link_type
        self.target = target
        self.packets_target = target is not None and target.wants_packets
        wants_table = target is None or target.wants_flows
        self.table: FlowTable | None = (
            FlowTable(ctx.spec.options, ctx.settings, tid, link_type, packet_filter=packet_filter)
            if wants_table else None)
        self._fast = FastPath(self.table) if self.table is not None else None
        self._decoder = DecoderConfig(ctx.spec.options.mpls_udp_port)
        self._closed = False

    # ---- packets ------------------------------------------------------------------
    def feed_block(self, block: Block, info: PcapInfo) -> None:
        """A block of pcap records (`info` says how to read them)."""
        self.feed_blocks((block,), info)

    def feed_blocks(self, blocks: Sequence[Block], info: PcapInfo) -> None:
        """Consecutive blocks of pcap records, in one pass of the batch path."""
        if self.packets_target:
            assert self.target is not None
            for block in blocks:
                self.target.packets(list(frames_of(block, info)))
        if self._fast is not None:  # sums kept in C until the table is next used
            self._fast.run_blocks(blocks, info, self.emit, settle=False)

    def feed(self, data: bytes, ts_ns: int, wire_length: int,
             link_type: int | None = None) -> None:
        """One captured frame (`link_type`: its first layer when it is not the
        capture's); the table ticks on packet time before it, as offline."""
        if self.packets_target:
            assert self.target is not None
            self.target.packets([(ts_ns, wire_length, data)])
        table = self.table
        if table is not None:
            self._settle()
            sent = table.tick(ts_ns // 1_000_000)
            if sent:
                self.emit(sent)
            if link_type is None or link_type == table.link_type:
                table.feed(data, ts_ns, wire_length)
            else:
                table.feed_decoded(data, decode(data, link_type, self._decoder), ts_ns,
                                   wire_length)

    # ---- flows --------------------------------------------------------------------
    def next_due(self) -> int | None:
        return self.table.next_due() if self.table is not None else None

    def tick(self, now_ms: int) -> None:
        if self.table is not None:
            self._settle()
            self.emit(self.table.tick(now_ms))

    def _settle(self) -> None:
        """The batch path's pending sums into the table, before any other use of it."""
        if self._fast is not None:
            self._fast.settle()

    def emit(self, flows: list[Flow]) -> None:
        if not flows:
            return
        spec = self.ctx.spec
        for f in flows:
            f.capture_id = spec.id
        try:
            if self.target is not None:
                self.target.flows(flows, self.ctx.clock())
            else:
                self.ctx.sink(flows)
        except Exception:
            log.exception("capture %s on %s: flow sink failed", spec.id, self.ctx.node_id)

    def flush(self) -> None:
        """Every flow still in the table goes out now (end of a capture or stream)."""
        if self.table is not None:
            self._settle()
            self.emit(self.table.flush())

    def close(self) -> None:
        """Final flows out, then the target closed (once)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            if self.target is not None:
                try:
                    self.target.close()
                except Exception:
                    log.exception("capture %s: target close failed", self.ctx.spec.id)

    @property
    def flow_count(self) -> int:
        return len(self.table) if self.table is not None else 0

    @property
    def flow_dropped(self) -> int:
        return self.table.dropped if self.table is not None else 0


def frames_of(block: Block, info: PcapInfo) -> Iterable[tuple[int, int, bytes]]:
    """(ts ns, wire length, bytes) of every record of a pcap block."""
    rec = _RECORD.get(info.byte_order) or struct.Struct(info.byte_order + "IIII")
    scale = 1 if info.nanosecond else 1000
    data = block.data
    for off in block.offsets.tolist():
        sec, frac, incl, orig = rec.unpack_from(data, off)
        start = off + 16
        yield sec * 1_000_000_000 + frac * scale, orig, data[start:start + incl]


class Reader:
    """The thread of one capture.  Subclasses implement `_open` (blocking, raises
    `CaptureError`), `_read` (hand what is ready to `self.pipeline`; the thread's
    only reader), `_wait(ms)`, `_wakeup` (any thread), `_close`, and `_counters`."""

    kind = "capture"

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.error: str | None = None  # why the reader ended early (None: it did not)
        self.pipeline: Pipeline | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._last = CaptureStats()
        self._programs: dict[int, Program | None] = {}   # link type -> the user's BPF

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _program(self, link_type: int) -> Program | None:
        """The capture's BPF compiled for `link_type` (once per link type), for types that
        filter in userspace; None without a filter. A bad filter fails the capture."""
        if link_type in self._programs:
            return self._programs[link_type]
        program: Program | None = None
        if self.spec.bpf_filter.strip():
            try:
                program = compile_filter(self.spec.bpf_filter, link_type, self.spec.header_size)
            except BPFError as exc:
                raise self._fail(str(exc)) from exc
            except (OSError, subprocess.SubprocessError) as exc:
                raise self._fail(f"BPF filter {self.spec.bpf_filter!r} not compiled: "
                                 f"{exc}") from exc
        self._programs[link_type] = program
        return program

    def _fail(self, reason: str) -> CaptureError:
        return self.ctx.error(reason)

    def thread_name(self) -> str:
        return f"capture {self.spec.id[:8]} {self.ctx.name}"

    # ---- to implement ---------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _read(self) -> None:
        raise NotImplementedError

    def _wait(self, timeout_ms: int) -> None:
        raise NotImplementedError

    def _wakeup(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _counters(self) -> tuple[int, int, int] | None:
        """(received, dropped, interface-dropped) now; None: keep the last ones."""
        return None

    def _ended(self) -> str | None:
        """Checked after every wait: a reason ends the capture (e.g. interface gone)."""
        return None

    def _drain_final(self) -> None:
        """Read what is still buffered once stopping (default: one more read)."""
        self._read()

    def metadata(self) -> dict[str, Any]:
        return {}

    # ---- start / stop --------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._open()
        self._thread = threading.Thread(target=self._run, daemon=True, name=self.thread_name())
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        thread = self._thread
        if thread is None:
            return
        self._wakeup()
        if thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("capture %s on %s: reader still running after %.0fs",
                            self.spec.id, self.ctx.node_id, timeout)

    def stats(self) -> CaptureStats:
        try:
            counters = self._counters()
        except OSError:
            counters = None
        pipe = self.pipeline
        flows = (pipe.flow_dropped, pipe.flow_count) if pipe is not None else (0, 0)
        if counters is not None:
            self._last = CaptureStats(*counters, *flows)
        elif pipe is not None:
            last = self._last
            self._last = CaptureStats(last.packets_received, last.packets_dropped,
                                      last.packets_if_dropped, *flows)
        return self._last

    # ---- the thread ------------------------------------------------------------------
    def _run(self) -> None:
        pipe = self.pipeline
        assert pipe is not None
        clock = self.ctx.clock
        try:
            pipe.tick(clock())  # arms the update/expire ticks from now
            while not self._stopping.is_set():
                self._read()
                now = clock()
                due = pipe.next_due()
                if due is not None and now >= due:
                    pipe.tick(now)
                    continue
                wait = MAX_WAIT_MS if due is None else min(due - now, MAX_WAIT_MS)
                self._wait(wait)
                reason = self._ended()
                if reason is not None:
                    self.error = reason
                    break
            self._drain_final()
        except Exception as exc:
            log.exception("capture %s on %s: reader failed", self.spec.id, self.ctx.node_id)
            self.error = f"capture failed: {exc}"
        finally:
            try:
                pipe.close()
            finally:
                try:
                    self._close()
                finally:
                    self.stats()  # the final counters (`_counters` works once closed)
