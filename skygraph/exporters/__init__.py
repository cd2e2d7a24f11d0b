"""Capture targets: what a capture sends straight to an external tool.

`make_target` turns a capture's `TargetType` and `Target` into a `Target`:
`netflowv5` (NetFlow v5 from the capture's flow table, UDP), `sflow` (sFlow
v5 flow and counter samples of the captured frames, UDP), `erspanv1` (GRE +
ERSPAN Type II, Skydive's name) and `erspanv2` (GRE + ERSPAN Type III) from a
raw GRE socket.  `local` (or empty) is no target: the capture's flows go to
the analyzer, which the caller handles; asking for it here is an error.
Sockets are opened in the calling thread's network namespace.
"""

from __future__ import annotations

import ipaddress

from skygraph.exporters.erspan import MAX_SESSION_ID, ERSPANTarget
from skygraph.exporters.netflow import NetFlowV5Target
from skygraph.exporters.sflow import SFlowTarget
from skygraph.exporters.target import (
    Endpoint,
    Target,
    TargetError,
    TargetNode,
    check_link_type,
    parse_endpoint,
)

__all__ = ["DEFAULT_PORTS", "LOCAL_TYPES", "TARGET_TYPES", "Endpoint", "Target", "TargetError",
           "TargetNode", "make_target", "parse_endpoint"]

LOCAL_TYPES = ("", "local")
TARGET_TYPES = ("netflowv5", "sflow", "erspanv1", "erspanv2")
# Port when `Target` has none; ERSPAN has no port (GRE).
DEFAULT_PORTS: dict[str, int | None] = {"netflowv5": 2055, "sflow": 6343, "erspanv1": None,
                                        "erspanv2": None}
DEFAULT_HEADER_SIZE = 256  # a capture's HeaderSize 0 (Skydive's DefaultCaptureLength)
MIN_HEADER_SIZE, MAX_HEADER_SIZE = 14, 4096


def make_target(target_type: str, target: str, node: TargetNode, *, header_size: int,
                sampling_rate: int, polling_interval: int, session_id: int,
                link_type: int) -> Target:
    """The exporter of a capture; raises `TargetError` naming the bad field."""
    if target_type in LOCAL_TYPES:
        raise TargetError(f"TargetType: {target_type or 'local'!r} has no external target "
                          f"(the capture's flows go to the analyzer)")
    if target_type not in TARGET_TYPES:
        raise TargetError(f"TargetType: {target_type!r} is not one of local, "
                          f"{', '.join(TARGET_TYPES)}")
    if node.if_index < 0:
        raise TargetError(f"TargetNode: if_index {node.if_index} is negative")
    check_link_type(link_type)
    endpoint = parse_endpoint(target, target_type, default_port=DEFAULT_PORTS[target_type])
    try:
        if target_type == "netflowv5":
            return NetFlowV5Target(endpoint, node)
        if target_type == "sflow":
            return _sflow(endpoint, node, header_size, sampling_rate, polling_interval,
                          link_type)
        if not 0 <= session_id <= MAX_SESSION_ID:
            raise TargetError(f"SessionID: {session_id} is not in 0..{MAX_SESSION_ID}")
        return ERSPANTarget(endpoint, node, version=2 if target_type == "erspanv1" else 3,
                            session_id=session_id, link_type=link_type)
    except OSError as exc:
        raise TargetError(f"Target: {target!r}: cannot open the {target_type} socket: "
                          f"{exc.strerror or exc}") from exc


def _sflow(endpoint: Endpoint, node: TargetNode, header_size: int, sampling_rate: int,
           polling_interval: int, link_type: int) -> SFlowTarget:
    size = header_size or DEFAULT_HEADER_SIZE
    if not MIN_HEADER_SIZE <= size <= MAX_HEADER_SIZE:
        raise TargetError(f"HeaderSize: {header_size} is outside 0 or "
                          f"{MIN_HEADER_SIZE}..{MAX_HEADER_SIZE}")
    if sampling_rate < 0:
        raise TargetError(f"SamplingRate: {sampling_rate} is negative")
    if polling_interval < 0:
        raise TargetError(f"PollingInterval: {polling_interval} is negative")
    if node.agent_ip:
        try:
            ipaddress.ip_address(node.agent_ip)
        except ValueError:
            raise TargetError(f"TargetNode: agent_ip {node.agent_ip!r} is not an IP address"
                              ) from None
    return SFlowTarget(endpoint, node, header_size=size, sampling_rate=sampling_rate,
                       polling_interval=polling_interval, link_type=link_type)
