"""How an afpacket capture's packets are shared between its readers (PACKET_FANOUT).

Owns the classic-BPF program the kernel runs for every packet of a fanout
group (`PACKET_FANOUT_CBPF`: the packet goes to reader `ret % readers`) and
its Python mirror.  The program must send every packet of a flow to one
reader, whichever its direction, and a tunnel's packets with their inner
flows to the reader holding the outer flow, or the flow tables' shards would
each hold part of one flow.  So it hashes the IP addresses only, the same way
both ways round: the sum of the source and destination address words (a sum
is symmetric), mixed by a multiplication (Knuth's 2654435761) so that
addresses differing only in a few bits still spread, high half returned.

* Ports are left out on purpose: a UDP flow whose large packets are
  fragmented has no ports in its later fragments, and the outer UDP flow of
  a VXLAN/GENEVE tunnel carries a source port per inner flow; hashing
  addresses keeps all of those together.  The price: the connections between
  one pair of hosts all land on one reader.
* A tunnel's inner flows go with the outer addresses (those are the ones at
  the network header); nested tunnels likewise.
* Anything but IPv4/IPv6 (ARP, LLDP, MPLS over Ethernet, ...) goes to reader 0.

The kernel program reads the EtherType from the socket buffer's protocol
(`SKF_AD_PROTOCOL`, VLAN tags already taken out) and the addresses relative
to the network header (`SKF_NET_OFF`), which holds whichever direction the
packet took (received packets start at the network header when a tap sees
them, sent ones at the link header).  `program(offline=True)` is the same
program reading an Ethernet frame from its start, which `bpf.run` executes:
what the tests check the kernel's choice against.
"""

from __future__ import annotations

from skygraph.capture.bpf import (
    BPF_A,
    BPF_ABS,
    BPF_ALU,
    BPF_H,
    BPF_JEQ,
    BPF_JMP,
    BPF_K,
    BPF_LD,
    BPF_LDX,
    BPF_MEM,
    BPF_RET,
    BPF_ST,
    BPF_W,
    BPF_X,
    Instruction,
    Program,
    run,
)

SKF_AD_OFF = -0x1000
SKF_AD_PROTOCOL = 0
SKF_NET_OFF = -0x100000
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
ETH_HEADER = 14
GOLDEN = 2654435761  # Knuth's multiplicative hash constant (2^32 / phi)
MAX_READERS = 64

_ADD_X = BPF_ALU | 0x00 | BPF_X
_MUL_K = BPF_ALU | 0x20 | BPF_K
_RSH_K = BPF_ALU | 0x70 | BPF_K


def _ins(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> Instruction:
    return Instruction(code, jt, jf, k & 0xFFFFFFFF)


def _sum_words(net: int, first: int, words: int) -> list[Instruction]:
    """A = the sum of `words` 32-bit words from network offset `first` (uses M[0])."""
    out = [_ins(BPF_LD | BPF_W | BPF_ABS, net + first), _ins(BPF_ST, 0)]
    for i in range(1, words):
        out += [_ins(BPF_LDX | BPF_W | BPF_MEM, 0),
                _ins(BPF_LD | BPF_W | BPF_ABS, net + first + 4 * i),
                _ins(_ADD_X), _ins(BPF_ST, 0)]
    return out


def program(offline: bool = False) -> Program:
    """The fanout hash (see the module doc); `offline`: reading a frame from its start."""
    if offline:
        net, proto = ETH_HEADER, _ins(BPF_LD | BPF_H | BPF_ABS, 12)
    else:
        net, proto = SKF_NET_OFF, _ins(BPF_LD | BPF_H | BPF_ABS, SKF_AD_OFF + SKF_AD_PROTOCOL)
    v4 = _sum_words(net, 12, 2)  # saddr, daddr
    v6 = _sum_words(net, 8, 8)  # saddr[4], daddr[4]
    mix = [_ins(_MUL_K, GOLDEN), _ins(_RSH_K, 16), _ins(BPF_RET | BPF_A)]
    # proto; jeq IPv4 -> v4; jeq IPv6 -> v6; ret 0; v4...; mix; v6...; mix
    body = [proto,
            _ins(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, jt=2, jf=0),
            _ins(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IPV6, jt=1 + len(v4) + len(mix), jf=0),
            _ins(BPF_RET | BPF_K, 0),
            *v4, *mix, *v6, *mix]
    # The first jeq skips the second jeq and the ret: 2 instructions.
    assert body[1].jt == 2 and body[3].code == BPF_RET | BPF_K
    return Program("skygraph fanout hash", tuple(body))


def reader_of(frame: bytes, readers: int) -> int:
    """The reader the kernel gives this Ethernet frame to, out of `readers`."""
    return run(_OFFLINE.instructions, frame, len(frame)) % readers


_OFFLINE = program(offline=True)
