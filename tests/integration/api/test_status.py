"""`/api/status` on a real analyzer: `Graph` counts what the database holds (not
only what went through this analyzer), `Flows` what the retention pruned and
the retention in force."""

from __future__ import annotations

import time

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from tests.conftest import RUN_ID, open_store, wait

HOST = {"ID": f"{RUN_ID}-st-host", "Host": "h1", "Metadata": {"Name": "h1", "Type": "host"}}
ETH0 = {"ID": f"{RUN_ID}-st-eth0", "Host": "h1", "Metadata": {"Name": "eth0", "Type": "veth"}}
OWN = {"ID": f"{RUN_ID}-st-own", "Host": "h1", "Parent": HOST["ID"], "Child": ETH0["ID"],
       "Metadata": {"RelationType": "ownership"}}
OLD_S = 1_420_070_400  # 2015-01-01


def test_status_counts_the_database_and_the_pruned(analyzer_at, bolt_server, tmp_path):
    packets = []
    for i in range(6):  # three UDP flows recorded in 2015
        p = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5000 + i % 3, dport=53)
        p.time = OLD_S + i
        packets.append(p)
    trace = tmp_path / "2015.pcap"
    wrpcap(str(trace), packets)
    with analyzer_at() as a:
        for path, body in (("/api/node", HOST), ("/api/node", ETH0), ("/api/edge", OWN)):
            assert a.request("POST", path, body).status == 201
        graph = a.request("GET", "/api/status").json()["Graph"]
        assert (graph["Nodes"], graph["Edges"]) == (2, 1)
        assert (graph["InMemoryNodes"], graph["InMemoryEdges"]) == (2, 1)
        assert (graph["Flows"], graph["FlowMetrics"], graph["RawPackets"]) == (0, 0, 0)

        # a node another writer put in the database: counted, though not in memory
        async def other_writer() -> None:
            store = await open_store(bolt_server, clear=False)
            await store.run("CREATE (:Node:Host {ID: $id, Name: 'h2', Type: 'host'})",
                            {"id": f"{RUN_ID}-st-other"})
            await store.close()
        bolt_server.loop.run(other_writer())
        graph = a.request("GET", "/api/status").json()["Graph"]
        assert (graph["Nodes"], graph["InMemoryNodes"]) == (3, 2)

        r = a.request("POST", "/api/pcap", raw=trace.read_bytes(),
                      headers={"Content-Type": "application/vnd.tcpdump.pcap"})
        assert r.status == 202 and r.json()["Flows"] == 3, r.body
        status = wait("the imported flows", lambda: (
            s := a.request("GET", "/api/status").json())["Graph"]["Flows"] == 3 and s)
        flows = status["Flows"]
        assert (flows["written"], flows["pruned"], flows["pruned_samples"]) == (3, 0, 0)
        assert flows["retention"] == 86_400
        # flow links point into nodes: not counted as topology edges
        assert status["Graph"]["Edges"] == 1

        started = time.monotonic()
        for _ in range(20):
            a.request("GET", "/api/status")
        assert (time.monotonic() - started) / 20 < 0.5, "status must stay cheap"


def test_status_shows_zero_retention(analyzer_at):
    with analyzer_at("flow:\n  retention: 0\n") as a:
        flows = a.request("GET", "/api/status").json()["Flows"]
        assert (flows["retention"], flows["pruned"], flows["pruned_samples"]) == (0, 0, 0)
