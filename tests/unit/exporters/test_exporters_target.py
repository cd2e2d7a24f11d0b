"""make_target: the target types, their addresses and the errors that name the field."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from skygraph.exporters import TargetError, TargetNode, make_target, parse_endpoint
from skygraph.exporters.layout import BitWord, Layout
from skygraph.exporters.netflow import NetFlowV5Target
from skygraph.exporters.sflow import SFlowTarget

NODE = TargetNode(if_index=3, name="eth0", agent_ip="192.0.2.1", mac="02:00:00:00:00:01")
OPTS: dict[str, Any] = {"header_size": 128, "sampling_rate": 1, "polling_interval": 0,
                        "session_id": 1, "link_type": 1}


def make(kind: str, target: str, node: TargetNode = NODE, **kw: Any) -> Any:
    return make_target(kind, target, node, **{**OPTS, **kw})


def test_udp_targets_and_their_kind() -> None:
    nf = make("netflowv5", "127.0.0.1:2055")
    sf = make("sflow", "127.0.0.1:6343")
    try:
        assert isinstance(nf, NetFlowV5Target) and (nf.wants_flows, nf.wants_packets) == (True,
                                                                                           False)
        assert isinstance(sf, SFlowTarget) and (sf.wants_flows, sf.wants_packets) == (False, True)
        assert sf.agent == "192.0.2.1"
    finally:
        nf.close()
        sf.close()


@pytest.mark.parametrize(("text", "host", "port", "family"), [
    ("127.0.0.1:9995", "127.0.0.1", 9995, socket.AF_INET),
    ("127.0.0.1", "127.0.0.1", 2055, socket.AF_INET),
    ("[::1]:9995", "::1", 9995, socket.AF_INET6),
    ("[::1]", "::1", 2055, socket.AF_INET6),
    ("fd00::1", "fd00::1", 2055, socket.AF_INET6),
    (" localhost:9 ", "127.0.0.1", 9, socket.AF_INET),
])
def test_udp_addresses(text: str, host: str, port: int, family: socket.AddressFamily) -> None:
    ep = parse_endpoint(text, "netflowv5", default_port=2055)
    assert (ep.host, ep.port, ep.family) == (host, port, family)


def test_erspan_has_no_port() -> None:
    assert parse_endpoint("10.0.0.1:0", "erspanv1", default_port=None).sockaddr == ("10.0.0.1",
                                                                                   0)
    assert parse_endpoint("10.0.0.1", "erspanv2", default_port=None).port == 0
    with pytest.raises(TargetError, match=r"^Target: '10.0.0.1:4789': erspanv1 .* use 10.0.0.1:0"):
        make("erspanv1", "10.0.0.1:4789")


@pytest.mark.parametrize(("kind", "target", "kw", "message"), [
    ("", "", {}, "TargetType: 'local' has no external target"),
    ("local", "127.0.0.1:1", {}, "TargetType: 'local' has no external target"),
    ("netflowv9", "127.0.0.1:1", {}, "TargetType: 'netflowv9' is not one of local, netflowv5"),
    ("netflowv5", "", {}, "Target: a netflowv5 target needs an address"),
    ("netflowv5", "127.0.0.1:x", {}, "Target: '127.0.0.1:x': port 'x' is not a number"),
    ("netflowv5", "127.0.0.1:0", {}, "Target: '127.0.0.1:0': port 0 is not in 1..65535"),
    ("sflow", "127.0.0.1:70000", {}, "Target: '127.0.0.1:70000': port 70000"),
    ("sflow", "[::1:6343", {}, "Target: '\\[::1:6343' is not \\[ipv6\\]:port"),
    ("sflow", "127.0.0.1:6343", {"header_size": 4097}, "HeaderSize: 4097 is outside"),
    ("sflow", "127.0.0.1:6343", {"sampling_rate": -1}, "SamplingRate: -1 is negative"),
    ("sflow", "127.0.0.1:6343", {"polling_interval": -5}, "PollingInterval: -5 is negative"),
    ("erspanv2", "127.0.0.1:0", {"session_id": 1024}, "SessionID: 1024 is not in 0..1023"),
    ("erspanv1", "127.0.0.1", {"link_type": 113}, "LinkType: 113"),
])
def test_errors_name_the_field(kind: str, target: str, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(TargetError, match="^" + message):
        make(kind, target, **kw)


def test_unresolvable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kw: object) -> None:
        raise socket.gaierror(-2, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", fail)  # no DNS query leaves the machine
    with pytest.raises(TargetError, match=r"^Target: 'collector:6343': cannot resolve 'collector'"):
        make("sflow", "collector:6343")


def test_node_errors() -> None:
    with pytest.raises(TargetError, match=r"^TargetNode: agent_ip 'host1' is not an IP"):
        make("sflow", "127.0.0.1:6343", TargetNode(1, "eth0", "host1", ""))
    with pytest.raises(TargetError, match=r"^TargetNode: if_index -1"):
        make("netflowv5", "127.0.0.1:2055", TargetNode(-1, "eth0", "", ""))


def test_target_error_is_a_value_error() -> None:
    assert issubclass(TargetError, ValueError)


def test_unknown_agent_address_is_zero() -> None:
    t = make("sflow", "127.0.0.1:6343", TargetNode(1, "eth0", "", ""))
    try:
        assert t.agent == "0.0.0.0"
    finally:
        t.close()


def test_layouts_refuse_wrong_fields() -> None:
    layout = Layout("x", ("a", "H"), ("b", "B"))
    assert layout.pack(a=1, b=2) == b"\x00\x01\x02" and layout.unpack(b"\x00\x01\x02") == {
        "a": 1, "b": 2}
    with pytest.raises(ValueError, match=r"x: missing fields \['b'\], unknown fields \['c'\]"):
        layout.pack(a=1, c=2)
    with pytest.raises(ValueError, match="x: "):
        layout.pack(a=1, b=256)
    word = BitWord("w", 16, ("hi", 4), ("lo", 12))
    assert word.pack(hi=1, lo=2) == 0x1002 and word.unpack(0x1002) == {"hi": 1, "lo": 2}
    with pytest.raises(ValueError, match="w: lo=4096 does not fit 12 bits"):
        word.pack(lo=4096)
    with pytest.raises(ValueError, match=r"bad: fields take 15 bits, not 16"):
        BitWord("bad", 16, ("a", 15))
