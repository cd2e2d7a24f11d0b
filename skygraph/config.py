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
class AnalyzerSection:
    listen: str = "127.0.0.1:8082"


@dataclass(frozen=True)
class LoggingSection:
    level: str = "INFO"


@dataclass(frozen=True)
class Config:
    host_id: str = ""
    analyzer: AnalyzerSection = field(default_factory=AnalyzerSection)
    graph: GraphSection = field(default_factory=GraphSection)
    logging: LoggingSection = field(default_factory=LoggingSection)

    @property
    def data_dir(self) -> Path:
        return Path(self.graph.embedded.data_dir or default_data_dir())


def load(path: str | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
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
    env = os.environ if env is None else env
    return override(cfg, **{k: env.get(f"SKYGRAPH_GRAPH_{k.upper()}")
                            for k in ("uri", "user", "password", "database")})


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
