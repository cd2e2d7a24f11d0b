"""The seam between the capture manager and the capture types.

Owns what every capture type shares: the capture's spec as read from
Skydive's Capture JSON (`CaptureSpec`), the checks a node must pass
(`CaptureNode`, SPEC §1b: up, `Name`, `EncapType`, `TID`, a capture-capable
`Type`), the counters (`CaptureStats`), the error users see (`CaptureError`,
naming node and reason), the effective BPF that keeps skygraph's own traffic
out, and the contract a type implements:

* `CaptureSource`: `start()` blocks until the capture runs (or raises
  `CaptureError`), `stop(timeout)` blocks until the final flows reached the
  sink, `stats()`, `metadata()` (extra fields of the node's `Captures`
  entry, e.g. `PCAPSocket`), plus `running` / `error` for the manager's
  statistics round;
* `SourceContext`: everything a type may use (the spec, the node, its
  namespace, table settings, the exclude list, the flow sink, agent-level
  settings, a thread-safe callback to set node metadata, the capture-target
  factory);
* `Target`: where packets and/or flows go instead of the local sink when a
  capture has a `TargetType` (the exporters implement it; the agent injects
  the factory, so `capture` does not import `exporters`).

A type registers a factory `SourceContext -> CaptureSource` under its Skydive
`Type` name in `skygraph.capture.sources`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from skygraph.capture.decoder import LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_RAW
from skygraph.capture.options import CaptureOptions, OptionError, TableSettings
from skygraph.topology.flow import Flow

DEFAULT_CAPTURE_LENGTH = 256  # HeaderSize 0 (flow/probes DefaultCaptureLength)
MIN_CAPTURE_LENGTH, MAX_CAPTURE_LENGTH = 14, 4096
# Node types the interface capture types (afpacket, pcap, ...) run on (SPEC §1b).
CAPTURE_NODE_TYPES = frozenset({
    "internal", "veth", "tun", "bridge", "dummy", "gre", "bond", "can", "hsr", "ifb", "macvlan",
    "macvtap", "vlan", "vxlan", "gretap", "ip6gretap", "geneve", "ipoib", "vcan", "ipip",
    "ipvlan", "lowpan", "ip6tnl", "ip6gre", "sit", "device",
})
# EncapType -> pcap link type of the first layer (flow/probes/afpacket.go).
ENCAP_LINK_TYPES: Mapping[str, int] = {
    "ether": LINKTYPE_ETHERNET,
    "none": LINKTYPE_RAW, "gre": LINKTYPE_RAW,  # raw IP: v4/v6 by version nibble, else ARP
    "sit": LINKTYPE_IPV4, "ipip": LINKTYPE_IPV4,
    "tunnel6": LINKTYPE_IPV6, "gre6": LINKTYPE_IPV6,
}
NODE_DOWN = "Can't start capture on node down"
LOCAL_TARGET_TYPES = frozenset({"", "local"})
# Capture JSON key of the ERSPAN session id (SPEC §3 #5: configurable, default 1).
SESSION_ID_KEY = "SessionID"
# Capture JSON key of the afpacket readers sharing the interface's packets through
# PACKET_FANOUT. A skygraph extension: Skydive's Capture has no such field (one reader).
WORKERS_KEY = "Workers"
MAX_WORKERS = 64  # 0 = the agent's default (agent.capture.workers)

Sink = Callable[[list[Flow]], None]
Clock = Callable[[], int]
# Set (value) or delete (None) one metadata key of the captured node; callable
# from any thread (the manager hops to the agent's event loop).
SetMetadata = Callable[[str, Any], None]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class CaptureError(Exception):
    """A capture could not start or run on a node; the message names node and reason."""

    def __init__(self, node_id: str, name: str, reason: str) -> None:
        where = f"node {node_id}" + (f" ({name})" if name else "")
        super().__init__(f"capture on {where}: {reason}")
        self.node_id = node_id
        self.reason = reason


# ---- pure parts --------------------------------------------------------------------
def link_type_for(encap_type: str) -> int:
    """First layer of a capture from the node's `EncapType` (unknown: Ethernet)."""
    return ENCAP_LINK_TYPES.get(encap_type, LINKTYPE_ETHERNET)


def effective_filter(user: str, exclude: Sequence[tuple[str, int]],
                     inbound_only: bool = False) -> str:
    """The user's BPF with skygraph's own connections excluded (flow/probes/bpf.go):
    `not (host A and port P)` per endpoint, `not host A` when its port is 0.
    `inbound_only` (loopback): AF_PACKET sees every loopback packet twice, going
    out and coming in; keep one, as libpcap does (`inbound` = the kernel's
    pkt_type is not PACKET_OUTGOING)."""
    parts = [f"({user})"] if user.strip() else []
    for host, port in exclude:
        parts.append(f"not host {host}" if not port else f"not (host {host} and port {port})")
    if inbound_only:
        parts.append("inbound")
    return " and ".join(parts)


def parse_target(target: str) -> tuple[str, int] | None:
    """A capture `Target` (`ip:port`, `[v6]:port`) as an excluded endpoint."""
    target = target.strip()
    if not target:
        return None
    host, sep, port = target.rpartition(":")
    if not sep:
        return target, 0
    host = host.strip("[]")
    try:
        return host, int(port)
    except ValueError:
        return target, 0


def _int(data: Mapping[str, Any], key: str, default: int) -> int:
    value = data.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise OptionError(f"{key}: {value!r} is not an integer") from None


@dataclass(frozen=True, slots=True)
class CaptureSpec:
    """What a capture type uses of a Skydive Capture JSON object."""

    id: str
    type: str
    name: str = ""
    description: str = ""
    bpf_filter: str = ""
    header_size: int = DEFAULT_CAPTURE_LENGTH
    target: str = ""
    options: CaptureOptions = dataclasses.field(default_factory=CaptureOptions)
    target_type: str = ""
    port: int = 0  # sflow: listen port (0: the type's default)
    sampling_rate: int = 1
    polling_interval: int = 10
    session_id: int = 1  # ERSPAN session id of a target
    workers: int = 0  # afpacket readers (PACKET_FANOUT); 0: the agent's default (skygraph extension)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], base: CaptureOptions | None = None) -> CaptureSpec:
        """Read a Capture; `base` carries the agent's defaults (layer key mode,
        application ports, ...).  Raises `OptionError` naming the bad field."""
        base = base or CaptureOptions()
        ident = str(data.get("UUID") or data.get("ID") or "")
        if not ident:
            raise OptionError("UUID: a capture needs an id")
        size = _int(data, "HeaderSize", 0)
        if size == 0:
            size = DEFAULT_CAPTURE_LENGTH
        if not MIN_CAPTURE_LENGTH <= size <= MAX_CAPTURE_LENGTH:
            raise OptionError(f"HeaderSize: {size} is outside 0 or "
                              f"{MIN_CAPTURE_LENGTH}..{MAX_CAPTURE_LENGTH}")
        port = _int(data, "Port", 0)
        if not 0 <= port < 65536:
            raise OptionError(f"Port: {port} is not a port number")
        workers = _int(data, WORKERS_KEY, 0)
        if not 0 <= workers <= MAX_WORKERS:
            raise OptionError(f"{WORKERS_KEY}: {workers} is outside 0..{MAX_WORKERS} "
                              f"(afpacket readers; 0: the agent's default)")
        options = dataclasses.replace(
            base,
            layer_key_mode=str(data.get("LayerKeyMode") or base.layer_key_mode),
            extra_layers=_int(data, "ExtraLayers", 0),
            extra_tcp_metric=bool(data.get("ExtraTCPMetric", False)),
            ip_defrag=bool(data.get("IPDefrag", False)),
            reassemble_tcp=bool(data.get("ReassembleTCP", False)),
            raw_packet_limit=_int(data, "RawPacketLimit", 0))
        return cls(id=ident, type=str(data.get("Type") or ""), name=str(data.get("Name") or ""),
                   description=str(data.get("Description") or ""),
                   bpf_filter=str(data.get("BPFFilter") or ""), header_size=size,
                   target=str(data.get("Target") or ""), options=options,
                   target_type=str(data.get("TargetType") or ""), port=port,
                   sampling_rate=_int(data, "SamplingRate", 1),
                   polling_interval=_int(data, "PollingInterval", 10),
                   session_id=_int(data, SESSION_ID_KEY, 1), workers=workers)

    @property
    def effective_type(self) -> str:
        return self.type or "afpacket"

    @property
    def has_target(self) -> bool:
        return self.target_type not in LOCAL_TARGET_TYPES


@dataclass(frozen=True, slots=True)
class CaptureNode:
    """The node a capture runs on: what the capture needs of its metadata."""

    id: str
    name: str
    type: str
    encap_type: str
    tid: str
    if_index: int  # 0: unknown, looked up by name in the namespace
    netns: str | None  # namespace file; None: the agent's own namespace
    mac: str = ""
    ipv4: tuple[str, ...] = ()  # `IPV4` CIDRs

    @classmethod
    def from_metadata(cls, node_id: str, metadata: Mapping[str, Any], netns: str | None,
                      kind: str = "afpacket", *, require: Sequence[str] = ("Name", "EncapType", "TID"),
                      node_types: frozenset[str] | None = CAPTURE_NODE_TYPES,
                      require_up: bool = True) -> CaptureNode:
        """Check the node can be captured on by a `kind` capture (SPEC §1b) or raise
        `CaptureError`.  `node_types` None: any Type."""
        name = str(metadata.get("Name") or "")

        def refuse(reason: str) -> CaptureError:
            return CaptureError(node_id, name, reason)

        for key in require:
            if not metadata.get(key):
                raise refuse(f"the node has no {key}")
        node_type = str(metadata.get("Type") or "")
        if node_types is not None and node_type not in node_types:
            raise refuse(f"{kind} cannot capture on a node of Type {node_type!r}")
        if require_up:
            flags = metadata.get("LinkFlags") or []
            if not isinstance(flags, (list, tuple)) or "UP" not in flags:
                raise refuse(NODE_DOWN)
        try:
            if_index = int(metadata.get("IfIndex") or 0)
        except (TypeError, ValueError):
            if_index = 0
        ipv4 = metadata.get("IPV4") or ()
        return cls(node_id, name, node_type, str(metadata.get("EncapType") or ""),
                   str(metadata.get("TID") or ""), if_index, netns,
                   str(metadata.get("MAC") or ""),
                   tuple(str(a) for a in ipv4) if isinstance(ipv4, (list, tuple)) else ())


@dataclass(frozen=True, slots=True)
class CaptureStats:
    packets_received: int = 0  # passed the filter (drops included, like libpcap)
    packets_dropped: int = 0  # kernel: buffer full
    packets_if_dropped: int = 0  # interface drops (libpcap's ps_ifdrop)
    flow_dropped: int = 0  # flows evicted by the table's LRU cap
    flow_count: int = 0


# ---- agent-level settings ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AgentCaptureSettings:
    """Agent configuration the capture types use (Skydive's defaults, SPEC §1i)."""

    pcapsocket_bind: str = "127.0.0.1"
    pcapsocket_ports: tuple[int, int] = (8100, 8132)
    sflow_bind: str = "127.0.0.1"  # local collectors of ovssflow
    sflow_ports: tuple[int, int] = (6345, 6355)
    netflow_bind: str = "127.0.0.1"  # local collectors of ovsnetflow
    netflow_ports: tuple[int, int] = (6365, 6375)
    sflow_default_port: int = 6343  # `sflow` captures without a Port
    ovsdb: str = "unix:///var/run/openvswitch/db.sock"
    agent_ip: str = ""  # this agent's address (sFlow agent address); "": worked out per target
    workers: int = 1  # afpacket readers per capture when its Workers is 0 (agent.capture.workers)
    ring_blocks: int = 32  # 1 MiB blocks of each reader's TPACKET_V3 ring (agent.capture.ring_blocks)


def effective_workers(spec: CaptureSpec, agent: AgentCaptureSettings) -> int:
    """The afpacket readers of a capture: its `Workers`, else the agent's default."""
    return spec.workers or agent.workers


# ---- capture targets ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TargetRequest:
    """What a capture asks of the target factory (skygraph.exporters.make_target)."""

    target_type: str
    target: str
    if_index: int
    name: str
    agent_ip: str
    mac: str
    header_size: int
    sampling_rate: int
    polling_interval: int
    session_id: int
    link_type: int


class Target(Protocol):
    """A capture target (SPEC §1c): packets and/or flows leave the agent.
    Raises nothing on send; `close` is called once when the capture stops."""

    @property
    def wants_packets(self) -> bool: ...  # every captured frame to `packets` (erspan, sflow)

    @property
    def wants_flows(self) -> bool: ...  # the capture's flow table runs; ticks to `flows`

    def packets(self, frames: Sequence[tuple[int, int, bytes]]) -> None:
        """(ts ns, wire length, captured bytes), from the capture's reader thread."""

    def flows(self, flows: Sequence[Flow], now_ms: int) -> None: ...

    def close(self) -> None: ...

    def stats(self) -> dict[str, int]: ...


# Builds a target; raises ValueError (the exporters' TargetError) naming the field.
TargetFactory = Callable[[TargetRequest], Target]


# ---- the contract ---------------------------------------------------------------------
@dataclass(frozen=True)
class SourceContext:
    """Everything a capture type may use to run one capture on one node."""

    spec: CaptureSpec
    node_id: str
    metadata: Mapping[str, Any]  # the node's metadata when the capture starts
    netns: str | None  # the node's namespace file; None: the agent's own
    settings: TableSettings
    exclude: Sequence[tuple[str, int]]  # (ip, port) of skygraph's own links (analyzers)
    sink: Sink  # flows of a local capture, called from the capture's threads
    agent: AgentCaptureSettings = field(default_factory=AgentCaptureSettings)
    set_metadata: SetMetadata = field(default=lambda key, value: None)
    make_target: TargetFactory | None = None
    clock: Clock = wall_clock_ms
    extra: Mapping[str, Any] = field(default_factory=dict)  # per-type tuning (tests)

    @property
    def name(self) -> str:
        return str(self.metadata.get("Name") or "")

    def error(self, reason: str) -> CaptureError:
        return CaptureError(self.node_id, self.name, reason)


class CaptureSource(Protocol):
    """One capture of one type on one node."""

    @property
    def id(self) -> str: ...  # the capture's UUID

    @property
    def running(self) -> bool: ...  # False once stopped or ended by itself

    @property
    def error(self) -> str | None: ...  # why it ended by itself (None: it did not)

    def start(self) -> None:
        """Blocking (namespaces, subprocesses, sockets); raises `CaptureError`."""

    def stop(self, timeout: float = 10.0) -> None:
        """Blocking: the final flows are in the sink (or target) when it returns."""

    def stats(self) -> CaptureStats: ...

    def metadata(self) -> dict[str, Any]:
        """Extra fields of the node's `Captures` entry (`PCAPSocket`, `SFlowSocket`, ...)."""


SourceFactory = Callable[[SourceContext], CaptureSource]
