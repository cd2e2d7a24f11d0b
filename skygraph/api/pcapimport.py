"""Pcap import (SPEC §1g `POST /api/pcap`): a trace pushed through a fresh flow
table (default options, no NodeTID, the trace's own timestamps) and its flows
handed to the flow store, so an old trace becomes queryable flows.

The upload is spooled to a temporary file (bounded by `MAX_PCAP_BYTES`) and
decoded in a worker thread; a file that is not a pcap/pcapng is refused with
the reader's message.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skygraph.capture.offline import process_file
from skygraph.capture.options import CaptureOptions
from skygraph.capture.pcapfile import PcapError

MAX_PCAP_BYTES = 1 << 30
IMPORT_HOST = "pcap"       # the flows' `Host`: not from an agent
CHUNK = 1000

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
        try:
            result = await asyncio.to_thread(process_file, Path(spool.name), CaptureOptions())
        except (PcapError, OSError) as exc:
            raise PcapImportError(f"not a readable pcap/pcapng trace: {exc}") from None
    docs = [f.to_json() for f in result.flows]
    accepted = 0
    for i in range(0, len(docs), CHUNK):
        accepted += await put(IMPORT_HOST, docs[i:i + CHUNK])
    return Imported(result.packets, accepted)
