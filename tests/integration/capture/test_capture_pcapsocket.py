"""The `pcapsocket` capture type: pcap streams over TCP (`nc`, sockets) into the
capture's flow table, compared with the offline path on Skydive's traces."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from skygraph.capture import pcapfile
from skygraph.capture.offline import process_file
from skygraph.capture.options import CaptureOptions, TableSettings
from skygraph.capture.sources import source_for
from skygraph.capture.sources.base import AgentCaptureSettings, CaptureError
from skygraph.capture.sources.pcapsocket import PcapSocketSource
from skygraph.topology.embedded import free_port
from skygraph.topology.flow import Flow
from tests.conftest import PCAPS
from tests.integration.capture.conftest import Collector, context, running

TRACE = PCAPS / "eth-ip4-arp-dns-req-http-google.pcap"
NODE = {"Name": "br-int", "Type": "ovsbridge", "TID": "tid-br"}
SETTINGS = TableSettings(update=60, expire=600)


def agent_settings(port: int | None = None) -> AgentCaptureSettings:
    p = port or free_port()
    return AgentCaptureSettings(pcapsocket_ports=(p, p))


def comparable(flows: list[Flow]) -> list[dict[str, Any]]:
    docs = []
    for f in flows:
        doc = f.to_json()
        doc.pop("CaptureID", None)
        docs.append(doc)
    return sorted(docs, key=lambda d: str(d["UUID"]))


def offline(path: Path, bpf: str = "") -> list[dict[str, Any]]:
    return comparable(process_file(path, CaptureOptions(), bpf, NODE["TID"], SETTINGS).flows)


def send(address: str, data: bytes) -> None:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(data)


def wait_streams(source: PcapSocketSource, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while source.streams + source.stream_errors < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert source.streams + source.stream_errors == count


def start(spec: dict[str, Any], agent: AgentCaptureSettings) -> Any:
    return running({"Type": "pcapsocket", **spec}, NODE, None, settings=SETTINGS, agent=agent)


def test_nc_stream_gives_the_offline_flows() -> None:
    agent = agent_settings()
    with start({}, agent) as (source, sink):
        assert isinstance(source, PcapSocketSource)
        address = source.metadata()["PCAPSocket"]
        assert address == f"127.0.0.1:{agent.pcapsocket_ports[0]}"
        with open(TRACE, "rb") as trace:
            subprocess.run(["nc", "-N", "127.0.0.1", address.split(":")[1]], stdin=trace,
                           check=True, timeout=30)
        wait_streams(source, 1)
        flows = list(sink.latest().values())
        assert len(flows) == 6
        assert sum(f.application == "DNS" for f in flows) == 2
        assert comparable(flows) == offline(TRACE)
        assert all(f.capture_id == "cap-1" and f.node_tid == "tid-br" for f in flows)
        assert source.stats().packets_received == len(list(_records(TRACE)))


def _records(path: Path) -> list[bytes]:
    return [f.data for f in pcapfile.read(path)[1]]


@pytest.mark.parametrize("name", ["dns.pcap", "gre-gre-icmpv4.pcap", "vxlan-src-port.pcap",
                                  "simple-tcpv4.pcap"])
def test_bpf_in_userspace_and_small_chunks_match_offline(name: str) -> None:
    trace = PCAPS / name
    data = trace.read_bytes()
    bpf = "ip"
    with start({"BPFFilter": bpf}, agent_settings()) as (source, sink):
        host, port = source.metadata()["PCAPSocket"].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            for i in range(0, len(data), 7):  # records cut anywhere
                s.sendall(data[i:i + 7])
        wait_streams(source, 1)
        assert comparable(list(sink.latest().values())) == offline(trace, bpf)


def test_corrupt_stream_is_dropped_and_the_next_one_counts() -> None:
    with start({}, agent_settings()) as (source, sink):
        address = source.metadata()["PCAPSocket"]
        send(address, b"this is not a pcap file at all")
        wait_streams(source, 1)
        assert source.stream_errors == 1 and sink.flows() == []
        send(address, TRACE.read_bytes()[:-10])  # truncated last record
        wait_streams(source, 2)
        assert source.stream_errors == 2
        assert len(sink.latest()) > 0  # what came before the cut still counts
        send(address, TRACE.read_bytes())
        wait_streams(source, 3)
        assert source.streams == 1 and source.running


def test_stop_closes_the_listener_and_flushes_a_stream_in_progress() -> None:
    with start({}, agent_settings()) as (source, sink):
        host, port = source.metadata()["PCAPSocket"].rsplit(":", 1)
        conn = socket.create_connection((host, int(port)), timeout=5)
        conn.sendall(TRACE.read_bytes())  # never closed by the sender
        deadline = time.monotonic() + 10
        while source.stats().packets_received == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        source.stop()
        conn.close()
        assert len(sink.latest()) == 6 and not source.running
        with pytest.raises(OSError):
            socket.create_connection((host, int(port)), timeout=2).close()


def test_busy_port_range_and_bad_filter_are_refused() -> None:
    with start({}, agent_settings()) as (first, _):
        port = int(first.metadata()["PCAPSocket"].rsplit(":", 1)[1])
        second = source_for(context({"Type": "pcapsocket", "UUID": "cap-2"}, NODE, None,
                                    Collector(), agent=agent_settings(port)))
        with pytest.raises(CaptureError, match=f"pcapsocket_bind/_ports.*no free TCP port "
                                               f"on 127.0.0.1 in {port}-{port}"):
            second.start()
    bad = source_for(context({"Type": "pcapsocket", "BPFFilter": "udp and and"}, NODE, None,
                             Collector(), agent=agent_settings()))
    with pytest.raises(CaptureError, match="BPF filter 'udp and and'"):
        bad.start()
    with pytest.raises(CaptureError, match="the node has no TID"):
        source_for(context({"Type": "pcapsocket"}, {"Name": "x"}, None, Collector()))
