"""AF_PACKET TPACKET_V3 receive ring on one interface of one network namespace.

Owns two things, kept apart:

* the ring's memory format (declared tables below: `tpacket_block_desc`,
  `tpacket3_hdr`, ...) and its pure parsing: one retired block -> a `Batch`
  of classic-pcap records (native byte order, nanosecond timestamps), the
  shape the flow table's batch path (`fastpath`) reads; VLAN tags the kernel
  took out of the frame (`TP_STATUS_VLAN_VALID`) are put back, as libpcap
  does, so flows see their Dot1Q layer;
* the socket: opened by a thread that entered the namespace with `setns`
  (Python 3.11 has no `os.setns`; a socket keeps its namespace after the
  thread leaves), classic BPF attached with SO_ATTACH_FILTER, the ring mapped,
  then bound to the interface index; `PACKET_STATISTICS` read into running
  totals (the kernel resets them on every read).

No packet can reach the ring unfiltered: the socket is created with protocol
0, which registers no packet hook, so nothing is queued until `bind` (with
ETH_P_ALL), and the filter is attached before that.  Whatever is in the ring
before `bind` is discarded anyway and the kernel counters reset, so the
counters and the ring only ever see filtered packets.  The filter's return
value is the snap length (libpcap compiles `ret #snaplen`), which is how the
kernel truncates frames to the capture's header size.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import select
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from skygraph.capture.fanout import program as fanout_program
from skygraph.capture.pcapfile import Block, PcapInfo
from skygraph.topology.netns import run_in

# ---- constants (linux/if_packet.h, linux/if_ether.h, asm/socket.h, sched.h) --
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
ETH_P_8021Q = 0x8100
SO_ATTACH_FILTER = 26
PACKET_FANOUT = 18
PACKET_FANOUT_DATA = 22
PACKET_FANOUT_CBPF = 6
PACKET_FANOUT_FLAG_UNIQUEID = 0x2000  # the kernel picks a group id no one else uses
# `Ring.open(fanout=NEW_GROUP)`: start a fanout group.  Not 0: the kernel's group ids
# are 0..65535 and the first group made after boot is 0 (a peer given id 0 must join it).
NEW_GROUP = -1

TP_STATUS_KERNEL = 0x0
TP_STATUS_USER = 0x1
TP_STATUS_COPY = 0x2
TP_STATUS_LOSING = 0x4
TP_STATUS_CSUMNOTREADY = 0x8
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_BLK_TMO = 0x20
TP_STATUS_VLAN_TPID_VALID = 0x40

MAC_ADDRS = 12  # destination + source MAC: where a VLAN tag goes back in


# ---- wire formats ------------------------------------------------------------
class Layout:
    """A C struct as a declared field table: (name, struct format) in order.

    Native byte order with standard sizes and no implicit padding ("="): the
    kernel's ring structs are naturally aligned, so the offsets are the C ones.
    """

    def __init__(self, name: str, fields: tuple[tuple[str, str], ...]) -> None:
        self.name = name
        self.fields = fields
        self.struct = struct.Struct("=" + "".join(fmt for _, fmt in fields))
        self.offsets: dict[str, int] = {}
        off = 0
        for field_name, fmt in fields:
            self.offsets[field_name] = off
            off += struct.calcsize("=" + fmt)

    @property
    def size(self) -> int:
        return self.struct.size

    def offset(self, field_name: str) -> int:
        return self.offsets[field_name]

    def view(self, *names: str) -> struct.Struct:
        """A struct reading only `names` (in table order), skipping the other bytes."""
        fmt, at = "=", 0
        for field_name, field_fmt in self.fields:
            if field_name in names:
                fmt += f"{self.offsets[field_name] - at}x{field_fmt}"
                at = self.offsets[field_name] + struct.calcsize("=" + field_fmt)
        return struct.Struct(fmt)

    def pack(self, **values: int | bytes) -> bytes:
        """Pack fields by name (missing ones are 0; pad fields take no value)."""
        args = [values.get(n, b"" if fmt.endswith("s") else 0)
                for n, fmt in self.fields if not fmt.endswith("x")]
        return self.struct.pack(*args)


TPACKET_REQ3 = Layout("tpacket_req3", (
    ("tp_block_size", "I"), ("tp_block_nr", "I"), ("tp_frame_size", "I"), ("tp_frame_nr", "I"),
    ("tp_retire_blk_tov", "I"),  # ms before the kernel retires a block that has packets
    ("tp_sizeof_priv", "I"), ("tp_feature_req_word", "I"),
))
# struct tpacket_block_desc { version; offset_to_priv; struct tpacket_hdr_v1 }
BLOCK_DESC = Layout("tpacket_block_desc", (
    ("version", "I"), ("offset_to_priv", "I"),
    ("block_status", "I"), ("num_pkts", "I"), ("offset_to_first_pkt", "I"), ("blk_len", "I"),
    ("seq_num", "Q"),
    ("ts_first_sec", "I"), ("ts_first_nsec", "I"), ("ts_last_sec", "I"), ("ts_last_nsec", "I"),
))
TPACKET3_HDR = Layout("tpacket3_hdr", (
    ("tp_next_offset", "I"), ("tp_sec", "I"), ("tp_nsec", "I"), ("tp_snaplen", "I"),
    ("tp_len", "I"), ("tp_status", "I"), ("tp_mac", "H"), ("tp_net", "H"),
    # union { struct tpacket_hdr_variant1 hv1; }
    ("tp_rxhash", "I"), ("tp_vlan_tci", "I"), ("tp_vlan_tpid", "H"), ("tp_padding", "H"),
    ("tp_padding2", "8x"),
))
TPACKET_STATS_V3 = Layout("tpacket_stats_v3", (
    ("tp_packets", "I"),  # packets that passed the filter, dropped ones included
    ("tp_drops", "I"),  # ring full
    ("tp_freeze_q_cnt", "I"),
))
SOCKADDR_LL = Layout("sockaddr_ll", (
    ("sll_family", "H"), ("sll_protocol", "H"),  # protocol in network byte order
    ("sll_ifindex", "i"), ("sll_hatype", "H"), ("sll_pkttype", "B"), ("sll_halen", "B"),
    ("sll_addr", "8s"),
))
# struct sock_fprog { unsigned short len; struct sock_filter *filter; } (native alignment)
SOCK_FPROG = struct.Struct("@HP")
# A classic pcap record header in native order with nanoseconds: sec, nsec, incl, orig.
PCAP_RECORD = struct.Struct("=IIII")
VLAN_TAG = struct.Struct("!HH")  # TPID, TCI
_U32 = struct.Struct("=I")

# tp_sec, tp_nsec, tp_snaplen, tp_len are one pcap record header, byte for byte.
_RECORD_AT = TPACKET3_HDR.offset("tp_sec")
assert [TPACKET3_HDR.offset(n) - _RECORD_AT for n in ("tp_nsec", "tp_snaplen", "tp_len")] == [4, 8, 12]
_STATUS_AT = BLOCK_DESC.offset("block_status")
_STATUS3_AT = TPACKET3_HDR.offset("tp_status")
_WALK = TPACKET3_HDR.view("tp_next_offset", "tp_mac")  # the per-packet walk
NATIVE_ORDER = "<" if sys.byteorder == "little" else ">"


# ---- pure parsing ----------------------------------------------------------------
RingMemory = bytes | mmap.mmap  # both slice to bytes


class BlockHeader(NamedTuple):
    version: int
    status: int
    num_pkts: int
    first: int  # offset of the first packet from the block start
    length: int
    seq_num: int


class Frame(NamedTuple):
    data: bytes  # captured bytes (at most the snap length)
    ts_ns: int
    wire_length: int


@dataclass(frozen=True, slots=True)
class Batch:
    """The packets of one ring block as classic-pcap records (native order, ns)."""

    block: Block
    count: int

    def frames(self) -> Iterator[Frame]:
        data = self.block.data
        unpack = PCAP_RECORD.unpack_from
        for off in self.block.offsets.tolist():
            sec, nsec, incl, orig = unpack(data, off)
            yield Frame(data[off + 16:off + 16 + incl], sec * 1_000_000_000 + nsec, orig)


def block_header(buf: RingMemory, offset: int = 0) -> BlockHeader:
    (version, _priv, status, num, first, length, seq,
     *_ts) = BLOCK_DESC.struct.unpack_from(buf, offset)
    return BlockHeader(version, status, num, first, length, seq)


def parse_block(buf: RingMemory, offset: int = 0,
                link_header: bool = True) -> Batch:
    """The packets of the block at `offset` (copied out: the block can be released).

    The walk over the packet headers is the only per-packet Python work: the
    record header of each packet (`tp_sec`..`tp_len`, already a pcap record
    header) is then moved with numpy into the 16 bytes just before its frame,
    inside the copy, so the copy itself is the batch.  `link_header`: frames
    start with an Ethernet header, so a VLAN tag the kernel stripped into
    `tp_vlan_tci` is put back after the MAC addresses (wire length +4).
    """
    head = block_header(buf, offset)
    if head.num_pkts == 0:
        return Batch(Block(b"", np.zeros(0, dtype=np.int64)), 0)
    end = offset + head.length if head.length > head.first else len(buf)
    raw = buf[offset:min(end, len(buf))]
    walk = _WALK.unpack_from
    positions: list[int] = []
    macs: list[int] = []
    at, mac_at = positions.append, macs.append
    off = head.first
    for _ in range(head.num_pkts):
        nxt, mac = walk(raw, off)
        at(off)
        mac_at(mac)
        if not nxt:
            break
        off += nxt
    a = np.frombuffer(raw, dtype=np.uint8).copy()
    pkt = np.array(positions, dtype=np.int64)
    rec = pkt + np.array(macs, dtype=np.int64) - PCAP_RECORD.size
    status = _at_every_byte(a, "=u4")[pkt + _STATUS3_AT]
    if (link_header and bool(np.any(status & TP_STATUS_VLAN_VALID))) \
            or bool(np.any(rec < _RECORD_AT + PCAP_RECORD.size)):
        return _parse_block_copying(raw, positions, link_header)
    records = _at_every_byte(a, f"V{PCAP_RECORD.size}")
    records[rec] = records[pkt + _RECORD_AT]
    return Batch(Block(a.tobytes(), rec), len(positions))


def _at_every_byte(a: np.ndarray[Any, Any], dtype: str) -> np.ndarray[Any, Any]:
    """A writable view of `a` with one `dtype` item starting at every byte offset
    (items overlap): fancy indexing then reads or writes whole fields at a time."""
    size = np.dtype(dtype).itemsize
    return np.ndarray(shape=(len(a) - size + 1,), dtype=dtype, buffer=a, offset=0, strides=(1,))


def _parse_block_copying(raw: bytes, positions: list[int], link_header: bool) -> Batch:
    """`parse_block` packet by packet, re-inserting stripped VLAN tags."""
    unpack = TPACKET3_HDR.struct.unpack_from
    parts: list[bytes] = []
    append = parts.append
    records: list[int] = []
    pos = 0
    for off in positions:
        (_nxt, sec, nsec, snap, length, status, mac, _net, _hash, tci,
         tpid, _pad) = unpack(raw, off)
        start = off + mac
        records.append(pos)
        if status & TP_STATUS_VLAN_VALID and link_header and snap >= MAC_ADDRS:
            if not status & TP_STATUS_VLAN_TPID_VALID or not tpid:
                tpid = ETH_P_8021Q
            append(PCAP_RECORD.pack(sec, nsec, snap + 4, length + 4))
            append(raw[start:start + MAC_ADDRS])
            append(VLAN_TAG.pack(tpid, tci & 0xFFFF))
            append(raw[start + MAC_ADDRS:start + snap])
            pos += PCAP_RECORD.size + VLAN_TAG.size + snap
        else:
            append(raw[off + _RECORD_AT:off + _RECORD_AT + PCAP_RECORD.size])
            append(raw[start:start + snap])
            pos += PCAP_RECORD.size + snap
    return Batch(Block(b"".join(parts), np.array(records, dtype=np.int64)), len(records))


def pcap_info(link_type: int, snaplen: int) -> PcapInfo:
    """How the flow table's batch path reads a `Batch` block."""
    return PcapInfo(link_type, snaplen, nanosecond=True, byte_order=NATIVE_ORDER, header_size=0)


@dataclass(slots=True)
class Taken:
    """Ready ring blocks as pcap blocks: `bases` are the ring blocks they still
    read from (given back with `Ring.give_back`)."""

    blocks: list[Block]
    count: int  # packets
    bases: list[int]
    taken: int = 0  # ring blocks read (0: none was ready)


def _load_ring_records() -> Callable[[Any, list[int], int, bool], bytes | None] | None:
    from skygraph.capture import fastpath
    return fastpath.native.ring_records if fastpath.native is not None else None


_ring_records = _load_ring_records()  # the in-place block reader, when the extension is built


# ---- namespace entry -------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


# ---- the socket ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RingGeometry:
    block_size: int = 1 << 20
    block_nr: int = 32  # agent.capture.ring_blocks
    frame_size: int = 2048  # only used for tp_frame_nr: V3 frames are variable
    retire_ms: int = 20

    @property
    def size(self) -> int:
        return self.block_size * self.block_nr


@dataclass(frozen=True, slots=True)
class KernelStats:
    packets: int = 0  # passed the filter (tp_packets: drops included, as libpcap's ps_recv)
    drops: int = 0  # ring full (tp_drops)


class RingError(OSError):
    """The ring could not be opened; the message says which step failed and why."""


class Ring:
    """A bound TPACKET_V3 socket and its mapped ring.  `next_batch`/`wait` belong to
    one reader thread; `stats` and `wakeup` may be called from any thread."""

    def __init__(self, sock: socket.socket, mm: mmap.mmap, geometry: RingGeometry,
                 link_header: bool, fanout_group: int | None = None) -> None:
        self.sock = sock
        self.mm = mm
        self.fanout_group = fanout_group  # the PACKET_FANOUT group it is in (None: alone)
        self.geometry = geometry
        self.link_header = link_header
        self.socket_error = 0  # last SO_ERROR seen (ENETDOWN: interface went down)
        self._current = 0
        self._lock = threading.Lock()
        self._packets = 0
        self._drops = 0
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | select.POLLERR)
        self._poll.register(self._wake_r, select.POLLIN)

    @classmethod
    def open(cls, netns: str | None, ifindex: int, program: bytes,
             geometry: RingGeometry | None = None, link_header: bool = True,
             fanout: int | None = None) -> Ring:
        """Open a ring on interface `ifindex` of namespace `netns` (None: ours), with
        the classic BPF `program` (packed `struct sock_filter`s) attached.

        `fanout`: share the interface's packets with other rings (PACKET_FANOUT, the
        `capture.fanout` hash choosing the ring of each packet): `NEW_GROUP` starts a
        group (its id is then `fanout_group`), a group id joins that group."""
        geo = geometry or RingGeometry()
        sock = run_in(netns, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
        try:
            mm, group = _setup(sock, ifindex, program, geo, fanout)
        except BaseException:
            sock.close()
            raise
        return cls(sock, mm, geo, link_header, group)

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def closed(self) -> bool:
        return self._closed

    def take(self, limit: int) -> Taken:
        """The ready blocks from the current one on (at most `limit`), as one pcap
        block: read in place in the ring when the extension is built (the blocks
        stay the reader's until `give_back`), else copied out and handed back at once."""
        mm, size = self.mm, self.geometry.block_size
        bases: list[int] = []
        current = self._current
        for _ in range(min(limit, self.geometry.block_nr)):
            base = current * size
            if not _U32.unpack_from(mm, base + _STATUS_AT)[0] & TP_STATUS_USER:
                break
            bases.append(base)
            current = (current + 1) % self.geometry.block_nr
        self._current = current
        if not bases:
            return Taken([], 0, [], 0)
        records = _ring_records(mm, bases, size, self.link_header) if _ring_records else None
        if records is not None:
            offsets = memoryview(records).cast("q")
            return Taken([Block(mm, offsets)] if len(offsets) else [], len(offsets), bases,
                         len(bases))
        blocks, count = [], 0
        for base in bases:  # without the extension, or a block it cannot read in place
            batch = parse_block(mm, base, self.link_header)
            _U32.pack_into(mm, base + _STATUS_AT, TP_STATUS_KERNEL)
            if batch.count:
                blocks.append(batch.block)
                count += batch.count
        return Taken(blocks, count, [], len(bases))

    def give_back(self, taken: Taken) -> None:
        """Hand the blocks of `taken` back to the kernel (their records are gone)."""
        for base in taken.bases:
            _U32.pack_into(self.mm, base + _STATUS_AT, TP_STATUS_KERNEL)
        taken.bases.clear()

    def next_batch(self) -> Batch | None:
        """The next block the kernel handed over (released once copied), or None."""
        mm = self.mm
        base = self._current * self.geometry.block_size
        if not _U32.unpack_from(mm, base + _STATUS_AT)[0] & TP_STATUS_USER:
            return None
        batch = parse_block(mm, base, self.link_header)
        _U32.pack_into(mm, base + _STATUS_AT, TP_STATUS_KERNEL)
        self._current = (self._current + 1) % self.geometry.block_nr
        return batch

    def discard(self) -> int:
        """Hand every ready block back unread; return how many packets that dropped."""
        self._current = 0
        return discard_ready(self.mm, self.geometry)

    def wait(self, timeout_ms: int) -> None:
        """Sleep until a block may be ready, `wakeup` is called or `timeout_ms` pass."""
        for fd, events in self._poll.poll(max(0, timeout_ms)):
            if fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 64):
                        pass
            elif events & select.POLLERR:
                self.socket_error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)

    def wakeup(self) -> None:
        with self._lock:
            if self._closed:  # the pipe's descriptors may belong to someone else by now
                return
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"\0")

    def interface_gone(self) -> bool:
        """The bound interface was unregistered (the kernel unbinds: ifindex -1)."""
        addr = _getsockname(self.sock)
        return addr is None or addr <= 0

    def stats(self) -> KernelStats:
        """Running totals of the kernel counters since the ring was bound."""
        with self._lock:
            if not self._closed:
                self._read_stats()
            return KernelStats(self._packets, self._drops)

    def _read_stats(self) -> None:
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, TPACKET_STATS_V3.size)
        packets, drops, _freeze = TPACKET_STATS_V3.struct.unpack(raw)
        self._packets += packets
        self._drops += drops

    def reset_stats(self) -> None:
        with self._lock:
            self._read_stats()
            self._packets = self._drops = 0

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            with contextlib.suppress(OSError):
                self._read_stats()
            self._closed = True
            self.mm.close()
            self.sock.close()
            os.close(self._wake_r)
            os.close(self._wake_w)


# `ret #0`: a socket bound to join a fanout group takes no packet of its own meanwhile.
DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)


def _setup(sock: socket.socket, ifindex: int, program: bytes, geo: RingGeometry,
           fanout: int | None = None) -> tuple[mmap.mmap, int | None]:
    step = "PACKET_VERSION"
    try:
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        step = "SO_ATTACH_FILTER"
        # A fanout member must be bound before it joins; until it has joined, every
        # packet would come to it besides its group: it filters them all out meanwhile.
        attach_filter(sock, program if fanout is None else DROP_ALL)
        step = "PACKET_RX_RING"
        req = TPACKET_REQ3.pack(
            tp_block_size=geo.block_size, tp_block_nr=geo.block_nr, tp_frame_size=geo.frame_size,
            tp_frame_nr=geo.block_size // geo.frame_size * geo.block_nr,
            tp_retire_blk_tov=geo.retire_ms)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        step = "mmap"
        mm = mmap.mmap(sock.fileno(), geo.size, mmap.MAP_SHARED,
                       mmap.PROT_READ | mmap.PROT_WRITE)
    except OSError as exc:
        raise RingError(exc.errno, f"{step}: {exc.strerror or exc}") from exc
    try:
        step = "bind"
        discard_ready(mm, geo)
        sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, TPACKET_STATS_V3.size)  # reset
        _bind(sock, ifindex)
    except OSError as exc:
        mm.close()
        raise RingError(exc.errno, f"{step} to interface index {ifindex}: "
                                   f"{exc.strerror or exc}") from exc
    if fanout is None:
        return mm, None
    try:
        step = "PACKET_FANOUT"
        group = join_fanout(sock, fanout)
        step = "SO_ATTACH_FILTER"
        attach_filter(sock, program)
        sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, TPACKET_STATS_V3.size)  # reset
    except OSError as exc:
        mm.close()
        raise RingError(exc.errno, f"{step}: {exc.strerror or exc}") from exc
    return mm, group


def join_fanout(sock: socket.socket, group: int) -> int:
    """Join fanout group `group` (`NEW_GROUP`: a new one, with the fanout hash as its
    program); return its id."""
    if group == NEW_GROUP:
        flags = PACKET_FANOUT_CBPF | PACKET_FANOUT_FLAG_UNIQUEID
        sock.setsockopt(SOL_PACKET, PACKET_FANOUT, flags << 16)
        _set_program(sock, SOL_PACKET, PACKET_FANOUT_DATA, fanout_program().pack())
        return int(sock.getsockopt(SOL_PACKET, PACKET_FANOUT)) & 0xFFFF
    if not 0 <= group <= 0xFFFF:
        raise ValueError(f"a fanout group id is 0..65535, not {group}")
    sock.setsockopt(SOL_PACKET, PACKET_FANOUT, group | PACKET_FANOUT_CBPF << 16)
    joined = int(sock.getsockopt(SOL_PACKET, PACKET_FANOUT)) & 0xFFFF
    if joined != group:  # not expected from the kernel; a split capture must not double
        raise OSError(errno.EINVAL, f"joined fanout group {joined}, not {group}")
    return group


def discard_ready(mm: mmap.mmap, geo: RingGeometry) -> int:
    """Hand every ready block of the ring back unread; return how many packets that was."""
    dropped = 0
    for i in range(geo.block_nr):
        base = i * geo.block_size
        head = block_header(mm, base)
        if head.status & TP_STATUS_USER:
            dropped += head.num_pkts
            _U32.pack_into(mm, base + _STATUS_AT, TP_STATUS_KERNEL)
    return dropped


def attach_filter(sock: socket.socket, program: bytes) -> None:
    """SO_ATTACH_FILTER with packed `struct sock_filter`s (8 bytes each)."""
    _set_program(sock, socket.SOL_SOCKET, SO_ATTACH_FILTER, program)


def _set_program(sock: socket.socket, level: int, option: int, program: bytes) -> None:
    """A socket option taking a `struct sock_fprog` of packed classic-BPF instructions."""
    count = len(program) // 8
    if count == 0 or len(program) % 8:
        raise ValueError("a BPF program is a non-empty array of 8-byte instructions")
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = SOCK_FPROG.pack(count, ctypes.addressof(buf))
    sock.setsockopt(level, option, fprog)


def _bind(sock: socket.socket, ifindex: int) -> None:
    addr = SOCKADDR_LL.pack(sll_family=socket.AF_PACKET, sll_protocol=socket.htons(ETH_P_ALL),
                            sll_ifindex=ifindex)
    if _libc.bind(sock.fileno(), ctypes.c_char_p(addr), len(addr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _getsockname(sock: socket.socket) -> int | None:
    """The interface index the socket is bound to (-1 once the kernel unbound it)."""
    buf = ctypes.create_string_buffer(SOCKADDR_LL.size)
    size = ctypes.c_uint32(SOCKADDR_LL.size)
    if _libc.getsockname(sock.fileno(), buf, ctypes.byref(size)) != 0:
        err = ctypes.get_errno()
        if err == errno.EBADF:
            return None
        raise OSError(err, os.strerror(err))
    values = SOCKADDR_LL.struct.unpack(buf.raw)
    ifindex: int = values[2]
    return ifindex
