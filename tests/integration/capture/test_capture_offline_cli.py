"""`python -m skygraph.capture.offline` (skygraph flows) end to end, with real tcpdump."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import PCAPS

REPO = Path(__file__).resolve().parents[3]


def flows_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "skygraph.capture.offline", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=False)


def test_gre_in_gre_prints_three_flows_with_parent_chain() -> None:
    proc = flows_cli(str(PCAPS / "gre-gre-icmpv4.pcap"))
    assert proc.returncode == 0, proc.stderr
    flows = json.loads(proc.stdout)
    assert [f["LayersPath"] for f in flows] == ["Ethernet/IPv4/GRE", "IPv4/GRE", "IPv4/ICMPv4"]
    assert flows[0]["ParentUUID"] == ""
    assert flows[1]["ParentUUID"] == flows[0]["UUID"]
    assert flows[2]["ParentUUID"] == flows[1]["UUID"]
    assert [f["Metric"]["ABBytes"] for f in flows] == [810, 620, 500]
    assert flows[2]["ICMP"]["Type"] == "ECHO"


def test_table_format_lists_flows() -> None:
    proc = flows_cli(str(PCAPS / "vxlan-src-port.pcap"), "--format", "table")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["UUID", "LayersPath"]
    assert sum("Ethernet/IPv4/TCP" in line for line in lines) == 2


def test_write_raw_opens_with_tcpdump(tmp_path: Path) -> None:
    out = tmp_path / "raw.pcap"
    proc = flows_cli(str(PCAPS / "gre-gre-icmpv4.pcap"), "--rawpacket-limit", "2",
                     "--write-raw", str(out))
    assert proc.returncode == 0, proc.stderr
    flows = json.loads(proc.stdout)
    assert [f["RawPacketsCaptured"] for f in flows] == [2, 2, 2]
    dump = subprocess.run(["tcpdump", "-nn", "-r", str(out)], capture_output=True, text=True,
                          check=True).stdout.splitlines()
    assert len(dump) == 6
    assert sum("GREv0" in line for line in dump) == 4  # outer and middle flows' packets
    assert sum("ICMP echo" in line for line in dump) == 6


def test_options_reach_the_table() -> None:
    proc = flows_cli(str(PCAPS / "dns.pcap"), "--extra-layer", "DNS", "--layer-key-mode", "L3",
                     "--bpf", "udp")
    assert proc.returncode == 0, proc.stderr
    flows = json.loads(proc.stdout)
    assert len(flows) == 6 and all(f["DNS"]["QR"] for f in flows)
    assert all(f["TrackingID"] == f["L3TrackingID"] for f in flows)


def test_bad_filter_is_rejected_with_libpcap_message() -> None:
    proc = flows_cli(str(PCAPS / "dns.pcap"), "--bpf", "err_port 22")
    assert proc.returncode == 2
    assert "syntax error" in proc.stderr and "err_port 22" in proc.stderr


def test_bad_options_and_files_name_the_problem(tmp_path: Path) -> None:
    proc = flows_cli(str(PCAPS / "dns.pcap"), "--extra-layer", "HTTP")
    assert proc.returncode == 2 and "extra layer: 'HTTP'" in proc.stderr
    proc = flows_cli(str(PCAPS / "dns.pcap"), "--rawpacket-limit", "11")
    assert proc.returncode == 2 and "raw packet limit" in proc.stderr
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"hello, this is not a capture file")
    proc = flows_cli(str(junk))
    assert proc.returncode == 2 and str(junk) in proc.stderr
