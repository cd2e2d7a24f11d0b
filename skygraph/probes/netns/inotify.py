"""inotify on a directory, read from the asyncio loop (no polling): the
netns probe learns of `ip netns add/del` through IN_CREATE/IN_DELETE."""

from __future__ import annotations

import asyncio
import ctypes
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

IN_CREATE = 0x100
IN_DELETE = 0x200
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_DELETE_SELF = 0x400
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
# struct inotify_event: wd, mask, cookie, len, then a NUL-padded name of len bytes.
EVENT_HEADER = struct.Struct("iIII")

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True, slots=True)
class Event:
    mask: int
    name: str


def parse(data: bytes) -> list[Event]:
    """Decode a buffer read from an inotify descriptor."""
    out: list[Event] = []
    off = 0
    while off + EVENT_HEADER.size <= len(data):
        _, mask, _, length = EVENT_HEADER.unpack_from(data, off)
        off += EVENT_HEADER.size
        name = data[off:off + length].split(b"\0", 1)[0].decode(errors="replace")
        off += length
        out.append(Event(mask, name))
    return out


class DirectoryWatch:
    """Calls `callback(event)` on the running loop for each event in `path`."""

    def __init__(self, path: str, callback: Callable[[Event], None],
                 mask: int = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO) -> None:
        self.path = path
        self._callback = callback
        self._fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1 for {path}: {os.strerror(err)}")
        if _libc.inotify_add_watch(self._fd, os.fsencode(path), mask) < 0:
            err = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(err, f"inotify watch on {path}: {os.strerror(err)}")
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        for event in parse(data):
            self._callback(event)

    def close(self) -> None:
        if self._fd >= 0:
            if self._loop is not None:
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
