"""What a single-machine lab is made of, as values: the names of its network
namespaces, the paths of its state directory, its addresses and ports, and
the configuration files of its analyzer and agents. Pure: `up`, `down` and
`status` all derive what they touch from a `Layout`, so `down` needs nothing
but the prefix and the directory to find everything again.

    analyzer (root namespace, 127.0.0.1)
       |  gRPC              |  gRPC
    agent1 process       agent2 process         (root namespace, each reporting
       |                    |                    its host namespace as the host)
    [P-agent1]           [P-agent2]              host namespaces, each with its own
     br-int: vm1-eth0, gre0 -> 192.168.50.30     ovsdb-server + ovs-vswitchd
     br-phy: eth1, IP 192.168.50.20/24           (userspace datapath)
       |                    |
       +---- [P-tor] tor1: port1, port2 ----+    the underlay: a Linux bridge
    [P-vm1] eth0 192.168.0.1/24  <- GRE ->  [P-vm2] eth0 192.168.0.2/24

Userspace tunnels leave through the bridge that holds the route to the remote
end (`tunnel_egress_iface`), so the underlay address is on `br-phy`, the OVS
bridge that holds `eth1`, not on `eth1` itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PREFIX = "sglab"
DEFAULT_DIR = "/run/skygraph-lab"
NETNS_DIR = Path("/var/run/netns")
PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,23}$")
UNDERLAY = "192.168.50"      # Skydive's Vagrant lab: analyzer .10, agents .20 and .30
OVERLAY = "192.168.0"        # the VM namespaces, as in Skydive's tunneling tutorial
VM_MTU = 1400                # room for the GRE + inner Ethernet headers on a 1500 underlay


class LabError(RuntimeError):
    """A lab step failed; the message says which and why."""


@dataclass(frozen=True, slots=True)
class LabHost:
    index: int                # 1 or 2
    layout: Layout

    @property
    def host_id(self) -> str:
        return f"agent{self.index}"

    @property
    def netns(self) -> str:
        return f"{self.layout.prefix}-agent{self.index}"

    @property
    def vm_netns(self) -> str:
        return f"{self.layout.prefix}-vm{self.index}"

    @property
    def vm_name(self) -> str:
        """The VM namespace's name in the agent's namespace directory (and the graph)."""
        return f"vm{self.index}"

    @property
    def vm_port(self) -> str:
        return f"vm{self.index}-eth0"

    @property
    def underlay_ip(self) -> str:
        return f"{UNDERLAY}.{10 * (self.index + 1)}"

    @property
    def vm_ip(self) -> str:
        return f"{OVERLAY}.{self.index}"

    @property
    def peer(self) -> LabHost:
        return self.layout.hosts[2 - self.index]

    @property
    def dir(self) -> Path:
        return self.layout.dir / self.host_id

    @property
    def run_dir(self) -> Path:
        """The namespace directory its agent watches (the VM namespace is bind-mounted here)."""
        return self.dir / "netns"

    @property
    def ovs_dir(self) -> Path:
        return self.dir / "ovs"

    @property
    def ovsdb(self) -> str:
        return f"unix:{self.ovs_dir}/db.sock"

    @property
    def config_path(self) -> Path:
        return self.dir / "agent.yml"

    @property
    def netns_path(self) -> str:
        return str(NETNS_DIR / self.netns)


@dataclass(frozen=True, slots=True)
class Layout:
    prefix: str
    dir: Path
    listen: str = "127.0.0.1:8082"
    rpc: str = "127.0.0.1:8083"
    bolt_port: int = 7687
    http_port: int = 2480
    graph_uri: str = ""           # empty: the embedded server, data under dir/graph
    graph_user: str = "neo4j"
    graph_password: str = ""
    graph_database: str = ""      # the server's default database when empty
    flow_update: int = 5

    @classmethod
    def make(cls, prefix: str = DEFAULT_PREFIX, directory: str | None = None,
             **options: Any) -> Layout:
        if not PREFIX_RE.match(prefix):
            raise LabError(f"--prefix {prefix!r}: 1 to 24 letters, digits, '-' or '_', "
                           f"starting with a letter or digit")
        base = Path(directory) if directory else Path(DEFAULT_DIR) / prefix
        return cls(prefix, base.absolute(), **options)

    @property
    def hosts(self) -> tuple[LabHost, LabHost]:
        return LabHost(1, self), LabHost(2, self)

    @property
    def tor_netns(self) -> str:
        return f"{self.prefix}-tor"

    @property
    def namespaces(self) -> list[str]:
        """Every namespace of the lab, the VMs' first (the order `down` deletes them in)."""
        return [*(h.vm_netns for h in self.hosts), *(h.netns for h in self.hosts),
                self.tor_netns]

    @property
    def analyzer_config(self) -> Path:
        return self.dir / "analyzer.yml"

    @property
    def graph_dir(self) -> Path:
        return self.dir / "graph"

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    @property
    def state_file(self) -> Path:
        return self.dir / "lab.json"

    def pidfile(self, name: str) -> Path:
        return self.dir / f"{name}.pid"

    def logfile(self, name: str) -> Path:
        return self.dir / f"{name}.log"

    # ------------------------------------------------------------ configs
    def fabric_lines(self) -> list[str]:
        """TOR1 with one port per agent, linked to that agent's eth1 (SPEC §1a)."""
        lines: list[str] = []
        for h in self.hosts:
            lines += [f"TOR1[Name=tor1] -> TOR1_PORT{h.index}",
                      f"TOR1_PORT{h.index} -> *[Type=host,Name={h.host_id}]/eth1"]
        return lines

    def analyzer_yaml(self) -> str:
        graph: dict[str, Any]
        if self.graph_uri:
            graph = {"uri": self.graph_uri, "user": self.graph_user,
                     "password": self.graph_password, "database": self.graph_database}
        else:
            graph = {"embedded": {"data_dir": str(self.graph_dir), "bolt_port": self.bolt_port,
                                  "http_port": self.http_port}}
        doc = {
            "analyzer": {"listen": self.listen, "rpc": {"listen": self.rpc},
                         "topology": {"fabric": self.fabric_lines()}},
            "graph": graph,
            "flow": {"update": self.flow_update},
        }
        return _header("analyzer") + yaml.safe_dump(doc, sort_keys=False)

    def agent_yaml(self, host: LabHost) -> str:
        doc = {
            "host_id": host.host_id,
            "analyzers": [self.rpc],
            "flow": {"update": self.flow_update},
            "agent": {"topology": {"probes": ["ovsdb"], "netns": {"run_path": str(host.run_dir)}},
                      "capture": {"stats_update": 1}},
            "ovs": {"ovsdb": host.ovsdb},
        }
        return _header(host.host_id) + yaml.safe_dump(doc, sort_keys=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "Prefix": self.prefix, "Dir": str(self.dir), "Analyzer": self.url, "RPC": self.rpc,
            "Graph": self.graph_uri or f"bolt://127.0.0.1:{self.bolt_port} (embedded)",
            "Namespaces": self.namespaces,
            "Hosts": {h.host_id: {"Netns": h.netns, "VM": h.vm_netns, "VMName": h.vm_name,
                                  "VMIP": h.vm_ip, "UnderlayIP": h.underlay_ip,
                                  "OVSDB": h.ovsdb} for h in self.hosts},
        }


def _header(role: str) -> str:
    return f"# written by `skygraph lab up` for the lab's {role}\n"
