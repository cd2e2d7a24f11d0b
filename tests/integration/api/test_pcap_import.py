"""Pcap import (`POST /api/pcap`, `skygraph pcap import`): a trace becomes
queryable flows with its own timestamps, as the offline path computes them."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from skygraph.capture.offline import process_file
from skygraph.capture.options import CaptureOptions
from tests.conftest import PCAPS

GOOGLE = PCAPS / "eth-ip4-arp-dns-req-http-google.pcap"


def flows(a, query: str) -> list[dict]:
    r = a.request("POST", "/api/topology", {"GremlinQuery": query})
    assert r.status in (200, 204), r.body
    return r.json() if r.status == 200 else []


def wait_for(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (got := check()):
            return got
        time.sleep(0.2)
    return check()


def test_imported_trace_gives_the_offline_flows(analyzer_at, tmp_path):
    expected = {f.uuid: f.to_json() for f in process_file(GOOGLE, CaptureOptions()).flows}
    with analyzer_at() as a:
        r = a.request("POST", "/api/pcap", raw=GOOGLE.read_bytes(),
                      headers={"Content-Type": "application/vnd.tcpdump.pcap"})
        assert r.status == 202, r.body
        assert r.json() == {"Packets": 58, "Flows": 6} and len(expected) == 6
        stored = wait_for(lambda: len(got := flows(a, "G.Flows()")) == 6 and got)
        assert {f["UUID"] for f in stored} == set(expected)
        for f in stored:
            want = expected[f["UUID"]]
            assert (f["Start"], f["Last"], f["Metric"], f["TrackingID"]) == (
                want["Start"], want["Last"], want["Metric"], want["TrackingID"])
            assert "NodeTID" not in f or not f["NodeTID"]
        assert len(flows(a, "G.Flows().Has('Application', 'DNS')")) == 2

        # not a trace: refused, nothing stored
        bad = a.request("POST", "/api/pcap", raw=b"GET / HTTP/1.0\r\n\r\n" * 10,
                        headers={"Content-Type": "application/vnd.tcpdump.pcap"})
        assert bad.status == 400 and "not a readable pcap" in bad.json()["error"]
        empty = a.request("POST", "/api/pcap", raw=b"",
                          headers={"Content-Type": "application/vnd.tcpdump.pcap"})
        assert empty.status == 400 and "empty body" in empty.json()["error"]

        # the CLI, as a client of the analyzer
        dns = PCAPS / "dns.pcap"
        out = subprocess.run([sys.executable, "-m", "skygraph.cli", "pcap", "import", str(dns),
                              "--analyzer", a.endpoint], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["Flows"] == len(process_file(dns, CaptureOptions()).flows)
        missing = subprocess.run([sys.executable, "-m", "skygraph.cli", "pcap", "import",
                                  str(tmp_path / "nope.pcap"), "--analyzer", a.endpoint],
                                 capture_output=True, text=True, timeout=60)
        assert missing.returncode != 0 and "nope.pcap" in missing.stderr
