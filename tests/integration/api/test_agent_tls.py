"""Agents over mutual TLS, configured the way a user does it: `analyzer.tls` with
`client_ca_file` on the analyzer, `agent.tls` on a `skygraph agent` process. An
agent with the right certificate is connected; one without is refused and says
why in its log."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skygraph.config import ConfigError, load

pytestmark = [pytest.mark.root, pytest.mark.slow]


def make_cert(d: Path, name: str, ca: str = "") -> None:
    """A key and a certificate for `name` (localhost / 127.0.0.1); signed by the `ca`
    certificate of that name, else self-signed."""
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    subj = ["-subj", f"/CN={name}", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    if not ca:
        cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
               "-keyout", str(key), "-out", str(crt), *subj]
        subprocess.run(cmd, check=True, capture_output=True)
        return
    csr = d / f"{name}.csr"
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(csr), *subj], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(d / f"{ca}.crt"),
                    "-CAkey", str(d / f"{ca}.key"), "-CAcreateserial", "-days", "1",
                    "-copy_extensions", "copy", "-out", str(crt)], check=True, capture_output=True)


def start_agent(tmp_path: Path, name: str, rpc: str, tls_yaml: str) -> subprocess.Popen[str]:
    cfg = tmp_path / f"{name}.yml"
    cfg.write_text(f"host_id: {name}\nagent:\n  tls:\n{tls_yaml}")
    netns_dir = tmp_path / f"{name}-netns"
    netns_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGRAPH_")}
    return subprocess.Popen(
        [sys.executable, "-m", "skygraph.cli", "-c", str(cfg), "agent", "--analyzer", rpc,
         "--netns-run-path", str(netns_dir), "--no-ovs"],
        stdout=(tmp_path / f"{name}.log").open("w"), stderr=subprocess.STDOUT, text=True, env=env)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_agents_over_mutual_tls(analyzer_at, tmp_path):
    make_cert(tmp_path, "ca")
    make_cert(tmp_path, "analyzer", ca="ca")
    make_cert(tmp_path, "agent", ca="ca")
    make_cert(tmp_path, "stranger")            # a certificate the analyzer's CA did not sign
    yaml = (f"analyzer:\n  tls:\n    cert_file: {tmp_path}/analyzer.crt\n"
            f"    key_file: {tmp_path}/analyzer.key\n    client_ca_file: {tmp_path}/ca.crt\n")
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    with analyzer_at(yaml, context) as a:
        good = start_agent(tmp_path, f"{os.getpid()}-good", a.rpc,
                           f"    ca_file: {tmp_path}/ca.crt\n    cert_file: {tmp_path}/agent.crt\n"
                           f"    key_file: {tmp_path}/agent.key\n")
        bad = start_agent(tmp_path, f"{os.getpid()}-bad", a.rpc,
                          f"    ca_file: {tmp_path}/ca.crt\n    cert_file: {tmp_path}/stranger.crt\n"
                          f"    key_file: {tmp_path}/stranger.key\n")
        try:
            deadline = time.monotonic() + 60
            agents: dict = {}
            while time.monotonic() < deadline:
                agents = a.request("GET", "/api/status").json()["Agents"]
                if agents.get(f"{os.getpid()}-good", {}).get("Connected"):
                    break
                time.sleep(0.3)
            assert agents.get(f"{os.getpid()}-good", {}).get("Connected"), agents
            # the refused agent keeps retrying and logs why; it never shows up
            log = tmp_path / f"{os.getpid()}-bad.log"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "cannot reach" not in log.read_text():
                time.sleep(0.3)
            assert bad.poll() is None
            assert "cannot reach" in log.read_text(), log.read_text()
            assert f"{os.getpid()}-bad" not in a.request("GET", "/api/status").json()["Agents"]
        finally:
            stop(good)
            stop(bad)


def test_agent_tls_config_errors_name_the_key(tmp_path):
    def check(yaml: str, message: str) -> None:
        path = tmp_path / "c.yml"
        path.write_text(yaml)
        with pytest.raises(ConfigError, match=message):
            load(str(path), env={})
    check("agent:\n  tls:\n    ca_file: /x\n    cert_file: /a.crt\n",
          r"agent.tls: cert_file and key_file must be given together")
    check("agent:\n  tls:\n    cert_file: /a.crt\n    key_file: /a.key\n", r"agent.tls: ca_file")
    check("analyzer:\n  tls:\n    client_ca_file: /ca.crt\n",
          r"analyzer.tls.client_ca_file: needs analyzer.tls.cert_file")
    check("agent:\n  tls:\n    ca_fil: /x\n", r"agent.tls.ca_fil")


def test_unreadable_agent_certificate_is_named(tmp_path):
    cfg = tmp_path / "a.yml"
    cfg.write_text(f"agent:\n  tls:\n    ca_file: {tmp_path}/missing-ca.pem\n")
    out = subprocess.run([sys.executable, "-m", "skygraph.cli", "-c", str(cfg), "agent",
                          "--no-ovs", "--netns-run-path", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"agent.tls.ca_file: cannot read {tmp_path}/missing-ca.pem" in out.stderr, out.stderr
