"""Issue 7 end to end: one analyzer, two agents (each reporting its own "host"
namespace, see lab.py), a capture created through GraphQL, pings, flows in
the graph queried through Gremlin and GraphQL; an interface created later
is captured too; an agent that goes away leaves its host marked and its
history readable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RUN_ID, wait
from tests.integration.api.conftest import Served
from tests.integration.e2e.lab import Host, sh, two_hosts

pytestmark = [pytest.mark.root, pytest.mark.slow]

AGENT_CONFIG = """\
flow:
  update: 1
  expire: 30
agent:
  capture:
    stats_update: 0.5
"""


@contextmanager
def agent(host: Host, rpc: str, tmp_path: Path,
          config: str = AGENT_CONFIG) -> Iterator[subprocess.Popen[str]]:
    cfg = tmp_path / f"{host.name}.yml"
    cfg.write_text(config)
    log = open(tmp_path / f"{host.name}.log", "w")  # noqa: SIM115 - closed below
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGRAPH_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "skygraph.cli", "-c", str(cfg), "agent", "--analyzer", rpc,
         "--host-id", host.name, "--host-netns", host.netns_path, "--netns-run-path",
         str(host.run_dir), "--no-ovs"], stdout=log, stderr=subprocess.STDOUT, text=True,
        env=env)
    try:
        yield proc
    finally:
        terminate(proc, 30)
        log.close()


def terminate(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def gremlin(a: Served, query: str) -> Any:
    r = a.request("POST", "/api/topology", {"GremlinQuery": query})
    assert r.status in (200, 204), r.body
    return r.json() if r.status == 200 else None


def graphql(a: Served, query: str) -> Any:
    r = a.request("POST", "/graphql", {"query": query})
    body = r.json()
    assert r.status == 200 and "errors" not in body, body
    return body["data"]


def active_on(a: Served, capture_id: str) -> list[str]:
    """Hosts whose eth0 carries the capture in state active."""
    hosts = []
    for node in gremlin(a, "G.V().Has('Name', 'eth0')") or []:
        for c in node["Metadata"].get("Captures") or []:
            if c["ID"] == capture_id and c["State"] == "active":
                hosts.append(node["Host"])
    return sorted(hosts)


def test_capture_on_two_hosts_flows_in_the_graph(analyzer_at, tmp_path):
    with two_hosts(f"{RUN_ID}e") as lab, analyzer_at() as a:
        with agent(lab.a, a.rpc, tmp_path), agent(lab.b, a.rpc, tmp_path):
            wait("both hosts' eth0", lambda: len(gremlin(a, "G.V().Has('Name', 'eth0')")) == 2)
            created = graphql(a, 'mutation { createCapture(input: {gremlinQuery: '
                                 '"G.V().Has(\'Name\', \'eth0\')", name: "e2e"}) '
                                 '{ capture { id } errors { field message } } }')
            capture_id = created["createCapture"]["capture"]["id"]
            hosts = sorted([lab.a.name, lab.b.name])
            wait("the capture active on both eth0", lambda: active_on(a, capture_id) == hosts)
            count = a.request("GET", f"/api/capture/{capture_id}").json()["Count"]
            assert count == 2
            status = a.request("GET", "/api/status").json()
            assert sorted(h for h, s in status["Agents"].items() if s["Connected"]) == hosts

            out = lab.ping(lab.a, "10.77.2.2", count=5)
            assert " 0% packet loss" in out

            def icmp_flows() -> list[dict[str, Any]]:
                flows = gremlin(a, "G.V().Has('Name', 'eth0').Flows()"
                                   ".Has('Application', 'ICMPv4')") or []
                done = [f for f in flows if f["Metric"]["ABPackets"] == 5
                        and f["Metric"]["BAPackets"] == 5]
                return done if len(done) == 2 else []
            flows = wait("ICMP flows with 5/5 packets on both eth0", icmp_flows)
            tids = {n["Host"]: n["Metadata"]["TID"]
                    for n in gremlin(a, "G.V().Has('Name', 'eth0')")}
            assert {f["NodeTID"] for f in flows} == set(tids.values())
            assert {f["CaptureID"] for f in flows} == {capture_id}
            # the same packets seen on both hosts: routed in between, so the L2 identity
            # (MACs) differs while the L3 one matches
            assert len({f["L3TrackingID"] for f in flows}) == 1
            assert len({f["TrackingID"] for f in flows}) == 2
            assert {(f["Network"]["A"], f["Network"]["B"]) for f in flows} == {
                ("10.77.1.2", "10.77.2.2")}
            # the flow's capture node, by its TID
            nodes = gremlin(a, f"G.Flows().Has('NodeTID', '{tids[lab.a.name]}')"
                               ".Has('Application', 'ICMPv4').CaptureNode()")
            assert [n["Host"] for n in nodes] == [lab.a.name]
            gql = graphql(a, '{ flows(filter: {application: "ICMPv4"}) '
                             '{ edges { node { id nodeTID } } } }')
            assert len(gql["flows"]["edges"]) == 2

            # an interface that appears after the capture is captured too
            late = f"{RUN_ID}vl"
            sh("ip", "netns", "add", late)
            try:
                mount = lab.a.run_dir / "late"
                mount.touch()
                sh("mount", "--bind", f"/var/run/netns/{late}", str(mount))
                sh("ip", "link", "add", f"{RUN_ID}l0", "type", "veth", "peer", "name",
                   f"{RUN_ID}l1")
                sh("ip", "link", "set", f"{RUN_ID}l0", "netns", late, "name", "eth0")
                sh("ip", "link", "set", f"{RUN_ID}l1", "netns", lab.a.netns)
                sh("ip", "link", "set", "eth0", "up", ns=late)
                wait("the late eth0 captured",
                     lambda: active_on(a, capture_id).count(lab.a.name) == 2)
                sh("umount", str(mount))
                mount.unlink()
            finally:
                sh("ip", "netns", "del", late, check=False)

        # both agents stopped: hosts marked, nothing deleted
        def marked() -> bool:
            hosts_now = gremlin(a, "G.V().Has('Type', 'host')") or []
            return len(hosts_now) == 2 and all(
                h["Metadata"].get("Status") == "disconnected" for h in hosts_now)
        wait("hosts marked disconnected", marked)
        assert len(gremlin(a, "G.V().Has('Name', 'eth0')")) >= 2
        assert len(gremlin(a, "G.Flows().Has('Application', 'ICMPv4')")) >= 2


def test_analyzer_restart_mid_capture_loses_no_flow_update(bolt_server, fresh_graph, tmp_path):
    """The analyzer stops while agents capture; pings go on; a new analyzer on the same
    ports gets the agents back, the capture resumes, and the flow counts add up."""
    from tests.integration.api.conftest import analyzer_config, running
    cfg = analyzer_config(bolt_server, tmp_path)
    rpc = cfg.analyzer.rpc.listen
    with two_hosts(f"{RUN_ID}r") as lab, agent(lab.a, rpc, tmp_path), \
            agent(lab.b, rpc, tmp_path):
        with running(cfg) as a:
            wait("both hosts' eth0", lambda: len(gremlin(a, "G.V().Has('Name', 'eth0')")) == 2)
            capture_id = a.request("POST", "/api/capture", {
                "GremlinQuery": "G.V().Has('Name', 'eth0')", "BPFFilter": "icmp"}).json()["UUID"]
            hosts = sorted([lab.a.name, lab.b.name])
            wait("the capture active on both eth0", lambda: active_on(a, capture_id) == hosts)
            assert " 0% packet loss" in lab.ping(lab.a, "10.77.2.2", count=4)
            wait("4 echo requests counted on both hosts",
                 lambda: sorted(f["Metric"]["ABPackets"] for f in gremlin(
                     a, "G.Flows().Has('Application', 'ICMPv4')") or []) == [4, 4])
        # no analyzer: the agents keep capturing and buffer their flow updates
        assert " 0% packet loss" in lab.ping(lab.a, "10.77.2.2", count=3)
        time.sleep(2)   # at least one flow update tick (flow.update 1 s) while it is down
        with running(cfg) as a:
            wait("the agents back and the capture re-armed",
                 lambda: active_on(a, capture_id) == hosts, timeout=60)
            def counts() -> list[int]:
                return sorted(f["Metric"]["ABPackets"] for f in gremlin(
                    a, "G.Flows().Has('Application', 'ICMPv4')") or [])
            try:
                # one flow per ping run (each has its own ICMP id), on both hosts: the
                # 4 before the outage kept, the 3 during it delivered after
                wait("the flows of both ping runs on both hosts",
                     lambda: counts() == [3, 3, 4, 4], timeout=60)
            except AssertionError:
                icmp = gremlin(a, "G.Flows().Has('Application', 'ICMPv4')")
                raise AssertionError(f"counts {counts()}; flows {icmp}") from None


def test_vxlan_inner_flows_tied_to_the_tunnel_and_a_killed_agent(analyzer_at, tmp_path):
    """VXLAN between the two hosts (an L2 overlay: a bridge per host holding a VXLAN port
    over eth1 and a veth to the VM): on host A's eth1 the inner ICMP flow's ParentUUID is
    the VXLAN flow's UUID, and its TrackingID is the one of the decapsulated flow on host
    B's veth (same frame, same identity). Then agent B is killed (SIGKILL): its host is
    marked, its flows too (AgentDisconnectedAt), its topology and flows stay queryable."""
    with two_hosts(f"{RUN_ID}x") as lab, analyzer_at() as a:
        for i, h in enumerate((lab.a, lab.b), 1):
            sh("ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "local", f"192.168.77.{i}",
               "remote", f"192.168.77.{3 - i}", "dstport", "4789", "dev", "eth1", ns=h.netns)
            sh("ip", "link", "add", "br0", "type", "bridge", ns=h.netns)
            sh("ip", "link", "set", "vx0", "master", "br0", ns=h.netns)
            sh("ip", "link", "add", "vtap", "type", "veth", "peer", "name", "ovl", ns=h.netns)
            sh("ip", "link", "set", "ovl", "netns", h.vm, ns=h.netns)
            sh("ip", "link", "set", "vtap", "master", "br0", ns=h.netns)
            for dev in ("vx0", "br0", "vtap"):
                sh("ip", "link", "set", dev, "up", ns=h.netns)
            sh("ip", "addr", "add", f"10.88.0.{i}/24", "dev", "ovl", ns=h.vm)
            sh("ip", "link", "set", "ovl", "up", ns=h.vm)
        with agent(lab.a, a.rpc, tmp_path), agent(lab.b, a.rpc, tmp_path) as proc_b:
            wait("both hosts' vtap", lambda: len(gremlin(a, "G.V().Has('Name', 'vtap')")) == 2)
            capture_id = a.request("POST", "/api/capture", {
                "GremlinQuery": "G.V().Has('Name', Within('eth1', 'vtap'))"}).json()["UUID"]

            def capturing() -> bool:
                nodes = gremlin(a, "G.V().Has('Name', Within('eth1', 'vtap'))") or []
                return len(nodes) == 4 and all(
                    any(c["ID"] == capture_id and c["State"] == "active"
                        for c in n["Metadata"].get("Captures") or []) for n in nodes)
            wait("the capture active on eth1 and vtap of both hosts", capturing)
            assert " 0% packet loss" in lab.ping(lab.a, "10.88.0.2", count=3)

            tid = {(n["Host"], n["Metadata"]["Name"]): n["Metadata"]["TID"]
                   for n in gremlin(a, "G.V().Has('Name', Within('eth1', 'vtap'))")}

            def flows_on(host: Host, name: str, application: str) -> list[dict[str, Any]]:
                return gremlin(a, f"G.Flows().Has('NodeTID', '{tid[(host.name, name)]}')"
                                  f".Has('Application', '{application}')") or []

            def three_each_way(flows: list[dict[str, Any]]) -> list[dict[str, Any]]:
                return [f for f in flows
                        if f["Metric"]["ABPackets"] == 3 and f["Metric"]["BAPackets"] == 3]

            inner = wait("the inner ICMP flow on A's eth1", lambda: three_each_way(
                [f for f in flows_on(lab.a, "eth1", "ICMPv4") if f.get("ParentUUID")]))
            assert len(inner) == 1, inner
            tunnels = flows_on(lab.a, "eth1", "VXLAN")
            assert [t["UUID"] for t in tunnels if t["UUID"] == inner[0]["ParentUUID"]], (
                inner, tunnels)
            tunnel = next(t for t in tunnels if t["UUID"] == inner[0]["ParentUUID"])
            assert tunnel["LayersPath"].endswith("UDP/VXLAN")
            assert {tunnel["Network"]["A"], tunnel["Network"]["B"]} == {"192.168.77.1",
                                                                         "192.168.77.2"}
            assert 4789 in (tunnel["Transport"]["A"], tunnel["Transport"]["B"])
            # the decapsulated flow on the peer's veth: same frame, same TrackingID
            peer = wait("the ICMP flow on B's vtap",
                        lambda: three_each_way(flows_on(lab.b, "vtap", "ICMPv4")))
            assert len(peer) == 1 and not peer[0].get("ParentUUID"), peer
            assert peer[0]["TrackingID"] == inner[0]["TrackingID"]
            assert {(f["Network"]["A"], f["Network"]["B"]) for f in inner + peer} == {
                ("10.88.0.1", "10.88.0.2")}
            # inner flow -> tunnel flow -> interface -> host, as docs/graph-model.md shows
            nodes = gremlin(a, f"G.Flows().Has('UUID', '{inner[0]['UUID']}').CaptureNode()")
            assert [(n["Host"], n["Metadata"]["Name"]) for n in nodes] == [(lab.a.name, "eth1")]

            # agent B dies without a goodbye
            proc_b.send_signal(signal.SIGKILL)
            proc_b.wait(30)

            def b_marked() -> bool:
                hosts = [h for h in gremlin(a, "G.V().Has('Type', 'host')") or []
                         if h["Host"] == lab.b.name]
                return bool(hosts) and hosts[0]["Metadata"].get("Status") == "disconnected"
            wait("host B marked disconnected", b_marked)
            status = a.request("GET", "/api/status").json()["Agents"]
            assert status[lab.b.name]["Connected"] is False
            assert status[lab.a.name]["Connected"] is True
            # nothing of B deleted: its interfaces and its flows are still there
            assert [n["Host"] for n in gremlin(a, "G.V().Has('Name', 'vtap')")
                    if n["Host"] == lab.b.name] == [lab.b.name]
            assert three_each_way(flows_on(lab.b, "vtap", "ICMPv4"))
            # B's flows (seen within flow.expire) are marked as cut short; A's are not
            wait("B's flows marked", lambda: all(
                f.get("AgentDisconnectedAt") for f in flows_on(lab.b, "vtap", "ICMPv4")))
            assert not any(f.get("AgentDisconnectedAt") for f in flows_on(lab.a, "eth1", "ICMPv4"))
