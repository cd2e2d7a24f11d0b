"""Packet injection end to end (issue 9): the analyzer resolves source and
destination from the graph (next hop from the source's routes and neighbours),
the owning agent sends from the source interface inside its namespace, the
source node carries `PacketInjections` while it runs, and a capture sees the
flow the injection announced (its TrackingID), answered by the destination.
Driven through the `skydive-client` package, GraphQL and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from skydive.rest.client import BadRequest, RESTClient

from tests.conftest import RUN_ID
from tests.integration.e2e.lab import two_hosts
from tests.integration.e2e.test_two_agents import agent, graphql, gremlin, wait

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_inject_icmp_between_hosts(analyzer_at, tmp_path):
    with two_hosts(f"{RUN_ID}i") as lab, analyzer_at() as a, \
            agent(lab.a, a.rpc, tmp_path), agent(lab.b, a.rpc, tmp_path):
        src = f"G.V().Has('@Host', '{lab.a.name}', 'Name', 'eth0')"
        dst = f"G.V().Has('@Host', '{lab.b.name}', 'Name', 'eth0')"
        wait("both VMs' eth0", lambda: len(gremlin(a, "G.V().Has('Name', 'eth0')")) == 2)
        # a first ping fills vmA's neighbour table: the gateway's MAC is then known
        assert " 0% packet loss" in lab.ping(lab.a, "10.77.2.2", count=1)

        def gateway_known() -> bool:
            node = gremlin(a, src)[0]
            return any(n.get("IP") == "10.77.1.1" and n.get("MAC")
                       for n in node["Metadata"].get("Neighbors") or [])
        wait("vmA's neighbour entry for its gateway", gateway_known)
        gateway_mac = next(n["MAC"] for n in gremlin(a, src)[0]["Metadata"]["Neighbors"]
                           if n["IP"] == "10.77.1.1")
        capture = a.request("POST", "/api/capture", {
            "GremlinQuery": "G.V().Has('Name', 'eth0')", "BPFFilter": "icmp"}).json()

        def active() -> bool:
            return all(any(c["ID"] == capture["UUID"] and c["State"] == "active"
                           for c in n["Metadata"].get("Captures") or [])
                       for n in gremlin(a, "G.V().Has('Name', 'eth0')"))
        wait("the capture active on both eth0", active)

        client = RESTClient(a.endpoint)
        injection = client.injection_create(src_query=src, dst_query=dst, type="icmp4",
                                            count=8, interval=300, payload="hello")
        created = client.injection_list()
        assert [i.uuid for i in created] == [injection.uuid]
        got = a.request("GET", f"/api/injectpacket/{injection.uuid}").json()
        assert (got["SrcIP"], got["DstIP"], got["DstMAC"]) == (
            "10.77.1.2", "10.77.2.2", gateway_mac)
        assert got["TrackingID"] and got["ICMPID"]

        def running() -> list[dict[str, Any]]:
            entries = gremlin(a, src)[0]["Metadata"].get("PacketInjections") or []
            return [e for e in entries if e["ID"] == injection.uuid]
        entry = wait("PacketInjections on the source node", running)[0]
        assert entry["State"] == "running" and entry["TrackingID"] == got["TrackingID"]
        wait("the injection finished", lambda: not running(), timeout=30)

        def injected_flow() -> list[dict[str, Any]]:
            flows = gremlin(a, f"G.Flows().Has('TrackingID', '{got['TrackingID']}')") or []
            return [f for f in flows if f["Metric"]["ABPackets"] == 8
                    and f["Metric"]["BAPackets"] == 8]
        flows = wait("the injected flow, answered by vmB", injected_flow)
        assert flows[0]["ICMP"]["ID"] == got["ICMPID"]
        assert (flows[0]["Network"]["A"], flows[0]["Network"]["B"]) == ("10.77.1.2",
                                                                         "10.77.2.2")
        # ... and seen on the destination's eth0 too (routed: its own TrackingID; that
        # agent sends it on its own update tick)
        def at_destination() -> list[dict[str, Any]]:
            flows = gremlin(a, f"{dst}.Flows().Has('Application', 'ICMPv4')") or []
            return [f for f in flows
                    if f["Metric"]["ABPackets"] == 8 and f["ICMP"]["ID"] == got["ICMPID"]]
        wait("the injected flow on the destination's eth0", at_destination)

        client.injection_delete(injection.uuid)
        assert client.injection_list() == []

        # errors name the field
        with pytest.raises(BadRequest, match="Src"):
            client.injection_create(src_query="G.V().Has('Name', 'nope')", dst_query=dst)
        with pytest.raises(BadRequest, match="matches 2 nodes"):
            client.injection_create(src_query="G.V().Has('Name', 'eth0')", dst_query=dst)
        with pytest.raises(BadRequest, match="DstPort"):
            client.injection_create(src_query=src, dst_query=dst, type="udp4")
        r = a.request("POST", "/api/injectpacket", {"Src": src, "Type": "icmp5",
                                                    "Count": "x"})
        assert r.status == 400
        assert {e["field"] for e in r.json()["errors"]} == {"Type", "Count"}

        # GraphQL: UDP with an explicit destination address and port
        data = graphql(a, 'mutation { injectPacket(input: {src: "' + src + '", dstIP: '
                          '"10.77.2.2", type: "udp4", dstPort: 5000, count: 2}) { injection '
                          '{ id type dstMAC srcPort trackingID } errors { field message } } }')
        assert data["injectPacket"]["errors"] == []
        udp = data["injectPacket"]["injection"]
        assert udp["dstMAC"] == gateway_mac and udp["srcPort"] >= 32768
        bad = graphql(a, 'mutation { injectPacket(input: {src: "' + src + '", ttl: 300, '
                         'count: 0}) { injection { id } errors { field } } }')
        assert bad["injectPacket"]["injection"] is None
        assert {e["field"] for e in bad["injectPacket"]["errors"]} == {"ttl", "count"}

        # the CLI, as a client of the analyzer
        out = subprocess.run(
            [sys.executable, "-m", "skygraph.cli", "inject", "create", "--analyzer",
             a.endpoint, "--src", src, "--dst", dst, "--type", "icmp4", "--count", "1"],
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        made = json.loads(out.stdout)
        listed = subprocess.run(
            [sys.executable, "-m", "skygraph.cli", "inject", "list", "--analyzer",
             a.endpoint], capture_output=True, text=True, timeout=60)
        assert made["UUID"] in json.loads(listed.stdout)
