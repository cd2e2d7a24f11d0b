"""`skygraph lab up|down|status`: the three-node lab of Skydive's tutorials
(one analyzer, two agents with Open vSwitch joined by GRE, a TOR in between)
on one machine, with network namespaces instead of virtual machines.

`up` builds the network (skygraph.lab.net), starts the analyzer (embedded
graph under the lab directory, or the Bolt server of --graph-uri /
`graph.uri`), one agent process per host namespace, and returns once the
agents are connected, their Open vSwitch and the fabric are in the graph and
VM1 pings VM2 through the tunnel. A failed `up` removes what it made. `down`
stops the processes (pid files, then anything still running with the lab
directory on its command line or inside a lab namespace), deletes the
namespaces and the lab directory's files: it needs only the prefix and the
directory, so it also cleans up after a crash or a half-done `up`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skygraph.config import Config
from skygraph.lab import net, procs
from skygraph.lab.layout import DEFAULT_DIR, DEFAULT_PREFIX, LabError, LabHost, Layout

OVS_DAEMONS = ("ovs-vswitchd", "ovsdb-server")


def add_arguments(p: argparse.ArgumentParser,
                  graph_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    sub = p.add_subparsers(dest="lab_command", required=True, metavar="ACTION")
    up = sub.add_parser("up", help="build the lab and start its analyzer and agents")
    down = sub.add_parser("down", help="stop and remove everything of the lab")
    status = sub.add_parser("status", help="say what of the lab exists and runs")
    for s in (up, down, status):
        s.add_argument("--prefix", default=DEFAULT_PREFIX,
                       help=f"names of the lab's namespaces start with it (default "
                            f"{DEFAULT_PREFIX})")
        s.add_argument("--dir", help=f"state directory (default {DEFAULT_DIR}/PREFIX)")
    up.add_argument("--listen", default="127.0.0.1:8082", help="analyzer HTTP API")
    up.add_argument("--rpc", default="127.0.0.1:8083", help="analyzer gRPC (agents)")
    up.add_argument("--bolt-port", type=int, default=7687, help="embedded graph's Bolt port")
    up.add_argument("--http-port", type=int, default=2480, help="embedded graph's HTTP port")
    up.add_argument("--flow-update", type=int, default=5,
                    help="seconds between the agents' flow updates (default 5)")
    up.add_argument("--keep-on-error", action="store_true",
                    help="leave a failed lab as it is, for a look (then: lab down)")
    graph_flags(up)
    status.add_argument("--json", action="store_true", help="print the status as JSON")


def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.lab_command == "up":
        g = cfg.graph
        layout = Layout.make(args.prefix, args.dir, listen=args.listen, rpc=args.rpc,
                             bolt_port=args.bolt_port, http_port=args.http_port,
                             graph_uri=g.uri, graph_user=g.user, graph_password=g.password,
                             graph_database=g.database, flow_update=args.flow_update)
        up(layout, keep_on_error=args.keep_on_error)
        print_summary(layout)
        return 0
    layout = _existing(Layout.make(args.prefix, args.dir))
    if args.lab_command == "down":
        removed = down(layout)
        say(f"lab {layout.prefix}: " + ("removed " + ", ".join(removed) if removed
                                        else "nothing to remove"))
        return 0
    doc = status(layout)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_status(doc)
    return 0 if doc["Up"] else 3


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- up
def up(layout: Layout, keep_on_error: bool = False) -> None:
    preflight(layout)
    try:
        _up(layout)
    except BaseException as exc:
        if not keep_on_error:
            say(f"lab {layout.prefix}: up failed ({exc}); removing what was made")
            down(layout)
        raise


def preflight(layout: Layout) -> None:
    if os.geteuid() != 0:
        raise LabError("lab up: needs root (network namespaces, Open vSwitch)")
    if missing := net.missing_tools():
        raise LabError(f"lab up: missing {', '.join(missing)} (bash scripts/install.sh "
                       f"installs them)")
    leftovers = net.existing_namespaces(layout) + [str(p) for p in _pidfiles(layout)
                                                   if procs.running(p, _marker(layout))]
    if leftovers or layout.state_file.exists():
        raise LabError(f"lab {layout.prefix} exists ({', '.join(leftovers) or layout.state_file})"
                       f": run `skygraph lab down --prefix {layout.prefix}` first")
    ports = [("--listen", layout.listen), ("--rpc", layout.rpc)]
    if not layout.graph_uri:
        ports += [("--bolt-port", f"127.0.0.1:{layout.bolt_port}"),
                  ("--http-port", f"127.0.0.1:{layout.http_port}")]
    for flag, address in ports:
        host, _, port = address.rpartition(":")
        if _port_open(host or "127.0.0.1", int(port)):
            raise LabError(f"lab up: {address} is in use (another analyzer?): choose "
                           f"another with {flag}")


def _up(layout: Layout) -> None:
    t0 = time.monotonic()
    layout.dir.mkdir(parents=True, exist_ok=True)
    layout.state_file.write_text(json.dumps(layout.to_json(), indent=2) + "\n")
    analyzer_yml = layout.analyzer_config
    analyzer_yml.touch(mode=0o600)
    analyzer_yml.write_text(layout.analyzer_yaml())   # may hold the graph password
    say(f"lab {layout.prefix}: namespaces, TOR1 and the VMs' veths")
    net.build(layout)
    for h in layout.hosts:
        say(f"lab {layout.prefix}: Open vSwitch of {h.host_id} in {h.netns}")
        net.start_ovs(h)
        net.configure_ovs(h)
        h.config_path.write_text(layout.agent_yaml(h))
    say(f"lab {layout.prefix}: analyzer on {layout.url} (graph: "
        f"{layout.graph_uri or 'embedded, ' + str(layout.graph_dir)})")
    children = {"analyzer": start_analyzer(layout)}
    wait_for(layout, "the analyzer's /health", lambda: _get(layout, "/health") is not None,
             120, children)
    for h in layout.hosts:
        children[h.host_id] = start_agent(layout, h)
    wait_for(layout, "both agents connected", lambda: _connected(layout) == ["agent1", "agent2"],
             60, children)
    wait_for(layout, "both hosts' eth1 linked to TOR1 and both GRE ports in the graph",
             lambda: _count(layout, "G.V().Has('Name', Within('TOR1_PORT1', 'TOR1_PORT2'))"
                                    ".Out().Has('Name', 'eth1')") == 2
             and _count(layout, "G.V().Has('Type', 'gre')") == 2, 60, children)
    say(f"lab {layout.prefix}: ping {layout.hosts[0].vm_ip} -> {layout.hosts[1].vm_ip} "
        f"through the GRE tunnel")
    net.check_tunnel(layout)
    say(f"lab {layout.prefix}: up in {time.monotonic() - t0:.0f}s")


def _marker(layout: Layout) -> str:
    return f"{layout.dir}/"


def start_analyzer(layout: Layout) -> subprocess.Popen[bytes]:
    return procs.spawn([sys.executable, "-m", "skygraph.cli", "-c", str(layout.analyzer_config),
                 "analyzer"], layout.logfile("analyzer"), layout.pidfile("analyzer"),
                env=_env())


def start_agent(layout: Layout, h: LabHost) -> subprocess.Popen[bytes]:
    say(f"lab {layout.prefix}: agent {h.host_id} (host namespace {h.netns})")
    return procs.spawn([sys.executable, "-m", "skygraph.cli", "-c", str(h.config_path), "agent",
                 "--host-netns", h.netns_path], layout.logfile(h.host_id),
                layout.pidfile(h.host_id), env=_env())


def _env() -> dict[str, str]:
    """The configuration files say everything: no SKYGRAPH_* override from our caller."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SKYGRAPH_")}


def wait_for(layout: Layout, what: str, check: Callable[[], bool], timeout: float,
             children: dict[str, subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, child in children.items():
            if child.poll() is not None:
                raise LabError(f"{name} exited (status {child.returncode}) while waiting for "
                               f"{what}:\n{_tail(layout.logfile(name))}")
        try:
            if check():
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.3)
    logs = "\n".join(f"--- {layout.logfile(n)}\n{_tail(layout.logfile(n))}" for n in children)
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- analyzer API
def _get(layout: Layout, path: str) -> Any:
    try:
        with urllib.request.urlopen(layout.url + path, timeout=5) as r:
            return json.loads(r.read() or b"null")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _gremlin(layout: Layout, query: str) -> Any:
    req = urllib.request.Request(layout.url + "/api/topology", method="POST",
                                 data=json.dumps({"GremlinQuery": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


def _count(layout: Layout, query: str) -> int:
    result = _gremlin(layout, query)
    return len(result) if isinstance(result, list) else 0


def _connected(layout: Layout) -> list[str]:
    doc = _get(layout, "/api/status") or {}
    return sorted(h for h, a in (doc.get("Agents") or {}).items() if a.get("Connected"))


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


# ---------------------------------------------------------------- down
def _pidfiles(layout: Layout) -> list[Path]:
    """Agents first (they flush their flows), then the analyzer, then Open vSwitch."""
    files = [layout.pidfile(h.host_id) for h in layout.hosts] + [layout.pidfile("analyzer")]
    files += [h.ovs_dir / f"{d}.pid" for h in layout.hosts for d in OVS_DAEMONS]
    return files


def _label(layout: Layout, pidfile: Path) -> str:
    """analyzer, agent1, agent1/ovs-vswitchd, ..."""
    return pidfile.stem if pidfile.parent == layout.dir else f"{pidfile.parent.parent.name}/" \
                                                              f"{pidfile.stem}"


def down(layout: Layout) -> list[str]:
    marker = _marker(layout)
    removed: list[str] = []
    for pidfile in _pidfiles(layout):
        pid = procs.running(pidfile, marker)
        if pid is not None:
            procs.stop([pid], timeout=30)
            removed.append(f"{_label(layout, pidfile)} ({pid})")
    # what a crash left: an orphaned embedded graph server, a daemon without pid file,
    # anything started inside the lab's namespaces
    strays = procs.with_marker(marker)
    for ns in net.existing_namespaces(layout):
        strays += procs.in_netns(ns)
    if strays := sorted(set(strays)):
        procs.stop(strays, timeout=10)
        removed.append(f"{len(strays)} other processes ({', '.join(map(str, strays))})")
    removed += net.teardown(layout)
    if _remove_files(layout):
        removed.append(str(layout.dir))
    return removed


def _remove_files(layout: Layout) -> bool:
    """Remove what the lab writes in its directory (only that: --dir may be anywhere)."""
    d = layout.dir
    if not d.is_dir():
        return False
    names = {"lab.json", "analyzer.yml", "graph", *(h.host_id for h in layout.hosts),
             *(f"{n}.{ext}" for n in ("analyzer", "agent1", "agent2") for ext in ("log", "pid"))}
    for name in names:
        p = d / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    with contextlib.suppress(OSError):   # something else lives there: leave it
        d.rmdir()
        if d.parent == Path(DEFAULT_DIR):
            d.parent.rmdir()             # the last lab of the default place
    return True


def _existing(layout: Layout) -> Layout:
    """The layout `up` recorded (its ports), else the defaults for that prefix and dir."""
    try:
        doc = json.loads(layout.state_file.read_text())
    except (OSError, ValueError):
        return layout
    url = str(doc.get("Analyzer", ""))
    listen = url.split("://", 1)[-1] if url else layout.listen
    return Layout(layout.prefix, layout.dir, listen=listen, rpc=str(doc.get("RPC", layout.rpc)))


# ---------------------------------------------------------------- status
def status(layout: Layout) -> dict[str, Any]:
    marker = _marker(layout)
    running = {_label(layout, p): procs.running(p, marker) for p in _pidfiles(layout)}
    namespaces = net.existing_namespaces(layout)
    api = _get(layout, "/api/status") if running.get("analyzer") else None
    agents = {h: bool(a.get("Connected")) for h, a in ((api or {}).get("Agents") or {}).items()}
    tunnel: dict[str, dict[str, str]] = {}
    for h in layout.hosts:
        if h.netns in namespaces and running.get(f"{h.host_id}/ovs-vswitchd"):
            try:
                remote, error = net.vsctl(h, "get", "interface", "gre0", "options:remote_ip",
                                          "error").splitlines()
                tunnel[h.host_id] = {"RemoteIP": remote.strip('"'),
                                     "Error": "" if error == "[]" else error.strip('"')}
            except (LabError, ValueError) as exc:
                tunnel[h.host_id] = {"RemoteIP": "", "Error": str(exc)}
    is_up = (all(running.values()) and len(namespaces) == len(layout.namespaces)
             and sorted(a for a, c in agents.items() if c) == ["agent1", "agent2"])
    return {"Prefix": layout.prefix, "Dir": str(layout.dir), "Up": is_up,
            "Analyzer": layout.url if api is not None else "", "Processes": running,
            "Namespaces": namespaces, "Agents": agents, "Tunnels": tunnel}


def print_status(doc: dict[str, Any]) -> None:
    print(f"lab {doc['Prefix']} ({doc['Dir']}): {'up' if doc['Up'] else 'NOT up'}")
    print(f"  analyzer: {doc['Analyzer'] or 'not answering'}")
    for name, pid in doc["Processes"].items():
        print(f"  {name:22} {'running, pid ' + str(pid) if pid else 'not running'}")
    print(f"  namespaces: {' '.join(doc['Namespaces']) or 'none'}")
    for host, connected in sorted(doc["Agents"].items()):
        print(f"  agent {host}: {'connected' if connected else 'disconnected'}")
    for host, tun in sorted(doc["Tunnels"].items()):
        print(f"  {host} gre0 -> {tun['RemoteIP'] or '?'}: {tun['Error'] or 'ok'}")


def print_summary(layout: Layout) -> None:
    a, b = layout.hosts
    print(f"""lab {layout.prefix} is up
  analyzer   {layout.url}  (GraphQL: {layout.url}/graphql)
  agents     agent1 in {a.netns}, agent2 in {b.netns} (gRPC {layout.rpc})
  VMs        {a.vm_netns} {a.vm_ip}  <- GRE {a.underlay_ip} <-> {b.underlay_ip} ->  \
{b.vm_netns} {b.vm_ip}
  state      {layout.dir}  (logs: analyzer.log, agent1.log, agent2.log)
try:
  ip netns exec {a.vm_netns} ping -c 3 {b.vm_ip}
  export SKYGRAPH_ANALYZER={layout.listen}
  skygraph query "G.V().Has('Name', 'tor1').Out().Out().Has('Name', 'eth1').Dedup().Values('@Host')"
  skygraph capture create --gremlin "G.V().Has('Type', 'host').Has('Name', 'agent1')\
.Out().Has('Name', 'eth1')"
stop:  skygraph lab down{'' if layout.prefix == DEFAULT_PREFIX else ' --prefix ' + layout.prefix}\
{'' if layout.dir == Layout.make(layout.prefix).dir else ' --dir ' + str(layout.dir)}""")
