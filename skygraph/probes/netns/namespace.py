"""Entering a network namespace from Python 3.11 (no `os.setns`): a short
lived thread calls libc `setns`, opens the sockets the caller asked for, and
goes back. A socket stays in the namespace it was created in, so the rest of
the agent uses it from any thread (ENVIRONMENT.md §3).
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True, slots=True)
class NsId:
    """A namespace's identity: the (device, inode) of its nsfs file."""

    dev: int
    ino: int


def ns_id(path: str) -> NsId:
    st = os.stat(path)
    return NsId(st.st_dev, st.st_ino)


def self_ns_path() -> str:
    return f"/proc/{os.getpid()}/ns/net"


def _setns(fd: int, where: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into {where}: {os.strerror(err)}")


def run_in(path: str | None, fn: Callable[[], T]) -> T:
    """Run `fn` in a thread that has entered the namespace at `path` (None: ours)."""
    if path is None:
        return fn()
    result: list[T] = []
    error: list[BaseException] = []

    def work() -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(path, os.O_RDONLY)
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


def netlink_socket(path: str | None) -> socket.socket:
    """A NETLINK_ROUTE socket in the namespace at `path`."""
    return run_in(path, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0))


def inet_socket(path: str | None) -> socket.socket:
    """An AF_INET datagram socket in the namespace at `path` (for ethtool ioctls)."""
    return run_in(path, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 0))
