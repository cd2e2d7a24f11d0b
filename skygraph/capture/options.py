"""Capture options: what a capture asks of the decoder and the flow table.

Owns the frozen option values (Skydive's capture fields `LayerKeyMode`,
`ExtraLayers`, `ExtraTCPMetric`, `IPDefrag`, `ReassembleTCP`,
`RawPacketLimit`, plus the `flow.*` table settings) and their validation,
with errors that name the offending option.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from skygraph.capture.decoder import DEFAULT_MPLS_UDP_PORT

# Capture JSON bitmask values (flow/flow.go ExtraLayers).
EXTRA_LAYERS: Mapping[str, int] = MappingProxyType({"VRRP": 1, "DNS": 2, "DHCPv4": 4})
DEFAULT_MAX_RAW_PACKETS = 10
HOLD_TIMEOUT_MS = 15_000


class OptionError(ValueError):
    """A capture option has an invalid value; the message names the option."""


def _frozen(m: Mapping[str, int] | None) -> Mapping[str, int]:
    return MappingProxyType(dict(m or {}))


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    layer_key_mode: str = "L2"
    extra_layers: int = 0
    extra_tcp_metric: bool = False
    ip_defrag: bool = False
    reassemble_tcp: bool = False
    raw_packet_limit: int = 0
    max_raw_packets: int = DEFAULT_MAX_RAW_PACKETS
    mpls_udp_port: int = DEFAULT_MPLS_UDP_PORT
    # flow.application_ports.{tcp,udp}: port -> application name
    tcp_applications: Mapping[int, str] = field(default_factory=lambda: _frozen_str({}))
    udp_applications: Mapping[int, str] = field(default_factory=lambda: _frozen_str({}))

    def __post_init__(self) -> None:
        if self.layer_key_mode not in ("L2", "L3"):
            raise OptionError(f"layer key mode: {self.layer_key_mode!r} is not L2 or L3")
        if not 0 <= self.raw_packet_limit <= self.max_raw_packets:
            raise OptionError(f"raw packet limit: {self.raw_packet_limit} is outside "
                              f"0..{self.max_raw_packets}")
        if not 0 < self.mpls_udp_port < 65536:
            raise OptionError(f"MPLS UDP port: {self.mpls_udp_port} is not a UDP port")
        if self.extra_layers & ~7:
            raise OptionError(f"extra layers: bitmask {self.extra_layers} has unknown bits")

    @property
    def l2_mode(self) -> bool:
        return self.layer_key_mode == "L2"

    def wants(self, layer: str) -> bool:
        return bool(self.extra_layers & EXTRA_LAYERS.get(layer, 0))


def _frozen_str(m: Mapping[int, str]) -> Mapping[int, str]:
    return MappingProxyType({int(k): str(v).upper() for k, v in m.items()})


def application_ports(m: Mapping[int, str]) -> Mapping[int, str]:
    """Port map for `CaptureOptions.{tcp,udp}_applications` (names upper-cased)."""
    return _frozen_str(m)


def parse_extra_layers(names: list[str]) -> int:
    mask = 0
    for name in names:
        if name not in EXTRA_LAYERS:
            raise OptionError(f"extra layer: {name!r} is not one of "
                              f"{', '.join(EXTRA_LAYERS)}")
        mask |= EXTRA_LAYERS[name]
    return mask


@dataclass(frozen=True, slots=True)
class TableSettings:
    """`flow.*` settings of a flow table (seconds, as in the config file)."""

    update: int = 60
    expire: int = 600
    max_entries: int = 500_000
    application_timeout: Mapping[str, int] = field(
        default_factory=lambda: _frozen({"ARP": 10, "DNS": 10}))

    def __post_init__(self) -> None:
        for name in ("update", "expire", "max_entries"):
            if getattr(self, name) <= 0:
                raise OptionError(f"flow.{name}: must be positive, got {getattr(self, name)}")
        object.__setattr__(self, "application_timeout", _frozen(
            {k.upper(): v for k, v in self.application_timeout.items()}))
