"""The `ovsnetflow` capture type: OVS exports NetFlow v5 of a bridge to the agent.

Owns the capture of one bridge (flow/probes/ovsnetflow, SPEC §1b): a
NetFlow v5 receiver in the bridge's namespace on `agent.capture.netflow_bind`
and the first free port of `agent.capture.netflow_ports` (Skydive's
127.0.0.1, 6365..6375), then an OVS `NetFlow` row on the bridge sending to
it (`engine_type` 10, `engine_id` 1, `add_id_to_interface`, and an
`active_timeout` of the flow table's update period, so that a long flow is
reported at least that often rather than every 600 s), removed when the
capture stops.  With a `Target` (TargetType `netflowv5` or none) OVS sends
to that collector instead and the agent runs nothing but the row.

The reader decodes each datagram (`netflow_decode`, never raising) and adds
its records to the capture's flow table (`netflow_flows`): flows on the
bridge's TID, sent on the table's update/expire ticks like any capture's.
Malformed datagrams are counted (`decode_errors`, `last_error`) and logged
at most every 10 s.  `PacketsReceived` counts the packets the records
describe.  The capture's BPF filter does not apply: records carry no packet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from skygraph.capture import ovsdb
from skygraph.capture.decoder import LINKTYPE_ETHERNET
from skygraph.capture.netflow_decode import decode
from skygraph.capture.netflow_flows import NetFlowFlows
from skygraph.capture.sources.base import CaptureSource, SourceContext
from skygraph.capture.sources.ovsbridge import (
    DirectExport,
    UdpReader,
    bind_udp,
    bridge_node,
    collector_address,
    direct_target,
    remove_rows,
    write_rows,
)
from skygraph.capture.sources.pipeline import Pipeline

log = logging.getLogger("skygraph.capture.ovsnetflow")

KIND = "ovsnetflow"
ENGINE_TYPE, ENGINE_ID = 10, 1  # Skydive's
LOG_EVERY_MS = 10_000


def row_writer(ctx: SourceContext, targets: tuple[str, ...]) -> Callable[[], None]:
    """Writes the bridge's NetFlow row sending to `targets` (raises CaptureError)."""
    row = ovsdb.NetFlowRow(targets=targets, engine_type=ENGINE_TYPE, engine_id=ENGINE_ID,
                           active_timeout=ctx.settings.update)
    bridge = str(ctx.metadata.get("UUID") or "")
    return lambda: write_rows(ctx, f"NetFlow on bridge {ctx.name}", lambda: ovsdb.set_netflow(
        ctx.agent.ovsdb, bridge, ctx.spec.id, row))


class OvsNetFlowSource(UdpReader):
    """One ovsnetflow capture with a local receiver."""

    kind = KIND

    def __init__(self, ctx: SourceContext) -> None:
        super().__init__(ctx)
        self.node = bridge_node(ctx, self.kind)
        self.address = ""
        self.decode_errors = 0
        self.last_error = ""
        self.flows: NetFlowFlows | None = None
        self._packets = 0
        self._logged_errors = 0
        self._logged_at = 0

    def thread_name(self) -> str:
        return f"capture {self.spec.id[:8]} ovsnetflow {self.address}"

    # ---- start / stop ----------------------------------------------------------------
    def _open(self) -> None:
        agent = self.ctx.agent
        try:
            sock = bind_udp(self.node.netns, agent.netflow_bind, agent.netflow_ports)
        except OSError as exc:
            raise self._fail(f"NetFlow receiver (agent.capture.netflow_bind/_ports): "
                             f"{exc.strerror or exc}") from exc
        try:
            address = collector_address(sock)
            row_writer(self.ctx, (address,))()
        except BaseException:
            sock.close()
            raise
        self.address = address
        self.pipeline = Pipeline(self.ctx, self.node.tid, LINKTYPE_ETHERNET)
        assert self.pipeline.table is not None
        self.flows = NetFlowFlows(self.pipeline.table)
        self._ready(sock)

    def stop(self, timeout: float = 10.0) -> None:
        if self.sock is not None and not self._stopping.is_set():
            remove_rows(self.ctx)  # OVS stops sending; the reader drains what came
        super().stop(timeout)

    # ---- Reader ---------------------------------------------------------------------
    def _datagram(self, data: bytes, now_ms: int) -> None:
        assert self.flows is not None
        dgram = decode(data)
        if dgram.error:
            self.decode_errors += 1
            self.last_error = dgram.error
            if now_ms - self._logged_at >= LOG_EVERY_MS:
                log.warning("capture %s: %d malformed NetFlow datagrams (%d in all; last: %s)",
                            self.spec.id, self.decode_errors - self._logged_errors,
                            self.decode_errors, self.last_error)
                self._logged_at, self._logged_errors = now_ms, self.decode_errors
        self._packets += self.flows.feed(dgram, now_ms)

    def _counters(self) -> tuple[int, int, int] | None:
        return self._packets, 0, 0

    def metadata(self) -> dict[str, Any]:
        return {}


def make(ctx: SourceContext) -> CaptureSource:
    target = direct_target(ctx, KIND, "netflowv5")
    if target is None:
        return OvsNetFlowSource(ctx)
    bridge_node(ctx, KIND)
    return DirectExport(ctx, row_writer(ctx, (target,)))
