"""The lab's layout: names under the prefix, the analyzer's and agents' configs
as skygraph's config loader reads them (fabric lines included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skygraph.config import load
from skygraph.lab.layout import LabError, Layout
from skygraph.probes.fabric import Pattern, parse


def test_names_carry_the_prefix() -> None:
    lay = Layout.make("p1", "/tmp/x")
    assert lay.namespaces == ["p1-vm1", "p1-vm2", "p1-agent1", "p1-agent2", "p1-tor"]
    a, b = lay.hosts
    assert (a.host_id, a.netns, a.vm_netns, a.vm_name, a.vm_port) == (
        "agent1", "p1-agent1", "p1-vm1", "vm1", "vm1-eth0")
    assert (a.underlay_ip, b.underlay_ip, a.vm_ip, b.vm_ip) == (
        "192.168.50.20", "192.168.50.30", "192.168.0.1", "192.168.0.2")
    assert a.peer == b and b.peer == a
    assert a.run_dir == Path("/tmp/x/agent1/netns") and a.ovsdb == "unix:/tmp/x/agent1/ovs/db.sock"
    assert Layout.make("p1").dir == Path("/run/skygraph-lab/p1")


@pytest.mark.parametrize("prefix", ["", "-x", "a b", "a/b", "x" * 25])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(LabError, match="--prefix"):
        Layout.make(prefix)


def test_configs_load(tmp_path: Path) -> None:
    lay = Layout.make("p1", str(tmp_path), listen="127.0.0.1:9082", rpc="127.0.0.1:9083",
                      flow_update=2)
    path = tmp_path / "analyzer.yml"
    path.write_text(lay.analyzer_yaml())
    cfg = load(str(path), env={})
    assert cfg.analyzer.listen == "127.0.0.1:9082" and cfg.analyzer.rpc.listen == "127.0.0.1:9083"
    assert cfg.graph.uri == "" and cfg.graph.embedded.data_dir == str(tmp_path / "graph")
    fabric = parse(cfg.analyzer.topology.fabric)
    assert [(n.name, p) for n, p, _ in fabric.wildcards] == [
        ("TOR1_PORT1", Pattern({"Type": "host", "Name": "agent1"}, {"Name": "eth1"})),
        ("TOR1_PORT2", Pattern({"Type": "host", "Name": "agent2"}, {"Name": "eth1"}))]
    assert fabric.nodes["TOR1"].metadata["Name"] == "tor1"
    for h in lay.hosts:
        h.dir.mkdir()
        h.config_path.write_text(lay.agent_yaml(h))
        agent = load(str(h.config_path), env={})
        assert agent.host_id == h.host_id and agent.analyzers == ("127.0.0.1:9083",)
        assert agent.flow.update == 2 and agent.ovs.ovsdb == h.ovsdb
        assert agent.agent.topology.netns.run_path == str(h.run_dir)
    remote = Layout.make("p1", str(tmp_path), graph_uri="bolt://db:7687", graph_password="s",
                         graph_database="lab")
    path.write_text(remote.analyzer_yaml())
    cfg = load(str(path), env={})
    assert (cfg.graph.uri, cfg.graph.password, cfg.graph.database) == (
        "bolt://db:7687", "s", "lab")
