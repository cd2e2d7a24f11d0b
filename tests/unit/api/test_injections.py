"""Injection resolution (skygraph.api.injections): Skydive's field checks, and
addresses from the graph: next hop by longest prefix over all routing tables,
then neighbours, then the destination node's attached MAC and MAC."""

from __future__ import annotations

import random

import pytest

from skygraph.api.captures import CaptureInvalid
from skygraph.api.injections import check_spec, next_hop_mac, resolve
from skygraph.capture.inject import Injection, frames, tracking_id
from skygraph.topology.model import Node

SRC = Node("src", {
    "Name": "eth0", "Type": "veth", "MAC": "02:00:00:00:00:01",
    "IPV4": ["169.254.1.1/16", "10.1.0.2/24"], "IPV6": ["fe80::1/64", "fd00::2/64"],
    "RoutingTables": [
        {"ID": 254, "Routes": [
            {"Protocol": 4, "Prefix": "0.0.0.0/0", "NextHops": [{"IfIndex": 2, "IP": "10.1.0.1"}]},
            {"Protocol": 2, "Prefix": "10.1.0.0/24", "NextHops": [{"IfIndex": 2}]}]},
        {"ID": 100, "Routes": [
            {"Protocol": 4, "Prefix": "10.9.0.0/16", "NextHops": [{"IfIndex": 2, "IP": "10.1.0.254"}]}]},
    ],
    "Neighbors": [{"IP": "10.1.0.1", "MAC": "02:00:00:00:00:fe"},
                  {"IP": "10.1.0.254", "MAC": "02:00:00:00:00:99"},
                  {"IP": "10.1.0.7", "MAC": "02:00:00:00:00:07"}],
}, Host="h1")
DST = Node("dst", {"Name": "eth0", "Type": "veth", "MAC": "02:00:00:00:00:02",
                   "IPV4": ["10.2.0.2/24"], "ExtID": {"attached-mac": "02:00:00:00:00:aa"}},
           Host="h2")


def test_next_hop_is_the_longest_prefix_over_every_table() -> None:
    assert next_hop_mac(SRC, "10.9.3.4") == "02:00:00:00:00:99"     # table 100, /16
    assert next_hop_mac(SRC, "192.0.2.1") == "02:00:00:00:00:fe"    # default route
    assert next_hop_mac(SRC, "10.1.0.7") == "02:00:00:00:00:07"     # direct: the host itself
    assert next_hop_mac(SRC, "10.1.0.8") == ""                      # direct, not resolved


def test_resolve_fills_addresses_from_the_nodes() -> None:
    out = resolve({"Src": "q", "Dst": "q2"}, SRC, DST, random.Random(1))
    assert (out["SrcIP"], out["SrcMAC"], out["DstIP"]) == (
        "10.1.0.2", "02:00:00:00:00:01", "10.2.0.2")
    assert out["DstMAC"] == "02:00:00:00:00:fe"      # via the default gateway
    assert 1 <= out["ICMPID"] <= 65535 and (out["Count"], out["TTL"]) == (1, 64)
    first = next(frames(Injection.from_json(out), random.Random()))
    assert out["TrackingID"] == tracking_id(first)
    six = resolve({"Src": "q", "Type": "udp6", "DstIP": "fd00::9/64", "DstPort": 53,
                       "DstMAC": "02:00:00:00:00:09"}, SRC, None,
                  random.Random(1))
    assert (six["SrcIP"], six["DstIP"]) == ("fd00::2", "fd00::9") and six["SrcPort"] >= 32768


def test_destination_mac_falls_back_to_the_destination_node() -> None:
    lonely = Node("s", {"Name": "eth0", "MAC": "02:00:00:00:00:01", "IPV4": ["10.3.0.1/24"]})
    assert resolve({"Src": "q"}, lonely, DST, random.Random())["DstMAC"] == "02:00:00:00:00:aa"
    plain = Node("d", {"MAC": "02:00:00:00:00:02", "IPV4": ["10.3.0.2/24"]})
    assert resolve({"Src": "q"}, lonely, plain, random.Random())["DstMAC"] == "02:00:00:00:00:02"


def test_unresolvable_fields_are_each_named() -> None:
    bare = Node("s", {"Name": "eth0"})
    with pytest.raises(CaptureInvalid) as exc:
        resolve({"Src": "q"}, bare, None, random.Random())
    assert [e.field for e in exc.value.errors] == ["SrcIP", "SrcMAC", "DstIP"]
    with pytest.raises(CaptureInvalid) as exc:
        resolve({"Src": "q", "DstIP": "10.1.0.8"}, SRC, None, random.Random())
    assert [e.field for e in exc.value.errors] == ["DstMAC"]


def test_field_checks() -> None:
    errors = check_spec({"Type": "icmp7", "Count": 0, "TTL": "x", "DstIP": "10.0.0.300",
                         "Bogus": 1, "Mode": "all"})
    assert {e.field for e in errors} == {"Src", "Type", "Count", "TTL", "DstIP", "Bogus", "Mode"}
    assert [e.field for e in check_spec({"Src": "q", "Type": "tcp4"})] == ["DstPort"]
    assert check_spec({"Src": "q", "Type": "tcp4", "Pcap": "AAAA"}) == []
