"""The compiled layouts (gremlin/shapes.py) build exactly what the model and
flowschema functions build, key order included, whatever the key set."""

from __future__ import annotations

import json
import random
from typing import Any

from skygraph.gremlin import results, shapes
from skygraph.topology import schema
from skygraph.topology.flowschema import flow_json, flow_properties
from skygraph.topology.model import Edge, Node


def same(a: Any, b: Any) -> bool:
    return json.dumps(a) == json.dumps(b)  # order-sensitive


def model_node(props: dict[str, Any]) -> dict[str, Any]:
    return Node(ID=str(props.get("ID", "")), Metadata=schema.from_properties(props),
                Host=str(props.get("Host") or ""), Origin=str(props.get("Origin") or ""),
                CreatedAt=results._int(props, "CreatedAt"),
                UpdatedAt=results._int(props, "UpdatedAt"),
                Revision=results._int(props, "Revision"),
                DeletedAt=props.get("DeletedAt")).to_json()


def model_edge(props: dict[str, Any]) -> dict[str, Any]:
    return Edge(ID=str(props.get("ID", "")), Parent=str(props.get("Parent", "")),
                Child=str(props.get("Child", "")), Metadata=schema.from_properties(props),
                Host=str(props.get("Host") or ""), Origin=str(props.get("Origin") or ""),
                CreatedAt=results._int(props, "CreatedAt"),
                UpdatedAt=results._int(props, "UpdatedAt"),
                Revision=results._int(props, "Revision"),
                DeletedAt=props.get("DeletedAt")).to_json()


def random_props(rnd: random.Random) -> dict[str, Any]:
    names = ["Name", "Type", "MTU", "IPV4", "Metric.RxBytes", "Metric.TxBytes", "A.B.C",
             "A.B.D", "A", "Ovs.Port.Name", "State", "Z", "b", "_json"]
    rnd.shuffle(names)
    props: dict[str, Any] = {"ID": f"n{rnd.randrange(99)}", "Host": "h", "Revision": 3}
    for name in names[:rnd.randrange(len(names))]:
        if name == "_json":
            props["Labels"] = json.dumps({"k": [1, {"x": 2}]})
            props["_json"] = [json.dumps(["Labels"])]
        else:
            props[name] = rnd.choice([1, "v", 2.5, True, ["a", "b"], [1, 2]])
    if rnd.random() < 0.3:
        props["CreatedAt"], props["UpdatedAt"] = 10, 20
    if rnd.random() < 0.2:
        props["DeletedAt"] = 30
    if rnd.random() < 0.2:
        props["Origin"] = "agent.h"
    return props


def test_nodes_and_edges_as_the_model_builds_them() -> None:
    rnd = random.Random(5)
    for _ in range(400):
        props = random_props(rnd)
        assert same(results.node_json(props), model_node(props)), props
        props = {**props, "Parent": "p", "Child": "c"}
        assert same(results.edge_json(props), model_edge(props)), props
        assert same(results.element_json(props), model_edge(props)), props


def test_a_scalar_and_a_path_under_it_in_either_order() -> None:
    # from_properties lets the later key win: the layout must do the same
    for props in ({"ID": "x", "A": 1, "A.B": 2}, {"ID": "x", "A.B": 2, "A": 1},
                  {"ID": "x", "A.B": 2, "A.C": 3, "A": 1, "A.D": 4}):
        assert same(shapes.metadata(props), schema.from_properties(props)), props


def test_same_key_set_other_values() -> None:
    a = {"ID": "a", "Name": "a", "Metric.Rx": 1}
    b = {"ID": "b", "Name": "b", "Metric.Rx": 2}
    first, second = results.node_json(a), results.node_json(b)
    assert first["Metadata"] == {"Name": "a", "Metric": {"Rx": 1}}
    assert second["Metadata"] == {"Name": "b", "Metric": {"Rx": 2}}
    first["Metadata"]["Metric"]["Rx"] = 9  # documents are fresh, nothing shared
    assert results.node_json(b)["Metadata"]["Metric"]["Rx"] == 2


def flow(i: int, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "UUID": f"u{i}", "LayersPath": "Ethernet/IPv4/TCP", "Application": "TCP",
        "Link": {"Protocol": "ETHERNET", "A": "02:00:00:00:00:01", "B": "02:00:00:00:00:02",
                 "ID": 0},
        "Network": {"Protocol": "IPV4", "A": "10.0.0.1", "B": "10.0.0.2", "ID": 0},
        "Transport": {"Protocol": "TCP", "A": 1000 + i, "B": 80, "ID": 0},
        "Metric": {"ABPackets": 1, "ABBytes": 2, "BAPackets": 3, "BABytes": 4, "Start": 5,
                   "Last": 6},
        "Start": 5, "Last": 6, "TrackingID": "t", "L3TrackingID": "l", "NodeTID": "tid",
        **extra}
    return doc


def test_flows_as_flowschema_builds_them() -> None:
    cases = [flow(1), flow(2, ParentUUID="u1"), flow(3, ICMP={"Type": "ECHO", "ID": 3}),
             flow(4, TCPMetric={"ABSynStart": 1, "BASynStart": 2}, Zed=1, Alpha="x"),
             flow(5, DNS={"Questions": [{"Name": "a."}]})]  # JSON-encoded (a list of maps)
    for doc in cases:
        props = flow_properties(doc, "host1", 7)
        assert same(shapes.flow(props), flow_json(props)), doc
        reordered = dict(reversed(list(props.items())))
        assert same(shapes.flow(reordered), flow_json(reordered)), doc
