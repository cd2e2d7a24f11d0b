"""Flow retention on the real embedded Bolt server (issue 17, "nothing silently
pruned"): `flow.retention` counts from when the store last wrote a flow or a
sample, not from its packets' times, so a trace recorded years ago and
imported now stays for the retention; 0 keeps everything; rows written
before the write time existed keep their old expiry (by `Last`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from skygraph.api.pcapimport import import_pcap
from skygraph.capture.options import CaptureOptions
from skygraph.capture.table import FlowTable
from skygraph.topology.flowschema import wire_json, write_row
from skygraph.topology.flowstore import FlowSink, FlowStore, Pruned
from skygraph.topology.graph import wall_clock_ms
from skygraph.topology.store import GraphStore
from tests.conftest import open_store, run

pytestmark = pytest.mark.bolt

OLD_S = 1_420_070_400  # 2015-01-01T00:00:00Z: when the traces below were "recorded"
OLD_MS = OLD_S * 1000
MS = 1_000_000  # ns per ms
DAY_MS = 86_400_000
A_MAC, B_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def old_trace(path: Path, flows: int = 4) -> Path:
    """A pcap written with scapy whose packets are from 2015: `flows` UDP flows of
    three packets each, a second apart."""
    packets = []
    for i in range(flows * 3):
        p = Ether(src=A_MAC, dst=B_MAC) / IP(src="10.0.0.1", dst="10.0.0.2") \
            / UDP(sport=4000 + i % flows, dport=53) / (b"x" * 20)
        p.time = OLD_S + i
        packets.append(p)
    wrpcap(str(path), packets)
    return path


async def chunks(path: Path) -> AsyncIterator[bytes]:
    data = path.read_bytes()
    for i in range(0, len(data), 4096):
        yield data[i:i + 4096]


async def count(store: GraphStore, label: str) -> int:
    records = await store.run(f"MATCH (x:{label}) RETURN count(x) AS n")
    return int(records[0]["n"])


async def counts(store: GraphStore) -> tuple[int, int, int]:
    return (await count(store, "Flow"), await count(store, "FlowMetric"),
            await count(store, "RawPacket"))


def _row(update: dict[str, Any]) -> dict[str, Any]:
    return write_row(update, "agent1", wall_clock_ms())


def old_updates() -> list[dict[str, Any]]:
    """Two update ticks, in 2015, of one ICMP flow keeping its packets: two samples
    (one per tick) and three raw packets."""
    table = FlowTable(CaptureOptions(raw_packet_limit=3), node_tid="tid-old")
    frame = bytes(Ether(src=A_MAC, dst=B_MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(id=5))
    table.feed(frame, OLD_MS * MS)
    table.feed(frame, (OLD_MS + 10) * MS)
    first = wire_json(table.update_at(OLD_MS + 1000)[0])
    table.feed(frame, (OLD_MS + 30_000) * MS)
    second = wire_json(table.update_at(OLD_MS + 61_000)[0])
    return [first, second]


def test_imported_old_trace_keeps_its_flows_for_the_retention_after_the_import(
        bolt_server, tmp_path):
    trace = old_trace(tmp_path / "2015.pcap")

    async def scenario() -> None:
        store = await open_store(bolt_server)
        flows = FlowStore(store, retention_s=86_400)  # the default flow.retention
        sink = FlowSink(flows, max_delay=0.01, prune_interval=0)
        await sink.start()
        before = wall_clock_ms()
        done = await import_pcap(chunks(trace), sink.put)  # what POST /api/pcap runs
        await sink.flush()
        after = wall_clock_ms()
        assert (done.packets, done.flows) == (12, 4)
        records = await store.run("MATCH (f:Flow) RETURN f.UUID AS u, f.Last AS last, "
                                  "f.UpdatedAt AS written")
        assert len(records) == 4
        for r in records:  # the packets' times are kept; the write time is now
            assert OLD_MS <= r["last"] < OLD_MS + 20_000
            assert before <= r["written"] <= after
        stored = await flows.flows([r["u"] for r in records])
        assert len(stored) == 4 and all(f["Last"] < OLD_MS + 20_000 for f in stored)
        assert all("UpdatedAt" not in f for f in stored)  # not part of the flow's JSON

        # the pruner at the real time: nothing written less than a day ago goes
        assert await flows.prune(wall_clock_ms()) == Pruned()
        assert await count(store, "Flow") == 4
        # exactly the retention after the write: still kept; past it: pruned
        assert await flows.prune(before + DAY_MS) == Pruned()
        assert await count(store, "Flow") == 4
        assert await flows.prune(after + DAY_MS + 1) == Pruned(flows=4)
        assert await count(store, "Flow") == 0
        await sink.stop()
        await store.close()
    run(scenario())


def test_old_samples_and_raw_packets_follow_their_write_time(bolt_server):
    """Samples are pruned by when each was written, raw packets with their flow, both
    whatever their (2015) packet times."""
    first, second = old_updates()
    assert [len(u["LastRawPackets"]) for u in (first, second)] == [2, 1]
    written = wall_clock_ms()
    clock = [written]

    async def scenario() -> None:
        store = await open_store(bolt_server)
        flows = FlowStore(store, retention_s=3600, clock=lambda: clock[0])
        await flows.write([_row(first)])
        clock[0] = written + 60_000  # the second update written a minute later
        await flows.write([_row(second)])
        assert await counts(store) == (1, 2, 3)

        assert await flows.prune(wall_clock_ms()) == Pruned()
        assert await flows.prune(written + 3600_000) == Pruned()  # not more than an hour
        assert await counts(store) == (1, 2, 3)
        # an hour after the first write: its sample goes, the flow stays
        assert await flows.prune(written + 3600_000 + 1) == Pruned(samples=1)
        assert await counts(store) == (1, 1, 3)
        uuid = first["UUID"]
        assert [m["Last"] for m in (await flows.metrics([uuid]))[uuid]] == [OLD_MS + 61_000]
        assert len((await flows.raw_packets([uuid]))[uuid]) == 3
        # an hour after the flow's last write: the flow, its sample and packets
        assert await flows.prune(written + 60_000 + 3600_000 + 1) == Pruned(flows=1, samples=1)
        assert await counts(store) == (0, 0, 0)
        await store.close()
    run(scenario())


def test_zero_retention_keeps_everything(bolt_server):
    async def scenario() -> None:
        store = await open_store(bolt_server)
        flows = FlowStore(store, retention_s=0)
        # the sink's clock ten years ahead, pruning every 50 ms: it must not run
        sink = FlowSink(flows, max_delay=0.01, prune_interval=0.05,
                        clock=lambda: wall_clock_ms() + 3650 * DAY_MS)
        await sink.start()
        await sink.put("agent1", old_updates())
        await sink.flush()
        await asyncio.sleep(0.5)
        assert await counts(store) == (1, 2, 3)
        assert (sink.stats.pruned, sink.stats.pruned_samples) == (0, 0)
        assert sink.status()["retention"] == 0
        assert await flows.prune(wall_clock_ms() + 3650 * DAY_MS) == Pruned()
        assert await counts(store) == (1, 2, 3)
        await sink.stop()
        await store.close()
    run(scenario())


def test_rows_without_a_write_time_keep_their_expiry_by_last(bolt_server):
    """Samples (and flows) stored by a version that did not stamp the write time are
    pruned by their `Last`, as that version did; the new ones by their write time."""
    now = wall_clock_ms()

    async def scenario() -> None:
        store = await open_store(bolt_server)
        await store.run(
            "UNWIND $rows AS r CREATE (f:Flow {UUID: r.uuid, Last: r.last}) "
            "CREATE (f)-[:HAS_METRIC]->(:FlowMetric {_key: r.uuid + '/1', FlowUUID: r.uuid, "
            "Start: r.last - 1000, Last: r.last})",
            {"rows": [{"uuid": "legacy-old", "last": now - 2 * 3600_000},
                      {"uuid": "legacy-recent", "last": now - 60_000}]})
        flows = FlowStore(store, retention_s=3600)
        await flows.write([_row(u) for u in old_updates()])
        assert await counts(store) == (3, 4, 3)
        assert await flows.prune(now) == Pruned(flows=1, samples=1)  # legacy-old
        kept = await store.run("MATCH (f:Flow) RETURN f.UUID AS u")
        assert {r["u"] for r in kept} == {"legacy-recent", old_updates()[0]["UUID"]}
        assert await count(store, "FlowMetric") == 3
        # the legacy rows now carry their Last as write time
        legacy = await store.run("MATCH (f:Flow {UUID: 'legacy-recent'})-[:HAS_METRIC]->(m) "
                                 "RETURN f.UpdatedAt AS f, m.UpdatedAt AS m")
        assert (legacy[0]["f"], legacy[0]["m"]) == (now - 60_000, now - 60_000)
        assert await flows.prune(now - 60_000 + 3600_000 + 1) == Pruned(flows=1, samples=1)
        assert await counts(store) == (1, 2, 3)
        await store.close()
    run(scenario())


def test_sink_prune_loop_leaves_a_fresh_import_alone(bolt_server, tmp_path):
    """The analyzer's pruner, running on the real clock with a short retention,
    keeps what was just imported (before, it deleted an old trace within a round)."""
    trace = old_trace(tmp_path / "2015.pcap", flows=3)

    async def scenario() -> None:
        store = await open_store(bolt_server)
        sink = FlowSink(FlowStore(store, retention_s=60), max_delay=0.01, prune_interval=0.05)
        await sink.start()
        assert (await import_pcap(chunks(trace), sink.put)).flows == 3
        await sink.flush()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # about 20 prune rounds
            await asyncio.sleep(0.1)
            assert sink.stats.last_error == ""
        assert await count(store, "Flow") == 3
        assert sink.status()["pruned"] == 0
        await sink.stop()
        await store.close()
    run(scenario())
