"""The `ebpf` capture type: flows aggregated in the kernel by a socket program.

Owns what the type asks of a node and a capture (SPEC §1b: the interface
node checks of afpacket; no BPF filter and no raw packets, which Skydive's
ebpf type cannot honour either -- refused here with an error rather than
ignored; flows keyed in L3 mode whatever `LayerKeyMode` says), the program
variant (Ethernet or raw IP from `EncapType`; on loopback only one copy of
each packet), and the reader: the kernel map polled every `poll_ms` into the
capture's flow table (`capture.ebpf`), which leaves on update/expire ticks.
Counters: PacketsReceived = packets the program saw, PacketsDropped =
packets a full kernel map could not count.

Tuning through `SourceContext.extra` (tests): `poll_ms`, `idle_ms`,
`kernel_entries`, `build` (the program builder).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from skygraph.capture.decoder import LINKTYPE_ETHERNET
from skygraph.capture.ebpf import (
    DEFAULT_IDLE_MS,
    DEFAULT_KERNEL_ENTRIES,
    EbpfProbe,
    KernelFlows,
    ProbeError,
    ProgramBuilder,
)
from skygraph.capture.ebpf_asm import Program
from skygraph.capture.ebpf_prog import flow_program
from skygraph.capture.sources.base import CaptureNode, SourceContext, link_type_for
from skygraph.capture.sources.pipeline import Pipeline, Reader, open_target

KIND = "ebpf"
DEFAULT_POLL_MS = 500


class EbpfSource(Reader):
    """One ebpf capture on one node: construct (checks spec and node), `start()`
    (maps, program, socket), `stop()` (last poll, final flows, close)."""

    kind = KIND

    def __init__(self, ctx: SourceContext) -> None:
        spec = ctx.spec
        if spec.bpf_filter.strip():
            raise ctx.error(f"the ebpf capture type has no BPF filter (got {spec.bpf_filter!r})")
        if spec.options.raw_packet_limit:
            raise ctx.error("the ebpf capture type keeps no raw packets "
                            f"(RawPacketLimit {spec.options.raw_packet_limit})")
        options = dataclasses.replace(spec.options, layer_key_mode="L3")
        ctx = dataclasses.replace(ctx, spec=dataclasses.replace(spec, options=options))
        super().__init__(ctx)
        self.node = CaptureNode.from_metadata(ctx.node_id, ctx.metadata, ctx.netns, KIND)
        self.link_type = link_type_for(self.node.encap_type)
        extra = ctx.extra
        self.poll_ms = int(extra.get("poll_ms") or DEFAULT_POLL_MS)
        self.idle_ms = int(extra.get("idle_ms") or DEFAULT_IDLE_MS)
        self.kernel_entries = int(extra.get("kernel_entries")
                                  or min(ctx.settings.max_entries, DEFAULT_KERNEL_ENTRIES))
        if not 0 < self.kernel_entries < 1 << 32:
            raise ctx.error(f"kernel_entries: {self.kernel_entries} is not a map size")
        build = extra.get("build")
        self._build: ProgramBuilder = build if callable(build) else self._flow_program
        self._probe: EbpfProbe | None = None
        self._kernel: KernelFlows | None = None
        self._next_poll = 0.0

    def thread_name(self) -> str:
        return f"ebpf {self.spec.id[:8]} {self.node.name}"

    def _flow_program(self, flows_fd: int, stats_fd: int) -> Program:
        return flow_program(flows_fd, stats_fd, ethernet=self.link_type == LINKTYPE_ETHERNET,
                            skip_outgoing=self.node.encap_type == "loopback")

    # ---- Reader ----------------------------------------------------------------
    def _open(self) -> None:
        netns = self.node.netns
        if netns is not None and not os.path.exists(netns):
            raise self._fail(f"its namespace {netns} is gone")
        target = open_target(self.ctx, self.node, self.link_type)
        if target is not None and target.wants_packets:
            target.close()
            raise self._fail(f"TargetType {self.spec.target_type!r} needs packets; "
                             "the ebpf capture type only has flows")
        try:
            self._probe = EbpfProbe.open(netns, self.node.name, self._build, self.kernel_entries)
        except ProbeError as exc:
            if target is not None:
                target.close()
            raise self._fail(str(exc)) from exc
        self.pipeline = Pipeline(self.ctx, self.node.tid, self.link_type, target)
        assert self.pipeline.table is not None
        self._kernel = KernelFlows(self.pipeline.table, self.link_type)

    def _poll(self) -> None:
        assert self._probe is not None and self._kernel is not None
        self._next_poll = time.monotonic() + self.poll_ms / 1000
        self._probe.poll(self._kernel, self.idle_ms)

    def _read(self) -> None:
        if time.monotonic() >= self._next_poll:
            self._poll()

    def _wait(self, timeout_ms: int) -> None:
        assert self._probe is not None
        until_poll = max(0, int((self._next_poll - time.monotonic()) * 1000))
        self._probe.wait(min(timeout_ms, until_poll))

    def _ended(self) -> str | None:
        # ENETDOWN when the interface goes down; once removed the socket is unbound.
        probe = self._probe
        if probe is not None and probe.socket_error and probe.interface_gone():
            return f"interface {self.node.name} was removed"
        return None

    def _drain_final(self) -> None:
        # Detached first, so the last poll and the final counters see the same packets.
        assert self._probe is not None
        self._probe.detach()
        self._poll()

    def _wakeup(self) -> None:
        if self._probe is not None:
            self._probe.wakeup()

    def _close(self) -> None:
        if self._probe is not None:
            self._probe.close()

    def _counters(self) -> tuple[int, int, int] | None:
        if self._probe is None:
            return None
        packets, map_full = self._probe.counters()
        return packets, map_full, 0

    def metadata(self) -> dict[str, Any]:
        return {}


def make(ctx: SourceContext) -> EbpfSource:
    return EbpfSource(ctx)
