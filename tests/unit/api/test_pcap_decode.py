"""The pcap import's decoder child: the flows it hands over are the offline
path's, field for field and in order, tunnels' parents included; a trace it
cannot read is refused with the reader's message; a decoder that dies is an
error naming what was stored, never a silent partial import."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from skygraph.api import pcapimport
from skygraph.api.pcapimport import PcapImportError, decode_and_put
from skygraph.capture.offline import process_file
from skygraph.capture.options import CaptureOptions
from tests.conftest import PCAPS


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[dict[str, Any]]]] = []

    async def put(self, host: str, docs: list[dict[str, Any]]) -> int:
        self.calls.append((host, docs))
        return len(docs)


@pytest.mark.parametrize("name", ["eth-ip4-arp-dns-req-http-google.pcap",
                                  "gre-gre-icmpv4.pcap", "simple-tcpv6.pcap"])
def test_the_child_gives_the_offline_flows(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pcapimport, "CHUNK", 2)  # several puts, and a last short one
    result = process_file(PCAPS / name, CaptureOptions())
    sink = Sink()
    done = asyncio.run(decode_and_put(PCAPS / name, sink.put))
    docs = [d for _, batch in sink.calls for d in batch]
    assert docs == [f.to_json() for f in result.flows]
    assert (done.packets, done.flows) == (result.packets, len(docs))
    assert {host for host, _ in sink.calls} == {pcapimport.IMPORT_HOST}
    assert all(len(batch) <= 2 for _, batch in sink.calls)
    if name.startswith("gre"):
        assert any(d["ParentUUID"] for d in docs)


def test_an_unreadable_trace_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"GET / HTTP/1.0\r\n\r\n" * 10)
    sink = Sink()
    with pytest.raises(PcapImportError, match=r"not a readable pcap/pcapng trace: .+"):
        asyncio.run(decode_and_put(bad, sink.put))
    assert sink.calls == []


def test_a_decoder_that_dies_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child killed (say, by the OOM killer) before it could finish: an error
    saying how many flows were stored, not a refused trace nor an empty success."""
    sink = Sink()
    real = asyncio.create_subprocess_exec

    async def spawn(*args: Any, **kw: Any) -> asyncio.subprocess.Process:
        proc = await real(*args, **kw)
        os.kill(proc.pid, signal.SIGKILL)
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spawn)
    with pytest.raises(RuntimeError, match=r"decoder failed \(exit status -9\) after 0 flows"):
        asyncio.run(decode_and_put(PCAPS / "eth-ip4-arp-dns-req-http-google.pcap", sink.put))
    assert sink.calls == []
