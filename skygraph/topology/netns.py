"""Entering a network namespace from Python 3.11 (no `os.setns`): a short-lived
thread calls libc `setns`, runs the caller's function (typically: open a
socket) and goes back. A socket stays in the namespace it was created in, so
the caller uses it from any thread (ENVIRONMENT.md §3).

Shared by the netns probe (netlink and ethtool sockets) and live captures
(AF_PACKET sockets), which both depend on `topology` and not on each other.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, where: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into {where}: {os.strerror(err)}")


def run_in(path: str | None, fn: Callable[[], T]) -> T:
    """Run `fn` in a thread that has entered the namespace at `path` (None: ours,
    in the calling thread). A missing namespace file raises OSError naming it."""
    if path is None:
        return fn()
    result: list[T] = []
    error: list[BaseException] = []

    def work() -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            try:
                target = os.open(path, os.O_RDONLY)
            except OSError as exc:
                raise OSError(exc.errno, f"namespace {path}: {exc.strerror}") from None
            try:
                _setns(target, path)
                try:
                    result.append(fn())
                finally:
                    _setns(home, "the agent's namespace")
            finally:
                os.close(target)
        except BaseException as exc:
            error.append(exc)
        finally:
            os.close(home)

    t = threading.Thread(target=work, name=f"setns {path}")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]
