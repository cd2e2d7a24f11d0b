"""Types of the C extension `_fastflow.c` (the flow table's common case).

The records crossing the boundary are `PyStructSequence`s: named fields, also
unpackable as tuples in field order.
"""

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

VERSION: int
END: int
TICK: int
EXACT: int
EVENT: int
FLUSH: int
MORE: int

class Record(NamedTuple):
    """A record for the exact path."""
    number: int  # record number (touch order)
    frame: bytes
    ts: int
    orig: int
    fast: tuple[Any, Any, str] | None  # (View, Keys, LayersPath) of a common-case frame

class NewFlow(NamedTuple):
    """A common-case record creating its flow."""
    number: int  # record number (touch order)
    frame: bytes
    ts: int
    orig: int
    view: Any
    keys: Any
    path: str

class TcpEvent(NamedTuple):
    """SYN/FIN/RST of a flow in the table."""
    state: Any
    flags: int
    ab: bool
    ts: int
    ttl: int

class EchoEvent(NamedTuple):
    """ICMP echo of a flow whose RTT is unknown."""
    state: Any
    icmp_type: int
    ts: int
    slot: int

class Step(NamedTuple):
    """What `Tracker.run` stopped at."""
    kind: int
    pos: int
    queue: list[TcpEvent | NewFlow | Record] | None
    record: Record | None
    event: EchoEvent | None
    tick_ms: int

class Sums(NamedTuple):
    """A flow's sums since the last flush."""
    state: Any
    ab_packets: int
    ab_bytes: int
    ba_packets: int
    ba_bytes: int
    ab_flags: int
    ba_flags: int
    last_index: int
    depth: int
    last_ms: int

def xxh64(data: bytes, seed: int = 0) -> int: ...
def share(frame: bytes, shares: int) -> int: ...
def index(data: bytes, little: bool) -> tuple[bytes, int]: ...
def ring_records(ring: Any, bases: Iterable[int], block_size: int,
                 link_header: bool) -> bytes | None: ...

class Tracker:
    cached: int
    index: int
    def __init__(self, get: Callable[[int], Any], l2: bool, tcp_fast: bool, exact_only: bool,
                 mpls_port: int, special: Iterable[int], fold: bytes, types: tuple[type, ...],
                 strings: tuple[str, ...], raw_limit: int = 0,
                 raw_packet: type[tuple[Any, ...]] | None = None, share: int = 0,
                 shares: int = 1) -> None: ...
    def load(self, data: Any, offsets: Any, little: bool, nanosecond: bool) -> None: ...
    def release(self) -> None: ...
    def run(self, i: int, due_ms: int, room: int, slot: int = -1, mode: int = 0) -> Step: ...
    def flush(self) -> tuple[list[Sums], int]: ...
    def invalidate(self) -> None: ...
    def stale(self, key: int) -> None: ...
    def sweep(self) -> None: ...
    def reset(self) -> None: ...
