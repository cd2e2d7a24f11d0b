"""Values carried by the agent <-> analyzer link besides topology and flows:
the analyzer's capture commands and an agent's capture statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Version of the conversation in agent.proto; an analyzer accepts the versions in
# SUPPORTED_VERSIONS and rejects the others with FAILED_PRECONDITION.
PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})


@dataclass(frozen=True, slots=True)
class StartCapture:
    """Start the capture on `node_id` (a repeat for a running capture is a no-op)."""

    capture: Mapping[str, Any]   # Skydive Capture JSON (skygraph.api.captures.Capture.to_json())
    node_id: str

    @property
    def capture_id(self) -> str:
        return str(self.capture.get("UUID", ""))


@dataclass(frozen=True, slots=True)
class StopCapture:
    capture_id: str
    node_id: str


@dataclass(frozen=True, slots=True)
class InjectPacket:
    """Send the packets of a resolved injection from `node_id` (a repeat is a no-op)."""

    injection: Mapping[str, Any]   # Skydive PacketInjection JSON, addresses resolved
    node_id: str

    @property
    def injection_id(self) -> str:
        return str(self.injection.get("UUID", ""))


@dataclass(frozen=True, slots=True)
class StopInjection:
    injection_id: str
    node_id: str


Command = StartCapture | StopCapture | InjectPacket | StopInjection


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """The latest counters of one capture on one node (totals, not deltas)."""

    capture_id: str
    node_id: str
    state: str = "active"        # "active" or "error"
    error: str = ""              # why, when state is "error"
    packets_received: int = 0
    packets_dropped: int = 0     # by the kernel
    flows_dropped: int = 0       # flow table full, or the link's buffer bound
    flows_active: int = 0
    at: int = 0                  # ms epoch of the reading
