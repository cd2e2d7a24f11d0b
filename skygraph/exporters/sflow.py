"""sFlow v5 export: a capture's frames as sFlow v5 datagrams over UDP.

Owns the sFlow v5 wire format (XDR: the datagram header with the agent
address, flow samples carrying one raw packet header record, counter
samples carrying generic interface counters), the interface counters
gathered from the frames a capture sees, and `SFlowTarget`: random 1-in-N
sampling with its sample pool and drops, a counter sample every polling
interval from its own timer thread, samples packed into datagrams of at
most 1400 bytes.  The agent address is the capturing host.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from skygraph.exporters.layout import Layout
from skygraph.exporters.target import LINKTYPE_ETHERNET, Endpoint, TargetNode
from skygraph.topology.flow import Flow

log = logging.getLogger(__name__)

VERSION = 5
MAX_DATAGRAM = 1400  # bytes of sFlow data in one datagram (sFlow's default maximum)
U32 = 0xFFFFFFFF
U64 = (1 << 64) - 1
UNKNOWN = U32  # a counter the agent cannot know

ADDRESS_IPV4, ADDRESS_IPV6 = 1, 2
# data_format = enterprise << 12 | format; enterprise 0 = sFlow.org standard.
FLOW_SAMPLE_FORMAT, COUNTERS_SAMPLE_FORMAT = 1, 2
RAW_PACKET_HEADER = 1
GENERIC_INTERFACE_COUNTERS = 1
# header_protocol values
HEADER_ETHERNET, HEADER_IPV4, HEADER_IPV6 = 1, 11, 12
FCS_BYTES = 4  # an Ethernet frame on the wire carries a FCS the capture never sees
IFTYPE_ETHERNET, IFTYPE_OTHER = 6, 1
IF_STATUS_UP = 3  # bit 0 admin up, bit 1 operationally up: captures run on UP links
# sub_agent_id: one datagram stream per target in this process.
_sub_agents = itertools.count(1)

DATAGRAM_V4 = Layout(
    "sFlow v5 datagram (IPv4 agent)",
    ("version", "I"), ("agent_type", "I"), ("agent", "4s"), ("sub_agent_id", "I"),
    ("sequence_number", "I"), ("uptime", "I"), ("samples", "I"))
DATAGRAM_V6 = Layout(
    "sFlow v5 datagram (IPv6 agent)",
    ("version", "I"), ("agent_type", "I"), ("agent", "16s"), ("sub_agent_id", "I"),
    ("sequence_number", "I"), ("uptime", "I"), ("samples", "I"))
# sample_record and flow_record/counter_record: data_format, then opaque<> length.
OPAQUE = Layout("sFlow opaque record", ("data_format", "I"), ("length", "I"))
# A flow_sample carrying one sampled_header record, as one table: the sample
# record's opaque header, the flow_sample, the flow record's opaque header,
# the sampled_header; then the header bytes, padded to 4.
FLOW_SAMPLE = Layout(
    "sFlow flow_sample with one sampled_header",
    ("data_format", "I"), ("length", "I"),
    ("sequence_number", "I"), ("source_id", "I"),  # source: type << 24 | ifIndex
    ("sampling_rate", "I"), ("sample_pool", "I"), ("drops", "I"),
    ("input", "I"), ("output", "I"),  # ifIndex, 0 = unknown
    ("records", "I"),
    ("record_format", "I"), ("record_length", "I"),
    ("header_protocol", "I"), ("frame_length", "I"), ("stripped", "I"),
    ("header_length", "I"))
FLOW_SAMPLE_FIXED = FLOW_SAMPLE.size - 8  # bytes of the sample's data before the header
COUNTERS_SAMPLE_HEADER = Layout(
    "sFlow counters_sample", ("sequence_number", "I"), ("source_id", "I"), ("records", "I"))
IF_COUNTERS = Layout(
    "sFlow if_counters",
    ("if_index", "I"), ("if_type", "I"), ("if_speed", "Q"), ("if_direction", "I"),
    ("if_status", "I"),
    ("in_octets", "Q"), ("in_ucast", "I"), ("in_multicast", "I"), ("in_broadcast", "I"),
    ("in_discards", "I"), ("in_errors", "I"), ("in_unknown_protos", "I"),
    ("out_octets", "Q"), ("out_ucast", "I"), ("out_multicast", "I"), ("out_broadcast", "I"),
    ("out_discards", "I"), ("out_errors", "I"), ("promiscuous", "I"))


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


# ---- pure encoding -----------------------------------------------------------------------
def _opaque(data_format: int, body: bytes) -> bytes:
    return OPAQUE.pack(data_format=data_format, length=len(body)) + body


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


@dataclass(frozen=True, slots=True)
class FlowSample:
    sequence_number: int
    if_index: int  # data source and, for its direction, input or output
    sampling_rate: int
    sample_pool: int
    drops: int
    input: int
    output: int
    header_protocol: int
    frame_length: int
    stripped: int
    header: bytes


def encode_flow_sample(s: FlowSample) -> bytes:
    header = _padded(s.header)
    # Positional, in FLOW_SAMPLE's field order: this runs for every sampled frame.
    return FLOW_SAMPLE.struct.pack(
        FLOW_SAMPLE_FORMAT, FLOW_SAMPLE_FIXED + len(header),
        s.sequence_number & U32, s.if_index & 0xFFFFFF, s.sampling_rate, s.sample_pool & U32,
        s.drops & U32, s.input, s.output, 1,
        RAW_PACKET_HEADER, 16 + len(header),
        s.header_protocol, s.frame_length & U32, s.stripped, len(s.header)) + header


@dataclass(frozen=True, slots=True)
class InterfaceCounters:
    if_index: int
    if_type: int = IFTYPE_ETHERNET
    in_octets: int = 0
    in_ucast: int = 0
    in_multicast: int = 0
    in_broadcast: int = 0
    out_octets: int = 0
    out_ucast: int = 0
    out_multicast: int = 0
    out_broadcast: int = 0


def encode_counters_sample(sequence_number: int, c: InterfaceCounters) -> bytes:
    record = _opaque(GENERIC_INTERFACE_COUNTERS, IF_COUNTERS.pack(
        if_index=c.if_index, if_type=c.if_type, if_speed=0, if_direction=0,
        if_status=IF_STATUS_UP, in_octets=c.in_octets & U64, in_ucast=c.in_ucast & U32,
        in_multicast=c.in_multicast & U32, in_broadcast=c.in_broadcast & U32,
        in_discards=UNKNOWN, in_errors=UNKNOWN, in_unknown_protos=UNKNOWN,
        out_octets=c.out_octets & U64, out_ucast=c.out_ucast & U32,
        out_multicast=c.out_multicast & U32, out_broadcast=c.out_broadcast & U32,
        out_discards=UNKNOWN, out_errors=UNKNOWN, promiscuous=0))
    body = COUNTERS_SAMPLE_HEADER.pack(sequence_number=sequence_number & U32,
                                       source_id=c.if_index & 0xFFFFFF, records=1)
    return _opaque(COUNTERS_SAMPLE_FORMAT, body + record)


def encode_datagram(agent: str, sub_agent_id: int, sequence_number: int, uptime_ms: int,
                    samples: Sequence[bytes]) -> bytes:
    """A datagram of already encoded sample records."""
    ip = ipaddress.ip_address(agent or "0.0.0.0")
    layout, kind = (DATAGRAM_V4, ADDRESS_IPV4) if ip.version == 4 else (DATAGRAM_V6, ADDRESS_IPV6)
    return layout.pack(version=VERSION, agent_type=kind, agent=ip.packed,
                       sub_agent_id=sub_agent_id, sequence_number=sequence_number & U32,
                       uptime=uptime_ms & U32, samples=len(samples)) + b"".join(samples)


def header_protocol(frame: bytes, link_type: int) -> int:
    if link_type == LINKTYPE_ETHERNET:
        return HEADER_ETHERNET
    return HEADER_IPV6 if frame[:1] and frame[0] >> 4 == 6 else HEADER_IPV4


def batches(samples: Sequence[bytes], room: int) -> list[list[bytes]]:
    """Samples grouped in order so each group fits `room` bytes (a bigger sample alone)."""
    out: list[list[bytes]] = []
    size = room
    for s in samples:
        if not out or size + len(s) > room:
            out.append([])
            size = 0
        out[-1].append(s)
        size += len(s)
    return out


def _mac(text: str) -> bytes | None:
    try:
        raw = bytes.fromhex(text.replace(":", "").replace("-", ""))
    except ValueError:
        return None
    return raw if len(raw) == 6 else None


# ---- the sender ------------------------------------------------------------------------------
class SFlowTarget:
    """Samples a capture's frames 1 in `sampling_rate` (< 1: no flow samples) and sends
    sFlow v5 to a UDP collector, with interface counters every `polling_interval`
    seconds (0: none)."""

    wants_packets = True
    wants_flows = False

    def __init__(self, endpoint: Endpoint, node: TargetNode, *, header_size: int,
                 sampling_rate: int, polling_interval: int, link_type: int,
                 clock: Callable[[], int] = monotonic_ms, rng: random.Random | None = None,
                 poll: bool = True) -> None:
        self.endpoint = endpoint
        self.node = node
        self.header_size = header_size
        self.sampling_rate = sampling_rate
        self.polling_interval = polling_interval
        self.link_type = link_type
        self.agent = node.agent_ip or "0.0.0.0"
        self.sub_agent_id = next(_sub_agents)
        self._clock = clock
        self._start = clock()
        self._rng = rng or random.Random()
        self._mac = _mac(node.mac) if link_type == LINKTYPE_ETHERNET else None
        self._room = MAX_DATAGRAM - (DATAGRAM_V4 if ":" not in self.agent else DATAGRAM_V6).size
        self._sock = socket.socket(endpoint.family, socket.SOCK_DGRAM)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._sequence = 0  # datagrams
        self._flow_sequence = 0
        self._counter_sequence = 0
        self._pool = 0
        self._drops = 0
        self._skip = self._next_skip()
        # in/out octets, unicast, multicast, broadcast
        self._in = [0, 0, 0, 0]
        self._out = [0, 0, 0, 0]
        self._stats = {"Datagrams": 0, "Records": 0, "Counters": 0, "Pool": 0, "Drops": 0,
                       "Errors": 0}
        self._poller: threading.Thread | None = None
        if poll and polling_interval > 0:
            self._poller = threading.Thread(target=self._poll_loop, daemon=True,
                                            name=f"sflow counters {node.name}")
            self._poller.start()

    def _next_skip(self) -> int:
        n = self.sampling_rate
        # Random skips averaging N (sFlow asks for random sampling); N = 1: every frame.
        return 1 if n <= 1 else self._rng.randint(1, 2 * n - 1)

    def packets(self, frames: Sequence[tuple[int, int, bytes]]) -> None:
        try:
            self._packets(frames)
        except Exception:  # never into the capture's reader thread
            log.exception("sflow target %s: frames not exported", self.endpoint.host)
            with self._lock:
                self._stats["Errors"] += 1

    def _packets(self, frames: Sequence[tuple[int, int, bytes]]) -> None:
        samples: list[bytes] = []
        with self._lock:
            if self._closed.is_set():
                return
            own = self._mac
            sampling = self.sampling_rate >= 1
            for _ts, wire, data in frames:
                wire = max(wire, len(data))
                out = own is not None and data[6:12] == own
                dst = data[0:1]
                if self.link_type != LINKTYPE_ETHERNET or not dst or not dst[0] & 1:
                    kind = 1
                else:
                    kind = 3 if data[0:6] == b"\xff" * 6 else 2
                c = self._out if out else self._in
                c[0] += wire
                c[kind] += 1
                if not sampling:
                    continue
                self._pool += 1
                self._skip -= 1
                if self._skip > 0:
                    continue
                self._skip = self._next_skip()
                samples.append(self._flow_sample(data, wire, out))
            self._stats["Pool"] = self._pool
            self._send(samples, "Records")

    def flows(self, flows: Sequence[Flow], now_ms: int) -> None:
        """Not used: sFlow samples frames."""

    def _flow_sample(self, data: bytes, wire: int, out: bool) -> bytes:
        self._flow_sequence += 1
        index = self.node.if_index
        if self.link_type == LINKTYPE_ETHERNET:
            proto, length, stripped = HEADER_ETHERNET, wire + FCS_BYTES, FCS_BYTES
        else:
            proto, length, stripped = header_protocol(data, self.link_type), wire, 0
        return encode_flow_sample(FlowSample(
            self._flow_sequence, index, self.sampling_rate, self._pool, self._drops,
            0 if out else index, index if out else 0, proto, length, stripped,
            bytes(data[:self.header_size])))

    def counters(self) -> InterfaceCounters:
        with self._lock:
            return self._counters()

    def _counters(self) -> InterfaceCounters:
        return InterfaceCounters(
            self.node.if_index,
            IFTYPE_ETHERNET if self.link_type == LINKTYPE_ETHERNET else IFTYPE_OTHER,
            *self._in, *self._out)

    def poll(self) -> None:
        """Send one counter sample now (the timer thread calls this every interval)."""
        with self._lock:
            if self._closed.is_set():
                return
            self._counter_sequence += 1
            self._send([encode_counters_sample(self._counter_sequence, self._counters())],
                       "Counters")

    def _poll_loop(self) -> None:
        while not self._closed.wait(self.polling_interval):
            try:
                self.poll()
            except Exception:  # the timer must outlive one bad round
                log.exception("sflow target %s: counter sample failed", self.endpoint.host)

    def _send(self, samples: list[bytes], kind: str) -> None:
        for group in batches(samples, self._room):
            self._sequence += 1
            data = encode_datagram(self.agent, self.sub_agent_id, self._sequence,
                                   self._clock() - self._start, group)
            try:
                self._sock.sendto(data, self.endpoint.sockaddr)
            except OSError as exc:
                self._stats["Errors"] += 1
                if kind == "Records":
                    # sFlow's drops: samples taken but lost for lack of resources.
                    self._drops += len(group)
                    self._stats["Drops"] = self._drops
                log.debug("sflow target %s: %s", self.endpoint.host, exc)
                continue
            self._stats["Datagrams"] += 1
            self._stats[kind] += len(group)

    def close(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            self._sock.close()
        poller = self._poller
        if poller is not None and poller is not threading.current_thread():
            poller.join(5)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)
