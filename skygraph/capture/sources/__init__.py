"""Capture types: Skydive's capture `Type` -> the factory of its `CaptureSource`.

One module per type, each behind the interface of `sources.base`; a new type
adds one line to `FACTORIES`.  `source_for` picks the factory from the
capture's type (empty: `afpacket`, the default of interface nodes) and
refuses an unknown type with an error naming it.
"""

from __future__ import annotations

from collections.abc import Mapping

from skygraph.capture.sources import afpacket, ebpf, ovsmirror, ovsnetflow, ovssflow, pcap, pcapsocket, sflow
from skygraph.capture.sources.base import CaptureSource, SourceContext, SourceFactory

FACTORIES: dict[str, SourceFactory] = {
    "afpacket": afpacket.make,
    "ebpf": ebpf.make,
    "pcap": pcap.make,
    "pcapsocket": pcapsocket.make,
    "sflow": sflow.make,
    "ovsmirror": ovsmirror.make,
    "ovsnetflow": ovsnetflow.make,
    "ovssflow": ovssflow.make,
}


def register(capture_type: str, factory: SourceFactory) -> None:
    """Add (or replace) a capture type."""
    FACTORIES[capture_type] = factory


def source_for(ctx: SourceContext, factories: Mapping[str, SourceFactory] | None = None,
               ) -> CaptureSource:
    """The capture source for `ctx.spec`'s type; raises `CaptureError` for an
    unknown type or a node/spec the type refuses."""
    known = FACTORIES if factories is None else factories
    ctype = ctx.spec.effective_type
    factory = known.get(ctype)
    if factory is None:
        raise ctx.error(f"capture type {ctype!r} is not supported by this agent "
                        f"(supported: {', '.join(sorted(known))})")
    return factory(ctx)
