"""Two "hosts" on one machine for end-to-end tests (issue 7): each host is a
network namespace the agent reports as its host (`--host-netns`), with its
own namespace run directory holding one VM namespace. Agents run in the root
namespace and reach the analyzer on loopback.

    vmA:eth0 10.77.1.2 -- tap0 10.77.1.1 [hA] eth1 192.168.77.1 ==
    == eth1 192.168.77.2 [hB] tap0 10.77.2.1 -- eth0 10.77.2.2 :vmB

Everything carries the per-run prefix and is removed by `down`, even after a
failed `up`.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def sh(*cmd: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    out = subprocess.run(full, capture_output=True, text=True, timeout=60)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(full)}: {out.stderr.strip()}")
    return out


@dataclass
class Host:
    name: str          # host id of its agent
    netns: str         # the host namespace (in /var/run/netns)
    vm: str            # the VM namespace (in /var/run/netns, also bind-mounted in run_dir)
    run_dir: Path      # the agent's namespace run directory

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"


@dataclass
class TwoHosts:
    prefix: str
    a: Host
    b: Host

    def ping(self, src: Host, dst_ip: str, count: int = 3) -> str:
        return sh("ping", "-c", str(count), "-i", "0.2", "-W", "2", dst_ip, ns=src.vm).stdout


def _host(prefix: str, tag: str, base: Path) -> Host:
    return Host(name=f"{prefix}-host{tag}", netns=f"{prefix}h{tag}", vm=f"{prefix}v{tag}",
                run_dir=base / f"host{tag}" / "netns")


def down(prefix: str, base: Path) -> None:
    for tag in ("A", "B"):
        h = _host(prefix, tag, base)
        mount = h.run_dir / "vm"
        if mount.exists():
            sh("umount", str(mount), check=False)
        for ns in (h.vm, h.netns):
            sh("ip", "netns", "del", ns, check=False)
    shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def two_hosts(prefix: str) -> Iterator[TwoHosts]:
    base = Path(f"/run/{prefix}-lab")
    down(prefix, base)
    try:
        lab = TwoHosts(prefix, _host(prefix, "A", base), _host(prefix, "B", base))
        for i, h in enumerate((lab.a, lab.b), 1):
            h.run_dir.mkdir(parents=True)
            sh("ip", "netns", "add", h.netns)
            sh("ip", "netns", "add", h.vm)
            (h.run_dir / "vm").touch()
            sh("mount", "--bind", f"/var/run/netns/{h.vm}", str(h.run_dir / "vm"))
            sh("ip", "link", "add", f"{prefix}t{i}", "type", "veth", "peer", "name",
               f"{prefix}e{i}")
            sh("ip", "link", "set", f"{prefix}t{i}", "netns", h.netns, "name", "tap0")
            sh("ip", "link", "set", f"{prefix}e{i}", "netns", h.vm, "name", "eth0")
            sh("ip", "addr", "add", f"10.77.{i}.1/24", "dev", "tap0", ns=h.netns)
            sh("ip", "addr", "add", f"10.77.{i}.2/24", "dev", "eth0", ns=h.vm)
            for ns, dev in ((h.netns, "tap0"), (h.netns, "lo"), (h.vm, "eth0"), (h.vm, "lo")):
                sh("ip", "link", "set", dev, "up", ns=ns)
            sh("ip", "route", "add", "default", "via", f"10.77.{i}.1", ns=h.vm)
            sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=h.netns)
        sh("ip", "link", "add", f"{prefix}u1", "type", "veth", "peer", "name", f"{prefix}u2")
        for i, h in enumerate((lab.a, lab.b), 1):
            sh("ip", "link", "set", f"{prefix}u{i}", "netns", h.netns, "name", "eth1")
            sh("ip", "addr", "add", f"192.168.77.{i}/24", "dev", "eth1", ns=h.netns)
            sh("ip", "link", "set", "eth1", "up", ns=h.netns)
            other = 3 - i
            sh("ip", "route", "add", f"10.77.{other}.0/24", "via", f"192.168.77.{other}",
               ns=h.netns)
        yield lab
    finally:
        down(prefix, base)
