"""The `ovssflow` capture type: OVS samples a bridge in sFlow v5 for the agent.

Owns the capture of one bridge (flow/probes/ovssflow, SPEC §1b): an sFlow
collector of the agent's (the `sflow` type's collector, `sources.sflow`) on
`agent.capture.sflow_bind` and the first free port of
`agent.capture.sflow_ports` (Skydive's 127.0.0.1, 6345..6355), in the
bridge's namespace, then an OVS `sFlow` row on the bridge sending to it:
`agent` lo, `header` = HeaderSize, `sampling` = SamplingRate (below 1: 2^32
- 1, no flow samples, as Skydive), `polling` = PollingInterval; removed
when the capture stops.  The collector feeds the capture's flow table with
the sampled headers (flows on the bridge's TID, the capture's BPF applied
to them) and the bridge node's `SFlow` metadata with the counter samples;
its address is the entry's `SFlowSocket`.  With a `Target` (TargetType
`sflow` or none) OVS sends to that collector instead and the agent runs
nothing but the row.

The collector is an `SFlowSource` run for the bridge: its context says
what it needs to know (a node of an interface Type holding the bind
address as its one IPv4 address, the chosen port), the rest (sink, node
metadata, TID, options) is the capture's.
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Callable
from typing import Any

from skygraph.capture import ovsdb
from skygraph.capture.sources.base import CaptureError, CaptureNode, CaptureSource, SourceContext
from skygraph.capture.sources.ovsbridge import (
    DirectExport,
    Wrapping,
    bridge_node,
    direct_target,
    remove_rows,
    write_rows,
)
from skygraph.capture.sources.sflow import SFlowSource

KIND = "ovssflow"
AGENT_INTERFACE = "lo"  # Skydive's: OVS puts its address in the datagrams
NO_SAMPLES = 2**32 - 1


def row_writer(ctx: SourceContext, target: str) -> Callable[[], None]:
    """Writes the bridge's sFlow row sending to `target` (raises CaptureError)."""
    spec = ctx.spec
    row = ovsdb.SFlowRow(targets=(target,), agent=AGENT_INTERFACE, header=spec.header_size,
                         sampling=spec.sampling_rate if spec.sampling_rate >= 1 else NO_SAMPLES,
                         polling=max(spec.polling_interval, 0))
    bridge = str(ctx.metadata.get("UUID") or "")
    return lambda: write_rows(ctx, f"sFlow on bridge {ctx.name}", lambda: ovsdb.set_sflow(
        ctx.agent.ovsdb, bridge, spec.id, row))


class OvsSFlowSource(Wrapping):
    """One ovssflow capture with a local collector (`inner`)."""

    kind = KIND

    def __init__(self, ctx: SourceContext) -> None:
        super().__init__(ctx)
        self.node: CaptureNode = bridge_node(ctx, self.kind)

    def _collector_context(self, port: int) -> SourceContext:
        ctx = self.ctx
        meta = {**ctx.metadata, "Type": "device", "IPV4": [f"{ctx.agent.sflow_bind}/32"]}
        spec = dataclasses.replace(ctx.spec, type="sflow", port=port, target="",
                                   target_type="")
        return dataclasses.replace(ctx, spec=spec, metadata=meta)

    def _listen(self) -> SFlowSource:
        """A started collector on the first free port of the configured range."""
        first, last = self.ctx.agent.sflow_ports
        for port in range(first, last + 1):
            collector = SFlowSource(self._collector_context(port))
            try:
                collector.start()
            except CaptureError as exc:
                cause = exc.__cause__
                if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
                    continue
                raise self.ctx.error(f"sFlow collector (agent.capture.sflow_bind/_ports): "
                                     f"{exc.reason}") from exc
            return collector
        raise self.ctx.error(f"sFlow collector: no free UDP port on {self.ctx.agent.sflow_bind} "
                             f"in {first}-{last} (agent.capture.sflow_ports)")

    def start(self) -> None:
        collector = self._listen()
        try:
            row_writer(self.ctx, collector.address)()
        except BaseException:
            collector.stop()
            raise
        self.inner = collector

    def stop(self, timeout: float = 10.0) -> None:
        if self.inner is not None:
            remove_rows(self.ctx)  # OVS stops sending; the collector reads what came
        self._stop_inner(timeout)

    def metadata(self) -> dict[str, Any]:
        return self.inner.metadata() if self.inner is not None else {}


def make(ctx: SourceContext) -> CaptureSource:
    target = direct_target(ctx, KIND, "sflow")
    if target is None:
        return OvsSFlowSource(ctx)
    bridge_node(ctx, KIND)
    return DirectExport(ctx, row_writer(ctx, target))
