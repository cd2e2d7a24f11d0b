"""The fabric probe with real agents: TOR1 and its ports from the analyzer's
`analyzer.topology.fabric` lines, linked to each agent's `eth1` when the agent
reports it, and still linked after the agent restarts (its resync deletes only
its own elements)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import RUN_ID
from tests.integration.api.conftest import Served
from tests.integration.e2e.lab import two_hosts
from tests.integration.e2e.test_two_agents import agent, gremlin, wait

pytestmark = [pytest.mark.root, pytest.mark.slow]


def fabric_config(a: str, b: str) -> str:
    return f"""\
analyzer:
  topology:
    fabric:
      - TOR1[Name=tor1] -> TOR1_PORT1[MTU=1500]
      - TOR1_PORT1 -> *[Type=host,Name={a}]/eth1
      - TOR1[Name=tor1] -> TOR1_PORT2
      - TOR1_PORT2 -> *[Type=host,Name={b}]/eth1
"""


def linked(a: Served, port: str) -> list[dict[str, Any]]:
    return gremlin(a, f"G.V().Has('Name', '{port}').Out().Has('Name', 'eth1')") or []


def test_tor_ports_linked_to_agents_eth1_and_kept_through_a_restart(analyzer_at, tmp_path):
    with two_hosts(f"{RUN_ID}f") as lab, analyzer_at(fabric_config(lab.a.name,
                                                                  lab.b.name)) as a:
        # the fabric exists before any agent
        tor = wait("TOR1 in the graph", lambda: gremlin(
            a, "G.V().Has('Probe', 'fabric').Has('Name', 'tor1')"))
        assert len(tor) == 1 and tor[0]["Host"] == "" and tor[0]["Metadata"]["Type"] == "device"
        assert tor[0]["Metadata"]["TID"] == tor[0]["ID"]
        ports = gremlin(a, "G.V().Has('Name', 'tor1').Out().Dedup().Values('Name')")
        assert sorted(ports) == ["TOR1_PORT1", "TOR1_PORT2"]
        assert gremlin(a, "G.V().Has('Name', 'TOR1_PORT1').Values('MTU')") == ["1500"]
        with agent(lab.a, a.rpc, tmp_path), agent(lab.b, a.rpc, tmp_path):
            eth1 = wait("TOR1_PORT1 linked to host A's eth1",
                        lambda: linked(a, "TOR1_PORT1"))
            assert [n["Host"] for n in eth1] == [lab.a.name]
            eth1_b = wait("TOR1_PORT2 linked to host B's eth1",
                          lambda: linked(a, "TOR1_PORT2"))
            assert [n["Host"] for n in eth1_b] == [lab.b.name]
            edge = gremlin(a, "G.V().Has('Name', 'TOR1_PORT1').OutE()"
                              ".Has('RelationType', 'layer2')")
            link = [e for e in edge if e["Child"] == eth1[0]["ID"]]
            assert len(link) == 1 and link[0]["Host"] == ""
            assert link[0]["Metadata"] == {"RelationType": "layer2", "Type": "fabric"}
            # from a host to the other through the fabric, as Skydive's lab shows it
            path = gremlin(a, f"G.V().Has('Type', 'host').Has('Name', '{lab.a.name}')"
                              ".Out().Has('Name', 'eth1').In().Has('Name', 'TOR1_PORT1')"
                              ".In().Has('Name', 'tor1').Out().Out().Has('Name', 'eth1')"
                              ".Dedup().Values('@Host')")
            assert sorted(path) == sorted([lab.a.name, lab.b.name])
        # agent A again: a fresh process, a full resync; the link is the same edge
        with agent(lab.a, a.rpc, tmp_path):
            wait("host A connected again", lambda: [
                h for h in gremlin(a, f"G.V().Has('Type', 'host').Has('Name', '{lab.a.name}')")
                if h["Metadata"].get("Status") == "connected"])
            again = gremlin(a, "G.V().Has('Name', 'TOR1_PORT1').OutE()"
                               ".Has('RelationType', 'layer2')")
            assert [e["ID"] for e in again if e["Child"] == eth1[0]["ID"]] == [link[0]["ID"]]
