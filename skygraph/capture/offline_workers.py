"""Offline reading on several workers: `skygraph flows --workers N`.

Owns the split of one capture file between processes and the merge of what
they produce.  The command's process is worker 0; the others are forked from
it once the modules are loaded.  Every worker reads the whole file through a
flow table of its own that takes one share of the records (the extension's
`share`: by the outer IP addresses, so both directions of a flow, its IP
fragments and the flows a tunnel carries stay on one worker), and ticks on
every record's time, its share's or not.  Each flow is therefore built from
the very packets a single reader gives it, at the same update and expire
ticks, and comes out the same.  A worker renders its flows (JSON lines or
table rows) in the output order (`offline.order`), and sends them with its
raw packets through a pipe; worker 0 merges the sorted parts.

What differs from one reader: `flow.max_entries` caps each worker's table
(the LRU evicts per worker).  Files the batch path does not read (pcapng,
non-Ethernet, `--bpf`, `--ip-defrag`, no C extension) are read alone.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import pickle
import signal
import sys
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

from skygraph.capture.offline import (
    OrderKey,
    TableRow,
    json_line,
    order,
    process_file,
    shares_supported,
    table_row,
)
from skygraph.capture.options import CaptureOptions
from skygraph.topology.flow import RawPacket

AUTO_MAX_WORKERS = 4  # `--workers 0`: one per CPU, up to this many
AUTO_MIN_BYTES = 16 << 20  # `--workers 0`: smaller files are read alone (forks cost more)

Item = str | TableRow  # a flow as the output shows it


@dataclass
class Rendered:
    """The file's flows as the output shows them, in order, and their raw packets
    (with the place of their flow in `items`)."""

    items: list[Item]
    raw: list[tuple[RawPacket, int]] = field(default_factory=list)


@dataclass
class _Part:
    items: list[tuple[OrderKey, Item]]
    raw: list[tuple[RawPacket, str]]  # with the UUID of its flow


class WorkerError(RuntimeError):
    """A worker failed: what it said, or how it ended."""


def workers_for(requested: int, path: Path, opts: CaptureOptions, bpf: str,
                fast: bool = True) -> int:
    """How many workers read the file: `requested` (0: automatic) where the batch path
    can share it, else 1."""
    if requested == 1 or not fast or not shares_supported(path, opts, bpf):
        return 1
    if requested > 1:
        return requested
    if path.stat().st_size < AUTO_MIN_BYTES:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), AUTO_MAX_WORKERS))


def render(path: Path, opts: CaptureOptions, bpf: str, node_tid: str, table: bool,
           workers: int, with_raw: bool, fast: bool = True) -> Rendered:
    """Read the file on `workers` processes (see `workers_for`); its flows rendered as
    table rows (`table`) or JSON lines."""
    if workers <= 1:
        result = process_file(path, opts, bpf, node_tid, fast=fast)
        to_item = table_row if table else json_line
        return Rendered([to_item(f) for f in result.flows], result.raw if with_raw else [])
    shares = [(i, workers) for i in range(workers)]
    children: list[tuple[int, int]] = []  # (pid, read end of its pipe)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        for share in shares[1:]:
            children.append(_fork(path, opts, bpf, node_tid, table, with_raw, share))
        parts = [_part(path, opts, bpf, node_tid, table, with_raw, shares[0])]
        while children:
            pid, fd = children.pop(0)
            parts.append(_receive(pid, fd, len(parts)))  # closes fd, waits for pid
    finally:
        for pid, fd in children:  # a worker failed: the others' work is of no use
            os.close(fd)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return _merge(parts)


def _part(path: Path, opts: CaptureOptions, bpf: str, node_tid: str, table: bool,
          with_raw: bool, share: tuple[int, int]) -> _Part:
    result = process_file(path, opts, bpf, node_tid, share=share)
    by_uuid = {f.uuid: f for f in result.flows}
    to_item = table_row if table else json_line
    items = [(order(f, by_uuid), to_item(f)) for f in result.flows]
    raw = [(p, uuid) for packets, uuid in result.raw_sent for p in packets] if with_raw else []
    return _Part(items, raw)


def _fork(path: Path, opts: CaptureOptions, bpf: str, node_tid: str, table: bool,
          with_raw: bool, share: tuple[int, int]) -> tuple[int, int]:
    """Start the worker of `share`; its pid and the pipe its part comes through."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        return pid, read_fd
    status = 1
    try:
        os.close(read_fd)
        with os.fdopen(write_fd, "wb") as out:
            try:
                part = _part(path, opts, bpf, node_tid, table, with_raw, share)
            except BaseException as exc:  # reported by worker 0, then the child exits
                pickle.dump(("error", f"{type(exc).__name__}: {exc}"), out)
            else:
                pickle.dump(("ok", part), out, protocol=pickle.HIGHEST_PROTOCOL)
                status = 0
    finally:
        os._exit(status)  # no cleanup of worker 0's state (its buffers, atexit hooks)


def _receive(pid: int, fd: int, number: int) -> _Part:
    try:
        with os.fdopen(fd, "rb") as pipe:
            try:
                kind, payload = pickle.load(pipe)
            except EOFError:
                kind, payload = "error", "ended without sending its flows"
    finally:
        _, status = os.waitpid(pid, 0)
    if kind != "ok":
        raise WorkerError(f"worker {number}: {payload}")
    if status != 0:
        raise WorkerError(f"worker {number}: exited with status {os.waitstatus_to_exitcode(status)}")
    assert isinstance(payload, _Part)
    return payload


def _merge(parts: list[_Part]) -> Rendered:
    merged = list(heapq.merge(*(p.items for p in parts), key=itemgetter(0)))
    place = {key[2]: i for i, (key, _) in enumerate(merged)}
    raw = [(packet, place[uuid]) for p in parts for packet, uuid in p.raw]
    return Rendered([item for _, item in merged], raw)
