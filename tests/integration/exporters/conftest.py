"""Fixtures for the capture target tests: two namespaces joined by a veth pair
(the exporter in `a`, the collector in `b`), tcpdump and collectors started in
`b` and stopped by their pid, and tshark run over what tcpdump wrote.  All of it
is removed in finalizers, also when a test fails."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from scapy.error import Scapy_Exception
from scapy.utils import RawPcapReader

from skygraph.topology.netns import run_in
from tests.conftest import RUN_ID
from tests.integration.capture.conftest import VethPair

_seq = itertools.count()
ETH_P_ALL = 0x0003


@pytest.fixture
def lab() -> Iterator[VethPair]:
    base = Path(tempfile.mkdtemp(prefix=f"{RUN_ID}-exp-"))
    p = VethPair(base, f"{RUN_ID[-5:]}x{next(_seq)}")
    try:
        p.setup()
        yield p
    finally:
        p.close()


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"{RUN_ID}-exp-files-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class Daemon:
    """A program run in a namespace (nsenter execs it: its pid is ours to signal),
    output collected; `stop()` signals it, then kills it if it lingers."""

    def __init__(self, argv: Sequence[str], ns: str | None = None) -> None:
        full = [*(["nsenter", f"--net={ns}"] if ns else []), *argv]
        self.proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"{self.proc.args!r} never printed {text!r}:\n"
                                         + "\n".join(self.lines))
                self._cond.wait(min(left, 0.2))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        return self.output


class Sniffer(Daemon):
    """tcpdump writing `path` in namespace `ns` until stopped (SIGINT flushes it)."""

    def __init__(self, ns: str, iface: str, bpf: str, path: Path) -> None:
        super().__init__(["tcpdump", "-i", iface, "-n", "-s", "0", "--immediate-mode", "-U",
                          "-w", str(path), bpf], ns)
        self.path = path
        self.wait_for("listening on")

    def count(self) -> int:
        """Packets written so far (-U: the file grows packet by packet)."""
        try:
            with RawPcapReader(str(self.path)) as reader:
                return sum(1 for _ in reader)
        except (OSError, Scapy_Exception, EOFError):  # the header is not written yet
            return 0

    def wait_packets(self, n: int, timeout: float = 15) -> None:
        wait_until(lambda: self.count() >= n, f"{n} packets in {self.path.name}", timeout)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15) -> str:
        return super().stop(sig, timeout)


def udp_queue_empty(ns: str, port: int) -> bool:
    """Whether nothing waits in the receive queue of UDP port `port` in `ns` (a
    collector has read everything sent to it)."""
    out = subprocess.run(["nsenter", f"--net={ns}", "ss", "-Hlun", f"sport = :{port}"],
                         capture_output=True, text=True, check=True).stdout.split()
    return bool(out) and out[1] == "0"


def wait_until(pred: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def tshark(pcap: Path, *args: str) -> str:
    proc = subprocess.run(["tshark", "-n", "-r", str(pcap), *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "TZ": "UTC"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def tshark_clean(pcap: Path, *args: str) -> str:
    """The full dissection of `pcap`, after checking tshark found nothing malformed
    and raised no expert warning or error."""
    verbose = tshark(pcap, "-V", *args)
    assert "Malformed" not in verbose, verbose[verbose.index("Malformed") - 2000:][:4000]
    expert = tshark(pcap, "-q", "-z", "expert,warn", *args)
    assert "Errors (" not in expert and "Warns (" not in expert, expert
    return verbose


def tshark_fields(pcap: Path, fields: Sequence[str], *args: str) -> list[list[str]]:
    argv = ["-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in fields:
        argv += ["-e", f]
    return [line.split("|") for line in tshark(pcap, *argv, *args).splitlines() if line]


def frames_during(ns: str, iface: str, action: Callable[[], None],
                  quiet: float = 0.3) -> list[tuple[int, int, bytes]]:
    """The frames interface `iface` of namespace `ns` sent and received while `action`
    ran, as a capture hands them to a target: (timestamp ns, wire length, bytes)."""
    def open_socket() -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((iface, 0))
        return s

    sock = run_in(ns, open_socket)
    frames: list[tuple[int, int, bytes]] = []
    try:
        action()
        sock.settimeout(quiet)
        while True:
            try:
                data = sock.recv(65535)
            except TimeoutError:
                return frames
            frames.append((time.time_ns(), len(data), data))
    finally:
        sock.close()
