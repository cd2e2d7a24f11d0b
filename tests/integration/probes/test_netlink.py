"""Host, netns and netlink probes against real namespaces, veths and bridges."""

from __future__ import annotations

import pytest

from tests.integration.probes.conftest import Agent, Lab, edges, nodes, one, owner

pytestmark = pytest.mark.root


def test_host_node_and_root_interfaces(agent: Agent, lab: Lab) -> None:
    h = agent.wait(lambda g: one(g, Type="host"))
    assert h.Metadata["Name"] == "testhost"
    assert h.Metadata["TID"]
    lo = agent.wait(lambda g: one(g, Name="lo", IfIndex=1))
    assert owner(agent.graph, lo) == h
    assert lo.Metadata["EncapType"] == "loopback"
    assert "LOOPBACK" in lo.Metadata["LinkFlags"]
    [g_lo] = agent.gremlin("G.V().Has('Type', 'host', 'Name', 'testhost').Out()"
                           ".Has('Name', 'lo', 'EncapType', 'loopback')")
    assert g_lo["ID"] == lo.ID and g_lo["Host"] == "testhost"


def test_veth_pair_linked(agent: Agent, lab: Lab) -> None:
    a, b = lab.name("va"), lab.name("vb")
    lab.sh(f"ip link add {a} type veth peer name {b}")
    g = agent.wait(lambda g: one(g, Name=a) and one(g, Name=b) and g)
    na, nb = one(g, Name=a), one(g, Name=b)
    assert na is not None and nb is not None
    assert na.Metadata["Type"] == "veth" and na.Metadata["Driver"] == "veth"
    assert na.Metadata["PeerIfIndex"] == nb.Metadata["IfIndex"]
    agent.wait(lambda g: edges(g, na, nb, "layer2", Type="veth")
               or edges(g, nb, na, "layer2", Type="veth"), what="veth layer2 edge")
    [peer] = agent.gremlin(f"G.V().Has('Name', '{a}').Both('Type', 'veth')")
    assert peer["Metadata"]["Name"] == b
    [edge] = agent.gremlin(f"G.V().Has('Name', '{a}').BothE().Has('Type', 'veth')")
    assert edge["Metadata"]["RelationType"] == "layer2"
    lab.sh(f"ip link del {a}")
    agent.wait(lambda g: not nodes(g, Name=a) and not nodes(g, Name=b), what="veths gone")
    assert agent.gremlin(f"G.V().Has('Name', Within('{a}', '{b}'))") == []


def test_bridge_membership(agent: Agent, lab: Lab) -> None:
    br, a, b = lab.name("br"), lab.name("ba"), lab.name("bb")
    lab.sh(f"ip link add {br} type bridge && ip link add {a} type veth peer name {b} "
           f"&& ip link set {a} master {br}")
    g = agent.wait(lambda g: edges(g, one(g, Name=br), one(g, Name=a), "layer2") and g,
                   what="bridge -> member")
    nbr = one(g, Name=br)
    assert nbr is not None and nbr.Metadata["Type"] == "bridge"
    assert nbr.Metadata["Driver"] == "bridge"
    assert one(g, Name=a).Metadata["MasterIndex"] == nbr.Metadata["IfIndex"]  # type: ignore[union-attr]
    query = f"G.V().Has('Name', '{br}', 'Type', 'bridge').Out().Has('Name', '{a}')"
    assert len(agent.gremlin(query)) == 1
    lab.sh(f"ip link set {a} nomaster")
    agent.wait(lambda g: not edges(g, one(g, Name=br), one(g, Name=a), "layer2")
               and "MasterIndex" not in one(g, Name=a).Metadata,  # type: ignore[union-attr]
               what="membership removed")
    assert agent.gremlin(query) == []


def test_rename_and_mac_change_update_the_same_node(agent: Agent, lab: Lab) -> None:
    a, b, c = lab.name("ra"), lab.name("rb"), lab.name("rc")
    lab.sh(f"ip link add {a} type veth peer name {b}")
    first = agent.wait(lambda g: one(g, Name=a))
    lab.sh(f"ip link set {a} name {c} && ip link set {c} address 02:11:22:33:44:55")
    renamed = agent.wait(lambda g: (n := one(g, Name=c)) and n.Metadata.get("MAC")
                         == "02:11:22:33:44:55" and n, what="renamed node with new MAC")
    assert renamed.ID == first.ID
    assert not nodes(agent.graph, Name=a)
    assert agent.gremlin(f"G.V().Has('Name', '{c}').Values('MAC')") == ["02:11:22:33:44:55"]
    assert agent.gremlin(f"G.V().Has('Name', '{c}').Values('@ID')") == [first.ID]
    assert agent.gremlin(f"G.V().Has('Name', '{a}')") == []


def test_addresses_and_state(agent: Agent, lab: Lab) -> None:
    a, b = lab.name("ia"), lab.name("ib")
    lab.sh(f"ip link add {a} type veth peer name {b} && ip addr add 10.201.0.1/24 dev {a} "
           f"&& ip -6 addr add fd00:201::1/64 dev {a} nodad && ip link set {a} up "
           f"&& ip link set {b} up")
    n = agent.wait(lambda g: (n := one(g, Name=a)) and n.Metadata.get("State") == "UP"
                   and n.Metadata.get("IPV4") == ["10.201.0.1/24"] and n, what="UP with IPv4")
    assert "fd00:201::1/64" in n.Metadata["IPV6"]
    assert "UP" in n.Metadata["LinkFlags"]
    assert n.Metadata["MTU"] == 1500
    [g_n] = agent.gremlin(f"G.V().Has('Name', '{a}', 'State', 'UP')")
    assert g_n["Metadata"]["IPV4"] == ["10.201.0.1/24"]
    lab.sh(f"ip addr del 10.201.0.1/24 dev {a}")
    agent.wait(lambda g: "IPV4" not in one(g, Name=a).Metadata,  # type: ignore[union-attr]
               what="IPV4 removed")


def test_namespace_appears_and_disappears(agent: Agent, lab: Lab) -> None:
    path = lab.netns("ns")
    name = path.rsplit("/", 1)[1]
    lab.sh("ip link add eth0 type veth peer name eth1", ns=path)
    ns = agent.wait(lambda g: one(g, Type="netns", Name=name))
    assert ns.Metadata["Path"] == path
    assert isinstance(ns.Metadata["Inode"], int) and isinstance(ns.Metadata["Device"], int)
    assert owner(agent.graph, ns) == one(agent.graph, Type="host")
    assert ns.Metadata["TID"]
    eth0 = agent.wait(lambda g: [n for n in nodes(g, Name="eth0") if owner(g, n) == ns])
    assert eth0[0].Metadata["TID"]
    in_ns = (f"G.V().Has('Type', 'host').Out('Type', 'netns', 'Name', '{name}')"
             f".Out().Has('Name', 'eth0')")
    assert [n["ID"] for n in agent.gremlin(in_ns)] == [eth0[0].ID]
    lab.remove_netns(path)
    agent.wait(lambda g: not nodes(g, Type="netns", Name=name)
               and not [n for n in nodes(g, Name="eth0")], what="namespace removed")
    assert agent.gremlin(f"G.V().Has('Type', 'netns', 'Name', '{name}')") == []
    assert agent.gremlin("G.V().Has('Name', Within('eth0', 'eth1'))") == []


def test_bind_mounts_of_one_namespace_count_once(agent: Agent, lab: Lab) -> None:
    path = lab.netns("dup")
    alias = str(lab.run_dir / lab.name("alias"))
    open(alias, "w").close()
    lab.made.append(alias)
    lab.sh(f"mount --bind {path} {alias}", ns=None)
    agent.wait(lambda g: nodes(g, Type="netns", Path=path))
    import time
    time.sleep(0.3)
    assert len(nodes(agent.graph, Type="netns")) == 1
    lab.remove_netns(path)
    time.sleep(0.3)
    assert len(nodes(agent.graph, Type="netns")) == 1  # still mounted at alias
    assert agent.gremlin("G.V().Has('Type', 'netns').Count()") == 1
    lab.remove_netns(alias)
    agent.wait(lambda g: not nodes(g, Type="netns"), what="namespace removed")


def test_veth_end_in_namespace_owned_by_it(agent: Agent, lab: Lab) -> None:
    path = lab.netns("own")
    a, b = lab.name("oa"), lab.name("ob")
    lab.sh(f"ip link add {a} type veth peer name {b} && ip link set {b} netns {path}")
    ns = agent.wait(lambda g: one(g, Type="netns", Path=path))
    nb = agent.wait(lambda g: (n := one(g, Name=b)) and owner(g, n) == ns and n,
                    what="veth end owned by namespace")
    na = one(agent.graph, Name=a)
    assert owner(agent.graph, na) == one(agent.graph, Type="host")
    agent.wait(lambda g: edges(g, na, nb, "layer2", Type="veth")
               or edges(g, nb, na, "layer2", Type="veth"), what="veth edge across namespaces")
    assert len(agent.gremlin(f"G.V().Has('Type', 'netns', 'Path', '{path}').Out()"
                             f".Has('Name', '{b}')")) == 1
    assert len(agent.gremlin(f"G.V().Has('Name', '{a}').Both('Type', 'veth', 'Name', '{b}')")) == 1


def test_veth_across_two_namespaces_names_both(agent: Agent, lab: Lab) -> None:
    p1, p2 = lab.netns("x1"), lab.netns("x2")
    n1, n2 = p1.rsplit("/", 1)[1], p2.rsplit("/", 1)[1]
    lab.sh(f"ip link add xa netns {p1} type veth peer name xb netns {p2}")
    g = agent.wait(lambda g: (a := one(g, Name="xa")) and (b := one(g, Name="xb"))
                   and a.Metadata.get("LinkNetNsName") == n2
                   and b.Metadata.get("LinkNetNsName") == n1 and g,
                   what="LinkNetNsName on both ends")
    a, b = one(g, Name="xa"), one(g, Name="xb")
    assert edges(g, a, b, "layer2", Type="veth") or edges(g, b, a, "layer2", Type="veth")
    assert owner(g, a) == one(g, Type="netns", Name=n1)
    assert owner(g, b) == one(g, Type="netns", Name=n2)
    assert len(agent.gremlin(f"G.V().Has('Name', 'xa', 'LinkNetNsName', '{n2}')")) == 1
    assert len(agent.gremlin(f"G.V().Has('Name', 'xb', 'LinkNetNsName', '{n1}')"
                             f".Both('Type', 'veth').Has('Name', 'xa')")) == 1


def _veth_in_ns(lab: Lab, suffix: str) -> tuple[str, str]:
    path = lab.netns(suffix)
    lab.sh("ip link add eth0 type veth peer name eth1 && ip addr add 10.202.0.1/24 dev eth0 "
           "&& ip addr add 10.202.0.2/24 dev eth1 && ip link set eth0 up && ip link set eth1 up",
           ns=path)
    return path, path.rsplit("/", 1)[1]


def _in_ns(g: object, name: str, ns_name: str) -> object:
    from skygraph.topology.graph import Graph
    assert isinstance(g, Graph)
    ns = one(g, Type="netns", Name=ns_name)
    found = [n for n in nodes(g, Name=name) if ns is not None and owner(g, n) == ns]
    return found[0] if found else None


def test_route_in_table_2_appears_in_routing_tables(agent: Agent, lab: Lab) -> None:
    path, ns = _veth_in_ns(lab, "rt")
    lab.sh("ip route add 10.77.0.0/16 via 10.202.0.254 dev eth0 table 2", ns=path)

    def table2(g: object) -> object:
        n = _in_ns(g, "eth0", ns)
        tables = n.Metadata.get("RoutingTables", []) if n is not None else []  # type: ignore[attr-defined]
        return [t for t in tables if t["ID"] == 2]
    t2 = agent.wait(table2, what="route in table 2")
    route = t2[0]["Routes"][0]
    assert route["Prefix"] == "10.77.0.0/16"
    assert route["NextHops"][0]["IP"] == "10.202.0.254"
    [g_n] = agent.gremlin(f"G.V().Has('Type', 'netns', 'Name', '{ns}').Out().Has('Name', 'eth0')")
    assert any(t["ID"] == 2 for t in g_n["Metadata"]["RoutingTables"])
    lab.sh("ip route del 10.77.0.0/16 table 2", ns=path)
    agent.wait(lambda g: not table2(g), what="route removed")


def test_static_neighbour_appears_in_neighbors(agent: Agent, lab: Lab) -> None:
    path, ns = _veth_in_ns(lab, "nb")
    lab.sh("ip neigh add 10.202.0.9 lladdr 02:aa:bb:cc:dd:09 dev eth0 nud permanent", ns=path)

    def entry(g: object) -> object:
        n = _in_ns(g, "eth0", ns)
        neigh = n.Metadata.get("Neighbors", []) if n is not None else []  # type: ignore[attr-defined]
        return [e for e in neigh if e["IP"] == "10.202.0.9"]
    e = agent.wait(entry, what="static neighbour")[0]
    assert e["MAC"] == "02:aa:bb:cc:dd:09" and e["State"] == ["NUD_PERMANENT"]
    [g_n] = agent.gremlin(f"G.V().Has('Type', 'netns', 'Name', '{ns}').Out().Has('Name', 'eth0')")
    assert any(x["IP"] == "10.202.0.9" for x in g_n["Metadata"]["Neighbors"])


def test_counters_grow_in_metric_after_traffic(agent_factory: object, lab: Lab) -> None:
    from collections.abc import Callable
    assert callable(agent_factory)
    make: Callable[..., Agent] = agent_factory
    ag = make(metrics_update=0.2)
    path, ns = _veth_in_ns(lab, "mt")
    peer = lab.netns("mp")
    lab.sh(f"ip addr flush dev eth1 && ip link set eth1 netns {peer}", ns=path)
    lab.sh("ip addr add 10.202.0.2/24 dev eth1 && ip link set eth1 up", ns=peer)
    before = ag.wait(lambda g: (n := _in_ns(g, "eth0", ns)) and n)
    rx0 = before.Metadata.get("Metric", {}).get("TxPackets", 0)
    lab.sh("ping -c 3 -i 0.2 -W 1 10.202.0.2", ns=path)

    def grown(g: object) -> object:
        n = _in_ns(g, "eth0", ns)
        if n is None:
            return None
        metric = n.Metadata.get("Metric", {})  # type: ignore[attr-defined]
        last = n.Metadata.get("LastUpdateMetric", {})  # type: ignore[attr-defined]
        return metric.get("TxPackets", 0) >= rx0 + 3 and last.get("TxPackets") and n
    n = ag.wait(grown, what="TxPackets grown")
    last = n.Metadata["LastUpdateMetric"]
    assert last["Start"] <= last["Last"]
    assert n.Metadata["Metric"]["RxBytes"] > 0
    grown_g = ag.gremlin(f"G.V().Has('Type', 'netns', 'Name', '{ns}').Out()"
                         f".Has('Name', 'eth0', 'Metric.TxPackets', GTE({rx0 + 3}))")
    assert len(grown_g) == 1 and grown_g[0]["Metadata"]["LastUpdateMetric"]["Last"]


def test_host_metadata_from_config(agent_factory: object, lab: Lab) -> None:
    from collections.abc import Callable
    assert callable(agent_factory)
    make: Callable[..., Agent] = agent_factory
    ag = make(host_id="cfghost", metadata={
        "mydict": {"value": 123},
        "myarrays": {"integers": [1, 2, 3], "bools": [True, True],
                     "strings": ["dog", "cat", "frog"]}})
    h = ag.wait(lambda g: one(g, Type="host"))
    assert h.Metadata["Name"] == "cfghost"
    assert h.Metadata["mydict"] == {"value": 123}
    assert "cat" in h.Metadata["myarrays"]["strings"]
    assert h.Metadata["KernelVersion"] and h.Metadata["Hostname"]
    assert [n["ID"] for n in ag.gremlin("G.V().Has('mydict.value', 123)")] == [h.ID]
    assert [n["ID"] for n in ag.gremlin("G.V().Has('myarrays.strings', 'cat')")] == [h.ID]
    assert ag.gremlin("G.V().Has('myarrays.strings', 'cow')") == []
