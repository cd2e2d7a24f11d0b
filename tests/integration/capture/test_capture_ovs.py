"""The OVS capture types through the CaptureManager, against real OVS daemons
(ovsdb-server + ovs-vswitchd, userspace datapath) in a lab namespace: a netdev
bridge with two veth ports into two namespaces that ping each other; the graph
is what the OVS probe makes of it.

ovssflow and ovsnetflow on the bridge, ovsmirror on a port: each gives the
ICMP echo flow with exact counters on the expected node, its OVSDB rows exist
while it runs and are gone after stop (mirror interface and edge included);
rows an agent left behind are removed at start; refusals name the reason."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from skygraph.agent import remove_stale_ovs_rows
from skygraph.capture import ovsdb
from skygraph.capture.manager import CaptureManager
from skygraph.capture.options import TableSettings
from skygraph.capture.sources import source_for
from skygraph.capture.sources.base import AgentCaptureSettings, CaptureError
from skygraph.probes import host
from skygraph.probes.elements import Writer
from skygraph.probes.ovs.probe import MIRRORING, OvsProbe
from skygraph.topology.flow import Flow, ICMPType
from skygraph.topology.graph import Graph
from skygraph.topology.model import Node
from tests.conftest import RUN_ID, run
from tests.integration.capture.conftest import Collector, context
from tests.integration.probes.conftest import Lab, Ovs, sh

pytestmark = pytest.mark.root

_seq = itertools.count()
PINGS = 5


@dataclass
class OvsLab:
    """Bridge `br` (netdev) in the lab's host namespace, veth port `a_port` to
    namespace `a` (10.78.0.1), `b_port` to `b` (10.78.0.2)."""

    lab: Lab
    ovs: Ovs
    br: str = field(init=False)
    a: str = field(init=False)
    b: str = field(init=False)
    a_port: str = field(init=False)
    b_port: str = field(init=False)

    def __post_init__(self) -> None:
        lab = self.lab
        self.br = lab.name("br")
        self.ovs.add_bridge(self.br)
        for side, ip in (("a", "10.78.0.1"), ("b", "10.78.0.2")):
            ns = lab.netns(side)
            port, inside = lab.name(f"p{side}"), lab.name(f"i{side}")
            lab.sh(f"ip link add {port} type veth peer name {inside} && "
                   f"ip link set {inside} netns {ns} && ip link set {port} up")
            sh(f"ip addr add {ip}/24 dev {inside} && ip link set {inside} up", ns)
            self.ovs.vsctl(f"add-port {self.br} {port}")
            setattr(self, side, ns)
            setattr(self, f"{side}_port", port)

    def ping(self, count: int = PINGS) -> None:
        sh(f"ping -c {count} -i 0.2 -W 2 10.78.0.2", self.a)

    def uuid(self, table: str, name: str) -> str:
        return self.ovs.vsctl(f"get {table} {name} _uuid").strip()

    def column(self, table: str, name: str, column: str) -> str:
        return self.ovs.vsctl(f"get {table} {name} {column}").strip()


@pytest.fixture
def ovslab() -> Iterator[OvsLab]:
    base = Path(tempfile.mkdtemp(prefix=f"{RUN_ID}-ovscap-"))
    lab = Lab(base, f"{RUN_ID[-5:]}o{next(_seq)}")
    daemons: Ovs | None = None
    try:
        daemons = Ovs(lab)
        yield OvsLab(lab, daemons)
    finally:
        if daemons is not None:
            daemons.close()
        lab.close()


class Recorder:
    """The agent's side of the manager: flows, Captures writes, other metadata."""

    def __init__(self) -> None:
        self.flows: list[Flow] = []
        self.captures: dict[str, list[dict[str, Any]]] = {}
        self.metadata: dict[tuple[str, str], Any] = {}

    def on_flows(self, capture_id: str, flows: list[Flow]) -> None:
        self.flows.extend(flows)

    async def set_captures(self, node_id: str, entries: list[dict[str, Any]]) -> None:
        self.captures[node_id] = entries

    async def set_metadata(self, node_id: str, key: str, value: Any) -> None:
        self.metadata[(node_id, key)] = value

    def echo(self, node_tid: str) -> tuple[int, int]:
        """(AB, BA) packets of the latest version of the 10.78.0.1 <-> .2 echo flow."""
        latest = {f.uuid: f for f in self.flows if f.node_tid == node_tid
                  and f.icmp is not None and f.icmp.type == ICMPType.ECHO
                  and f.network is not None and {f.network.a, f.network.b} == {"10.78.0.1",
                                                                               "10.78.0.2"}}
        return (sum(f.metric.ab_packets for f in latest.values()),
                sum(f.metric.ba_packets for f in latest.values()))


async def until(pred: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
    return value


@dataclass
class Agent:
    """The OVS probe on a graph, and a capture manager on it (the agent's wiring)."""

    lab: OvsLab
    rec: Recorder = field(default_factory=Recorder)
    graph: Graph = field(default_factory=Graph)
    probe: OvsProbe = field(init=False)
    manager: CaptureManager = field(init=False)
    host: str = host.node_id("testhost")

    def __post_init__(self) -> None:
        self.writer = Writer(self.graph, "testhost")
        self.probe = OvsProbe(self.writer, self.host, self.lab.ovs.db)
        self.manager = CaptureManager(
            self.graph, self.host, TableSettings(update=1, expire=600), [], self.rec.on_flows,
            self.rec.set_captures, root_path=self.lab.lab.host, stats_update=0.2,
            agent=AgentCaptureSettings(ovsdb=self.lab.ovs.db),
            set_node_metadata=self.rec.set_metadata)

    async def start(self) -> None:
        await self.writer.put(self.host, {"Name": "testhost", "Type": "host"})
        await self.probe.start()
        await until(lambda: self.node("ovsport", self.lab.b_port), "the OVS ports")

    async def stop(self) -> None:
        await self.manager.stop_all()
        await self.probe.stop()

    def node(self, type_: str, name: str) -> Node | None:
        found = [n for n in self.graph.nodes.values()
                 if n.Metadata.get("Type") == type_ and n.Metadata.get("Name") == name
                 and n.Metadata.get("TID")]
        return found[0] if found else None

    def mirroring(self) -> list[tuple[str, str]]:
        return [(self.graph.nodes[e.Parent].name, self.graph.nodes[e.Child].name)
                for e in self.graph.edges.values() if e.relation_type == MIRRORING]


def scenario(lab: OvsLab, body: Callable[[Agent], Any]) -> None:
    agent = Agent(lab)

    async def main() -> None:
        await agent.start()
        try:
            await body(agent)
        finally:
            await agent.stop()
    run(main())


def capture(type_: str, **extra: Any) -> dict[str, Any]:
    return {"UUID": f"cap-{type_}", "GremlinQuery": "G.V()", "Type": type_, **extra}


def marked(lab: OvsLab) -> dict[str, list[dict[str, Any]]]:
    return ovsdb.marked(lab.ovs.db)


# ---- ovssflow ------------------------------------------------------------------------------
def test_ovssflow_samples_the_bridge_into_flows_and_removes_its_row(ovslab: OvsLab) -> None:
    async def body(agent: Agent) -> None:
        bridge = agent.node("ovsbridge", ovslab.br)
        assert bridge is not None
        entry = await agent.manager.start(capture("ovssflow", SamplingRate=1, PollingInterval=1,
                                                  HeaderSize=128), bridge.ID)
        assert entry["State"] == "active", entry
        socket_address = entry["SFlowSocket"]
        assert socket_address.startswith("127.0.0.1:")
        (row,) = marked(ovslab)["sFlow"]
        assert (row["capture"], row["targets"], row["agent"], row["header"], row["sampling"],
                row["polling"]) == ("cap-ovssflow", [socket_address], ["lo"], [128], [1], [1])
        assert ovslab.column("bridge", ovslab.br, "sflow") == row["uuid"]
        await asyncio.to_thread(ovslab.ping)
        # Sampling 1: every packet crossing the bridge is a sample.
        await until(lambda: agent.rec.echo(bridge.Metadata["TID"]) == (PINGS, PINGS),
                    "5 requests and 5 replies sampled")
        sflow = await until(lambda: agent.rec.metadata.get((bridge.ID, "SFlow")),
                            "the bridge's SFlow counters")
        assert sflow["IfMetrics"] and sflow["LastUpdateMetric"]
        await until(lambda: agent.rec.captures[bridge.ID][0]["PacketsReceived"] >= 2 * PINGS,
                    "PacketsReceived")
        assert await agent.manager.stop("cap-ovssflow", bridge.ID)
        assert marked(ovslab) == {} and ovslab.column("bridge", ovslab.br, "sflow") == "[]"
        assert agent.rec.captures[bridge.ID] == []
    scenario(ovslab, body)


def test_ovssflow_to_an_external_target_only_writes_the_row(ovslab: OvsLab) -> None:
    async def body(agent: Agent) -> None:
        bridge = agent.node("ovsbridge", ovslab.br)
        assert bridge is not None
        cap = capture("ovssflow", Target="192.0.2.9:6343", TargetType="sflow", SamplingRate=0)
        entry = await agent.manager.start(cap, bridge.ID)
        assert entry["State"] == "active" and "SFlowSocket" not in entry, entry
        (row,) = marked(ovslab)["sFlow"]
        assert row["targets"] == ["192.0.2.9:6343"] and row["sampling"] == [2**32 - 1]
        await agent.manager.stop("cap-ovssflow", bridge.ID)
        assert marked(ovslab) == {}
        wrong = await agent.manager.start(capture("ovssflow", Target="192.0.2.9:2055",
                                                  TargetType="netflowv5"), bridge.ID)
        assert wrong["State"] == "error"
        assert "ovssflow: OVS exports sflow, TargetType 'netflowv5' is not possible" in \
            wrong["Error"]
    scenario(ovslab, body)


def test_a_bridge_already_exporting_sflow_is_not_taken_over(ovslab: OvsLab) -> None:
    ovslab.ovs.vsctl(f'-- --id=@s create sFlow targets=\\"192.0.2.1:6343\\" '
                     f'-- set bridge {ovslab.br} sflow=@s')

    async def body(agent: Agent) -> None:
        bridge = agent.node("ovsbridge", ovslab.br)
        assert bridge is not None
        entry = await agent.manager.start(capture("ovssflow"), bridge.ID)
        assert entry["State"] == "error"
        assert (f"bridge {ovslab.br} already exports sFlow (a row skygraph did not write, "
                f"targets 192.0.2.1:6343)") in entry["Error"]
        assert "192.0.2.1:6343" in ovslab.ovs.vsctl("list sflow")
    scenario(ovslab, body)


# ---- ovsnetflow ------------------------------------------------------------------------------
def test_ovsnetflow_records_become_flows_and_its_row_goes(ovslab: OvsLab) -> None:
    async def body(agent: Agent) -> None:
        bridge = agent.node("ovsbridge", ovslab.br)
        assert bridge is not None
        entry = await agent.manager.start(capture("ovsnetflow"), bridge.ID)
        assert entry["State"] == "active", entry
        (row,) = marked(ovslab)["NetFlow"]
        assert row["targets"][0].startswith("127.0.0.1:")
        assert (row["engine_type"], row["engine_id"], row["add_id_to_interface"],
                row["active_timeout"]) == ([10], [1], True, 1)
        await asyncio.to_thread(ovslab.ping)
        # One record per direction (and per active timeout): one ECHO flow, both ways.
        await until(lambda: agent.rec.echo(bridge.Metadata["TID"]) == (PINGS, PINGS),
                    "the NetFlow records of 5 requests and 5 replies")
        f = next(f for f in reversed(agent.rec.flows) if f.application == "ICMPv4")
        assert f.network is not None and f.network.a == "10.78.0.1"
        # OVS counts the frames it forwards: 98 bytes a ping, Ethernet header included.
        assert f.metric.ab_bytes == PINGS * 98 and f.capture_id == "cap-ovsnetflow"
        await until(lambda: agent.rec.captures[bridge.ID][0]["PacketsReceived"] == 2 * PINGS,
                    "PacketsReceived")
        await agent.manager.stop("cap-ovsnetflow", bridge.ID)
        assert marked(ovslab) == {} and ovslab.column("bridge", ovslab.br, "netflow") == "[]"
    scenario(ovslab, body)


def test_ovsnetflow_to_an_external_collector(ovslab: OvsLab) -> None:
    """OVS sends straight to nfcapd (in the lab's host namespace); nfdump reads the ping."""
    spool = ovslab.lab.base / "nfcapd"
    spool.mkdir()
    collector = subprocess.Popen(
        ["nsenter", f"--net={ovslab.lab.host}", "nfcapd", "-w", str(spool), "-b", "127.0.0.1",
         "-p", "9995", "-t", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def body(agent: Agent) -> None:
        bridge = agent.node("ovsbridge", ovslab.br)
        assert bridge is not None
        entry = await agent.manager.start(capture("ovsnetflow", Target="127.0.0.1:9995",
                                                  TargetType="netflowv5"), bridge.ID)
        assert entry["State"] == "active", entry
        assert marked(ovslab)["NetFlow"][0]["targets"] == ["127.0.0.1:9995"]
        await asyncio.to_thread(ovslab.ping)
        await asyncio.sleep(3)  # active timeout 1 s: the records are out
        await agent.manager.stop("cap-ovsnetflow", bridge.ID)
        assert marked(ovslab) == {}

    try:
        scenario(ovslab, body)
    finally:
        collector.send_signal(signal.SIGTERM)
        collector.wait(10)
    out = subprocess.run(["nfdump", "-R", str(spool), "-o", "json", "proto icmp"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    records = json.loads(out)
    by_src: dict[str, int] = {}
    for r in records:
        by_src[r["src4_addr"]] = by_src.get(r["src4_addr"], 0) + int(r["in_packets"])
    assert by_src == {"10.78.0.1": PINGS, "10.78.0.2": PINGS}


# ---- ovsmirror ----------------------------------------------------------------------------------
def test_ovsmirror_captures_the_port_through_a_mirror_and_cleans_up(ovslab: OvsLab) -> None:
    async def body(agent: Agent) -> None:
        port = agent.node("ovsport", ovslab.a_port)
        assert port is not None
        mirror = f"mir{port.Metadata['UUID']}"[:8]
        entry = await agent.manager.start(capture("ovsmirror", BPFFilter="icmp"), port.ID)
        assert entry["State"] == "active", entry
        assert entry["MirrorOf"] == port.ID
        rows = marked(ovslab)
        assert [r["name"] for r in rows["Mirror"]] == [mirror]
        assert rows["Mirror"][0]["select_src_port"] == [port.Metadata["UUID"]]
        assert rows["Mirror"][0]["select_dst_port"] == [port.Metadata["UUID"]]
        assert [r["name"] for r in rows["Port"]] == [mirror]
        assert [(r["name"], r["type"]) for r in rows["Interface"]] == [(mirror, "internal")]
        assert "UP" in ovslab.lab.sh(f"ip link show {mirror}")
        await until(lambda: agent.mirroring() == [(mirror, ovslab.a_port)], "the mirroring edge")
        await asyncio.to_thread(ovslab.ping)
        await until(lambda: agent.rec.echo(port.Metadata["TID"]) == (PINGS, PINGS),
                    "the mirrored requests and replies")
        assert all(f.node_tid == port.Metadata["TID"] for f in agent.rec.flows)
        # A mirror port is not mirrored again.
        mport = await until(lambda: agent.node("ovsport", mirror), "the mirror port node")
        again = await agent.manager.start(capture("ovsmirror", UUID="cap-2"), mport.ID)
        assert again["State"] == "error" and "mirroring a mirror is not allowed" in again["Error"]
        await agent.manager.stop("cap-2", mport.ID)
        await agent.manager.stop("cap-ovsmirror", port.ID)
        assert marked(ovslab) == {}
        assert ovslab.column("bridge", ovslab.br, "mirrors") == "[]"
        await until(lambda: agent.mirroring() == [], "the mirroring edge to go")
        await until(lambda: ovslab.lab.sh(f"ip link show {mirror}", check=False) == "",
                    "the mirror interface to go")
    scenario(ovslab, body)


def test_ovsmirror_refuses_nodes_it_cannot_mirror(ovslab: OvsLab) -> None:
    async def body(agent: Agent) -> None:
        bridge = agent.node("ovsbridge", ovslab.br)
        assert bridge is not None
        entry = await agent.manager.start(capture("ovsmirror"), bridge.ID)
        assert entry["State"] == "error"
        assert "ovsmirror cannot capture on a node of Type 'ovsbridge'" in entry["Error"]
        assert marked(ovslab) == {}
    scenario(ovslab, body)


def test_ovsmirror_without_vswitchd_fails_and_leaves_no_row(ovslab: OvsLab) -> None:
    port = ovslab.uuid("port", ovslab.a_port)
    ovslab.ovs._kill("ovs-vswitchd")  # nobody makes the interface
    meta = {"Name": ovslab.a_port, "Type": "ovsport", "UUID": port, "TID": "tid-port"}
    source = source_for(context({"Type": "ovsmirror"}, meta, ovslab.lab.host, Collector(),
                                agent=AgentCaptureSettings(ovsdb=ovslab.ovs.db),
                                extra={"appear_timeout": 1}))
    with pytest.raises(CaptureError) as exc:
        source.start()
    assert str(exc.value).endswith(f"OVS did not create the mirror interface mir{port[:5]} "
                                   f"within 1s (is ovs-vswitchd running?)")
    assert marked(ovslab) == {}


def test_without_ovsdb_the_capture_is_an_error_and_gives_its_port_back(ovslab: OvsLab) -> None:
    async def body(agent: Agent) -> None:
        bridge = agent.node("ovsbridge", ovslab.br)
        assert bridge is not None
        rec = Recorder()
        nowhere = f"unix:{ovslab.lab.base}/none.sock"
        manager = CaptureManager(
            agent.graph, agent.host, TableSettings(), [], rec.on_flows, rec.set_captures,
            root_path=ovslab.lab.host,
            agent=AgentCaptureSettings(ovsdb=nowhere, netflow_ports=(6365, 6365),
                                       sflow_ports=(6345, 6345)))
        for type_, what in [("ovsnetflow", "NetFlow"), ("ovssflow", "sFlow")] * 2:
            entry = await manager.start(capture(type_), bridge.ID)
            assert entry["State"] == "error", entry
            assert entry["Error"] == (
                f"capture on node {bridge.ID} ({ovslab.br}): {what} on bridge {ovslab.br}: "
                f"OVSDB {nowhere}: cannot connect: No such file or directory "
                f"({nowhere[5:]} does not exist: is ovsdb-server running?)")
            await manager.stop(f"cap-{type_}", bridge.ID)
        await manager.stop_all()
    scenario(ovslab, body)


# ---- what an agent left behind ----------------------------------------------------------------------
def test_rows_of_a_crashed_agent_are_removed_at_start(ovslab: OvsLab) -> None:
    db = ovslab.ovs.db
    br, port = ovslab.uuid("bridge", ovslab.br), ovslab.uuid("port", ovslab.a_port)
    ovsdb.set_sflow(db, br, "gone-1", ovsdb.SFlowRow(("127.0.0.1:6345",), "lo", 128, 1, 10))
    ovsdb.set_netflow(db, br, "gone-2", ovsdb.NetFlowRow(("127.0.0.1:6365",), 10, 1, 60))
    ovsdb.add_mirror(db, port, "gone-3", "mirstale")
    ovslab.ovs.vsctl(f'-- --id=@m create Mirror name=theirs select-all=true '
                     f'-- add bridge {ovslab.br} mirrors @m')
    assert {t: len(r) for t, r in marked(ovslab).items()} == {
        "sFlow": 1, "NetFlow": 1, "Mirror": 1, "Port": 1, "Interface": 1}
    remove_stale_ovs_rows(db)
    assert marked(ovslab) == {}
    assert "mirstale" not in ovslab.ovs.vsctl("show")
    assert ovslab.ovs.vsctl("--columns=name list mirror").split() == [
        "name", ":", "theirs"]  # the user's own mirror stays
    # No OVSDB at all: logged, not raised.
    remove_stale_ovs_rows(f"unix:{ovslab.lab.base}/nothing.sock", timeout=1)
