"""GRE + ERSPAN Type II / III encoders field by field, read back by scapy's ERSPAN
layers (an independent decoder) and by hand from the draft's bit layout."""

from __future__ import annotations

import struct

from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import GRE, Ether

from skygraph.exporters.erspan import encapsulate, erspan2_header, erspan3_header, ethernet_for_ip, gre_header

FRAME = bytes(Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")
              / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(id=7) / b"payload")


def test_gre_header_has_only_the_sequence_bit() -> None:
    h = gre_header(0x88BE, 0x01020304)
    assert h == b"\x10\x00\x88\xbe\x01\x02\x03\x04"
    g = GRE(h)
    assert (g.seqnum_present, g.chksum_present, g.key_present, g.proto, g.sequence_number) == (
        1, 0, 0, 0x88BE, 0x01020304)


def test_type_ii_header_fields() -> None:
    h = erspan2_header(session_id=1000, index=0xABCDE, truncated=True)
    assert len(h) == 8
    w0, w1, w2 = struct.unpack("!HHI", h)
    assert (w0 >> 12, w0 & 0xFFF) == (1, 0)  # version 1 = Type II, VLAN 0
    assert (w1 >> 13, (w1 >> 11) & 3, (w1 >> 10) & 1, w1 & 0x3FF) == (0, 3, 1, 1000)
    assert (w2 >> 20, w2 & 0xFFFFF) == (0, 0xABCDE)
    e = ERSPAN_II(h)
    assert (e.ver, e.vlan, e.cos, e.en, e.t, e.session_id, e.index) == (1, 0, 0, 3, 1, 1000,
                                                                         0xABCDE)


def test_type_iii_header_fields() -> None:
    ts = 0x0123456789ABCDEF
    h = erspan3_header(session_id=5, index=42, truncated=False, timestamp=ts, egress=True)
    assert len(h) == 20
    w0, w1, low, sgt, w3, plat, high = struct.unpack("!HHIHHII", h)
    assert (w0 >> 12, w1 & 0x3FF, (w1 >> 10) & 1, (w1 >> 11) & 3) == (2, 5, 0, 0)
    assert (low, high) == (ts & 0xFFFFFFFF, ts >> 32)
    assert sgt == 0
    # P, FT (Ethernet), HW ID, D (egress), Gra (100 ns), O (sub-header present)
    assert (w3 >> 15, (w3 >> 10) & 0x1F, (w3 >> 4) & 0x3F, (w3 >> 3) & 1, (w3 >> 1) & 3,
            w3 & 1) == (0, 0, 0, 1, 1, 1)
    assert (plat >> 26, plat & 0xFFFFF) == (7, 42)
    e = ERSPAN_III(h)
    assert (e.ver, e.session_id, e.t, e.timestamp, e.ft, e.d, e.gra, e.o) == (
        2, 5, 0, ts & 0xFFFFFFFF, 0, 1, 1, 1)
    p = ERSPAN_PlatformSpecific(h[12:])
    assert p.platf_id == 7


def test_ingress_frames_clear_the_direction_bit() -> None:
    h = erspan3_header(session_id=1, index=1, truncated=False, timestamp=0, egress=False)
    assert (struct.unpack("!H", h[10:12])[0] >> 3) & 1 == 0


def test_encapsulated_frame_is_the_captured_frame_untouched() -> None:
    ts_ns = 1_700_000_000_123_456_789
    for version, proto, size in ((2, 0x88BE, 8), (3, 0x22EB, 20)):
        pkt = encapsulate(version, 9, 3, 4, FRAME, len(FRAME), ts_ns)
        assert pkt[:4] == struct.pack("!HH", 0x1000, proto)
        assert struct.unpack("!I", pkt[4:8])[0] == 9
        assert pkt[8 + size:] == FRAME  # no FCS appended
        g = GRE(pkt)
        assert g.haslayer(Ether) and bytes(g[Ether]) == FRAME
    t3 = encapsulate(3, 0, 1, 1, FRAME, len(FRAME), ts_ns)
    low, high = struct.unpack("!I", t3[12:16])[0], struct.unpack("!I", t3[24:28])[0]
    assert (high << 32 | low) == ts_ns // 100


def test_truncated_bit_when_the_capture_cut_the_frame() -> None:
    cut = encapsulate(2, 0, 1, 1, FRAME[:30], len(FRAME))
    whole = encapsulate(2, 0, 1, 1, FRAME, len(FRAME))
    assert ERSPAN_II(cut[8:]).t == 1 and ERSPAN_II(whole[8:]).t == 0


def test_raw_ip_gets_an_ethernet_header() -> None:
    v4 = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP())
    v6 = bytes(IPv6(src="fd00::1", dst="fd00::2"))
    mac = bytes.fromhex("02000000000a")
    e4, e6 = Ether(ethernet_for_ip(v4, mac)), Ether(ethernet_for_ip(v6, mac))
    assert (e4.type, e4.src, bytes(e4.payload)) == (0x0800, "02:00:00:00:00:0a", v4)
    assert (e6.type, bytes(e6.payload)) == (0x86DD, v6)
