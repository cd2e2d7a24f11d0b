"""OVS probe against real ovsdb-server + ovs-vswitchd (userspace datapath),
merged with the netlink probes."""

from __future__ import annotations

import pytest

from tests.integration.probes.conftest import Agent, Lab, Ovs, edges, nodes, one, owner

pytestmark = pytest.mark.root


def test_bridge_port_internal_interface(ovs_agent: Agent, ovs: Ovs, lab: Lab) -> None:
    br = lab.name("br")
    ovs.add_bridge(br)
    g = ovs_agent.wait(lambda g: (b := one(g, Type="ovsbridge", Name=br))
                       and (p := one(g, Type="ovsport", Name=br))
                       and (i := one(g, Type="internal", Name=br))
                       and edges(g, b, p, "layer2") and edges(g, p, i, "layer2")
                       and "IfIndex" in i.Metadata and "OfPort" in i.Metadata and g,
                       what="bridge -> port -> interface")
    b, p, i = one(g, Type="ovsbridge"), one(g, Type="ovsport"), one(g, Type="internal")
    assert b is not None and p is not None and i is not None
    assert len(nodes(g, Name=br)) == 3  # bridge, port, one interface node
    assert edges(g, b, p, "ownership")
    assert owner(g, b) == one(g, Type="host")
    assert i.Metadata["UUID"] and i.Metadata["MAC"] and i.Metadata["OfPort"] == 65534
    assert owner(g, i) == one(g, Type="host")  # netlink owns internal ports
    assert i.Metadata["TID"]
    [g_i] = ovs_agent.gremlin(f"G.V().Has('Type', 'ovsbridge', 'Name', '{br}')"
                              f".Out('Type', 'ovsport').Out('Type', 'internal').Dedup()")
    assert g_i["ID"] == i.ID and g_i["Metadata"]["UUID"] and g_i["Metadata"]["MAC"]
    assert ovs_agent.gremlin(f"G.V().Has('Name', '{br}', 'Type', 'internal').Count()") == 1
    assert len(ovs_agent.gremlin(f"G.V().Has('Type', 'host').Out().Has('Name', '{br}', "
                                 f"'Type', 'internal')")) == 1
    ovs.vsctl(f"del-br {br}")
    ovs_agent.wait(lambda g: not nodes(g, Name=br), what="bridge removed")
    assert ovs_agent.gremlin(f"G.V().Has('Name', '{br}')") == []


def test_patch_ports_and_tunnels_owned_by_bridge(ovs_agent: Agent, ovs: Ovs, lab: Lab) -> None:
    b1, b2 = lab.name("b1"), lab.name("b2")
    p1, p2 = lab.name("pa"), lab.name("pb")
    ovs.add_bridge(b1)
    ovs.add_bridge(b2)
    ovs.vsctl(f"add-port {b1} {p1} -- set interface {p1} type=patch options:peer={p2} "
              f"-- add-port {b2} {p2} -- set interface {p2} type=patch options:peer={p1}")
    tunnels = {t: lab.name(t[:2]) for t in ("gre", "vxlan", "geneve")}
    for t, name in tunnels.items():
        ovs.vsctl(f"add-port {b1} {name} -- set interface {name} type={t} "
                  f"options:remote_ip=10.99.0.2 options:local_ip=10.99.0.1")
    g = ovs_agent.wait(lambda g: (a := one(g, Name=p1, Type="patch"))
                       and (b := one(g, Name=p2, Type="patch"))
                       and (edges(g, a, b, "layer2", Type="patch")
                            or edges(g, b, a, "layer2", Type="patch"))
                       and all(one(g, Name=n, Type=t) for t, n in tunnels.items()) and g,
                       what="patch pair and tunnels")
    bridge1, bridge2 = one(g, Type="ovsbridge", Name=b1), one(g, Type="ovsbridge", Name=b2)
    assert owner(g, one(g, Name=p1, Type="patch")) == bridge1
    assert owner(g, one(g, Name=p2, Type="patch")) == bridge2
    for t, name in tunnels.items():
        n = one(g, Name=name, Type=t)
        assert n is not None and owner(g, n) == bridge1
        assert n.Metadata["RemoteIP"] == "10.99.0.2" and n.Metadata["LocalIP"] == "10.99.0.1"
        assert n.Metadata["Ovs"]["Options"]["remote_ip"] == "10.99.0.2"
    assert owner(g, one(g, Name=b1, Type="internal")) == one(g, Type="host")
    [peer] = ovs_agent.gremlin(f"G.V().Has('Name', '{p1}', 'Type', 'patch').Both('Type', 'patch')")
    assert peer["Metadata"]["Name"] == p2
    owned = ovs_agent.gremlin(f"G.V().Has('Type', 'ovsbridge', 'Name', '{b1}').OutE()"
                              f".Has('RelationType', 'ownership').OutV()"
                              f".Has('Type', Within('patch', 'gre', 'vxlan', 'geneve'))")
    assert sorted(n["Metadata"]["Name"] for n in owned) == sorted([p1, *tunnels.values()])


def test_internal_port_moved_into_namespace_stays_one_node(ovs_agent: Agent, ovs: Ovs,
                                                           lab: Lab) -> None:
    br, port = lab.name("br"), lab.name("ip")
    path = lab.netns("ns")
    ovs.add_bridge(br)
    ovs.vsctl(f"add-port {br} {port} -- set interface {port} type=internal "
              f"-- set interface {port} external_ids:owner=test")
    first = ovs_agent.wait(lambda g: (n := one(g, Name=port, Type="internal"))
                           and "EncapType" in n.Metadata and owner(g, n) == one(g, Type="host")
                           and n, what="internal port in the host namespace")
    assert first.Metadata["ExtID"] == {"owner": "test"}
    lab.sh(f"ip link set {port} netns {path}")
    ns = ovs_agent.wait(lambda g: one(g, Type="netns", Path=path))
    moved = ovs_agent.wait(lambda g: (n := one(g, Name=port, Type="internal"))
                           and owner(g, n) == ns and n, what="internal port owned by netns")
    assert moved.ID == first.ID
    assert moved.Metadata["UUID"] == first.Metadata["UUID"]
    assert len(nodes(ovs_agent.graph, Name=port)) == 2  # the port and its interface
    [g_n] = ovs_agent.gremlin(f"G.V().Has('Type', 'netns', 'Path', '{path}').Out()"
                              f".Has('Name', '{port}', 'Type', 'internal')")
    assert g_n["ID"] == first.ID
    assert ovs_agent.gremlin(f"G.V().Has('Name', '{port}', 'Type', 'internal').Count()") == 1
    assert len(ovs_agent.gremlin(f"G.V().Has('Type', 'ovsport', 'Name', '{port}')"
                                 f".Out().Has('Type', 'internal')")) == 1


def test_system_veth_port_merged(ovs_agent: Agent, ovs: Ovs, lab: Lab) -> None:
    br, a, b = lab.name("br"), lab.name("sa"), lab.name("sb")
    ovs.add_bridge(br)
    lab.sh(f"ip link add {a} type veth peer name {b} && ip link set {a} up")
    ovs.vsctl(f"add-port {br} {a}")
    n = ovs_agent.wait(lambda g: (n := one(g, Name=a, Type="veth")) and "UUID" in n.Metadata
                       and n, what="veth with OVS keys")
    port = one(ovs_agent.graph, Type="ovsport", Name=a)
    assert edges(ovs_agent.graph, port, n, "layer2")
    assert owner(ovs_agent.graph, n) == one(ovs_agent.graph, Type="host")
    [g_n] = ovs_agent.gremlin(f"G.V().Has('Type', 'ovsport', 'Name', '{a}').Out()")
    assert g_n["ID"] == n.ID and g_n["Metadata"]["Type"] == "veth"
    ovs.vsctl(f"del-port {br} {a}")
    ovs_agent.wait(lambda g: (n := one(g, Name=a, Type="veth")) and "UUID" not in n.Metadata,
                   what="OVS keys removed, netlink node kept")


def test_ovsdb_restart_resyncs(ovs_agent: Agent, ovs: Ovs, lab: Lab) -> None:
    b1, b2 = lab.name("r1"), lab.name("r2")
    ovs.add_bridge(b1)
    ovs_agent.wait(lambda g: one(g, Type="ovsbridge", Name=b1))
    ovs.stop_db()
    ovs.start_db()
    ovs.vsctl(f"del-br {b1} -- add-br {b2} -- set bridge {b2} datapath_type=netdev")
    ovs_agent.wait(lambda g: one(g, Type="ovsbridge", Name=b2)
                   and not nodes(g, Type="ovsbridge", Name=b1), timeout=20,
                   what="resync after ovsdb-server restart")
    assert len(ovs_agent.gremlin(f"G.V().Has('Type', 'ovsbridge', 'Name', '{b2}')")) == 1
    assert ovs_agent.gremlin(f"G.V().Has('Type', 'ovsbridge', 'Name', '{b1}')") == []


def test_ovs_statistics_after_traffic(agent_factory: object, ovs: Ovs, lab: Lab) -> None:
    from collections.abc import Callable
    assert callable(agent_factory)
    make: Callable[..., Agent] = agent_factory
    ag = make(ovsdb=ovs.db, ovs_stats=True)
    # Namespaces hang off the bridge by veths: OVS reads the counters of the ends
    # it holds (not of an internal port moved into another namespace).
    br, a1, a2 = lab.name("br"), lab.name("a1"), lab.name("a2")
    n1, n2 = lab.netns("s1"), lab.netns("s2")
    ovs.add_bridge(br)
    lab.sh(f"ip link add {a1} type veth peer name eth0 netns {n1} && ip link set {a1} up "
           f"&& ip link add {a2} type veth peer name eth0 netns {n2} && ip link set {a2} up")
    ovs.vsctl(f"set open_vswitch . other_config:stats-update-interval=1000 "
              f"-- add-port {br} {a1} -- add-port {br} {a2}")
    lab.sh("ip addr add 10.203.0.1/24 dev eth0 && ip link set eth0 up", ns=n1)
    lab.sh("ip addr add 10.203.0.2/24 dev eth0 && ip link set eth0 up", ns=n2)
    lab.sh("ping -c 3 -i 0.2 -W 2 10.203.0.2", ns=n1)

    def counted(g: object) -> object:
        from skygraph.topology.graph import Graph
        assert isinstance(g, Graph)
        n = one(g, Name=a1, Type="veth")
        ovs_md = n.Metadata.get("Ovs", {}) if n is not None else {}
        return ovs_md.get("Metric", {}).get("TxPackets", 0) >= 3 and ovs_md.get(
            "LastUpdateMetric") and n
    n = ag.wait(counted, timeout=30, what="Ovs.Metric after pings")
    last = n.Metadata["Ovs"]["LastUpdateMetric"]
    assert last["Start"] < last["Last"]
    [g_n] = ag.gremlin(f"G.V().Has('Name', '{a1}', 'Type', 'veth', "
                       f"'Ovs.Metric.TxPackets', GTE(3))")
    assert g_n["ID"] == n.ID


def test_ovsdb_started_after_the_agent(agent_factory: object, ovs: Ovs, lab: Lab) -> None:
    from collections.abc import Callable
    assert callable(agent_factory)
    make: Callable[..., Agent] = agent_factory
    ovs.stop_db()
    ag = make(ovsdb=ovs.db)
    assert ag.ovs is not None and ag.ovs.applied == 0
    ovs.start_db()
    br = lab.name("late")
    ovs.add_bridge(br)
    ag.wait(lambda g: one(g, Type="ovsbridge", Name=br), timeout=20,
            what="bridge once ovsdb-server is up")
