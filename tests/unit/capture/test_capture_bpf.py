"""BPF: libpcap compiles, our userspace interpreter decides exactly like tcpdump."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from skygraph.capture import pcapfile
from skygraph.capture.bpf import BPFError, compile_filter
from tests.conftest import PCAPS

CASES = [
    ("icmp-vlan.pcap", "icmp or (vlan and icmp)"),
    ("icmp-vlan.pcap", "icmp"),
    ("icmp-vlan.pcap", "vlan 5 and icmp"),
    ("eth-ip4-arp-dns-req-http-google.pcap", "port 53 or port 80"),
    ("eth-ip4-arp-dns-req-http-google.pcap", "arp"),
    ("eth-ip4-arp-dns-req-http-google.pcap", "tcp[tcpflags] & (tcp-syn|tcp-fin) != 0"),
    ("eth-ip4-arp-dns-req-http-google.pcap", "greater 200 and host 192.168.0.5"),
    ("icmpv4-symetric.pcap", "icmp and host 176.16.13.1"),
    ("icmpv4-symetric.pcap", "icmp[icmptype] == icmp-echoreply and net 176.16.13.0/28"),
    ("simple-tcpv6.pcap", "ip6 and tcp port 3333"),
    ("gre-gre-icmpv4.pcap", "proto gre and src 72.205.54.70"),
    ("vxlan-src-port.pcap", "udp dst port 4789 and udp[8:1] & 0x08 != 0"),
    ("dns.pcap", "udp and len > 100"),
]


def tcpdump_selects(path: Path, expression: str, out: Path) -> list[bytes]:
    subprocess.run(["tcpdump", "-r", str(path), "-w", str(out), expression],
                   capture_output=True, check=True)
    return [fr.data for fr in pcapfile.read(out)[1]]


@pytest.mark.parametrize(("name", "expression"), CASES)
def test_interpreter_agrees_with_tcpdump(name: str, expression: str, tmp_path: Path) -> None:
    info, frames = pcapfile.read(PCAPS / name)
    program = compile_filter(expression, info.link_type, info.snaplen)
    ours = [fr.data for fr in frames if program.matches(fr.data, fr.wire_length)]
    assert ours == tcpdump_selects(PCAPS / name, expression, tmp_path / "out.pcap")


def test_icmp_vlan_filter_matches_both_packets() -> None:
    info, frames = pcapfile.read(PCAPS / "icmp-vlan.pcap")
    program = compile_filter("icmp or (vlan and icmp)", info.link_type, 256)
    assert [program.matches(fr.data, fr.wire_length) for fr in frames] == [True, True]


def test_invalid_filter_is_rejected_with_libpcap_message() -> None:
    with pytest.raises(BPFError, match=r"err_port 22.*syntax error"):
        compile_filter("err_port 22")


def test_valid_filter_compiles_for_raw_ip() -> None:
    program = compile_filter("port 22", link_type=101)
    assert program.instructions[0].code == 0x30  # raw IP: first load is the version byte
    assert len(program.pack()) == 8 * len(program.instructions)
