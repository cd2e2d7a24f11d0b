"""The lab's network, built and removed with `ip` and the Open vSwitch tools:
namespaces, the TOR bridge and the hosts' `eth1`, the VM namespaces and their
veths, and one Open vSwitch per host (its own database, run directory and
ovs-vswitchd with the userspace datapath, started inside the host namespace)
holding `br-phy` (eth1 + the underlay address) and `br-int` (the VM's port
and a GRE tunnel to the other host).

Every link is created inside a lab namespace (a veth is created with its
peer already in the other namespace), so nothing of the lab ever appears in
the root namespace and deleting the namespaces removes every interface.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from skygraph.lab.layout import NETNS_DIR, VM_MTU, LabError, LabHost, Layout

OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
TOOLS = ("ip", "mount", "umount", "ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl",
         "ping")


def sh(*argv: str, netns: str | None = None, env: dict[str, str] | None = None,
       check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    try:
        out = subprocess.run(full, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(full)}: no answer after {timeout:.0f}s") from None
    if check and out.returncode != 0:
        raise LabError(f"{' '.join(full)}: {(out.stderr or out.stdout).strip()}")
    return out


def missing_tools() -> list[str]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not OVS_SCHEMA.exists():
        missing.append(str(OVS_SCHEMA))
    return missing


def existing_namespaces(layout: Layout) -> list[str]:
    return [ns for ns in layout.namespaces if (NETNS_DIR / ns).exists()]


# ---------------------------------------------------------------- build
def build(layout: Layout) -> None:
    """Namespaces, the underlay through TOR1, the VMs' veths (OVS comes after)."""
    for ns in layout.namespaces:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    tor = layout.tor_netns
    sh("ip", "-n", tor, "link", "add", "tor1", "type", "bridge")
    sh("ip", "-n", tor, "link", "set", "tor1", "up")
    for h in layout.hosts:
        port = f"port{h.index}"
        sh("ip", "-n", tor, "link", "add", port, "type", "veth", "peer", "name", "eth1",
           "netns", h.netns)
        sh("ip", "-n", tor, "link", "set", port, "master", "tor1", "up")
        sh("ip", "-n", h.netns, "link", "set", "eth1", "up")
        sh("ip", "-n", h.netns, "link", "add", h.vm_port, "type", "veth", "peer", "name", "eth0",
           "netns", h.vm_netns)
        sh("ip", "-n", h.netns, "link", "set", h.vm_port, "up")
        sh("ip", "-n", h.vm_netns, "link", "set", "eth0", "mtu", str(VM_MTU), "up")
        sh("ip", "-n", h.vm_netns, "addr", "add", f"{h.vm_ip}/24", "dev", "eth0")
        # the VM namespace in the agent's namespace directory, under its graph name
        h.run_dir.mkdir(parents=True, exist_ok=True)
        mount = h.run_dir / h.vm_name
        mount.touch()
        sh("mount", "--bind", str(NETNS_DIR / h.vm_netns), str(mount))


def ovs_env(host: LabHost) -> dict[str, str]:
    d = str(host.ovs_dir)
    return {**os.environ, "OVS_RUNDIR": d, "OVS_LOGDIR": d, "OVS_DBDIR": d}


def start_ovs(host: LabHost) -> None:
    """ovsdb-server and ovs-vswitchd (userspace datapath) inside the host namespace."""
    d = host.ovs_dir
    d.mkdir(parents=True, exist_ok=True)
    env = ovs_env(host)
    sh("ovsdb-tool", "create", f"{d}/conf.db", str(OVS_SCHEMA))
    sh("ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock",
       f"--pidfile={d}/ovsdb-server.pid", f"--log-file={d}/ovsdb-server.log",
       f"--unixctl={d}/ovsdb-server.ctl", "--detach", netns=host.netns, env=env)
    vsctl(host, "--no-wait", "init")
    sh("ovs-vswitchd", host.ovsdb, f"--pidfile={d}/ovs-vswitchd.pid",
       f"--log-file={d}/ovs-vswitchd.log", f"--unixctl={d}/ovs-vswitchd.ctl", "--detach",
       netns=host.netns, env=env, timeout=60)


def vsctl(host: LabHost, *args: str) -> str:
    return sh("ovs-vsctl", f"--db={host.ovsdb}", "--timeout=20", *args, netns=host.netns,
              env=ovs_env(host), timeout=30).stdout


def configure_ovs(host: LabHost) -> None:
    """br-phy: eth1 and the underlay address (where userspace tunnels leave from);
    br-int: the VM's veth and gre0 to the other host."""
    peer = host.peer
    vsctl(host, "add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev")
    vsctl(host, "add-port", "br-phy", "eth1")
    vsctl(host, "add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev")
    vsctl(host, "add-port", "br-int", host.vm_port)
    vsctl(host, "add-port", "br-int", "gre0", "--", "set", "interface", "gre0", "type=gre",
          f"options:remote_ip={peer.underlay_ip}")
    sh("ip", "-n", host.netns, "addr", "add", f"{host.underlay_ip}/24", "dev", "br-phy")
    for dev in ("br-phy", "br-int"):
        sh("ip", "-n", host.netns, "link", "set", dev, "up")


def ping(src: LabHost, dst_ip: str, count: int = 1, wait: float = 2) -> bool:
    out = sh("ping", "-c", str(count), "-i", "0.2", "-W", str(wait), dst_ip,
             netns=src.vm_netns, check=False, timeout=count * 0.2 + wait + 10)
    return out.returncode == 0


def check_tunnel(layout: Layout, timeout: float = 30) -> None:
    """VM1 pings VM2 over the GRE tunnel (the first ARPs take a moment)."""
    a, b = layout.hosts
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(a, b.vm_ip) and ping(b, a.vm_ip):
            return
        time.sleep(0.5)
    raise LabError(f"{a.vm_netns} ({a.vm_ip}) cannot ping {b.vm_netns} ({b.vm_ip}) over "
                   f"the GRE tunnel after {timeout:.0f}s; see {a.ovs_dir}/ovs-vswitchd.log")


# ---------------------------------------------------------------- teardown
def teardown(layout: Layout) -> list[str]:
    """Unmount the VMs' bind mounts, delete the namespaces; return what was removed."""
    removed: list[str] = []
    for h in layout.hosts:
        mount = h.run_dir / h.vm_name
        if mount.exists():
            sh("umount", str(mount), check=False)
            removed.append(str(mount))
    for ns in layout.namespaces:
        if (NETNS_DIR / ns).exists():
            sh("ip", "netns", "del", ns, check=False)
            removed.append(f"netns {ns}")
    return removed

