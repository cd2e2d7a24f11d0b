"""Raw packets, flow history and metrics (SPEC §1d, §1f, §1h) on the embedded
Bolt server: Skydive's reference traces replayed through the flow table with
short update ticks (so each flow sends several LastUpdateMetric samples and
its kept packets, as an agent does), written by the flow sink, read back
through Gremlin (`RawPackets()`, `BPF()`, `Metrics()`, `Aggregates()`,
`Sum()`, `G.At(...)`) and as pcap files that tcpdump and tshark read."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from skygraph.gremlin import GremlinQueryError, NotAvailableError, execute
from skygraph.gremlin.packets import render
from skygraph.topology.flowstore import FlowSink, FlowStore
from skygraph.topology.mutations import NodeUpdated
from tests.integration.gremlin.conftest import GremlinDB, edge, node
from tests.integration.gremlin.traces import Replay, compile_bpf, replay, tcpdump, tshark

pytestmark = pytest.mark.bolt

def store_updates(gdb: GremlinDB, *replays: Replay, max_raw_packets: int = 10) -> FlowSink:
    async def write() -> FlowSink:
        sink = FlowSink(FlowStore(gdb.store, retention_s=0, max_raw_packets=max_raw_packets),
                        max_delay=0.01, prune_interval=0)
        await sink.start()
        for r in replays:
            for update in r.updates:  # one flow per put: as the agents' ticks arrive
                await sink.put("agent1", [update])
        await sink.stop()
        return sink
    gdb.clear()
    gdb.load([node("host", Name="agent1", Type="host"),
              *[node(r.tid, Name=r.tid, Type="veth", TID=r.tid) for r in replays]],
             [edge(f"own-{r.tid}", "host", r.tid, RelationType="ownership") for r in replays])
    return gdb.loop.run(write())


def query(gdb: GremlinDB, text: str, now_ms: int) -> Any:
    return gdb.loop.run(execute(text, gdb.store.read, now_ms, compile_bpf=compile_bpf))


# ---------------------------------------------------------------- raw packets

GRE = replay("gre-gre-icmpv4.pcap", "tid-gre", limit=9)
PING = replay("layer-key-mode.pcap", "tid-eth", limit=9)


def test_raw_packets_are_the_captured_frames(gdb: GremlinDB) -> None:
    sink = store_updates(gdb, GRE, PING)
    assert sink.stats.written == len(GRE.updates) + len(PING.updates)
    got = query(gdb, "G.Flows().RawPackets()", PING.last_ms)
    assert len(got) == 1
    packets = got[0]
    # the ping (two flows: the source MAC changes between the two echos, 2 packets each)
    # and GRE in GRE: outer, middle and inner flows, 10 packets each, 9 kept (the limit)
    assert sorted(len(ps) for ps in packets.values()) == [2, 2, 9, 9, 9]
    pings = list(PING.final())
    ping = packets[pings[0]] + packets[pings[1]]
    assert [p["Index"] for p in ping] == [1, 2, 1, 2]
    assert [base64.b64decode(p["Data"]) for p in ping] == [f.data for f in PING.frames]
    assert [p["Timestamp"] for p in ping] == [f.ts_ns // 1_000_000 for f in PING.frames]
    assert {p["LinkType"] for p in ping} == {1}
    # the GRE flows' packets: the outer frame, then what each tunnel carries (raw IPv4)
    by_path = {GRE.final()[u]["LayersPath"]: ps for u, ps in packets.items()
               if u not in pings}
    outer = by_path["Ethernet/IPv4/GRE"]
    assert [base64.b64decode(p["Data"]) for p in outer] == [f.data for f in GRE.frames[:9]]
    inner = by_path["IPv4/ICMPv4"]
    assert {p["LinkType"] for p in inner} == {228}
    assert all(GRE.frames[i].data.endswith(base64.b64decode(p["Data"]))
               for i, p in enumerate(inner))
    # per flow and capture node too
    assert query(gdb, "G.V().Has('Name', 'tid-eth').Flows().RawPackets()", PING.last_ms) == [
        {u: packets[u] for u in pings}]
    assert query(gdb, "G.Flows().Has('Application', 'TCP').RawPackets()", PING.last_ms) == []


def test_raw_packets_download_opens_in_tcpdump_and_tshark(gdb: GremlinDB, tmp_path: Path
                                                            ) -> None:
    store_updates(gdb, PING)
    pcap = tmp_path / "ping.pcap"
    pcap.write_bytes(render(query(gdb, "G.Flows().RawPackets()", PING.last_ms)))
    lines = tcpdump(pcap)
    assert len(lines) == 4
    # original timestamps (ms, as kept) and the original link type
    assert [line.split()[0] for line in lines] == [
        f"{f.ts_ns // 1_000_000 // 1000}.{f.ts_ns // 1_000_000 % 1000:03d}000"
        for f in PING.frames]
    assert all("ICMP echo" in line for line in lines)
    rows = tshark(pcap, "frame.encap_type", "icmp.type", "frame.len")
    assert rows == [["1", str(t), str(len(f.data))]
                    for t, f in zip((8, 0, 8, 0), PING.frames, strict=True)]


def test_seed_scenario_every_capture_one_pcap(gdb: GremlinDB, tmp_path: Path) -> None:
    """The seed's `G.At('-1s', 1000).Flows().Has('Application', 'ICMPv4').RawPackets()`
    over two captures (the ping on one interface, GRE in GRE on another): the ICMP
    packets of both in one file, Ethernet, in time order."""
    store_updates(gdb, GRE, PING)
    now = PING.last_ms + 1000  # the queries run one second after the last ping packet
    # GRE is from 2012: far outside the last 1000 s; then a window holding both
    assert len(query(gdb, "G.At('-1s', 1000).Flows().Has('Application', 'ICMPv4')"
                          ".RawPackets()", now)[0]) == 2
    since_2012 = (PING.last_ms - GRE.first_ms) // 1000 + 10
    result = query(gdb, f"G.At('-1s', {since_2012}).Flows().Has('Application', 'ICMPv4')"
                        ".RawPackets()", now)
    assert sorted(len(ps) for ps in result[0].values()) == [2, 2, 9]
    pcap = tmp_path / "icmp.pcap"
    pcap.write_bytes(render(result))
    lines = tcpdump(pcap)
    assert len(lines) == 13
    assert sum("ICMP echo request" in line for line in lines) == 7
    # the inner GRE packets (raw IPv4 as kept) behind an Ethernet header: one link type
    rows = tshark(pcap, "frame.encap_type", "ip.src", "icmp.type")
    assert {r[0] for r in rows} == {"1"}
    assert [r[1] for r in rows[:9]] == ["10.10.25.1", "192.168.1.2"] * 4 + ["10.10.25.1"]
    assert [float(line.split()[0]) for line in lines] == sorted(
        float(line.split()[0]) for line in lines)


def test_bpf_on_raw_packets(gdb: GremlinDB) -> None:
    store_updates(gdb, GRE, PING)
    q = "G.Flows().Has('Application', 'ICMPv4').RawPackets()"
    replies = query(gdb, q + ".BPF('icmp[icmptype] == 0')", PING.last_ms)
    counts = {u: len(ps) for u, ps in replies[0].items()}
    assert sorted(counts.values()) == [1, 1, 4]  # 1 of each ping's 2; 4 of the 9 kept inner
    for packets in replies[0].values():
        assert all(base64.b64decode(p["Data"])[-64:] for p in packets)
    # compiled for each link type: the Ethernet ping and the raw IPv4 inner packets
    assert query(gdb, q + ".BPF('host 192.168.1.2')", PING.last_ms)[0].keys() == {
        u for u, f in GRE.final().items() if f["LayersPath"] == "IPv4/ICMPv4"}
    assert query(gdb, q + ".BPF('tcp')", PING.last_ms) == []
    with pytest.raises(GremlinQueryError, match=r"column 57: BPF\(\): .*err_port 22.*syntax error"):
        query(gdb, q + ".BPF('err_port 22')", PING.last_ms)
    with pytest.raises(NotAvailableError, match="no BPF compiler"):
        gdb.loop.run(execute(q + ".BPF('icmp')", gdb.store.read, PING.last_ms))


def test_raw_packets_bounded_per_flow_in_the_store(gdb: GremlinDB) -> None:
    sink = store_updates(gdb, GRE, max_raw_packets=3)
    got = query(gdb, "G.Flows().RawPackets()", GRE.last_ms)[0]
    assert [[p["Index"] for p in ps] for ps in got.values()] == [[1, 2, 3]] * 3
    assert sink.stats.raw_packets_dropped == 3 * 6


def test_non_raw_packet_results_are_not_rendered(gdb: GremlinDB) -> None:
    from skygraph.gremlin.packets import NotRenderable
    store_updates(gdb, PING)
    for text in ("G.Flows()", "G.Flows().Metrics()", "G.V()", "G.Flows().Count()"):
        with pytest.raises(NotRenderable, match="RawPackets"):
            render(query(gdb, text, PING.last_ms))
    assert render([]) == render(query(gdb, "G.Flows().Has('Application', 'TCP').RawPackets()",
                                      PING.last_ms))


# ---------------------------------------------------------------- history and metrics

TCP = replay("simple-tcpv4.pcap", "tid-eth")


def sample_windows(r: Replay, uuid: str) -> list[tuple[int, int, int, int]]:
    """(Start, Last, packets, bytes) of every update the capture sent for a flow."""
    out = []
    for u in r.updates:
        if u["UUID"] == uuid:
            m = u["LastUpdateMetric"]
            out.append((m["Start"], m["Last"], m["ABPackets"] + m["BAPackets"],
                        m["ABBytes"] + m["BABytes"]))
    return out


def test_metrics_samples_sum_to_the_flow_counters(gdb: GremlinDB) -> None:
    store_updates(gdb, TCP)
    (uuid, flow), = TCP.final().items()
    first, last = TCP.first_ms, TCP.last_ms
    everything = f"G.At({last + 60_000}, 3600)"
    samples = query(gdb, f"{everything}.Flows().Metrics()", last)[0][uuid]
    assert [(m["Start"], m["Last"], m["ABPackets"] + m["BAPackets"], m["ABBytes"] + m["BABytes"])
            for m in samples] == sample_windows(TCP, uuid)
    assert len(samples) >= 3  # packets in several update windows
    total = query(gdb, f"{everything}.Flows().Metrics().Sum()", last)
    m = flow["Metric"]
    assert (total["ABPackets"], total["BAPackets"], total["ABBytes"], total["BABytes"]) == (
        m["ABPackets"], m["BAPackets"], m["ABBytes"], m["BABytes"])
    assert total["ABPackets"] + total["BAPackets"] == len(TCP.frames) == 8
    assert total["Start"] == samples[0]["Start"] and total["Last"] == samples[-1]["Last"]
    assert query(gdb, f"{everything}.Flows().Metrics().Sum('ABPackets')", last) == \
        m["ABPackets"]
    assert query(gdb, f"{everything}.Flows().Metrics().Count()", last) == 1
    assert query(gdb, f"{everything}.Flows().Metrics().Keys()", last) == [
        "ABBytes", "ABPackets", "BABytes", "BAPackets", "Last", "Start"]
    assert query(gdb, "G.V().Has('Name', 'tid-eth').Metrics()", last) == []  # no counters
    # live: the last LastUpdateMetric the flow was sent with
    assert query(gdb, "G.Flows().Metrics()", last) == [{uuid: [flow["LastUpdateMetric"]]}]
    # a slice holding only the first second: the samples inside it
    inside = [s for s in samples if s["Start"] >= first - 1000 and s["Last"] <= first + 2000]
    got = query(gdb, f"G.At({first + 2000}, 3).Flows().Metrics()", last)
    assert got == ([{uuid: inside}] if inside else [])
    # a time point: every sample up to it
    assert query(gdb, f"G.At({samples[1]['Last']}).Flows().Metrics()", last) == [
        {uuid: samples[:2]}]


def test_aggregates_rebucket_without_losing_packets(gdb: GremlinDB) -> None:
    store_updates(gdb, TCP, GRE)
    for r, flows, packets in ((TCP, 1, 8), (GRE, 3, 30)):
        end = r.last_ms + 60_000
        start = r.first_ms - 10_000
        d = (end - start) // 1000
        start = end - d * 1000
        window = f"G.At({end}, {d}).Flows()"
        assert len(query(gdb, f"{window}.Metrics()", end)[0]) == flows
        total = query(gdb, f"{window}.Metrics().Sum()", end)
        assert total["ABPackets"] + total["BAPackets"] == packets
        (slices,) = [a["Aggregated"] for a in query(
            gdb, f"{window}.Metrics().Aggregates(1)", end)]
        # 1 s slices aligned on the window start, in order, empty ones dropped
        assert all((s["Start"] - start) % 1000 == 0 and s["Last"] - s["Start"] == 1000
                   for s in slices)
        assert [s["Start"] for s in slices] == sorted({s["Start"] for s in slices})
        for key in ("ABPackets", "BAPackets", "ABBytes", "BABytes"):
            assert sum(s[key] for s in slices) == total[key], key
        assert query(gdb, f"{window}.Metrics().Aggregates(1).Count()", end) == 1
        # one slice over the whole window holds everything
        whole = query(gdb, f"{window}.Metrics().Aggregates({d})", end)
        assert [(s["Start"], s["Last"], s["ABPackets"] + s["BAPackets"])
                for s in whole[0]["Aggregated"]] == [(start, end, packets)]
    with pytest.raises(GremlinQueryError, match="more than 10000"):
        query(gdb, "G.At(NOW, FOREVER).Flows().Metrics().Aggregates(1)", TCP.last_ms)


def test_expired_flow_is_found_at_the_time_it_was_seen(gdb: GremlinDB) -> None:
    store_updates(gdb, TCP)
    (uuid, flow), = TCP.final().items()
    assert flow["FinishType"] == "TCP_FIN"  # ended, then held and removed by the table
    seen = TCP.first_ms + 10
    later = TCP.last_ms + 3 * 3600_000
    assert [f["UUID"] for f in query(gdb, f"G.At({seen}).Flows()", later)] == [uuid]
    assert [f["UUID"] for f in query(gdb, f"G.At({seen}, 1).Flows()", later)] == [uuid]
    # before it started: nothing; long after its end (more than flow.expire): nothing
    assert query(gdb, f"G.At({TCP.first_ms - 1000}).Flows()", later) == []
    assert query(gdb, f"G.At({TCP.last_ms + 3600_000}).Flows()", later) == []
    # its metrics as they were then: the first update window only
    first_tick = sample_windows(TCP, uuid)[0][1]
    samples = query(gdb, f"G.At({first_tick}).Flows().Metrics()", later)[0][uuid]
    assert [m["ABPackets"] + m["BAPackets"] for m in samples] == [3]


# ---------------------------------------------------------------- interface metrics

def test_interface_metrics_from_node_revisions(gdb: GremlinDB) -> None:
    """`LastUpdateMetric` of an interface, as the netlink probe refreshes it, kept in
    the topology history: `Metrics()` per revision, `Aggregates()`, `Sum()`."""
    from skygraph.probes.netns.links import metric_delta
    t0 = 1_700_000_000_000
    gdb.load([node("eth0", t=t0, Name="eth0", Type="veth", TID="t-eth0")])
    counters = [{"RxPackets": 10 * i, "RxBytes": 1000 * i, "TxPackets": 3 * i}
                for i in range(1, 6)]
    current = node("eth0", t=t0, Name="eth0", Type="veth", TID="t-eth0")
    for i in range(1, len(counters)):
        at = t0 + 30_000 * i
        meta = {**current.Metadata, "Metric": counters[i],
                "LastUpdateMetric": metric_delta(counters[i], counters[i - 1],
                                                 at - 30_000, at)}
        current = current.with_(Metadata=meta, UpdatedAt=at, Revision=i)
        gdb.apply([NodeUpdated(current)])
    end = t0 + 4 * 30_000
    q = f"G.At({end + 1}, 200).V().Has('Name', 'eth0')"
    got = query(gdb, f"{q}.Metrics()", end)
    assert list(got[0]) == ["eth0"]
    assert [(m["Start"], m["RxPackets"]) for m in got[0]["eth0"]] == [
        (t0 + 30_000 * i, 10) for i in range(4)]
    total = query(gdb, f"{q}.Metrics().Sum()", end)
    assert (total["RxPackets"], total["RxBytes"], total["TxPackets"]) == (40, 4000, 12)
    assert query(gdb, f"{q}.Metrics().Sum('RxBytes')", end) == 4000
    slices = query(gdb, f"{q}.Metrics().Aggregates(60)", end)[0]["Aggregated"]
    assert sum(s["RxPackets"] for s in slices) == 40
    assert all(s["Last"] - s["Start"] <= 60_000 for s in slices)
    # live: the current LastUpdateMetric
    assert query(gdb, "G.V().Has('Name', 'eth0').Metrics()", end) == [
        {"eth0": [current.Metadata["LastUpdateMetric"]]}]
    # a slice: only the metrics strictly inside it
    inside = query(gdb, f"G.At({t0 + 95_000}, 70).V().Has('Name', 'eth0').Metrics()", end)
    assert [m["Start"] for m in inside[0]["eth0"]] == [t0 + 30_000, t0 + 60_000]
    with pytest.raises(GremlinQueryError, match="Metrics\\(\\) on nodes takes"):
        query(gdb, "G.V().Metrics('Name')", end)


def test_metric_step_errors(gdb: GremlinDB) -> None:
    store_updates(gdb, PING)
    with pytest.raises(GremlinQueryError, match="Sum\\(\\): metrics have no counter 'Bytes'"):
        query(gdb, "G.Flows().Metrics().Sum('Bytes')", PING.last_ms)
    with pytest.raises(GremlinQueryError, match="Aggregates\\(\\) cannot follow Flows"):
        query(gdb, "G.Flows().Aggregates()", PING.last_ms)
    with pytest.raises(GremlinQueryError, match="BPF\\(\\) cannot follow Flows"):
        query(gdb, "G.Flows().BPF('icmp')", PING.last_ms)
    with pytest.raises(GremlinQueryError, match="RawPackets\\(\\) cannot follow V"):
        query(gdb, "G.V().RawPackets()", PING.last_ms)
    with pytest.raises(GremlinQueryError, match="Has\\(\\) cannot follow Metrics"):
        query(gdb, "G.Flows().Metrics().Has('a', 1)", PING.last_ms)


@pytest.fixture(autouse=True)
def _empty(gdb: GremlinDB) -> Any:
    yield
    gdb.clear()
