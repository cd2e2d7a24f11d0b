"""The host probe: the `host` node (SPEC §1a, agent/host.go and the
hardware probe): `Name` = host id, `Hostname`, OS/kernel/CPU facts and the
agent's configured metadata tree, nested maps and lists kept as they are.

`host_metadata` is pure (facts in, metadata out); `read_facts` reads them
from the running system.
"""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from skygraph.topology import ids

# /proc/cpuinfo key -> Skydive CPU field (gopsutil cpu.InfoStat).
CPU_FIELDS: Mapping[str, tuple[str, type]] = {
    "processor": ("CPU", int), "vendor_id": ("VendorID", str), "cpu family": ("Family", str),
    "model": ("Model", str), "stepping": ("Stepping", int), "physical id": ("PhysicalID", str),
    "core id": ("CoreID", str), "cpu cores": ("Cores", int), "model name": ("ModelName", str),
    "cpu MHz": ("Mhz", float), "cache size": ("CacheSize", int), "microcode": ("Microcode", str),
}


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    os: str = "linux"
    platform: str = ""
    platform_family: str = ""
    platform_version: str = ""
    kernel_version: str = ""
    kernel_cmdline: str = ""
    virtualization_system: str = ""
    virtualization_role: str = ""
    cpus: list[dict[str, Any]] = field(default_factory=list)


def node_id(host_id: str) -> str:
    return ids.gen_id(host_id)


def host_metadata(host_id: str, facts: HostFacts, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata of the host node: configured keys first, then the facts (which win)."""
    meta: dict[str, Any] = dict(extra)
    meta.update({"Name": host_id, "Type": "host", "Hostname": facts.hostname, "OS": facts.os,
                 "TID": ids.host_tid(host_id)})
    for key, value in (("Platform", facts.platform), ("PlatformFamily", facts.platform_family),
                       ("PlatformVersion", facts.platform_version),
                       ("KernelVersion", facts.kernel_version),
                       ("KernelCmdLine", facts.kernel_cmdline),
                       ("VirtualizationSystem", facts.virtualization_system),
                       ("VirtualizationRole", facts.virtualization_role)):
        if value:
            meta[key] = value
    if facts.cpus:
        meta["CPU"] = facts.cpus
    return meta


def parse_cpuinfo(text: str) -> list[dict[str, Any]]:
    cpus: list[dict[str, Any]] = []
    cur: dict[str, Any] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if cur:
                cpus.append(cur)
                cur = {}
            continue
        key, _, value = line.partition(":")
        spec = CPU_FIELDS.get(key.strip())
        if spec is None:
            continue
        name, kind = spec
        value = value.strip()
        try:
            cur[name] = kind(value.split()[0]) if kind is not str else value
        except (ValueError, IndexError):
            continue
    return cpus


def parse_os_release(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"')
    return out


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def read_facts() -> HostFacts:
    release = parse_os_release(_read("/etc/os-release"))
    virt = ""
    if os.path.exists("/.dockerenv"):
        virt = "docker"
    elif "hypervisor" in _read("/proc/cpuinfo"):
        virt = "kvm"
    return HostFacts(
        hostname=socket.gethostname(), os=platform.system().lower(),
        platform=release.get("ID", ""), platform_family=release.get("ID_LIKE", release.get("ID", "")),
        platform_version=release.get("VERSION_ID", ""), kernel_version=platform.release(),
        kernel_cmdline=_read("/proc/cmdline").strip(), virtualization_system=virt,
        virtualization_role="guest" if virt else "", cpus=parse_cpuinfo(_read("/proc/cpuinfo")))
