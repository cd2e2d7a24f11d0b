"""`skygraph flows --workers N`: the file read by N processes, each holding the flows of
a share of the records, gives byte for byte the output of one reader -- JSON, table and
the raw packets' pcap -- on traffic with tunnels, fragments, ticks and expiry."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from skygraph.capture import fanout, fastpath, offline, offline_workers
from skygraph.capture.offline import process_file
from skygraph.capture.options import CaptureOptions
from tests.unit.capture.test_capture_fastpath import mixed_traffic, write

E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def native_share(frame: bytes, shares: int) -> int:
    assert fastpath.native is not None, "the _fastflow extension is not built"
    return int(fastpath.native.share(frame, shares))


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = offline.main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def children() -> set[int]:
    """This process's children, zombies included, from /proc (never reaping any: other
    fixtures' daemons are children too, and their Popen objects own their exit status)."""
    me, found = os.getpid(), set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.add(int(entry.name))
    return found


@pytest.mark.parametrize("shares", [2, 3, 4, 7])
def test_share_is_the_fanout_hash_both_ways_and_after_vlan_tags(shares: int) -> None:
    rng = random.Random(shares)
    for _ in range(200):
        a = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        b = f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        fwd = bytes(E / IP(src=a, dst=b) / UDP(sport=1000, dport=53))
        back = bytes(E / IP(src=b, dst=a) / UDP(sport=53, dport=1000))
        tagged = bytes(E / Dot1Q(vlan=7) / Dot1Q(vlan=8) / IP(src=a, dst=b) / UDP())
        share = native_share(fwd, shares)
        # the kernel's choice for live fanout (fanout.py), whichever the direction
        assert share == fanout.reader_of(fwd, shares) == native_share(back, shares)
        assert native_share(tagged, shares) == share
    v6 = [bytes(E / IPv6(src=s, dst=d) / UDP()) for s, d in (("fd00::1", "fd00::9"),
                                                             ("fd00::9", "fd00::1"))]
    assert native_share(v6[0], shares) == native_share(v6[1], shares) == fanout.reader_of(
        v6[0], shares)


def test_share_of_what_is_not_ip_or_too_short_is_the_first() -> None:
    arp = bytes(E / ARP(psrc="10.0.0.1", pdst="10.0.0.2"))
    short = bytes(E / IP(src="10.0.0.1", dst="10.0.0.77"))[:14 + 19]  # daddr cut
    assert {native_share(f, 4) for f in (arp, short, b"", b"\x00" * 13)} == {0}
    spread = {native_share(bytes(E / IP(src="10.0.0.1", dst=f"10.0.1.{i}")), 4)
              for i in range(1, 60)}
    assert spread == {0, 1, 2, 3}  # and the addresses spread over every share
    with pytest.raises(ValueError, match="shares must be 1 to 64"):
        native_share(arp, 0)


def traffic(tmp_path: Path, gap: float) -> Path:
    """Every kind the batch path takes or hands over (TCP, UDP, ICMP, VXLAN, DNS, VLAN,
    IP options and fragments, IPv6) over 60 address pairs."""
    return write(tmp_path / f"mixed-{gap}.pcap", list(mixed_traffic(3, flows=60)),
                 1_700_000_000.0, gap)


@pytest.mark.parametrize("gap", [0.001, 1.0])  # 1.0: update ticks, expiry, timeouts
@pytest.mark.parametrize("shares", [2, 3])
def test_the_shares_hold_every_flow_once(tmp_path: Path, gap: float, shares: int) -> None:
    path = traffic(tmp_path, gap)
    opts = CaptureOptions(extra_tcp_metric=True, raw_packet_limit=3)
    alone = process_file(path, opts)
    parts = [process_file(path, opts, share=(i, shares)) for i in range(shares)]
    uuids = [{f.uuid for f in p.flows} for p in parts]
    assert all(uuids) and sum(len(u) for u in uuids) == len(alone.flows)
    # each flow in one share, with exactly the single reader's content; a tunnel's inner
    # flows in the share of their outer flow
    by_uuid = {f.uuid: f.to_json() for p in parts for f in p.flows}
    assert by_uuid == {f.uuid: f.to_json() for f in alone.flows}
    for p, mine in zip(parts, uuids, strict=True):
        assert all(f.parent_uuid in mine for f in p.flows if f.parent_uuid)
    assert any(f.parent_uuid for f in alone.flows)
    assert sum(p.packets for p in parts) == alone.packets
    if gap == 1.0:
        assert any(f.finish_type for f in alone.flows)


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_workers_print_what_one_reader_prints(tmp_path: Path, fmt: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = traffic(tmp_path, 1.0)
    before = children()
    args = [str(path), "--format", fmt, "--rawpacket-limit", "4", "--extra-tcp-metric"]
    rc1, alone, _ = cli([*args, "--workers", "1"], capsys)
    rc3, three, err = cli([*args, "--workers", "3"], capsys)
    assert rc1 == rc3 == 0 and err == ""
    assert alone == three and alone.count("\n") > 60
    assert children() <= before  # every worker reaped


def test_workers_write_the_same_raw_packets(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = traffic(tmp_path, 0.001)
    outs = {}
    for n in (1, 2):
        rc, _, err = cli([str(path), "--write-raw", str(tmp_path / f"raw{n}.pcap"),
                          "--workers", str(n)], capsys)
        assert rc == 0 and "raw packets to" in err
        outs[n] = (tmp_path / f"raw{n}.pcap").read_bytes()
    assert outs[1] == outs[2] and len(outs[1]) > 10_000


def test_what_the_batch_path_does_not_read_is_read_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = traffic(tmp_path, 0.001)
    rc, filtered, err = cli([str(path), "--bpf", "udp", "--workers", "2"], capsys)
    assert rc == 0 and "--workers 2: this file is read by one worker" in err
    assert cli([str(path), "--bpf", "udp", "--workers", "1"], capsys)[1] == filtered
    assert offline_workers.workers_for(2, path, CaptureOptions(ip_defrag=True), "") == 1
    with pytest.raises(ValueError, match="batch path only"):
        process_file(path, CaptureOptions(), "udp", share=(1, 2))


def test_automatic_workers_for_large_files_only(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = traffic(tmp_path, 0.001)
    opts = CaptureOptions()
    assert offline_workers.workers_for(0, path, opts, "") == 1  # a small file
    monkeypatch.setattr(offline_workers, "AUTO_MIN_BYTES", path.stat().st_size)
    cpus = len(os.sched_getaffinity(0))
    assert offline_workers.workers_for(0, path, opts, "") == max(1, min(cpus, 4))
    assert offline_workers.workers_for(1, path, opts, "") == 1


def test_bad_worker_counts_are_refused(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("-1", "65", "two"):
        with pytest.raises(SystemExit):
            offline.main([str(tmp_path / "x.pcap"), "--workers", bad])
        assert "--workers: must be 0 (automatic) to 64" in capsys.readouterr().err


def test_a_failing_worker_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = traffic(tmp_path, 0.001)
    real = offline.process_file

    def second_share_fails(*args: object, **kw: object) -> offline.Result:
        share = kw.get("share", (0, 1))
        if share == (1, 2):
            raise OSError(5, "Input/output error")
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(offline_workers, "process_file", second_share_fails)
    before = children()
    with pytest.raises(offline_workers.WorkerError, match=r"worker 1: OSError: .*Input/output"):
        offline_workers.render(path, CaptureOptions(), "", "", False, 2, False)
    assert children() <= before  # every worker reaped


def test_a_truncated_file_fails_every_worker_cleanly(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = traffic(tmp_path, 0.001)
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(path.read_bytes()[:-7])  # the last record ends outside the file
    before = children()
    rc, out, err = cli([str(cut), "--workers", "2"], capsys)
    assert (rc, out) == (2, "") and "truncated" in err
    assert cli([str(cut), "--workers", "1"], capsys) == (rc, out, err)
    assert children() <= before  # every worker reaped
