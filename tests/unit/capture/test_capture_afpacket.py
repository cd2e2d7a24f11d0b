"""TPACKET_V3 block parsing on blocks built from the declared tables, the first
layer chosen from EncapType, the effective BPF, capture spec and node checks,
and a node's namespace from the ownership graph.  No sockets."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet

from skygraph.capture import afpacket
from skygraph.capture.afpacket import (
    BLOCK_DESC,
    SOCKADDR_LL,
    TP_STATUS_USER,
    TP_STATUS_VLAN_TPID_VALID,
    TP_STATUS_VLAN_VALID,
    TPACKET3_HDR,
    TPACKET_REQ3,
    TPACKET_STATS_V3,
    Frame,
    block_header,
    parse_block,
    pcap_info,
)
from skygraph.capture.decoder import LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_RAW
from skygraph.capture.fastpath import FastPath
from skygraph.capture.live import (
    DEFAULT_CAPTURE_LENGTH,
    NODE_DOWN,
    CaptureError,
    CaptureNode,
    CaptureSpec,
    LiveCapture,
    effective_filter,
    link_type_for,
    parse_target,
)
from skygraph.capture.manager import NamespaceError, namespace_of, ownership_path
from skygraph.capture.options import OptionError, TableSettings
from skygraph.capture.sources.base import AgentCaptureSettings, effective_workers
from skygraph.capture.table import FlowTable
from skygraph.topology.flow import Flow
from skygraph.topology.graph import Graph
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import EdgeAdded, NodeAdded

T0 = 1_700_000_000_123_456_789  # ns
MAC_OFFSET = 82  # where the kernel puts an Ethernet frame: align16(68 + 16) - 14


def build_block(frames: list[tuple[bytes, int, int]], status: int = TP_STATUS_USER,
                vlan: dict[int, tuple[int, int, int]] | None = None,
                size: int = 1 << 16) -> bytes:
    """A ring block as the kernel fills it: (data, ts_ns, wire length) per packet;
    `vlan`: packet index -> (tp_status bits, tci, tpid)."""
    vlan = vlan or {}
    first = BLOCK_DESC.size
    body = bytearray()
    for i, (data, ts, wire) in enumerate(frames):
        extra, tci, tpid = vlan.get(i, (0, 0, 0))
        length = (MAC_OFFSET + len(data) + 15) // 16 * 16
        nxt = 0 if i == len(frames) - 1 else length
        hdr = TPACKET3_HDR.pack(tp_next_offset=nxt, tp_sec=ts // 10**9, tp_nsec=ts % 10**9,
                                tp_snaplen=len(data), tp_len=wire, tp_status=1 | extra,
                                tp_mac=MAC_OFFSET, tp_net=MAC_OFFSET + 14, tp_vlan_tci=tci,
                                tp_vlan_tpid=tpid)
        pkt = bytearray(length)
        pkt[:len(hdr)] = hdr
        pkt[MAC_OFFSET:MAC_OFFSET + len(data)] = data
        body += pkt
    head = BLOCK_DESC.pack(version=1, block_status=status, num_pkts=len(frames),
                           offset_to_first_pkt=first, blk_len=first + len(body), seq_num=7)
    block = head + bytes(body)
    return block + bytes(size - len(block))


def icmp(seq: int, reply: bool = False) -> Packet:
    a, b = ("02:00:00:00:00:0a", "10.0.0.1"), ("02:00:00:00:00:0b", "10.0.0.2")
    src, dst = (b, a) if reply else (a, b)
    return (Ether(src=src[0], dst=dst[0]) / IP(src=src[1], dst=dst[1])
            / ICMP(type=0 if reply else 8, id=9, seq=seq) / (b"x" * 56))


# ---- declared tables ------------------------------------------------------------
def test_tables_have_the_kernel_sizes_and_offsets() -> None:
    assert TPACKET_REQ3.size == 28
    assert BLOCK_DESC.size == 48
    assert BLOCK_DESC.offset("block_status") == 8 and BLOCK_DESC.offset("num_pkts") == 12
    assert BLOCK_DESC.offset("offset_to_first_pkt") == 16 and BLOCK_DESC.offset("seq_num") == 24
    assert TPACKET3_HDR.size == 48
    assert TPACKET3_HDR.offset("tp_mac") == 24 and TPACKET3_HDR.offset("tp_vlan_tci") == 32
    assert TPACKET_STATS_V3.size == 12
    assert SOCKADDR_LL.size == 20
    assert afpacket.SOCK_FPROG.size == 16


# ---- block parsing ----------------------------------------------------------------
def test_block_frames_timestamps_and_lengths() -> None:
    packets = [bytes(icmp(1)), bytes(icmp(1, reply=True)), bytes(icmp(2))]
    frames = [(p, T0 + i * 1_000_000, len(p)) for i, p in enumerate(packets)]
    block = build_block(frames)
    head = block_header(block)
    assert (head.status, head.num_pkts, head.first, head.seq_num) == (1, 3, 48, 7)
    batch = parse_block(block)
    assert batch.count == 3
    assert list(batch.frames()) == [Frame(p, t, w) for p, t, w in frames]


def test_truncated_frames_keep_their_wire_length() -> None:
    full = bytes(icmp(1))
    batch = parse_block(build_block([(full[:64], T0, len(full))]))
    (frame,) = batch.frames()
    assert frame.data == full[:64] and frame.wire_length == len(full) == 98


def test_block_at_an_offset_of_the_ring() -> None:
    p = bytes(icmp(1))
    ring = build_block([(b"\xff" * 60, T0, 60)]) + build_block([(p, T0, len(p))])
    (frame,) = parse_block(ring, 1 << 16).frames()
    assert frame.data == p


def test_empty_block() -> None:
    batch = parse_block(build_block([]))
    assert batch.count == 0 and list(batch.frames()) == []


def test_vlan_tag_the_kernel_stripped_is_put_back() -> None:
    plain = bytes(icmp(1))
    block = build_block([(plain, T0, len(plain)), (plain, T0 + 1, len(plain)),
                         (plain, T0 + 2, len(plain))],
                        vlan={0: (TP_STATUS_VLAN_VALID, 0x2064, 0),
                              1: (TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID, 30, 0x88A8)})
    first, second, third = parse_block(block).frames()
    assert first.wire_length == len(plain) + 4 and len(first.data) == len(plain) + 4
    assert first.data[12:16] == bytes.fromhex("81002064")
    decoded = Ether(first.data)
    assert decoded[Dot1Q].vlan == 100 and decoded[Dot1Q].prio == 1
    assert bytes(decoded[IP]) == bytes(Ether(plain)[IP])
    assert second.data[12:16] == bytes.fromhex("88a8001e")
    assert third == Frame(plain, T0 + 2, len(plain))
    # Frames without a link header are left alone.
    raw, _, _ = parse_block(block, link_header=False).frames()
    assert raw.data == plain and raw.wire_length == len(plain)


def test_batch_feeds_the_flow_table_like_per_packet_feeding() -> None:
    packets = []
    for i in range(5):
        packets.append(bytes(icmp(i)))
        packets.append(bytes(icmp(i, reply=True)))
    packets.append(bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.3") / UDP(dport=53)))
    frames = [(p[:64], T0 + i * 100_000_000, len(p)) for i, p in enumerate(packets)]
    batch = parse_block(build_block(frames))
    fast = FlowTable(node_tid="tid")
    sent: list[Flow] = []
    FastPath(fast).run_blocks([batch.block], pcap_info(LINKTYPE_ETHERNET, 64), sent.extend)
    slow = FlowTable(node_tid="tid")
    for data, ts, wire in batch.frames():
        slow.feed(data, ts, wire)
    assert sent == []
    assert [f.to_json() for f in fast.flows()] == [f.to_json() for f in slow.flows()]
    echo = next(f for f in fast.flows() if f.icmp is not None)
    assert (echo.metric.ab_packets, echo.metric.ba_packets) == (5, 5)
    assert echo.metric.ab_bytes == 5 * 98 and echo.node_tid == "tid"


# ---- first layer --------------------------------------------------------------------
@pytest.mark.parametrize(("encap", "link_type"), [
    ("ether", LINKTYPE_ETHERNET), ("none", LINKTYPE_RAW), ("gre", LINKTYPE_RAW),
    ("sit", LINKTYPE_IPV4), ("ipip", LINKTYPE_IPV4), ("tunnel6", LINKTYPE_IPV6),
    ("gre6", LINKTYPE_IPV6), ("loopback", LINKTYPE_ETHERNET), ("", LINKTYPE_ETHERNET),
])
def test_first_layer_from_encap_type(encap: str, link_type: int) -> None:
    assert link_type_for(encap) == link_type


def test_raw_ip_first_layer_decodes_ip_without_ethernet() -> None:
    table = FlowTable(link_type=link_type_for("none"))
    table.feed(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(id=3)), T0)
    (flow,) = table.flows()
    assert flow.layers_path == "IPv4/ICMPv4" and flow.link is None


# ---- effective BPF and targets -----------------------------------------------------
def test_effective_filter_excludes_own_connections() -> None:
    exclude = [("10.1.1.1", 8082), ("10.2.2.2", 0)]
    assert effective_filter("icmp or tcp", exclude) == \
        "(icmp or tcp) and not (host 10.1.1.1 and port 8082) and not host 10.2.2.2"
    assert effective_filter("", exclude) == \
        "not (host 10.1.1.1 and port 8082) and not host 10.2.2.2"
    assert effective_filter("udp", []) == "(udp)"
    assert effective_filter("  ", []) == ""


def test_parse_target() -> None:
    assert parse_target("10.0.0.9:2055") == ("10.0.0.9", 2055)
    assert parse_target("[fd00::1]:6343") == ("fd00::1", 6343)
    assert parse_target("10.0.0.9") == ("10.0.0.9", 0)
    assert parse_target("") is None


# ---- capture spec and node checks ---------------------------------------------------
UP_VETH = {"Name": "eth0", "Type": "veth", "EncapType": "ether", "TID": "t1",
           "LinkFlags": ["UP", "BROADCAST"], "IfIndex": 4}


def test_spec_defaults_and_options() -> None:
    spec = CaptureSpec.from_json({"UUID": "c1", "GremlinQuery": "G.V()", "HeaderSize": 0,
                                  "LayerKeyMode": "L3", "ExtraLayers": 2, "RawPacketLimit": 3,
                                  "ExtraTCPMetric": True, "IPDefrag": True})
    assert spec.header_size == DEFAULT_CAPTURE_LENGTH == 256
    assert spec.effective_type == "afpacket"
    o = spec.options
    assert (o.layer_key_mode, o.extra_layers, o.raw_packet_limit) == ("L3", 2, 3)
    assert o.extra_tcp_metric and o.ip_defrag and not o.reassemble_tcp
    with pytest.raises(OptionError, match="HeaderSize: 10"):
        CaptureSpec.from_json({"UUID": "c1", "HeaderSize": 10})
    with pytest.raises(OptionError, match="raw packet limit"):
        CaptureSpec.from_json({"UUID": "c1", "RawPacketLimit": 11})


def test_spec_workers_fall_back_to_the_agent_and_are_bounded() -> None:
    """Workers (afpacket readers, a skygraph extension): 0..64, 0 = agent.capture.workers."""
    agent = AgentCaptureSettings(workers=3)
    default = CaptureSpec.from_json({"UUID": "c1"})
    assert default.workers == 0 and effective_workers(default, agent) == 3
    assert effective_workers(default, AgentCaptureSettings()) == 1
    four = CaptureSpec.from_json({"UUID": "c1", "Workers": 4})
    assert four.workers == 4 and effective_workers(four, agent) == 4
    assert CaptureSpec.from_json({"UUID": "c1", "Workers": 64}).workers == 64
    for bad in (65, -1):
        with pytest.raises(OptionError, match=rf"Workers: {bad} is outside 0\.\.64"):
            CaptureSpec.from_json({"UUID": "c1", "Workers": bad})
    with pytest.raises(OptionError, match="Workers: 'many' is not an integer"):
        CaptureSpec.from_json({"UUID": "c1", "Workers": "many"})


@pytest.mark.parametrize(("change", "reason"), [
    ({"LinkFlags": ["BROADCAST"]}, NODE_DOWN),
    ({"LinkFlags": None}, NODE_DOWN),
    ({"Name": ""}, "the node has no Name"),
    ({"EncapType": None}, "the node has no EncapType"),
    ({"TID": ""}, "the node has no TID"),
    ({"Type": "netns"}, "afpacket cannot capture on a node of Type 'netns'"),
    ({"Type": "ovsbridge"}, "afpacket cannot capture on a node of Type 'ovsbridge'"),
])
def test_node_refused_with_reason(change: dict[str, object], reason: str) -> None:
    meta = {**UP_VETH, **change}
    with pytest.raises(CaptureError) as info:
        CaptureNode.from_metadata("n-42", meta, None)
    assert info.value.reason == reason and info.value.node_id == "n-42"
    assert "node n-42" in str(info.value) and reason in str(info.value)


def test_live_capture_refuses_before_touching_the_system() -> None:
    settings = TableSettings(update=1)
    down = {**UP_VETH, "LinkFlags": []}
    with pytest.raises(CaptureError, match=r"node n1 \(eth0\): Can't start capture on node down"):
        LiveCapture({"UUID": "c"}, "n1", down, None, settings, [], lambda f: None)
    with pytest.raises(CaptureError, match="capture type 'ovsmirror'"):
        LiveCapture({"UUID": "c", "Type": "ovsmirror"}, "n1", UP_VETH, None, settings, [],
                     lambda f: None)
    with pytest.raises(CaptureError, match="HeaderSize"):
        LiveCapture({"UUID": "c", "HeaderSize": 5000}, "n1", UP_VETH, None, settings, [],
                     lambda f: None)


def test_bpf_that_does_not_compile_is_refused_with_libpcap_message() -> None:
    cap = LiveCapture({"UUID": "c", "BPFFilter": "icmp and and"}, "n1", UP_VETH, None,
                      TableSettings(update=1), [("10.0.0.1", 8082)], lambda f: None)
    assert cap.bpf == "(icmp and and) and not (host 10.0.0.1 and port 8082)"
    with pytest.raises(CaptureError, match=r"node n1 \(eth0\): BPF filter .*syntax error"):
        cap.start()


def test_target_is_excluded_too() -> None:
    cap = LiveCapture({"UUID": "c", "Target": "10.9.9.9:2055"}, "n1", UP_VETH, None,
                      TableSettings(update=1), [], lambda f: None)
    assert cap.bpf == "not (host 10.9.9.9 and port 2055)"


# ---- namespace of a node ---------------------------------------------------------------
def graph_of(nodes: dict[str, dict[str, object]], owns: list[tuple[str, str]]) -> Graph:
    g = Graph(clock=lambda: 1)
    for ident, meta in nodes.items():
        g.apply_nowait(NodeAdded(Node(ident, meta)))
    for parent, child in owns:
        g.apply_nowait(EdgeAdded(Edge(f"{parent}-{child}", parent, child,
                                      {"RelationType": "ownership"})))
    return g


def test_namespace_from_ownership_path() -> None:
    g = graph_of({
        "h": {"Name": "host", "Type": "host"},
        "ns": {"Name": "blue", "Type": "netns", "Path": "/run/netns/blue"},
        "inner": {"Name": "inner", "Type": "netns", "Path": "/run/netns/inner"},
        "v": {"Name": "eth0", "Type": "veth"},
        "w": {"Name": "eth1", "Type": "veth"},
        "x": {"Name": "lo", "Type": "device"},
        "br": {"Name": "br0", "Type": "bridge"},
        "stray": {"Name": "eth9", "Type": "veth"},
    }, [("h", "ns"), ("ns", "v"), ("h", "w"), ("ns", "inner"), ("inner", "br"), ("br", "x")])
    assert ownership_path(g, "h", "v") == ["h", "ns", "v"]
    assert namespace_of(g, "h", "v") == "/run/netns/blue"
    assert namespace_of(g, "h", "x") == "/run/netns/inner"  # the nearest netns
    assert namespace_of(g, "h", "w") is None
    assert namespace_of(g, "h", "w", "/tmp/hostns") == "/tmp/hostns"
    with pytest.raises(NamespaceError, match="node stray is not owned"):
        namespace_of(g, "h", "stray")


def test_in_place_records_equal_the_copying_parse() -> None:
    packets = [bytes(icmp(i))[: 40 + i] for i in range(20)]
    block = build_block([(p, T0 + i, 98) for i, p in enumerate(packets)])
    head = block_header(block)
    positions, off = [], head.first
    for _ in range(head.num_pkts):
        positions.append(off)
        off += TPACKET3_HDR.struct.unpack_from(block, off)[0]
    fast = parse_block(block)
    slow = afpacket._parse_block_copying(block, positions, True)
    assert list(fast.frames()) == list(slow.frames())
    assert [f.data for f in fast.frames()] == packets


def test_loopback_keeps_one_copy_of_each_packet():
    from skygraph.capture.live import effective_filter
    assert effective_filter("icmp", [], inbound_only=True) == "(icmp) and inbound"
    assert effective_filter("", [("127.0.0.1", 8083)], inbound_only=True) == \
        "not (host 127.0.0.1 and port 8083) and inbound"


def _frames_in_place(ring: bytearray, bases: list[int], size: int,
                     link_header: bool = True) -> list[Frame]:
    records = afpacket._ring_records(ring, bases, size, link_header)
    assert records is not None
    offsets = memoryview(records).cast("q")
    return list(afpacket.Batch(afpacket.Block(bytes(ring), offsets), len(offsets)).frames())


def test_ring_blocks_read_in_place_equal_the_copying_parse() -> None:
    """The extension's in-place reader (the live path) gives the same records as the
    copying parse, over several blocks in ring order, VLAN tags put back."""
    assert afpacket._ring_records is not None, "the _fastflow extension is not built"
    size = 1 << 16
    plain = bytes(icmp(1))
    first = build_block([(bytes(icmp(i))[:40 + i], T0 + i, 98) for i in range(30)], size=size)
    second = build_block([(plain, T0 + 100, len(plain)), (plain, T0 + 101, len(plain))],
                         vlan={0: (TP_STATUS_VLAN_VALID, 0x2064, 0),
                               1: (TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID, 30, 0x88A8)},
                         size=size)
    ring = bytearray(first + second + build_block([], size=size))
    expected = [*parse_block(bytes(ring), size).frames(), *parse_block(bytes(ring), 0).frames()]
    # Ring order is the order given (the second block was the current one).
    assert _frames_in_place(bytearray(ring), [size, 0, 2 * size], size) == expected
    assert expected[0].data[12:16] == bytes.fromhex("81002064")
    raw = _frames_in_place(bytearray(second), [0], size, link_header=False)
    assert raw[0] == Frame(plain, T0 + 100, len(plain))


def test_ring_block_it_cannot_read_in_place_is_refused() -> None:
    """A packet running past its block, or with no room before its frame for a record
    header: None (the reader then copies), the ring left untouched."""
    size = 1 << 16
    good = build_block([(bytes(icmp(1)), T0, 98)], size=size)
    bad = bytearray(build_block([(bytes(icmp(2)), T0, 98)], size=size))
    TPACKET3_HDR.struct.pack_into(bad, BLOCK_DESC.size, 0, 0, 0, 1 << 17, 98, 1, 82, 96,
                                  0, 0, 0, 0)  # snap length past the block
    ring = bytearray(good + bytes(bad))
    before = bytes(ring)
    assert afpacket._ring_records(ring, [0, size], size, True) is None
    assert bytes(ring) == before
    tight = bytearray(build_block([(bytes(icmp(3)), T0, 98)], size=size))
    TPACKET3_HDR.struct.pack_into(tight, BLOCK_DESC.size, 0, 0, 0, 98, 98, 1, 8, 22,
                                  0, 0, 0, 0)  # the frame 8 bytes after its header
    assert afpacket._ring_records(tight, [0], size, True) is None
    assert afpacket._ring_records(bytearray(good), [size], size, True) is None  # past the ring
