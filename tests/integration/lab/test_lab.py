"""The seeds' scenarios on the single-machine lab (`skygraph lab up`): two agent
hosts with Open vSwitch (userspace datapath) joined by a GRE tunnel over an
underlay `eth1` through TOR1, one VM namespace per host.

- seed 004 (multi-node and tunneling): captures on agent1's eth1 and on both
  OVS bridges, injected pings between the VMs, the ICMP flows, the GRE flow on
  eth1 and the inner ICMP flow whose ParentUUID is the GRE flow's UUID; TOR1
  linked to both eth1;
- seed 002 (advanced captures): a BPF `icmp` capture, a `--rawpacket-limit 5`
  capture, `RawPackets()` downloaded as pcap and read by tcpdump, the capture
  type chosen by default per node type;
- seeds 000/001/003 (targets): an ERSPAN (erspanv1) target with port 0
  receives the mirrored pings;
- the lab's graph through GraphQL, and through plain Cypher with the queries
  vagrant/README.md gives for Neo4j Browser.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RUN_ID, http
from tests.integration.lab.conftest import REPO, Lab, lab_leftovers, skygraph, wait

pytestmark = [pytest.mark.root, pytest.mark.slow]

VM1_ETH0 = "G.V().Has('Name', 'vm1').Out().Has('Name', 'eth0')"
VM2_ETH0 = "G.V().Has('Name', 'vm2').Out().Has('Name', 'eth0')"
AGENT1_ETH1 = "G.V().Has('Type', 'host').Has('Name', 'agent1').Out().Has('Name', 'eth1')"
BRIDGE = "G.V().Has('Type', 'host').Has('Name', '{}').Out().Has('Type', 'ovsbridge')" \
         ".Has('Name', 'br-int')"
README = REPO / "vagrant" / "README.md"


def doc_blocks(lang: str) -> dict[str, str]:
    """The code blocks of vagrant/README.md marked `<!-- test: NAME -->`, by name."""
    text = README.read_text()
    pattern = r"<!-- test: ([\w-]+) -->\s*```" + lang + r"\n(.*?)```"
    return {m.group(1): m.group(2).strip() for m in re.finditer(pattern, text, re.S)}


def tid(lab: Lab, query: str) -> str:
    [node] = lab.gremlin(query)
    return str(node["Metadata"]["TID"])


def flows(lab: Lab, **has: str) -> list[dict[str, Any]]:
    steps = "".join(f".Has('{k}', '{v}')" for k, v in has.items())
    return lab.gremlin(f"G.Flows(){steps}")


def inject(lab: Lab, count: int, cli: bool = False) -> dict[str, Any]:
    """Pings from VM1's eth0 to VM2's, with the CLI or through REST."""
    out: dict[str, Any]
    if cli:
        out = lab.cli("inject", "create", "--src", VM1_ETH0, "--dst", VM2_ETH0,
                      "--count", str(count), "--interval", "100")
    else:
        r = http(lab.url + "/api/injectpacket", "POST", {
            "Src": VM1_ETH0, "Dst": VM2_ETH0, "Count": count, "Interval": 100})
        assert r.status == 201, r.body
        out = r.json()
    assert out["TrackingID"], out
    return out


# ---------------------------------------------------------------- the lab itself
def test_lab_is_up_and_shaped_like_the_vagrant_lab(lab: Lab) -> None:
    out = skygraph("lab", "status", "--prefix", lab.prefix, "--dir", str(lab.dir), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    status = json.loads(out.stdout)
    assert status["Up"] is True
    assert status["Agents"] == {"agent1": True, "agent2": True}
    assert all(status["Processes"].values()), status["Processes"]
    assert status["Tunnels"] == {"agent1": {"RemoteIP": "192.168.50.30", "Error": ""},
                                 "agent2": {"RemoteIP": "192.168.50.20", "Error": ""}}
    # a second `up` of the same lab is refused, naming what exists
    again = skygraph("lab", "up", "--prefix", lab.prefix, "--dir", str(lab.dir))
    assert again.returncode == 1 and f"lab {lab.prefix} exists" in again.stderr

    # host -> bridge -> tunnel port, on both hosts
    for host, remote in (("agent1", "192.168.50.30"), ("agent2", "192.168.50.20")):
        gre = lab.gremlin(BRIDGE.format(host) + ".Out().Has('Type', 'ovsport')"
                          ".Has('Name', 'gre0').Out().Has('Type', 'gre').Dedup()")
        assert [(g["Host"], g["Metadata"]["RemoteIP"], g["Metadata"]["TunEgressIface"])
                for g in gre] == [(host, remote, "br-phy")]
    # the VM namespaces hang off their host, their eth0 is a veth of the bridge's port
    for i in (1, 2):
        vm = lab.gremlin(f"G.V().Has('Type', 'host').Has('Name', 'agent{i}').Out()"
                         f".Has('Type', 'netns').Has('Name', 'vm{i}').Out().Has('Name', 'eth0')")
        assert [n["Metadata"]["IPV4"] for n in vm] == [[f"192.168.0.{i}/24"]]
    # TOR1 linked to both eth1 (the fabric probe, from the analyzer's config)
    linked = lab.gremlin("G.V().Has('Name', 'tor1').Out().Has('Name', Regex('TOR1_PORT.'))"
                         ".Out().Has('Name', 'eth1').Dedup()")
    assert sorted(n["Host"] for n in linked) == ["agent1", "agent2"]

    # VM1 -> VM2 crosses the tunnel: GRE on agent1's eth1
    dump = subprocess.Popen(["ip", "netns", "exec", lab.netns("agent1"), "tcpdump", "-lni",
                             "eth1", "-c", "4", "ip proto 47"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(1)
        assert " 0% packet loss" in lab.sh("ping", "-c", "3", "-i", "0.2", "192.168.0.2",
                                           ns="vm1")
        seen, _ = dump.communicate(timeout=20)
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.wait()
    assert "192.168.50.20 > 192.168.50.30: GREv0" in seen, seen
    assert "IP 192.168.0.1 > 192.168.0.2: ICMP echo request" in seen, seen


# ---------------------------------------------------------------- seed 004
def test_seed_004_inner_flows_tied_to_the_gre_flow(lab: Lab) -> None:
    try:
        on_eth1 = lab.capture("--gremlin", AGENT1_ETH1)
        on_bridges = [lab.capture("--gremlin", BRIDGE.format(h)) for h in ("agent1", "agent2")]
        kinds = {(c["Host"], c["Name"]): c["Type"] for cid in (on_eth1, *on_bridges)
                 for c in lab.captures_on(cid)}
        # the type each node type gets by default (seed 002: "sFlow on an OVS bridge")
        assert kinds == {("agent1", "eth1"): "afpacket", ("agent1", "br-int"): "ovssflow",
                         ("agent2", "br-int"): "ovssflow"}
        injection = inject(lab, 5, cli=True)
        tracking = injection["TrackingID"]
        eth1 = tid(lab, AGENT1_ETH1)
        bridges = {h: tid(lab, BRIDGE.format(h)) for h in ("agent1", "agent2")}

        def icmp() -> list[dict[str, Any]]:
            found = flows(lab, Application="ICMPv4", TrackingID=tracking)
            done = [f for f in found if f["Metric"]["ABPackets"] == 5
                    and f["Metric"]["BAPackets"] == 5]
            return done if {f["NodeTID"] for f in done} == {eth1, *bridges.values()} else []
        found = wait("the injected pings' flow on agent1's eth1 and both bridges", icmp)
        # one flow per capture point, the same frames everywhere: one TrackingID
        assert len(found) == 3
        assert {(f["Network"]["A"], f["Network"]["B"]) for f in found} == {
            ("192.168.0.1", "192.168.0.2")}
        [inner] = [f for f in found if f["NodeTID"] == eth1]
        assert inner["ParentUUID"], inner
        assert all(not f.get("ParentUUID") for f in found if f["NodeTID"] != eth1)
        # the GRE flow on eth1, and the inner flow's parent is it
        gre = [f for f in flows(lab, Application="GRE", NodeTID=eth1)
               if f["UUID"] == inner["ParentUUID"]]
        assert len(gre) == 1, (inner, flows(lab, Application="GRE"))
        assert gre[0]["LayersPath"] == "Ethernet/IPv4/GRE"
        assert {gre[0]["Network"]["A"], gre[0]["Network"]["B"]} == {"192.168.50.20",
                                                                    "192.168.50.30"}
        assert gre[0]["Metric"]["ABPackets"] + gre[0]["Metric"]["BAPackets"] >= 10
        # the seed's query: from the interface to its flows, and back to the capture node
        on_iface = lab.gremlin(AGENT1_ETH1 + ".Flows().Has('Application', 'ICMPv4')"
                               f".Has('TrackingID', '{tracking}')")
        assert [f["UUID"] for f in on_iface] == [inner["UUID"]]
        nodes = lab.gremlin(f"G.Flows().Has('UUID', '{inner['ParentUUID']}').CaptureNode()")
        assert [(n["Host"], n["Metadata"]["Name"]) for n in nodes] == [("agent1", "eth1")]
    finally:
        lab.delete_captures()


# ---------------------------------------------------------------- seed 002
def test_seed_002_bpf_rawpackets_pcap_and_default_types(lab: Lab, tmp_path: Path) -> None:
    """vagrant/README.md section 4, command for command."""
    try:
        bpf = lab.capture("--gremlin", "G.V().Has('Name', 'eth0')", "--bpf", "icmp", nodes=2)
        raw = lab.capture("--gremlin", "G.V().Has('Name', 'eth0')", "--type", "pcap",
                          "--rawpacket-limit", "5", nodes=2)
        # no --type: a veth gets afpacket, an OVS port ovsmirror (seed 002: "by default
        # the most adapted type is chosen")
        port = lab.capture(GremlinQuery="G.V().Has('Type', 'ovsport').Has('Name', 'vm1-eth0')")
        types = {cid: {(c["NodeType"], c["Type"]) for c in lab.captures_on(cid)}
                 for cid in (bpf, raw, port)}
        assert types == {bpf: {("veth", "afpacket")}, raw: {("veth", "pcap")},
                         port: {("ovsport", "ovsmirror")}}
        lab.sh("ip", "neigh", "flush", "all", ns="vm1")     # an ARP exchange first
        assert " 0% packet loss" in lab.sh("ping", "-c", "1", "192.168.0.2", ns="vm1")
        eth0 = {tid(lab, VM1_ETH0), tid(lab, VM2_ETH0)}

        def pings() -> list[dict[str, Any]]:
            found = [f for f in flows(lab, Application="ICMPv4") if f["NodeTID"] in eth0
                     and f["CaptureID"] in (bpf, raw)
                     and (f["Metric"]["ABPackets"], f["Metric"]["BAPackets"]) == (1, 1)]
            return found if len(found) == 2 else []
        wait("the ping's flow on both VMs' eth0", pings)
        # the ARP exchange: seen by the unfiltered capture, never by the BPF one
        wait("the ARP flow of the unfiltered capture", lambda: [
            f for f in flows(lab, Application="ARP", CaptureID=raw) if f["NodeTID"] in eth0])
        assert {f["Application"] for f in flows(lab, CaptureID=bpf)} <= {"ICMPv4"}
        pcap = tmp_path / "icmp.pcap"

        def downloaded() -> bool:
            out = skygraph("query", "--analyzer", lab.listen, "--format", "pcap", "-o", str(pcap),
                           "G.At('-1s', 1000).Flows().Has('Application', 'ICMPv4').RawPackets()")
            assert out.returncode == 0, out.stderr
            return pcap.stat().st_size >= 24 + 4 * (16 + 98)
        wait("the four packets stored", downloaded)
        read = subprocess.run(["tcpdump", "-qns", "0", "-r", str(pcap)], capture_output=True,
                              text=True, timeout=30)
        assert read.returncode == 0, read.stderr
        lines = read.stdout.splitlines()
        # 4 packets, 2 per capture from 2 different hosts (as the seed shows)
        assert len(lines) == 4, read.stdout
        assert sum("IP 192.168.0.1 > 192.168.0.2: ICMP echo request" in x for x in lines) == 2
        assert sum("IP 192.168.0.2 > 192.168.0.1: ICMP echo reply" in x for x in lines) == 2
        assert "link-type EN10MB" in read.stderr
    finally:
        lab.delete_captures()


# ---------------------------------------------------------------- seeds 000/001/003
def test_seeds_000_003_erspan_target_with_port_0(lab: Lab) -> None:
    from scapy.contrib.erspan import ERSPAN_II
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import GRE, Ether

    receiver = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)   # GRE, root namespace
    receiver.settimeout(0.5)
    try:
        cap = lab.capture("--gremlin", VM1_ETH0, "--target", "127.0.0.1:0", "--target-type",
                          "erspanv1")
        injection = inject(lab, 3)
        mirrored: list[tuple[str, int, int]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(mirrored) < 6:
            with contextlib.suppress(TimeoutError):
                pkt = IP(receiver.recv(65535))
                if GRE not in pkt or ERSPAN_II not in pkt or ICMP not in pkt:
                    continue
                inner = pkt[ERSPAN_II].payload
                if not isinstance(inner, Ether) or inner[IP].src not in ("192.168.0.1",
                                                                          "192.168.0.2"):
                    continue
                assert pkt[GRE].proto == 0x88BE and pkt[ERSPAN_II].ver == 1
                if inner[ICMP].id == injection["ICMPID"]:
                    mirrored.append((inner[IP].src, inner[ICMP].type, pkt[ERSPAN_II].session_id))
        assert sorted(mirrored) == [("192.168.0.1", 8, 1)] * 3 + [("192.168.0.2", 0, 1)] * 3, \
            mirrored
        [entry] = lab.captures_on(cap)
        assert (entry["Host"], entry["Name"], entry["Type"]) == ("agent1", "eth0", "afpacket")
    finally:
        receiver.close()
        lab.delete_captures()


# ---------------------------------------------------------------- GraphQL and Cypher
def test_graphql_and_the_docs_neo4j_browser_queries(lab: Lab) -> None:
    try:
        lab.capture(GremlinQuery=AGENT1_ETH1)
        injection = inject(lab, 2)
        wait("the inner flow on eth1", lambda: [
            f for f in flows(lab, TrackingID=injection["TrackingID"]) if f.get("ParentUUID")])
    finally:
        lab.delete_captures()
    data = lab.graphql('{ nodes(filter: {type: "netns"}) { edges { node { name host '
                       'neighbors(direction: OUT) { name type } } } } }')
    vms = sorted((e["node"]["host"], e["node"]["name"],
                  sorted(n["name"] for n in e["node"]["neighbors"]))
                 for e in data["nodes"]["edges"])
    assert vms == [("agent1", "vm1", ["eth0", "lo"]), ("agent2", "vm2", ["eth0", "lo"])]
    documented = doc_blocks("graphql")
    data = lab.graphql(documented["lab-graphql-tunnels"])
    assert sorted((e["node"]["host"], e["node"]["metadata"]["RemoteIP"],
                   [n["name"] for n in e["node"]["neighbors"]])
                  for e in data["nodes"]["edges"]) == [
        ("agent1", "192.168.50.30", ["gre0"]), ("agent2", "192.168.50.20", ["gre0"])]
    inner = lab.graphql(documented["lab-graphql-inner-flows"])
    [flow] = [e["node"] for e in inner["flows"]["edges"] if e["node"]["parentUUID"]
              and e["node"]["trackingID"] == injection["TrackingID"]]
    gre = lab.graphql('{ flows(filter: {application: "GRE", host: "agent1"}) '
                      '{ edges { node { id layersPath } } } }')
    assert flow["parentUUID"] in [e["node"]["id"] for e in gre["flows"]["edges"]]

    queries = doc_blocks("cypher")
    assert {"lab-tunnels", "lab-inner-flows", "lab-fabric", "lab-vms"} <= set(queries)
    rows = lab.cypher(queries["lab-tunnels"])
    assert sorted((r["host"], r["bridge"], r["port"], r["remote_ip"]) for r in rows) == [
        ("agent1", "br-int", "gre0", "192.168.50.30"),
        ("agent2", "br-int", "gre0", "192.168.50.20")]
    rows = lab.cypher(queries["lab-inner-flows"])
    mine = [r for r in rows if r["inner_uuid"] == flow["id"]]
    assert [(r["host"], r["interface"], r["tunnel_uuid"], r["parent_uuid"], r["application"],
             r["inner_flow"]) for r in mine] == [
        ("agent1", "eth1", flow["parentUUID"], flow["parentUUID"], "ICMPv4",
         "192.168.0.1 -> 192.168.0.2")], rows
    assert all(r["parent_uuid"] == r["tunnel_uuid"] for r in rows)
    assert all(sorted(r["tunnel"].split(" -> ")) == ["192.168.50.20", "192.168.50.30"]
               for r in rows), rows
    rows = lab.cypher(queries["lab-fabric"])
    assert sorted((r["tor"], r["port"], r["host"]) for r in rows) == [
        ("tor1", "TOR1_PORT1", "agent1"), ("tor1", "TOR1_PORT2", "agent2")]
    rows = lab.cypher(queries["lab-vms"])
    assert sorted((r["host"], r["vm"], r["ip"], r["bridge_port"], r["bridge"]) for r in rows) == [
        ("agent1", "vm1", ["192.168.0.1/24"], "vm1-eth0", "br-int"),
        ("agent2", "vm2", ["192.168.0.2/24"], "vm2-eth0", "br-int")]


# ---------------------------------------------------------------- down after a half-done up
def test_down_cleans_a_half_done_up(tmp_path: Path) -> None:
    """Namespaces and one Open vSwitch made, its vswitchd killed, a stray process
    running with the lab directory on its command line, no analyzer, no agent:
    `lab down` leaves nothing."""
    import sys

    from skygraph.lab import net, procs
    from skygraph.lab.layout import Layout
    prefix = f"{RUN_ID}h"
    layout = Layout.make(prefix, str(tmp_path / "lab"))
    layout.dir.mkdir()
    try:
        net.build(layout)
        first = layout.hosts[0]
        net.start_ovs(first)
        vswitchd = procs.read_pid(first.ovs_dir / "ovs-vswitchd.pid")
        assert vswitchd is not None and procs.alive(vswitchd)
        procs.stop([vswitchd], timeout=0)        # "crashed": SIGKILL, its pid file stays
        stray = procs.spawn([sys.executable, "-c", "import time; time.sleep(300)",
                             str(layout.graph_dir / "x")], layout.logfile("stray"),
                            tmp_path / "stray.pid")
        assert procs.alive(stray.pid)
        assert lab_leftovers(prefix, layout.dir)
    finally:
        down = skygraph("lab", "down", "--prefix", prefix, "--dir", str(layout.dir))
        if "stray" in locals():
            stray.wait(10)
    assert down.returncode == 0, down.stderr
    assert "ovsdb-server" in down.stderr and "other processes" in down.stderr
    left = lab_leftovers(prefix, layout.dir)
    assert left == [] or left == [f"{layout.dir}: ['stray.log']"], left
