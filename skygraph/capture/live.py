"""Live capture: the original afpacket entry point, kept for its callers.

The capture types live in `skygraph.capture.sources` (one module per type
behind the `CaptureSource` interface of `sources.base`); this module
re-exports the shared values and offers `LiveCapture`, an afpacket capture
built from Skydive Capture JSON and explicit arguments instead of a
`SourceContext`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from skygraph.capture.afpacket import RingGeometry
from skygraph.capture.options import CaptureOptions, OptionError, TableSettings
from skygraph.capture.sources.afpacket import AfpacketSource
from skygraph.capture.sources.base import (
    CAPTURE_NODE_TYPES,
    DEFAULT_CAPTURE_LENGTH,
    ENCAP_LINK_TYPES,
    MAX_CAPTURE_LENGTH,
    MIN_CAPTURE_LENGTH,
    NODE_DOWN,
    CaptureError,
    CaptureNode,
    CaptureSpec,
    CaptureStats,
    Clock,
    Sink,
    SourceContext,
    effective_filter,
    link_type_for,
    parse_target,
    wall_clock_ms,
)
from skygraph.capture.sources.pipeline import MAX_WAIT_MS

__all__ = [
    "CAPTURE_NODE_TYPES", "DEFAULT_CAPTURE_LENGTH", "ENCAP_LINK_TYPES", "MAX_CAPTURE_LENGTH",
    "MAX_WAIT_MS", "MIN_CAPTURE_LENGTH", "NODE_DOWN", "CaptureError", "CaptureNode",
    "CaptureSpec", "CaptureStats", "LiveCapture", "effective_filter", "link_type_for",
    "parse_target", "wall_clock_ms",
]


class LiveCapture(AfpacketSource):
    """One afpacket capture on one node.  Construct (checks the spec and the node),
    `start()` (opens the ring, starts the reader), `stop()` (final flows, close)."""

    def __init__(self, capture: Mapping[str, Any] | CaptureSpec, node_id: str,
                 metadata: Mapping[str, Any], netns: str | None, settings: TableSettings,
                 exclude: Sequence[tuple[str, int]], sink: Sink, *,
                 options: CaptureOptions | None = None, clock: Clock = wall_clock_ms,
                 geometry: RingGeometry | None = None) -> None:
        name = str(metadata.get("Name") or "")
        try:
            spec = (capture if isinstance(capture, CaptureSpec)
                    else CaptureSpec.from_json(capture, options))
        except (OptionError, TypeError, ValueError) as exc:
            raise CaptureError(node_id, name, str(exc)) from exc
        super().__init__(SourceContext(spec, node_id, metadata, netns, settings, exclude, sink,
                                       clock=clock), geometry)
