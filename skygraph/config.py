"""Configuration: one YAML (or TOML) file into frozen dataclasses.

Unknown keys and wrong types are errors that name the key
(`graph.embedded.bolt_port: expected an integer, got 'x'`). Environment
variables `SKYGRAPH_GRAPH_URI`, `_USER`, `_PASSWORD`, `_DATABASE` and
`SKYGRAPH_DATA_DIR` override the file; command-line flags override both.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(Exception):
    pass


def default_data_dir() -> str:
    if os.environ.get("SKYGRAPH_DATA_DIR"):
        return os.environ["SKYGRAPH_DATA_DIR"]
    if os.geteuid() == 0:
        return "/var/lib/skygraph"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "skygraph")


@dataclass(frozen=True)
class EmbeddedSection:
    data_dir: str = ""          # default: $SKYGRAPH_DATA_DIR, /var/lib/skygraph (root), XDG
    bolt_port: int = 7687
    http_port: int = 2480
    heap: str = "1g"
    database: str = "skygraph"


MIN_HEAP_MB = 256  # below it the server's fixed query and compaction buffers do not fit


def heap_mb(text: str) -> int:
    """`graph.embedded.heap` ("1g", "768m": the JVM's -Xmx syntax) in MiB; a clear
    error instead of a server that does not start.  Sizing: docs/benchmarks.md."""
    value = text.strip().lower()
    unit = value[-1:] if value[-1:] in ("m", "g") else ""
    digits = value[:-1] if unit else value
    if not digits.isdigit() or not unit:
        raise ConfigError(f"graph.embedded.heap: {text!r} is not a size like 1g or 768m")
    mb = int(digits) * (1024 if unit == "g" else 1)
    if mb < MIN_HEAP_MB:
        raise ConfigError(f"graph.embedded.heap: {text!r} is below {MIN_HEAP_MB}m")
    return mb


@dataclass(frozen=True)
class WriterSection:
    max_batch: int = 2000
    max_delay: float = 0.05     # seconds a mutation may wait for its batch to fill
    max_queue: int = 100_000    # accepted, unwritten mutations before producers wait
    pending_edge_ttl: float = 300.0


@dataclass(frozen=True)
class GraphSection:
    uri: str = ""               # empty: the embedded server
    user: str = "neo4j"
    password: str = ""
    database: str = ""
    connect_timeout: float = 30.0  # seconds to wait for the database at start
    embedded: EmbeddedSection = field(default_factory=EmbeddedSection)
    writer: WriterSection = field(default_factory=WriterSection)


@dataclass(frozen=True)
class AuthSection:
    token: str = ""             # API token (Bearer); empty with no users_file: auth off
    users_file: str = ""        # `skygraph user add` writes it; enables Basic and /login
    session_ttl: float = 86_400.0  # seconds a /login token stays valid


@dataclass(frozen=True)
class TlsSection:
    cert_file: str = ""         # PEM; both set: the analyzer serves HTTPS/WSS and gRPC over TLS only
    key_file: str = ""
    client_ca_file: str = ""    # PEM; set: agents must present a certificate it signed (mutual TLS)


@dataclass(frozen=True)
class AgentTlsSection:
    ca_file: str = ""           # PEM the analyzer's certificate chains to; set: TLS to the analyzer
    cert_file: str = ""         # the agent's own certificate and key, for mutual TLS
    key_file: str = ""
    server_name: str = ""       # name expected in the analyzer's certificate, if not its address


@dataclass(frozen=True)
class ApiSection:
    max_depth: int = 12         # GraphQL query depth
    max_page: int = 1000        # GraphQL `first`
    max_results: int = 10_000   # Gremlin results per query
    query_timeout: float = 10.0  # seconds per Gremlin/GraphQL read
    max_raw_packets: int = 10   # captures' RawPacketLimit upper bound (SPEC §3 fix 6)


@dataclass(frozen=True)
class RpcSection:
    listen: str = "127.0.0.1:8083"   # gRPC: agents connect here (agent `analyzers`)


@dataclass(frozen=True)
class AnalyzerTopologySection:
    # Skydive's fabric lines (SPEC §1a): "TOR1[Name=tor1] -> TOR1_PORT1",
    # "TOR1_PORT1 -> *[Type=host,Name=agent1]/eth1" (skygraph/probes/fabric.py)
    fabric: tuple[str, ...] = ()


@dataclass(frozen=True)
class AnalyzerSection:
    listen: str = "127.0.0.1:8082"
    rpc: RpcSection = field(default_factory=RpcSection)
    auth: AuthSection = field(default_factory=AuthSection)
    tls: TlsSection = field(default_factory=TlsSection)
    api: ApiSection = field(default_factory=ApiSection)
    topology: AnalyzerTopologySection = field(default_factory=AnalyzerTopologySection)


@dataclass(frozen=True)
class LoggingSection:
    level: str = "INFO"


# Optional topology probes (host, netns and netlink always run on an agent).
KNOWN_PROBES = ("ovsdb",)


@dataclass(frozen=True)
class NetnsSection:
    run_path: str = "/var/run/netns"


@dataclass(frozen=True)
class NetlinkSection:
    metrics_update: float = 30.0     # seconds between counter refreshes; 0 = never


@dataclass(frozen=True)
class TopologySection:
    probes: tuple[str, ...] = ("ovsdb",)
    netns: NetnsSection = field(default_factory=NetnsSection)
    netlink: NetlinkSection = field(default_factory=NetlinkSection)


MAX_CAPTURE_WORKERS = 64   # afpacket readers of one capture (PACKET_FANOUT group)
MAX_RING_BLOCKS = 1024     # 1 MiB blocks of one reader's ring


@dataclass(frozen=True)
class CaptureSection:
    stats_update: float = 1.0        # seconds between capture counter refreshes
    # Listeners of the capture types (Skydive's agent.flow.* defaults); ranges "min-max".
    pcapsocket_bind: str = "127.0.0.1"
    pcapsocket_ports: str = "8100-8132"
    sflow_bind: str = "127.0.0.1"    # local sFlow collectors of ovssflow captures
    sflow_ports: str = "6345-6355"
    netflow_bind: str = "127.0.0.1"  # local NetFlow collectors of ovsnetflow captures
    netflow_ports: str = "6365-6375"
    # afpacket: readers per capture sharing its packets through PACKET_FANOUT (when the
    # capture's Workers is 0), and 1 MiB blocks of each reader's TPACKET_V3 ring.
    workers: int = 1                 # 1..64
    ring_blocks: int = 32            # 2..1024 (tcpdump -B, in MiB)


@dataclass(frozen=True)
class AgentSection:
    metadata: Mapping[str, Any] = field(default_factory=dict)   # any tree, kept nested
    topology: TopologySection = field(default_factory=TopologySection)
    capture: CaptureSection = field(default_factory=CaptureSection)
    token: str = ""                  # sent to the analyzer (its analyzer.auth.token)
    tls: AgentTlsSection = field(default_factory=AgentTlsSection)
    max_buffered_flows: int = 100_000  # flows kept while the analyzer is unreachable


@dataclass(frozen=True)
class FlowSection:
    update: int = 60                 # seconds between flow updates sent by agents
    expire: int = 600                # seconds of inactivity before a flow expires
    max_entries: int = 500_000       # flows per capture table (LRU beyond)
    # seconds a flow (its samples, raw packets) stays in the graph after it was last
    # written, whatever its packet times (an imported old trace too); 0 = forever
    retention: int = 86_400
    default_layer_key_mode: str = "L2"
    application_timeout: Mapping[str, Any] = field(default_factory=lambda: {"arp": 10, "dns": 10})


@dataclass(frozen=True)
class OvsSection:
    ovsdb: str = "unix:///var/run/openvswitch/db.sock"
    enable_stats: bool = False       # Ovs.Metric from Interface.statistics
    sync_timeout: float = 5.0        # how long the first resync waits for OVSDB


@dataclass(frozen=True)
class Config:
    host_id: str = ""
    analyzers: tuple[str, ...] = ("127.0.0.1:8083",)   # agents: analyzer gRPC addresses
    flow: FlowSection = field(default_factory=FlowSection)
    analyzer: AnalyzerSection = field(default_factory=AnalyzerSection)
    graph: GraphSection = field(default_factory=GraphSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    agent: AgentSection = field(default_factory=AgentSection)
    ovs: OvsSection = field(default_factory=OvsSection)

    @property
    def data_dir(self) -> Path:
        return Path(self.graph.embedded.data_dir or default_data_dir())


def load(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read `path` (YAML, or TOML by extension), then apply environment overrides."""
    raw: Any = {}
    if path:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
        try:
            raw = tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text) or {}
        except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: not valid {'TOML' if p.suffix == '.toml' else 'YAML'}: "
                              f"{exc}") from exc
    cfg = build(Config, raw, "")
    for probe in cfg.agent.topology.probes:
        if probe not in KNOWN_PROBES:
            raise ConfigError(f"agent.topology.probes: unknown probe {probe!r} "
                              f"(known: {', '.join(KNOWN_PROBES)})")
    for key, value in (("flow.update", cfg.flow.update), ("flow.expire", cfg.flow.expire),
                       ("flow.max_entries", cfg.flow.max_entries)):
        if value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value}")
    heap_mb(cfg.graph.embedded.heap)
    if cfg.flow.retention < 0:
        raise ConfigError(f"flow.retention: must be 0 (keep flows forever) or a number of "
                          f"seconds, got {cfg.flow.retention}")
    if cfg.analyzer.api.max_raw_packets < 0:
        raise ConfigError(f"analyzer.api.max_raw_packets: must be 0 or more (RawPacketLimit "
                          f"is 0..max_raw_packets), got {cfg.analyzer.api.max_raw_packets}")
    if cfg.flow.default_layer_key_mode not in ("L2", "L3"):
        raise ConfigError(f"flow.default_layer_key_mode: {cfg.flow.default_layer_key_mode!r} "
                          f"is not L2 or L3")
    if not cfg.analyzers:
        raise ConfigError("analyzers: at least one analyzer address is needed")
    tls = cfg.analyzer.tls
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError("analyzer.tls: cert_file and key_file must be given together")
    if tls.client_ca_file and not tls.cert_file:
        raise ConfigError("analyzer.tls.client_ca_file: needs analyzer.tls.cert_file and key_file")
    agent_tls = cfg.agent.tls
    if bool(agent_tls.cert_file) != bool(agent_tls.key_file):
        raise ConfigError("agent.tls: cert_file and key_file must be given together")
    if (agent_tls.cert_file or agent_tls.server_name) and not agent_tls.ca_file:
        raise ConfigError("agent.tls: ca_file is needed to talk TLS to the analyzer "
                          "(cert_file/key_file/server_name set without it)")
    for name in ("pcapsocket_ports", "sflow_ports", "netflow_ports"):
        port_range(getattr(cfg.agent.capture, name), f"agent.capture.{name}")
    for name, low, high in (("workers", 1, MAX_CAPTURE_WORKERS),
                            ("ring_blocks", 2, MAX_RING_BLOCKS)):
        value = getattr(cfg.agent.capture, name)
        if not low <= value <= high:
            raise ConfigError(f"agent.capture.{name}: {value} is outside {low}..{high}")
    if cfg.analyzer.topology.fabric:
        from skygraph.probes import fabric
        try:
            fabric.parse(cfg.analyzer.topology.fabric)
        except fabric.FabricError as exc:
            raise ConfigError(str(exc)) from None
    env = os.environ if env is None else env
    return override(cfg, **{k: env.get(f"SKYGRAPH_GRAPH_{k.upper()}")
                            for k in ("uri", "user", "password", "database")})


def port_range(value: str, key: str) -> tuple[int, int]:
    """A "min-max" port range (a single port is a range of one)."""
    low, _, high = value.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        raise ConfigError(f"{key}: expected a port range like 8100-8132, got {value!r}") from None
    if not 0 < first <= last < 65536:
        raise ConfigError(f"{key}: {value!r} is not a range of ports (1..65535, min <= max)")
    return first, last


def override(cfg: Config, uri: str | None = None, user: str | None = None,
             password: str | None = None, database: str | None = None) -> Config:
    """Apply graph settings given on the command line or in the environment (None = not given)."""
    g = cfg.graph
    graph = dataclasses.replace(g, uri=g.uri if uri is None else uri,
                                user=g.user if user is None else user,
                                password=g.password if password is None else password,
                                database=g.database if database is None else database)
    return dataclasses.replace(cfg, graph=graph)


T = typing.TypeVar("T")


def build(cls: type[T], raw: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping, naming the key of any error."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(raw).__name__}")
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"{name}: unknown key (known: {', '.join(sorted(fields))})")
        kwargs[key] = _convert(hints[key], value, name)
    return cls(**kwargs)


def _convert(hint: Any, value: Any, name: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return build(hint, value, name)  # type: ignore[arg-type]
    origin = typing.get_origin(hint)
    if origin is tuple:  # tuple[str, ...]: a list of strings
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
        return tuple(value)
    if origin is Mapping:  # Mapping[str, Any]: any tree with string keys
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{name}: expected a mapping with string keys, got {value!r}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type) and isinstance(value, hint) and not (
            hint is int and isinstance(value, bool)):
        return value
    if isinstance(hint, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _convert(option, value, name)
            except ConfigError:
                continue
    kind = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    raise ConfigError(f"{name}: expected {kind.get(hint, str(hint))}, got {value!r}")
