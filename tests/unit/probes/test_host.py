"""Host node metadata: config tree kept nested, facts, TID."""

from __future__ import annotations

from skygraph.probes import host
from skygraph.topology import ids

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Intel(R) Xeon(R)
stepping\t: 7
microcode\t: 0x1
cpu MHz\t\t: 2500.000
cache size\t: 36608 KB
physical id\t: 0
core id\t\t: 0
cpu cores\t: 2

processor\t: 1
vendor_id\t: GenuineIntel
"""


def test_metadata_tree_is_kept() -> None:
    extra = {"mydict": {"value": 123}, "myarrays": {"integers": [1, 2, 3],
                                                    "strings": ["dog", "cat", "frog"]}}
    facts = host.HostFacts(hostname="box", kernel_version="6.1", platform="debian")
    meta = host.host_metadata("agent1", facts, extra)
    assert meta["Name"] == "agent1" and meta["Type"] == "host" and meta["Hostname"] == "box"
    assert meta["mydict"] == {"value": 123}
    assert meta["myarrays"]["strings"] == ["dog", "cat", "frog"]
    assert meta["KernelVersion"] == "6.1" and meta["Platform"] == "debian"
    assert meta["TID"] == ids.host_tid("agent1")


def test_facts_win_over_configured_keys() -> None:
    meta = host.host_metadata("a", host.HostFacts(hostname="h"), {"Name": "x", "Type": "y"})
    assert meta["Name"] == "a" and meta["Type"] == "host"


def test_cpuinfo() -> None:
    cpus = host.parse_cpuinfo(CPUINFO)
    assert len(cpus) == 2
    assert cpus[0] == {"CPU": 0, "VendorID": "GenuineIntel", "Family": "6", "Model": "85",
                       "ModelName": "Intel(R) Xeon(R)", "Stepping": 7, "Microcode": "0x1",
                       "Mhz": 2500.0, "CacheSize": 36608, "PhysicalID": "0", "CoreID": "0",
                       "Cores": 2}


def test_os_release() -> None:
    assert host.parse_os_release('ID=debian\nVERSION_ID="12"\n') == {"ID": "debian",
                                                                    "VERSION_ID": "12"}


def test_read_facts_runs_here() -> None:
    facts = host.read_facts()
    assert facts.hostname and facts.os == "linux" and facts.kernel_version
