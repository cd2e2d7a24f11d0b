"""Interface counters of a whole namespace in one RTM_GETSTATS dump, decoded
with struct (the metrics refresh runs every `metrics_update` seconds in every
namespace: pyroute2's generic decoder costs ten times more than the dump).

Wire format: nlmsghdr, if_stats_msg, then attributes; IFLA_STATS_LINK_64
carries struct rtnl_link_stats64 (u64 counters, in the order below).
"""

from __future__ import annotations

import asyncio
import socket
import struct

NLMSGHDR = struct.Struct("=IHHII")           # len, type, flags, seq, pid
IF_STATS_MSG = struct.Struct("=BBHII")       # family, pad1, pad2, ifindex, filter_mask
NLA = struct.Struct("=HH")                   # len, type
RTM_GETSTATS, RTM_NEWSTATS = 94, 92
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_STATS_LINK_64 = 1
# struct rtnl_link_stats64, field -> InterfaceMetric key (links.METRIC_FIELDS names).
LINK_STATS64: tuple[str, ...] = (
    "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors",
    "rx_dropped", "tx_dropped", "multicast", "collisions", "rx_length_errors",
    "rx_over_errors", "rx_crc_errors", "rx_frame_errors", "rx_fifo_errors",
    "rx_missed_errors", "tx_aborted_errors", "tx_carrier_errors", "tx_fifo_errors",
    "tx_heartbeat_errors", "tx_window_errors", "rx_compressed", "tx_compressed",
)
_U64S = struct.Struct(f"={len(LINK_STATS64)}Q")


def request(seq: int) -> bytes:
    body = IF_STATS_MSG.pack(0, 0, 0, 0, 1 << (IFLA_STATS_LINK_64 - 1))
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), RTM_GETSTATS,
                         NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def parse(data: bytes) -> tuple[dict[int, dict[str, int]], bool]:
    """ifindex -> counters (as in IFLA_STATS64) from one datagram; and whether it ended the dump."""
    out: dict[int, dict[str, int]] = {}
    off = 0
    while off + NLMSGHDR.size <= len(data):
        length, mtype, _, _, _ = NLMSGHDR.unpack_from(data, off)
        if length < NLMSGHDR.size:
            break
        if mtype in (NLMSG_DONE, NLMSG_ERROR):
            if mtype == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, off + NLMSGHDR.size)
                if code:
                    raise OSError(-code, "RTM_GETSTATS dump failed")
            return out, True
        if mtype == RTM_NEWSTATS:
            _, _, _, ifindex, _ = IF_STATS_MSG.unpack_from(data, off + NLMSGHDR.size)
            a = off + NLMSGHDR.size + IF_STATS_MSG.size
            while a + NLA.size <= off + length:
                alen, atype = NLA.unpack_from(data, a)
                if alen < NLA.size:
                    break
                if atype & 0x3FFF == IFLA_STATS_LINK_64 and alen - NLA.size >= _U64S.size:
                    out[ifindex] = dict(zip(LINK_STATS64, _U64S.unpack_from(data, a + NLA.size),
                                            strict=True))
                a += (alen + 3) & ~3
        off += (length + 3) & ~3
    return out, False


async def dump(sock: socket.socket, seq: int) -> dict[int, dict[str, int]]:
    """Counters of every link in the socket's namespace (`sock`: non-blocking NETLINK_ROUTE)."""
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, request(seq))
    out: dict[int, dict[str, int]] = {}
    while True:
        data = await loop.sock_recv(sock, 65536)
        part, done = parse(data)
        out.update(part)
        if done:
            return out
