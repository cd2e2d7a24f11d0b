"""Record index of a classic pcap buffer, found with numpy instead of a Python loop.

Owns `index_records`: the offsets of the whole records in a buffer that
starts on a record boundary.  Records form a chain (each header gives the
next one's offset), so the buffer is cut into segments, a plausible record
start is guessed near each cut, and all the segment chains are walked in
lockstep.  The guess is only trusted if the chain of the previous segment
lands on it exactly, which makes the result exact by induction from the
first record; if any guess is wrong the caller's sequential scan is used.
Pure.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]
SEGMENT = 16384  # bytes per lockstep chain
SEARCH = 8192  # bytes searched after a cut for a plausible record start
MAX_RECORD = 262144 + 16
CHECK_DEPTH = 3  # consecutive plausible headers needed for a guess


def _u32(a: Array, pos: Array, little: bool) -> Array:
    b = [a[pos + i].astype(np.int64) for i in range(4)]
    out: Array = (b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24 if little
                  else b[3] | b[2] << 8 | b[1] << 16 | b[0] << 24)
    return out


def _plausible(data: bytes, pos: int, header: struct.Struct, first_ts: int) -> bool:
    """CHECK_DEPTH consecutive sane headers from `pos`."""
    for _ in range(CHECK_DEPTH):
        if pos + 16 > len(data):
            return False
        ts, _frac, incl, orig = header.unpack_from(data, pos)
        if incl > orig or orig >= MAX_RECORD or abs(ts - first_ts) > 86400:
            return False
        pos += 16 + incl
    return True


def index_records(data: bytes, little: bool) -> tuple[Array, int] | None:
    """Offsets of the complete records in `data` and the offset just after the last
    one, or None when the lockstep walk cannot prove its result (use a sequential scan)."""
    n = len(data)
    if n < 4 * SEGMENT:
        return None
    a = np.frombuffer(data + bytes(16), dtype=np.uint8)
    header = struct.Struct("<IIII" if little else ">IIII")
    first_ts = header.unpack_from(data)[0]
    # A record header starts with the capture second; its two high-order bytes are
    # the same for 18 hours, so `bytes.find` gives candidates at C speed.
    key = struct.pack("<I" if little else ">I", first_ts)
    pattern, shift = (key[2:], 2) if little else (key[:2], 0)
    starts = [0]
    for cut in range(SEGMENT, n - SEGMENT, SEGMENT):
        at = data.find(pattern, cut + shift, cut + SEARCH)
        while at >= 0:
            if _plausible(data, at - shift, header, first_ts):
                starts.append(at - shift)
                break
            at = data.find(pattern, at + 1, cut + SEARCH)
    starts_a = np.array(starts, dtype=np.int64)
    ends = np.concatenate((starts_a[1:], [n]))

    # Walk every segment's chain in lockstep until it reaches the next start.
    p = starts_a.copy()
    steps: list[Array] = []
    active = p < ends
    while active.any():
        steps.append(np.where(active, p, -1))
        incl = _u32(a, p + 8, little)
        nxt = p + 16 + incl
        complete = nxt <= n
        p = np.where(active & complete, nxt, p)
        # The last segment stops at the buffer's end or at an incomplete record.
        active = active & complete & (p < ends)
    if not np.array_equal(p[:-1], ends[:-1]):
        return None  # a guess was not on the chain
    walked = np.stack(steps, axis=1)  # segments x steps
    offsets = walked[walked >= 0]
    # The last segment may end on an incomplete record: drop it.
    if not len(offsets):
        return None
    end = int(offsets[-1]) + 16 + int(_u32(a, offsets[-1:] + 8, little)[0])
    if end > n:
        offsets = offsets[:-1]
        if not len(offsets):
            return None
        end = int(offsets[-1]) + 16 + int(_u32(a, offsets[-1:] + 8, little)[0])
    return offsets, end
