"""The kernel half of the `ebpf` capture: a socket program aggregating flows in a map.

Owns the map formats (declared tables: the flow key, the flow value, the
per-CPU statistics) and the socket filter that fills them, written with
`ebpf_asm`.  For every packet of the interface the program:

* counts it (and its bytes) in the per-CPU statistics array;
* parses Ethernet, up to two VLAN tags, IPv4 (options, fragments) or IPv6
  (up to four extension headers), then TCP/UDP/SCTP ports or the ICMP
  type/code/id, with the legacy packet loads (`ld_abs`/`ld_ind`, which end
  the program on a short packet); other ethertypes are keyed by MAC pair;
* builds a direction-free key: the two endpoints ordered (address bytes,
  then ports), echo request and reply folded together, so both directions
  of a conversation share one entry;
* on the first packet of an entry stores its timestamp, its direction, its
  first `HEAD_SIZE` bytes (`bpf_skb_load_bytes`) and any VLAN tag the
  device took out of the frame, so user space decodes one real header with
  the same decoder as afpacket; a full map counts the packet in `MAP_FULL`;
* adds packets and bytes per direction with atomic adds, ORs the TCP flags
  per direction, sets the last timestamp (`bpf_ktime_get_ns`,
  CLOCK_MONOTONIC), the first SYN (with its TTL), FIN and RST time per
  direction, and the RTT marks (first SYN or echo request, then the first
  SYN/ACK, RST or echo reply);
* returns 0, so no packet is ever queued to the socket.

Pure: returns a `Program`; `ebpf_sys` loads it.
"""

from __future__ import annotations

from skygraph.capture.afpacket import Layout
from skygraph.capture.ebpf_asm import (
    FP,
    KTIME_GET_NS,
    MAP_LOOKUP_ELEM,
    MAP_UPDATE_ELEM,
    R0,
    R1,
    R2,
    R3,
    R4,
    R6,
    R7,
    R8,
    R9,
    SKB_LOAD_BYTES,
    Program,
)

HEAD_SIZE = 128  # bytes of an entry's first packet kept for user space to decode
MAX_VLAN_TAGS = 2
MAX_IPV6_EXTENSIONS = 4

# struct flow_key: endpoints ordered so that lo <= hi (address bytes, then port).
FLOW_KEY = Layout("flow_key", (
    ("lo", "16s"), ("hi", "16s"),  # IPv4 in the first 4 bytes, MACs (non-IP) in the first 6
    ("port_lo", "H"), ("port_hi", "H"),  # TCP/UDP/SCTP ports, host order
    ("icmp", "I"),  # type<<24 | code<<16 | id, echo request/reply folded to the request type
    ("ethertype", "H"), ("proto", "B"),
    ("fragment", "B"),  # 1: an IP fragment (no transport header read)
    ("pad", "4x"),
))
# struct flow_value: index 0 of a pair = packets sent by the `lo` endpoint.
FLOW_VALUE = Layout("flow_value", (
    ("packets0", "Q"), ("packets1", "Q"), ("bytes0", "Q"), ("bytes1", "Q"),
    ("first_ns", "Q"), ("last_ns", "Q"),
    ("syn0", "Q"), ("syn1", "Q"), ("fin0", "Q"), ("fin1", "Q"), ("rst0", "Q"), ("rst1", "Q"),
    ("rtt_start", "Q"), ("rtt_end", "Q"),
    ("syn_ttl0", "B"), ("syn_ttl1", "B"),
    ("first_dir", "B"),  # direction of the entry's first packet
    ("vlan_present", "B"), ("vlan_tci", "H"), ("vlan_proto", "H"),  # a tag out of the frame
    ("head_len", "I"),  # bytes of `head` filled
    ("first_len", "I"),  # wire length of the first packet
    ("tcp_flags0", "I"), ("tcp_flags1", "I"),  # OR of every packet's TCP flags
    ("head", f"{HEAD_SIZE}s"),
))
# Per-CPU u64 counters.
STAT_PACKETS, STAT_BYTES, STAT_MAP_FULL = 0, 1, 2
STAT_COUNT = 3

# struct __sk_buff fields a socket filter may read (linux/bpf.h).
SKB_LEN, SKB_PKT_TYPE, SKB_PROTOCOL = 0, 4, 16
SKB_VLAN_PRESENT, SKB_VLAN_TCI, SKB_VLAN_PROTO = 20, 24, 28
PACKET_OUTGOING = 4
EEXIST = 17
NOEXIST = 1

ETH_IPV4, ETH_IPV6, ETH_DOT1Q, ETH_QINQ = 0x0800, 0x86DD, 0x8100, 0x88A8
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6, IPPROTO_SCTP = 1, 6, 17, 58, 132
IPV6_SKIPPED = (0, 43, 60)  # hop-by-hop, routing, destination options
IPV6_FRAGMENT = 44
RTT_OPEN, RTT_CLOSE = 1, 2

# The stack frame (offsets from r10).
IDX = -4  # u32 key of the statistics array
INFO = -16  # u8 fields below, zeroed per packet
I_DIR, I_FLAGS, I_TTL, I_RTT, I_NH, I_IHL = 0, 1, 2, 3, 4, 5
KEY = INFO - FLOW_KEY.size
VALUE = KEY - FLOW_VALUE.size
assert FLOW_KEY.size % 8 == 0 and FLOW_VALUE.size % 8 == 0 and VALUE >= -512


def _k(name: str) -> int:
    return KEY + FLOW_KEY.offset(name)


def _v(name: str) -> int:
    return FLOW_VALUE.offset(name)


def flow_program(flows_fd: int, stats_fd: int, *, ethernet: bool = True,
                 skip_outgoing: bool = False) -> Program:
    """The socket filter.  `ethernet`: frames start with an Ethernet header (else raw
    IP, the ethertype read from the socket buffer); `skip_outgoing`: ignore packets
    the host sends (loopback shows each packet twice, going out and coming in)."""
    p = Program()
    p.movr(R6, R1)  # the legacy packet loads read the socket buffer from r6
    if skip_outgoing:
        p.ldx(4, R0, R6, SKB_PKT_TYPE).jump("jeq", R0, PACKET_OUTGOING, "out")
    # Wire length: a tag the device keeps out of the frame still crossed the wire.
    p.ldx(4, R7, R6, SKB_LEN)
    p.ldx(4, R0, R6, SKB_VLAN_PRESENT).jump("jeq", R0, 0, "untagged").add(R7, 4)
    p.label("untagged")
    _count(p, stats_fd, STAT_PACKETS, 1)
    _count(p, stats_fd, STAT_BYTES, reg=R7)
    for off in range(KEY, INFO + 8, 8):
        p.st(8, FP, off, 0)
    p.call(KTIME_GET_NS).movr(R8, R0)
    if ethernet:
        _ethernet(p)
    else:
        p.ldx(4, R0, R6, SKB_PROTOCOL).to_be(R0, 16).mov(R9, 0)
        p.stx(2, FP, _k("ethertype"), R0)
        p.jump("jeq", R0, ETH_IPV4, "ipv4").jump("jeq", R0, ETH_IPV6, "ipv6").goto("out")
    _ipv4(p)
    _ipv6(p)
    _transport(p)
    _order(p)
    _account(p, flows_fd, stats_fd)
    p.label("out").ret(0)
    return p


def _count(p: Program, stats_fd: int, index: int, imm: int = 0, reg: int | None = None) -> None:
    """Add `imm` (or register `reg`, which must survive a call) to a per-CPU counter."""
    skip = p.unique("counted")
    p.st(4, FP, IDX, index).ld_map_fd(R1, stats_fd).movr(R2, FP).add(R2, IDX)
    p.call(MAP_LOOKUP_ELEM).jump("jeq", R0, 0, skip)
    p.ldx(8, R1, R0, 0)
    if reg is None:
        p.add(R1, imm)
    else:
        p.addr(R1, reg)
    p.stx(8, R0, 0, R1).label(skip)


def _ethernet(p: Program) -> None:
    p.mov(R9, 14).ld_abs(2, 12)
    for i in range(MAX_VLAN_TAGS):
        p.jump("jeq", R0, ETH_DOT1Q, f"tag{i}").jump("jeq", R0, ETH_QINQ, f"tag{i}").goto("l3")
        p.label(f"tag{i}").add(R9, 4).ld_ind(2, R9, -2)
    p.label("l3").stx(2, FP, _k("ethertype"), R0)
    p.jump("jeq", R0, ETH_IPV4, "ipv4").jump("jeq", R0, ETH_IPV6, "ipv6")
    # Not IP: the MAC pair (destination at 0, source at 6).
    for at, field in ((0, "hi"), (6, "lo")):
        p.ld_abs(4, at).to_be(R0, 32).stx(4, FP, _k(field), R0)
        p.ld_abs(2, at + 4).to_be(R0, 16).stx(2, FP, _k(field) + 4, R0)
    p.goto("order")


def _ipv4(p: Program) -> None:
    p.label("ipv4")
    p.ld_ind(1, R9, 0).alu("and", R0, 0x0F).alu("lsh", R0, 2)
    p.jump("jlt", R0, 20, "out").stx(1, FP, INFO + I_IHL, R0)
    p.ld_ind(1, R9, 8).stx(1, FP, INFO + I_TTL, R0)
    p.ld_ind(1, R9, 9).stx(1, FP, _k("proto"), R0)
    p.ld_ind(2, R9, 6).alu("and", R0, 0x3FFF).jump("jeq", R0, 0, "v4whole")
    p.st(1, FP, _k("fragment"), 1)
    p.label("v4whole")
    p.ld_ind(4, R9, 12).to_be(R0, 32).stx(4, FP, _k("lo"), R0)
    p.ld_ind(4, R9, 16).to_be(R0, 32).stx(4, FP, _k("hi"), R0)
    p.ldx(1, R0, FP, INFO + I_IHL).addr(R9, R0).goto("l4")


def _ipv6(p: Program) -> None:
    p.label("ipv6")
    p.ld_ind(1, R9, 7).stx(1, FP, INFO + I_TTL, R0)
    p.ld_ind(1, R9, 6).stx(1, FP, INFO + I_NH, R0)
    for w in range(4):
        p.ld_ind(4, R9, 8 + 4 * w).to_be(R0, 32).stx(4, FP, _k("lo") + 4 * w, R0)
        p.ld_ind(4, R9, 24 + 4 * w).to_be(R0, 32).stx(4, FP, _k("hi") + 4 * w, R0)
    p.add(R9, 40)
    for i in range(MAX_IPV6_EXTENSIONS):
        ext, frag, nxt = f"ext{i}", f"frag{i}", f"next{i}"
        p.ldx(1, R0, FP, INFO + I_NH)
        for nh in IPV6_SKIPPED:
            p.jump("jeq", R0, nh, ext)
        p.jump("jeq", R0, IPV6_FRAGMENT, frag).goto("v6done")
        p.label(ext).ld_ind(1, R9, 0).stx(1, FP, INFO + I_NH, R0)
        p.ld_ind(1, R9, 1).add(R0, 1).alu("lsh", R0, 3).addr(R9, R0).goto(nxt)
        # Fragment offset (13 bits, in 8-byte units) and the M flag.
        p.label(frag).ld_ind(2, R9, 2).alu("and", R0, 0xFFF9).jump("jeq", R0, 0, f"whole{i}")
        p.st(1, FP, _k("fragment"), 1)
        p.label(f"whole{i}").ld_ind(1, R9, 0).stx(1, FP, INFO + I_NH, R0).add(R9, 8)
        p.label(nxt)
    p.label("v6done").ldx(1, R0, FP, INFO + I_NH).stx(1, FP, _k("proto"), R0)


def _transport(p: Program) -> None:
    p.label("l4")
    p.ldx(1, R0, FP, _k("fragment")).jump("jne", R0, 0, "order")
    p.ldx(1, R0, FP, _k("proto"))
    p.jump("jeq", R0, IPPROTO_TCP, "tcp").jump("jeq", R0, IPPROTO_UDP, "ports")
    p.jump("jeq", R0, IPPROTO_SCTP, "ports").jump("jeq", R0, IPPROTO_ICMP, "icmp4")
    p.jump("jeq", R0, IPPROTO_ICMPV6, "icmp6").goto("order")

    p.label("tcp").ld_ind(1, R9, 13).stx(1, FP, INFO + I_FLAGS, R0)
    p.movr(R1, R0).alu("and", R1, TCP_SYN | TCP_ACK).jump("jeq", R1, TCP_SYN, "rtt_open")
    p.movr(R1, R0).alu("and", R1, TCP_SYN | TCP_RST).jump("jeq", R1, 0, "ports")
    p.st(1, FP, INFO + I_RTT, RTT_CLOSE).goto("ports")
    p.label("rtt_open").st(1, FP, INFO + I_RTT, RTT_OPEN)
    p.label("ports")
    p.ld_ind(2, R9, 0).stx(2, FP, _k("port_lo"), R0)
    p.ld_ind(2, R9, 2).stx(2, FP, _k("port_hi"), R0).goto("order")

    for name, request, reply, with_id in (("icmp4", 8, 0, True), ("icmp6", 128, 129, False)):
        echo = f"{name}echo"
        p.label(name).ld_ind(1, R9, 0)
        p.jump("jeq", R0, request, f"{echo}req").jump("jeq", R0, reply, f"{echo}rep")
        _icmp_word(p, with_id)  # other types: the raw type (and v4's id field)
        p.label(f"{echo}req").st(1, FP, INFO + I_RTT, RTT_OPEN).goto(echo)
        p.label(f"{echo}rep").st(1, FP, INFO + I_RTT, RTT_CLOSE)
        p.label(echo).mov(R0, request)
        _icmp_word(p, True)


def _icmp_word(p: Program, with_id: bool) -> None:
    """key.icmp = r0 (type) << 24 | code << 16 | id, then go order the key."""
    p.alu("lsh", R0, 24).stx(4, FP, _k("icmp"), R0)
    p.ld_ind(1, R9, 1).alu("lsh", R0, 16)
    p.ldx(4, R1, FP, _k("icmp")).alu("or", R1, R0, reg=True).stx(4, FP, _k("icmp"), R1)
    if with_id:
        p.ld_ind(2, R9, 4)
        p.ldx(4, R1, FP, _k("icmp")).alu("or", R1, R0, reg=True).stx(4, FP, _k("icmp"), R1)
    p.goto("order")


def _order(p: Program) -> None:
    """Swap the endpoints when the source sorts after the destination (addresses as
    big-endian words, then ports); the swap is the packet's direction."""
    p.label("order")
    lo, hi = _k("lo"), _k("hi")
    for w in range(4):
        p.ldx(4, R1, FP, lo + 4 * w).to_be(R1, 32).ldx(4, R2, FP, hi + 4 * w).to_be(R2, 32)
        p.jump("jgt", R1, R2, "swap", reg=True).jump("jlt", R1, R2, "lookup", reg=True)
    p.ldx(2, R1, FP, _k("port_lo")).ldx(2, R2, FP, _k("port_hi"))
    p.jump("jle", R1, R2, "lookup", reg=True)
    p.label("swap").st(1, FP, INFO + I_DIR, 1)
    for half in (0, 8):
        p.ldx(8, R1, FP, lo + half).ldx(8, R2, FP, hi + half)
        p.stx(8, FP, lo + half, R2).stx(8, FP, hi + half, R1)
    p.ldx(2, R1, FP, _k("port_lo")).ldx(2, R2, FP, _k("port_hi"))
    p.stx(2, FP, _k("port_lo"), R2).stx(2, FP, _k("port_hi"), R1)


def _lookup(p: Program, flows_fd: int) -> None:
    p.ld_map_fd(R1, flows_fd).movr(R2, FP).add(R2, KEY).call(MAP_LOOKUP_ELEM)


def _account(p: Program, flows_fd: int, stats_fd: int) -> None:
    p.label("lookup")
    _lookup(p, flows_fd)
    p.jump("jne", R0, 0, "found")
    # A new entry: its first packet's time, direction, VLAN tag and header bytes.
    for off in range(VALUE, KEY, 8):
        p.st(8, FP, off, 0)
    p.stx(8, FP, VALUE + _v("first_ns"), R8)
    p.ldx(1, R0, FP, INFO + I_DIR).stx(1, FP, VALUE + _v("first_dir"), R0)
    p.stx(4, FP, VALUE + _v("first_len"), R7)
    p.ldx(4, R0, R6, SKB_VLAN_PRESENT).stx(1, FP, VALUE + _v("vlan_present"), R0)
    p.ldx(4, R0, R6, SKB_VLAN_TCI).stx(2, FP, VALUE + _v("vlan_tci"), R0)
    p.ldx(4, R0, R6, SKB_VLAN_PROTO).stx(2, FP, VALUE + _v("vlan_proto"), R0)
    p.ldx(4, R4, R6, SKB_LEN).jump("jle", R4, HEAD_SIZE, "head").mov(R4, HEAD_SIZE)
    p.label("head").jump("jlt", R4, 1, "insert").stx(4, FP, VALUE + _v("head_len"), R4)
    p.movr(R1, R6).mov(R2, 0).movr(R3, FP).add(R3, VALUE + _v("head")).call(SKB_LOAD_BYTES)
    p.label("insert")
    p.ld_map_fd(R1, flows_fd).movr(R2, FP).add(R2, KEY).movr(R3, FP).add(R3, VALUE)
    p.mov(R4, NOEXIST).call(MAP_UPDATE_ELEM)
    # Inserted, or another CPU inserted it first: count in the map's entry.
    p.jump("jeq", R0, 0, "again").jump("jeq", R0, -EEXIST, "again")
    _count(p, stats_fd, STAT_MAP_FULL, 1)
    p.goto("out")
    p.label("again")
    _lookup(p, flows_fd)
    p.jump("jeq", R0, 0, "out")
    p.label("found").movr(R9, R0).stx(8, R9, _v("last_ns"), R8)
    p.ldx(1, R0, FP, INFO + I_DIR).jump("jne", R0, 0, "dir1")
    _direction(p, 0)
    p.goto("marks")
    p.label("dir1")
    _direction(p, 1)
    p.label("marks").ldx(1, R0, FP, INFO + I_RTT)
    p.jump("jeq", R0, RTT_OPEN, "rtt_start").jump("jeq", R0, RTT_CLOSE, "rtt_end").goto("out")
    p.label("rtt_start").ldx(8, R1, R9, _v("rtt_start")).jump("jne", R1, 0, "out")
    p.stx(8, R9, _v("rtt_start"), R8).goto("out")
    p.label("rtt_end").ldx(8, R1, R9, _v("rtt_start")).jump("jeq", R1, 0, "out")
    p.ldx(8, R1, R9, _v("rtt_end")).jump("jne", R1, 0, "out").stx(8, R9, _v("rtt_end"), R8)


def _direction(p: Program, d: int) -> None:
    """Counters and first flag times of direction `d` (r9: the entry, r8: now)."""
    p.mov(R1, 1).atomic_add(8, R9, _v(f"packets{d}"), R1)
    p.atomic_add(8, R9, _v(f"bytes{d}"), R7)
    end = p.unique(f"flags{d}")
    p.ldx(1, R2, FP, INFO + I_FLAGS).jump("jeq", R2, 0, end)
    p.atomic_or(4, R9, _v(f"tcp_flags{d}"), R2)
    for flag, field in ((TCP_SYN, "syn"), (TCP_FIN, "fin"), (TCP_RST, "rst")):
        done = p.unique(f"{field}{d}")
        at = _v(f"{field}{d}")
        p.movr(R3, R2).alu("and", R3, flag).jump("jeq", R3, 0, done)
        p.ldx(8, R3, R9, at).jump("jne", R3, 0, done).stx(8, R9, at, R8)
        if field == "syn":
            p.ldx(1, R4, FP, INFO + I_TTL).stx(1, R9, _v(f"syn_ttl{d}"), R4)
        p.label(done)
    p.label(end)
