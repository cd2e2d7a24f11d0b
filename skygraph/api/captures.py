"""Capture resources (SPEC §1b): the `Capture` value, Skydive's validation and
duplicate rule, and their storage as `:Capture` nodes in the graph, so they
survive analyzer restarts.

A capture spec arrives with Skydive's JSON field names (REST body, or the
GraphQL input mapped to them). Validation collects one error per field, each
naming the field (`FieldError`), instead of stopping at the first. Starting
captures on agents is the orchestration's job (rpc); until an agent reports,
a capture is `pending` and its `Count` (nodes where it is active) is 0.
"""

from __future__ import annotations

import asyncio
import builtins
import ipaddress
import uuid as uuidlib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, NamedTuple

from skygraph.capture.bpf import BPFError, compile_filter
from skygraph.capture.options import EXTRA_LAYERS
from skygraph.gremlin import GremlinError, parse
from skygraph.topology.graph import wall_clock_ms
from skygraph.topology.store import GraphStore

# Probe capabilities (flow/probes/capabilities.go): BPF, raw packets, extra TCP
# metric, several captures of this type on one node.
CAPABILITIES: Mapping[str, tuple[bool, bool, bool, bool]] = {
    "afpacket": (True, True, True, True),
    "pcap": (True, True, True, True),
    "pcapsocket": (True, True, True, False),
    "sflow": (True, True, True, False),
    "ovssflow": (True, True, True, False),
    "ovsmirror": (True, True, True, False),
    "dpdk": (True, True, True, False),
    "ovsnetflow": (True, True, True, False),
    "ebpf": (False, False, True, False),
}
# Capture types allowed per node Type, the default first (SPEC §1b).
_INTERFACE_TYPES = (
    "internal", "veth", "tun", "bridge", "dummy", "gre", "bond", "can", "hsr", "ifb", "macvlan",
    "macvtap", "vlan", "vxlan", "gretap", "ip6gretap", "geneve", "ipoib", "vcan", "ipip",
    "ipvlan", "lowpan", "ip6tnl", "ip6gre", "sit", "device")
ALLOWED_TYPES: Mapping[str, tuple[str, ...]] = {
    "ovsbridge": ("ovssflow", "pcapsocket", "ovsnetflow"),
    "ovsport": ("ovsmirror",),
    "dpdkport": ("dpdk",),
    **{t: ("afpacket", "pcap", "pcapsocket", "sflow", "ebpf") for t in _INTERFACE_TYPES},
}


def capture_type_for(node_type: str, requested: str) -> str | None:
    """The capture type a node of `node_type` gets: `requested` if allowed, else the
    node type's default when none was requested; None when the node is skipped."""
    allowed = ALLOWED_TYPES.get(node_type, ())
    if not allowed:
        return None
    if not requested:
        return allowed[0]
    return requested if requested in allowed else None


TARGET_TYPES = ("", "local", "netflowv5", "sflow", "erspanv1", "erspanv2")
MAX_CAPTURE_LENGTH = 4096
BPF_SNAPLEN = 4096
READ_ONLY = frozenset({"UUID", "Count", "State", "CreatedAt"})
MAX_WORKERS = 64  # afpacket readers of one capture (capture.sources.base.MAX_WORKERS)


class FieldError(NamedTuple):
    field: str      # Skydive JSON name, e.g. "BPFFilter"
    message: str


class CaptureInvalid(ValueError):
    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))


class CaptureDuplicate(ValueError):
    def __init__(self, existing: str) -> None:
        self.existing = existing
        super().__init__(f"a capture with the same Type and GremlinQuery exists: {existing} "
                         f"(a second one needs a type that allows several per node and "
                         f"another BPFFilter)")


@dataclass(frozen=True, slots=True)
class Capture:
    uuid: str
    gremlin_query: str
    name: str = ""
    description: str = ""
    type: str = ""
    bpf_filter: str = ""
    header_size: int = 0
    raw_packet_limit: int = 0
    extra_tcp_metric: bool = False
    ip_defrag: bool = False
    reassemble_tcp: bool = False
    layer_key_mode: str = "L2"
    extra_layers: int = 0
    target: str = ""
    target_type: str = ""
    port: int = 0
    sampling_rate: int = 1
    polling_interval: int = 10
    session_id: int = 1     # ERSPAN session id (SPEC §3 fix 5)
    workers: int = 0        # afpacket readers (PACKET_FANOUT); 0: the agent's agent.capture.workers
    ttl: int = 0            # ms; 0 = kept until deleted
    created_at: int = 0     # ms epoch
    state: str = "pending"
    count: int = 0

    def to_json(self) -> dict[str, Any]:
        """Skydive's Capture JSON (plus skygraph's State, CreatedAt and TTL)."""
        out: dict[str, Any] = {json_name: getattr(self, attr) for json_name, attr in _JSON}
        out["UUID"] = self.uuid
        out["Count"] = self.count
        out["State"] = self.state
        out["CreatedAt"] = self.created_at
        return out

    def properties(self) -> dict[str, Any]:
        """What the `:Capture` node stores (everything but the live Count)."""
        props = {json_name: getattr(self, attr) for json_name, attr in _JSON}
        props.update(UUID=self.uuid, State=self.state, CreatedAt=self.created_at)
        if self.ttl:
            props["ExpiresAt"] = self.created_at + self.ttl
        return props

    @classmethod
    def from_properties(cls, props: Mapping[str, Any], count: int = 0) -> Capture:
        kwargs = {attr: props[json_name] for json_name, attr in _JSON if json_name in props}
        return cls(uuid=props["UUID"], created_at=props.get("CreatedAt") or 0,
                   state=props.get("State") or "pending", count=count, **kwargs)


# Skydive JSON name -> attribute, for every user-settable field.
_JSON: tuple[tuple[str, str], ...] = (
    ("GremlinQuery", "gremlin_query"), ("Name", "name"), ("Description", "description"),
    ("Type", "type"), ("BPFFilter", "bpf_filter"), ("HeaderSize", "header_size"),
    ("RawPacketLimit", "raw_packet_limit"), ("ExtraTCPMetric", "extra_tcp_metric"),
    ("IPDefrag", "ip_defrag"), ("ReassembleTCP", "reassemble_tcp"),
    ("LayerKeyMode", "layer_key_mode"), ("ExtraLayers", "extra_layers"), ("Target", "target"),
    ("TargetType", "target_type"), ("Port", "port"), ("SamplingRate", "sampling_rate"),
    ("PollingInterval", "polling_interval"), ("SessionID", "session_id"), ("TTL", "ttl"),
    ("Workers", "workers"),  # a skygraph extension: Skydive's Capture has no Workers
)
_ATTR = dict(_JSON)
_TYPES = {f.name: f.type for f in fields(Capture)}


def _value(spec: Mapping[str, Any], key: str, errors: list[FieldError]) -> Any:
    """The spec's value for `key` checked against the field's type, else the default."""
    attr = _ATTR[key]
    default = Capture.__dataclass_fields__[attr].default
    if default is MISSING:      # GremlinQuery: required, checked by the caller
        default = ""
    value = spec.get(key)
    if value is None:
        return default
    kind = _TYPES[attr]
    if kind == "str":
        if not isinstance(value, str):
            errors.append(FieldError(key, f"expected a string, got {type(value).__name__}"))
            return default
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            errors.append(FieldError(key, f"expected true or false, got {value!r}"))
            return default
        return value
    if key == "ExtraLayers":
        return value  # int bitmask or list of names, checked below
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(FieldError(key, f"expected an integer, got {value!r}"))
        return default
    return value


def _extra_layers(value: Any, errors: list[FieldError]) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= sum(EXTRA_LAYERS.values()):
            errors.append(FieldError("ExtraLayers", f"bitmask {value} has unknown bits "
                                                    f"(VRRP=1, DNS=2, DHCPv4=4)"))
            return 0
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        mask = 0
        for name in value:
            if name not in EXTRA_LAYERS:
                errors.append(FieldError("ExtraLayers", f"unknown layer {name!r} "
                                                        f"(known: {', '.join(EXTRA_LAYERS)})"))
                return 0
            mask |= EXTRA_LAYERS[name]
        return mask
    errors.append(FieldError("ExtraLayers", f"expected a bitmask or a list of layer names, "
                                            f"got {value!r}"))
    return 0


def _target(target: str, target_type: str, errors: list[FieldError]) -> None:
    if target_type not in TARGET_TYPES:
        errors.append(FieldError("TargetType", f"unknown target type {target_type!r} "
                                               f"(known: {', '.join(t for t in TARGET_TYPES if t)})"))
        return
    if not target:
        if target_type not in ("", "local"):
            errors.append(FieldError("Target", f"target type {target_type} needs a Target "
                                               f"(ip:port)"))
        return
    host, sep, port = target.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        ok = bool(sep) and port.isdigit() and 0 <= int(port) < 65536
    except ValueError:
        ok = False
    if not ok:
        errors.append(FieldError("Target", f"expected ip:port, got {target!r}"))
    elif target_type.startswith("erspan") and int(port) != 0:
        errors.append(FieldError("Target", "ERSPAN has no port: use ip:0"))
    elif target_type in ("netflowv5", "sflow") and int(port) == 0:
        errors.append(FieldError("Target", f"{target_type} needs a UDP port"))


def validate(spec: Mapping[str, Any], max_raw_packets: int,
             check_bpf: Callable[[str], None]) -> dict[str, Any]:
    """Check a capture spec (Skydive JSON names); return the Capture fields or raise
    CaptureInvalid with one error per offending field."""
    errors: list[FieldError] = []
    if not isinstance(spec, Mapping):
        raise CaptureInvalid([FieldError("", f"expected a JSON object, got {type(spec).__name__}")])
    for key in spec:
        if key not in _ATTR and key not in READ_ONLY:
            errors.append(FieldError(str(key), "unknown field"))
    v = {key: _value(spec, key, errors) for key in _ATTR}
    query = v["GremlinQuery"]
    if not query.strip():
        errors.append(FieldError("GremlinQuery", "required"))
    else:
        try:
            parse(query)
        except GremlinError as exc:
            errors.append(FieldError("GremlinQuery", str(exc)))
    ctype = v["Type"]
    caps = CAPABILITIES.get(ctype)
    if ctype and caps is None:
        errors.append(FieldError("Type", f"unknown capture type {ctype!r} "
                                         f"(known: {', '.join(CAPABILITIES)})"))
    if v["BPFFilter"]:
        if caps is not None and not caps[0]:
            errors.append(FieldError("BPFFilter", f"capture type {ctype} does not support BPF"))
        else:
            try:
                check_bpf(v["BPFFilter"])
            except BPFError as exc:
                errors.append(FieldError("BPFFilter", str(exc)))
    if not 0 <= v["RawPacketLimit"] <= max_raw_packets:
        errors.append(FieldError("RawPacketLimit", f"{v['RawPacketLimit']} is outside "
                                                   f"0..{max_raw_packets}"))
    elif v["RawPacketLimit"] and caps is not None and not caps[1]:
        errors.append(FieldError("RawPacketLimit", f"capture type {ctype} does not keep raw "
                                                   f"packets"))
    if v["ExtraTCPMetric"] and caps is not None and not caps[2]:
        errors.append(FieldError("ExtraTCPMetric", f"capture type {ctype} has no TCP metric"))
    size = v["HeaderSize"]
    if size != 0 and not 14 <= size <= MAX_CAPTURE_LENGTH:
        errors.append(FieldError("HeaderSize", f"{size} is not 0 (default 256) or "
                                               f"14..{MAX_CAPTURE_LENGTH}"))
    v["LayerKeyMode"] = v["LayerKeyMode"] or "L2"
    if v["LayerKeyMode"] not in ("L2", "L3"):
        errors.append(FieldError("LayerKeyMode", f"{v['LayerKeyMode']!r} is not L2 or L3"))
    v["ExtraLayers"] = _extra_layers(v["ExtraLayers"], errors)
    _target(v["Target"], v["TargetType"], errors)
    if not 0 <= v["Port"] < 65536:
        errors.append(FieldError("Port", f"{v['Port']} is not a port number"))
    if not 0 <= v["SessionID"] <= 1023:
        errors.append(FieldError("SessionID", f"{v['SessionID']} is outside 0..1023 (ERSPAN "
                                              "session ids have 10 bits)"))
    if not 0 <= v["Workers"] <= MAX_WORKERS:
        errors.append(FieldError("Workers", f"{v['Workers']} is outside 0..{MAX_WORKERS} "
                                            f"(afpacket readers; 0: the agent's default)"))
    for key in ("SamplingRate", "PollingInterval", "TTL"):
        if v[key] < 0:
            errors.append(FieldError(key, f"{v[key]} is negative"))
    if errors:
        raise CaptureInvalid(errors)
    return {_ATTR[k]: value for k, value in v.items()}


def is_duplicate(new: Capture, old: Capture) -> bool:
    """Skydive's rule: same Type and GremlinQuery, unless the type allows several
    captures per node and the BPF filters differ."""
    if new.type != old.type or new.gremlin_query != old.gremlin_query:
        return False
    caps = CAPABILITIES.get(new.type)
    multiple = caps[3] if caps else False
    return not (multiple and new.bpf_filter != old.bpf_filter)


def _check_bpf(expression: str) -> None:
    compile_filter(expression, 1, BPF_SNAPLEN)


LIST = "MATCH (c:Capture) RETURN properties(c) AS p ORDER BY c.CreatedAt, c.UUID"
GET = "MATCH (c:Capture {UUID: $uuid}) RETURN properties(c) AS p"
CREATE = "CREATE (c:Capture) SET c = $props"
DELETE = "MATCH (c:Capture {UUID: $uuid}) DELETE c RETURN count(*) AS n"
EXPIRED = ("MATCH (c:Capture) WHERE c.ExpiresAt IS NOT NULL AND c.ExpiresAt <= $now "
           "RETURN c.UUID AS uuid")


class Captures:
    """The capture resources, stored in the graph. `count_active(uuid)` counts the
    nodes where a capture is active (from the live graph's `Captures` metadata)."""

    def __init__(self, store: GraphStore, count_active: Callable[[str], int] = lambda _: 0,
                 *, max_raw_packets: int = 10, clock: Callable[[], int] = wall_clock_ms,
                 check_bpf: Callable[[str], None] = _check_bpf) -> None:
        self.store = store
        self.count_active = count_active
        self.max_raw_packets = max_raw_packets
        self.clock = clock
        self.check_bpf = check_bpf
        self._lock = asyncio.Lock()   # duplicate check and create are one step
        self.listeners: builtins.list[Callable[[], None]] = []  # told after create/delete

    def _capture(self, props: Mapping[str, Any]) -> Capture:
        return Capture.from_properties(props, self.count_active(props["UUID"]))

    async def list(self) -> builtins.list[Capture]:
        return [self._capture(r["p"]) for r in await self.store.read(LIST, {})]

    async def get(self, uuid: str) -> Capture | None:
        rows = await self.store.read(GET, {"uuid": uuid})
        return self._capture(rows[0]["p"]) if rows else None

    async def create(self, spec: Mapping[str, Any]) -> Capture:
        """Validate and store a capture; raise CaptureInvalid or CaptureDuplicate."""
        loop = asyncio.get_running_loop()
        # BPF compilation runs libpcap in a subprocess: keep it off the event loop.
        values = await loop.run_in_executor(
            None, lambda: validate(spec, self.max_raw_packets, self.check_bpf))
        async with self._lock:
            capture = Capture(uuid=str(uuidlib.uuid4()), created_at=self.clock(), **values)
            for old in await self.list():
                if is_duplicate(capture, old):
                    raise CaptureDuplicate(old.uuid)
            await self.store.run(CREATE, {"props": capture.properties()})
        self._changed()
        return capture

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    async def delete(self, uuid: str) -> bool:
        rows = await self.store.run(DELETE, {"uuid": uuid})
        deleted = bool(rows and rows[0]["n"])
        if deleted:
            self._changed()
        return deleted

    async def expire(self) -> builtins.list[str]:
        """Delete captures whose TTL has passed; return their ids."""
        gone = [r["uuid"] for r in await self.store.read(EXPIRED, {"now": self.clock()})]
        for uuid in gone:
            await self.delete(uuid)
        return gone
