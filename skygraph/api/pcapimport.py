"""Pcap import (SPEC §1g `POST /api/pcap`): a trace pushed through a fresh flow
table (default options, no NodeTID, the trace's own timestamps) and its flows
handed to the flow store, so an old trace becomes queryable flows.

The upload is spooled to a temporary file (bounded by `MAX_PCAP_BYTES`) and
decoded by a child process (`python -m skygraph.api.pcapimport FILE`), which
writes one flow per line on its standard output, then a last line with the
packet count; a file that is not a pcap/pcapng is refused with the reader's
message.  The flow table of a large trace takes hundreds of megabytes while it
is built: in a child they go back to the system when it exits, where the
analyzer's own heap would keep them (fragmented) for the rest of its life.
The flows are put as they are read, so a full flow queue holds the child back
(a pipe), not the analyzer's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_PCAP_BYTES = 1 << 30
IMPORT_HOST = "pcap"       # the flows' `Host`: not from an agent
CHUNK = 1000
MAX_LINE = 1 << 20         # a flow's JSON line, raw packets included, is far below (the
                           # reader buffers up to twice this while the flow queue is full)
PACKETS = "Packets"        # the child's last line: {"Packets": n}
UNREADABLE = 2             # the child's exit status for a trace the reader refuses

PutFlows = Callable[[str, list[dict[str, Any]]], Awaitable[int]]


class PcapImportError(ValueError):
    """The upload is not a readable trace, or too large; the message says which."""


@dataclass(frozen=True, slots=True)
class Imported:
    packets: int
    flows: int

    def to_json(self) -> dict[str, int]:
        return {"Packets": self.packets, "Flows": self.flows}


async def import_pcap(chunks: AsyncIterator[bytes], put: PutFlows,
                      limit: int = MAX_PCAP_BYTES) -> Imported:
    with tempfile.NamedTemporaryFile(prefix="skygraph-import-", suffix=".pcap") as spool:
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise PcapImportError(f"the trace is larger than {limit} bytes")
            spool.write(chunk)
        spool.flush()
        if size == 0:
            raise PcapImportError("empty body: send the pcap file as the request body")
        return await decode_and_put(Path(spool.name), put)


async def decode_and_put(path: Path, put: PutFlows) -> Imported:
    """Decode `path` in a child process and put its flows, `CHUNK` at a time."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "skygraph.api.pcapimport", str(path),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, limit=MAX_LINE)
    assert proc.stdout is not None and proc.stderr is not None
    errors = asyncio.create_task(proc.stderr.read())  # never let a full pipe stall it
    accepted, packets, batch = 0, -1, []
    try:
        async for line in proc.stdout:
            doc = json.loads(line)
            if PACKETS in doc and "UUID" not in doc:
                packets = int(doc[PACKETS])
                continue
            batch.append(doc)
            if len(batch) >= CHUNK:
                accepted += await put(IMPORT_HOST, batch)
                batch = []
        code = await proc.wait()
        message = (await errors).decode(errors="replace").strip()
        if code != 0 or packets < 0:
            reason = message.splitlines()[-1] if message else f"exit status {code}"
            if code == UNREADABLE:
                raise PcapImportError(f"not a readable pcap/pcapng trace: {reason}")
            raise RuntimeError(f"pcap import: the decoder failed ({reason}) after "
                               f"{accepted} flows were stored")
        if batch:
            accepted += await put(IMPORT_HOST, batch)
        return Imported(packets, accepted)
    finally:
        if proc.returncode is None:  # cancelled (client gone) or failed: no orphan
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if not errors.done():
            errors.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await errors


def decode(path: Path) -> int:
    """The child: every flow of `path` as one JSON line, then {"Packets": n}; a
    trace the reader refuses gives its message on stderr and exit status 2."""
    from skygraph.capture.offline import process_file
    from skygraph.capture.options import CaptureOptions
    from skygraph.capture.pcapfile import PcapError

    try:
        result = process_file(path, CaptureOptions())
    except (PcapError, OSError) as exc:
        print(exc, file=sys.stderr)
        return UNREADABLE
    out = sys.stdout
    for flow in result.flows:
        out.write(json.dumps(flow.to_json(), separators=(",", ":")))
        out.write("\n")
    out.write(json.dumps({PACKETS: result.packets}) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m skygraph.api.pcapimport FILE.pcap", file=sys.stderr)
        raise SystemExit(64)
    raise SystemExit(decode(Path(sys.argv[1])))
