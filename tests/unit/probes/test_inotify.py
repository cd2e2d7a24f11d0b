"""inotify event decoding, and a real watch on a temporary directory."""

from __future__ import annotations

import asyncio
import os
import struct
import tempfile

from skygraph.probes.netns import inotify


def test_parse_packed_events() -> None:
    name = b"ns1\0\0\0\0\0"
    data = struct.pack("iIII", 1, inotify.IN_CREATE, 0, len(name)) + name
    data += struct.pack("iIII", 1, inotify.IN_DELETE, 0, 0)
    assert inotify.parse(data) == [inotify.Event(inotify.IN_CREATE, "ns1"),
                                   inotify.Event(inotify.IN_DELETE, "")]


def test_watch_reports_create_and_delete() -> None:
    async def scenario() -> list[inotify.Event]:
        seen: list[inotify.Event] = []
        with tempfile.TemporaryDirectory() as d:
            w = inotify.DirectoryWatch(d, seen.append)
            w.start()
            path = os.path.join(d, "x")
            open(path, "w").close()
            os.unlink(path)
            for _ in range(100):
                if len(seen) >= 2:
                    break
                await asyncio.sleep(0.01)
            w.close()
        return seen
    events = asyncio.run(scenario())
    assert [(e.mask & (inotify.IN_CREATE | inotify.IN_DELETE), e.name) for e in events] == [
        (inotify.IN_CREATE, "x"), (inotify.IN_DELETE, "x")]
