"""sFlow v5 datagrams built by hand for tests (sflow.org/sflow_version_5.txt), written
from the specification independently of skygraph's decoder tables; tshark checks them."""

from __future__ import annotations

import ipaddress
import struct


def _pad(body: bytes) -> bytes:
    return body + bytes(-len(body) % 4)


def tagged(fmt: int, body: bytes, enterprise: int = 0) -> bytes:
    body = _pad(body)
    return struct.pack("!II", enterprise << 12 | fmt, len(body)) + body


def raw_header(frame: bytes, frame_length: int | None = None, stripped: int = 4,
               protocol: int = 1) -> bytes:
    """Flow record 0:1 (sampled header); frame_length counts the stripped FCS."""
    length = (frame_length if frame_length is not None else len(frame)) + stripped
    return tagged(1, struct.pack("!IIII", protocol, length, stripped, len(frame)) + frame)


def switch_record(vlan_in: int = 10, vlan_out: int = 20) -> bytes:
    """Flow record 0:1001 (extended switch), which collectors may skip."""
    return tagged(1001, struct.pack("!IIII", vlan_in, 0, vlan_out, 0))


def flow_sample(records: list[bytes], seq: int = 1, index: int = 7, rate: int = 1,
                pool: int = 100, drops: int = 0, input: int = 7, output: int = 9,
                expanded: bool = False) -> bytes:
    if expanded:
        head = struct.pack("!IIIIIIIIIII", seq, 0, index, rate, pool, drops, 0, input, 0, output,
                           len(records))
        return tagged(3, head + b"".join(records))
    head = struct.pack("!IIIIIIII", seq, index, rate, pool, drops, input, output, len(records))
    return tagged(1, head + b"".join(records))


def generic_counters(if_index: int, in_octets: int = 0, in_ucast: int = 0, in_mcast: int = 0,
                     in_bcast: int = 0, in_discards: int = 0, in_errors: int = 0,
                     in_unknown: int = 0, out_octets: int = 0, out_ucast: int = 0,
                     out_mcast: int = 0, out_bcast: int = 0, out_discards: int = 0,
                     out_errors: int = 0) -> bytes:
    """Counter record 0:1 (if_counters)."""
    return tagged(1, struct.pack(
        "!IIQIIQIIIIIIQIIIIII", if_index, 6, 10_000_000_000, 1, 3, in_octets, in_ucast,
        in_mcast, in_bcast, in_discards, in_errors, in_unknown, out_octets, out_ucast, out_mcast,
        out_bcast, out_discards, out_errors, 0))


def ethernet_counters(*values: int) -> bytes:
    """Counter record 0:2 (ethernet_counters): 13 counters in specification order."""
    return tagged(2, struct.pack("!13I", *(list(values) + [0] * 13)[:13]))


def vlan_counters(vlan: int, octets: int, ucast: int, mcast: int, bcast: int,
                  discards: int) -> bytes:
    return tagged(5, struct.pack("!IQIIII", vlan, octets, ucast, mcast, bcast, discards))


def ovs_dp(hit: int, missed: int, lost: int, mask_hit: int, flows: int, masks: int) -> bytes:
    """Counter record 0:2207 (Open vSwitch datapath performance)."""
    return tagged(2207, struct.pack("!6I", hit, missed, lost, mask_hit, flows, masks))


def counter_sample(records: list[bytes], seq: int = 1, index: int = 7,
                   expanded: bool = False) -> bytes:
    if expanded:
        return tagged(4, struct.pack("!IIII", seq, 0, index, len(records)) + b"".join(records))
    return tagged(2, struct.pack("!III", seq, index, len(records)) + b"".join(records))


def datagram(samples: list[bytes], agent: str = "192.0.2.1", seq: int = 1,
             uptime: int = 12_345, sub_agent: int = 0) -> bytes:
    addr = ipaddress.ip_address(agent)
    kind = 1 if addr.version == 4 else 2
    return (struct.pack("!II", 5, kind) + addr.packed
            + struct.pack("!IIII", sub_agent, seq, uptime, len(samples)) + b"".join(samples))
