"""The lab's processes: started detached (own session, output to a log file,
pid in a pid file under the lab directory) and stopped by pid file, then by
search: whatever still runs with the lab directory on its command line (an
embedded graph server orphaned by a killed analyzer, a daemon whose pid file
was never written) and whatever still runs inside the lab's namespaces.

A pid is only signalled when its command line names the lab directory, so a
pid reused by an unrelated process after a reboot or a crash is left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path


def spawn(argv: Sequence[str], log: Path, pidfile: Path, env: dict[str, str] | None = None,
          netns: str | None = None) -> subprocess.Popen[bytes]:
    """Start `argv` detached (in `netns` if given) and write its pid. It outlives us;
    while we run, the returned handle tells how it ended if it does."""
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    with open(log, "ab") as out:
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=env, close_fds=True)
    pidfile.write_text(f"{proc.pid}\n")
    return proc


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (a zombie, which nobody may reap here, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def ours(pid: int, marker: str) -> bool:
    return alive(pid) and marker in cmdline(pid)


def running(pidfile: Path, marker: str) -> int | None:
    """The pid in `pidfile` if that process runs and is one of the lab's."""
    pid = read_pid(pidfile)
    return pid if pid is not None and ours(pid, marker) else None


def stop(pids: Iterable[int], timeout: float = 15.0) -> list[int]:
    """SIGTERM, wait up to `timeout` s, then SIGKILL what is left; return the pids signalled."""
    todo = [p for p in pids if alive(p)]
    for pid in todo:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in todo) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in todo:
        if alive(pid):
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(alive(p) for p in todo) and time.monotonic() < deadline:
        time.sleep(0.05)
    return todo


def with_marker(marker: str) -> list[int]:
    """Every running process whose command line contains `marker`, except this one."""
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if (entry.isdigit() and int(entry) != me and marker in cmdline(int(entry))
                and alive(int(entry))):
            out.append(int(entry))
    return sorted(out)


def in_netns(netns: str) -> list[int]:
    """Pids of the processes running in a named namespace (`ip netns pids`)."""
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True,
                         timeout=30)
    if out.returncode != 0:
        return []
    return sorted(int(p) for p in out.stdout.split() if p.isdigit() and int(p) != os.getpid())


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)

