"""The `SFlow` metadata of a node, built from sFlow counter samples (sflow/agent.go).

Owns Skydive's shape and rules: `SFlow: {IfMetrics: {<ifIndex>: IfMetric},
Metric: SFMetric, LastUpdateMetric: SFMetric}` where `Metric` holds the
interface counters summed over every ifIndex seen plus the latest Open
vSwitch, VLAN and Ethernet counters, and `LastUpdateMetric` the difference
from the previous `Metric` (`Start` = the previous update, `Last` = now),
set only when something changed.  A counter reported as 0 or as its type's
maximum ("unknown" in sFlow) keeps its previous value.  Zero fields are left
out, as Skydive's `omitempty` does.  Skydive adds the OVS datapath and
application gauges to `Metric` on every datagram (so they grow without
bound); here they are the latest reported values.  Pure: `now` is an
argument.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from skygraph.capture.sflow_decode import (
    APP_RESOURCES,
    COUNTER_RECORDS,
    ETHERNET_INTERFACE,
    GENERIC_INTERFACE,
    OVS_DP,
    VLAN_COUNTERS,
    CounterSample,
)

IF_FIELDS = ("IfInOctets", "IfInUcastPkts", "IfInMulticastPkts", "IfInBroadcastPkts",
             "IfInDiscards", "IfInErrors", "IfInUnknownProtos", "IfOutOctets", "IfOutUcastPkts",
             "IfOutMulticastPkts", "IfOutBroadcastPkts", "IfOutDiscards", "IfOutErrors")
_SKYDIVE = {fmt: tuple(n for n in COUNTER_RECORDS[fmt].names if n[0].isupper())
            for fmt in (ETHERNET_INTERFACE, VLAN_COUNTERS, APP_RESOURCES, OVS_DP)}
OTHER_FIELDS = tuple(n for names in _SKYDIVE.values() for n in names)
METRIC_FIELDS = IF_FIELDS + OTHER_FIELDS
U64_FIELDS = frozenset({"IfInOctets", "IfOutOctets", "VlanOctets", "OvsAppMemUsed",
                        "OvsAppMemMax"})
_MAX = {True: (1 << 64) - 1, False: (1 << 32) - 1}


def _known(name: str, value: int) -> bool:
    return value != 0 and value != _MAX[name in U64_FIELDS]


class SFlowCounters:
    """Accumulates counter samples into the node's `SFlow` metadata value."""

    def __init__(self) -> None:
        self.if_metrics: dict[int, dict[str, int]] = {}
        self.other: dict[str, int] = {}
        self.metric: dict[str, int] = {}
        self.last_update: dict[str, int] | None = None
        self.start: int | None = None
        self.last: int | None = None

    def update(self, samples: Iterable[CounterSample], now_ms: int) -> bool:
        """Apply one datagram's counter samples; True when the metadata changed."""
        seen = False
        for sample in samples:
            for record in sample.records:
                seen = True
                values = record.values
                if record.format == GENERIC_INTERFACE:
                    current = self.if_metrics.setdefault(values["ifIndex"], {})
                    for name in IF_FIELDS:
                        if _known(name, values[name]):
                            current[name] = values[name]
                else:
                    for name in _SKYDIVE.get(record.format, ()):
                        if _known(name, values[name]):
                            self.other[name] = values[name]
        if not seen:
            return False
        metric = {name: sum(m.get(name, 0) for m in self.if_metrics.values())
                  for name in IF_FIELDS}
        metric.update({name: self.other.get(name, 0) for name in OTHER_FIELDS})
        if not any(metric.values()):
            return False
        previous = self.metric
        delta = {name: metric[name] - previous.get(name, 0) for name in METRIC_FIELDS}
        changed = any(delta.values())
        if changed:
            self.last_update = {**delta, "Start": self.last or now_ms, "Last": now_ms}
        if self.start is None:
            self.start = now_ms
        self.metric = metric
        self.last = now_ms
        return changed or previous == {}

    def metadata(self) -> dict[str, Any]:
        """The `SFlow` metadata value (zero fields left out)."""
        out: dict[str, Any] = {
            "IfMetrics": {str(index): _nonzero(m) for index, m in sorted(self.if_metrics.items())},
            "Metric": _nonzero({**self.metric, "Start": self.start or 0, "Last": self.last or 0}),
        }
        if self.last_update is not None:
            out["LastUpdateMetric"] = _nonzero(self.last_update)
        return out


def _nonzero(values: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in values.items() if v}
