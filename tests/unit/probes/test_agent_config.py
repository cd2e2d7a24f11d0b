"""The agent's sections of the configuration file: defaults, nested metadata
kept, errors that name the key; `skygraph agent` needs --standalone for now."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from skygraph import agent
from skygraph.config import Config, ConfigError, load


def write(tmp_path: Path, text: str) -> str:
    f = tmp_path / "skygraph.yml"
    f.write_text(text)
    return str(f)


def test_defaults_follow_skydive() -> None:
    cfg = load(None, env={})
    assert cfg.agent.topology.netns.run_path == "/var/run/netns"
    assert cfg.agent.topology.netlink.metrics_update == 30.0
    assert cfg.agent.topology.probes == ("ovsdb",)
    assert cfg.ovs.ovsdb == "unix:///var/run/openvswitch/db.sock"


def test_sections_and_metadata_tree(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, """
agent:
  metadata:
    mydict: {value: 123}
    myarrays: {strings: [dog, cat]}
  topology:
    probes: []
    netns: {run_path: /tmp/ns}
    netlink: {metrics_update: 5}
ovs:
  ovsdb: tcp://127.0.0.1:6640
"""), env={})
    assert cfg.agent.metadata["mydict"] == {"value": 123}
    assert cfg.agent.metadata["myarrays"] == {"strings": ["dog", "cat"]}
    assert cfg.agent.topology.probes == ()
    assert cfg.agent.topology.netns.run_path == "/tmp/ns"
    assert cfg.agent.topology.netlink.metrics_update == 5.0
    assert cfg.ovs.ovsdb == "tcp://127.0.0.1:6640"


@pytest.mark.parametrize(("text", "key"), [
    ("agent:\n  metdata: {}\n", "agent.metdata: unknown key"),
    ("agent:\n  topology:\n    probes: [docker]\n", "agent.topology.probes: unknown probe"),
    ("agent:\n  topology:\n    probes: ovsdb\n", "agent.topology.probes: expected a list"),
    ("agent:\n  topology:\n    netns:\n      run_path: 3\n",
     "agent.topology.netns.run_path: expected a string"),
    ("agent:\n  topology:\n    netlink:\n      every: 3\n",
     "agent.topology.netlink.every: unknown key"),
    ("ovs:\n  ovsdb: [x]\n", "ovs.ovsdb: expected a string"),
    ("agent:\n  metadata: [x]\n", "agent.metadata: expected a mapping"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load(write(tmp_path, text), env={})


def test_a_missing_host_namespace_is_a_clear_error() -> None:
    p = argparse.ArgumentParser()
    agent.add_arguments(p)
    args = p.parse_args(["--host-netns", "/var/run/netns/no-such-namespace"])
    with pytest.raises(ConfigError, match="--host-netns /var/run/netns/no-such-namespace: no such"):
        agent.run(args, Config())
