"""The seed's raw packet scenario end to end ("a distributed tcpdump"): two
agents, a live capture on both hosts' eth0 keeping raw packets, two pings from
host A's VM to host B's, and `G.At('-1s', 1000).Flows().Has('Application',
'ICMPv4').RawPackets()` downloaded as a pcap (REST with Skydive's Accept
header, and `skygraph query --format pcap`) that tcpdump reads: the ICMP
packets seen by every capture on every host, with `BPF()` keeping the
replies. The interfaces' counters come back through `Metrics()` too."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RUN_ID
from tests.integration.api.conftest import Served
from tests.integration.e2e.lab import two_hosts
from tests.integration.e2e.test_two_agents import active_on, agent, gremlin, wait

pytestmark = [pytest.mark.root, pytest.mark.slow]

PCAP = "application/vnd.tcpdump.pcap"
SEED = "G.At('-1s', 1000).Flows().Has('Application', 'ICMPv4').RawPackets()"
AGENT_CONFIG = """\
flow:
  update: 1
  expire: 30
agent:
  capture:
    stats_update: 0.5
  topology:
    netlink:
      metrics_update: 1
"""


def download(a: Served, query: str, path: Path) -> list[str]:
    """The query's raw packets as a pcap from REST, read back by tcpdump."""
    r = a.request("POST", "/api/topology", {"GremlinQuery": query}, headers={"Accept": PCAP})
    assert r.status == 200, r.body
    path.write_bytes(r.body)
    return tcpdump(path)


def tcpdump(path: Path) -> list[str]:
    out = subprocess.run(["tcpdump", "-nn", "-r", str(path)], capture_output=True, text=True,
                         timeout=30, check=True)
    return out.stdout.splitlines()


def test_raw_packets_of_every_capture_as_one_pcap(analyzer_at: Any, tmp_path: Path) -> None:
    with two_hosts(f"{RUN_ID}p") as lab, analyzer_at() as a, \
            agent(lab.a, a.rpc, tmp_path, AGENT_CONFIG), agent(lab.b, a.rpc, tmp_path, AGENT_CONFIG):
        wait("both hosts' eth0", lambda: len(gremlin(a, "G.V().Has('Name', 'eth0')")) == 2)
        created = a.request("POST", "/api/capture", {
            "GremlinQuery": "G.V().Has('Name', 'eth0')", "RawPacketLimit": 5,
            "BPFFilter": "icmp"})
        assert created.status == 201, created.body
        capture_id = created.json()["UUID"]
        hosts = sorted([lab.a.name, lab.b.name])
        wait("the capture active on both eth0", lambda: active_on(a, capture_id) == hosts)
        started = int(time.time() * 1000)
        assert " 0% packet loss" in lab.ping(lab.a, "10.77.2.2", count=2)

        # one flow per host, 4 packets each (2 requests, 2 replies), all kept (limit 5);
        # the seed's window ends a second ago, so the packets show up a moment later
        def both_hosts_pcap() -> list[str]:
            lines = download(a, SEED, tmp_path / "icmp.pcap")
            return lines if len(lines) == 8 else []
        lines = wait("the ICMP packets of both captures in the pcap", both_hosts_pcap)
        assert sum("10.77.1.2 > 10.77.2.2: ICMP echo request" in x for x in lines) == 4
        assert sum("10.77.2.2 > 10.77.1.2: ICMP echo reply" in x for x in lines) == 4
        flows = gremlin(a, "G.Flows().Has('Application', 'ICMPv4')")
        assert sorted(f["RawPacketsCaptured"] for f in flows) == [4, 4]
        assert {f["CaptureID"] for f in flows} == {capture_id}
        # the packets' timestamps are their capture times (ms)
        stamps = [float(x.split()[0]) for x in tcpdump_tt(tmp_path / "icmp.pcap")]
        assert all(started / 1000 - 1 <= s <= time.time() for s in stamps)

        replies = download(a, SEED + ".BPF('icmp[icmptype] == 0')", tmp_path / "replies.pcap")
        assert len(replies) == 4 and all("echo reply" in x for x in replies)

        # the command line, as the seed does it: skygraph query ... --format pcap > icmp.pcap
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGRAPH_")}
        with open(tmp_path / "cli.pcap", "wb") as out:
            done = subprocess.run([sys.executable, "-m", "skygraph.cli", "query", SEED,
                                   "--format", "pcap", "--analyzer", a.endpoint], stdout=out,
                                  stderr=subprocess.PIPE, timeout=120, env=env, check=False)
        assert done.returncode == 0, done.stderr
        assert len(tcpdump(tmp_path / "cli.pcap")) == 8

        # the interfaces' counters over the last minute: the pings went out of A's VM
        def sent_by_vm_a() -> int:
            total = gremlin(a, f"G.At(NOW, 120).V().Has('Name', 'eth0', '@Host', "
                               f"'{lab.a.name}').Metrics().Sum('TxPackets')")
            return int(total or 0) if int(total or 0) >= 2 else 0
        assert wait("eth0's transmitted packets in its metric history", sent_by_vm_a) >= 2
        series = gremlin(a, f"G.V().Has('Name', 'eth0', '@Host', '{lab.a.name}').Metrics()")
        assert len(series) == 1 and all("Start" in m and "Last" in m
                                        for ms in series[0].values() for m in ms)


def tcpdump_tt(path: Path) -> list[str]:
    out = subprocess.run(["tcpdump", "-nn", "-tt", "-r", str(path)], capture_output=True,
                         text=True, timeout=30, check=True)
    return out.stdout.splitlines()
