"""The Vagrant lab's files, checked without virtual machines: `vagrant validate`
(providers ignored), `bash -n` on the provisioning and tunnel scripts, every
per-role configuration read by skygraph's config loader, and the analyzer's
fabric lines the same as the single-machine lab's."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from skygraph.config import load
from skygraph.lab.layout import Layout
from skygraph.probes.fabric import parse
from tests.integration.lab.conftest import REPO

VAGRANT = REPO / "vagrant"


def test_vagrantfile_validates(tmp_path: Path) -> None:
    env = {**os.environ, "VAGRANT_HOME": str(tmp_path / "home"),
           "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot"), "VAGRANT_CHECKPOINT_DISABLE": "1"}
    out = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=VAGRANT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Vagrantfile validated successfully" in out.stdout
    for node in ("analyzer", "agent1", "agent2"):
        assert f"==> {node}:" in out.stdout


@pytest.mark.parametrize("script", sorted(p.name for p in (VAGRANT / "scripts").glob("*.sh")))
def test_scripts_parse(script: str) -> None:
    path = VAGRANT / "scripts" / script
    out = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert os.access(path, os.X_OK), f"{path} is not executable"


def test_role_configs_load() -> None:
    analyzer = load(str(VAGRANT / "config" / "analyzer.yml"), env={})
    assert analyzer.graph.uri == "bolt://127.0.0.1:7687"
    assert analyzer.analyzer.rpc.listen == "0.0.0.0:8083"
    # the TOR of the Vagrant lab is the single-machine lab's
    assert list(analyzer.analyzer.topology.fabric) == Layout.make("x").fabric_lines()
    assert set(parse(analyzer.analyzer.topology.fabric).nodes) == {
        "TOR1", "TOR1_PORT1", "TOR1_PORT2"}
    for i in (1, 2):
        agent = load(str(VAGRANT / "config" / f"agent{i}.yml"), env={})
        assert agent.host_id == f"agent{i}"
        assert agent.analyzers == ("192.168.50.10:8083",)
        assert agent.agent.token == analyzer.analyzer.auth.token != ""


def test_units_run_the_installed_command() -> None:
    for unit, command in (("skygraph-analyzer.service", "analyzer"),
                          ("skygraph-agent.service", "agent")):
        text = (VAGRANT / "systemd" / unit).read_text()
        assert (f"ExecStart=/usr/local/bin/skygraph -c /etc/skygraph/skygraph.yml {command}\n"
                in text)
