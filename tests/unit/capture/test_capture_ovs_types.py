"""The OVS capture types' checks before any OVSDB write: which nodes, which targets,
the mirror's name, the OVSDB address forms."""

from __future__ import annotations

from typing import Any

import pytest

from skygraph.capture.options import TableSettings
from skygraph.capture.ovsdb import remote
from skygraph.capture.sources import source_for
from skygraph.capture.sources.base import CaptureError, CaptureSpec, SourceContext
from skygraph.capture.sources.ovsbridge import DirectExport, direct_target
from skygraph.capture.sources.ovsmirror import mirror_name
from skygraph.capture.sources.ovsnetflow import OvsNetFlowSource
from skygraph.capture.sources.ovssflow import OvsSFlowSource

BRIDGE = {"Name": "br0", "Type": "ovsbridge", "UUID": "5f0c1d2e-aaaa-bbbb-cccc-000000000001",
          "TID": "tid-br0"}
PORT = {"Name": "p1", "Type": "ovsport", "UUID": "75b769f0-d9d8-4b1b-b051-6791160e3b11",
        "TID": "tid-p1"}


def ctx(type_: str, meta: dict[str, Any], **spec: Any) -> SourceContext:
    return SourceContext(CaptureSpec.from_json({"UUID": "cap-1", "Type": type_, **spec}),
                         "node-1", meta, None, TableSettings(), [], lambda flows: None)


@pytest.mark.parametrize(("spec", "direct"), [
    ({}, None),
    ({"TargetType": "local"}, None),
    ({"Target": "192.0.2.1:6343"}, "192.0.2.1:6343"),
    ({"Target": "192.0.2.1:6343", "TargetType": "sflow"}, "192.0.2.1:6343"),
])
def test_local_collector_or_straight_to_the_target(spec: dict[str, Any], direct: str | None) -> None:
    assert direct_target(ctx("ovssflow", BRIDGE, **spec), "ovssflow", "sflow") == direct


@pytest.mark.parametrize(("type_", "spec", "error"), [
    ("ovssflow", {"Target": "192.0.2.1:2055", "TargetType": "netflowv5"},
     "ovssflow: OVS exports sflow, TargetType 'netflowv5' is not possible"),
    ("ovsnetflow", {"Target": "192.0.2.1:0", "TargetType": "erspanv1"},
     "ovsnetflow: OVS exports netflowv5, TargetType 'erspanv1' is not possible"),
    ("ovsnetflow", {"TargetType": "netflowv5"}, "TargetType netflowv5 needs a Target (ip:port)"),
])
def test_other_target_types_are_refused(type_: str, spec: dict[str, Any], error: str) -> None:
    with pytest.raises(CaptureError, match=error.replace("(", r"\(").replace(")", r"\)")):
        source_for(ctx(type_, BRIDGE, **spec))


def test_sources_by_target() -> None:
    assert isinstance(source_for(ctx("ovssflow", BRIDGE)), OvsSFlowSource)
    assert isinstance(source_for(ctx("ovsnetflow", BRIDGE)), OvsNetFlowSource)
    direct = source_for(ctx("ovsnetflow", BRIDGE, Target="192.0.2.1:2055"))
    assert isinstance(direct, DirectExport) and not direct.running and direct.metadata() == {}


@pytest.mark.parametrize(("type_", "meta", "error"), [
    ("ovssflow", PORT, "ovssflow cannot capture on a node of Type 'ovsport'"),
    ("ovsnetflow", {**BRIDGE, "UUID": ""}, "the node has no UUID"),
    ("ovssflow", {**BRIDGE, "TID": ""}, "the node has no TID"),
    ("ovsmirror", BRIDGE, "ovsmirror cannot capture on a node of Type 'ovsbridge'"),
    ("ovsmirror", {**PORT, "ExtID": {"skygraph-capture-id": "cap-0"}},
     "port p1 is the mirror of capture cap-0: mirroring a mirror is not allowed"),
])
def test_nodes_the_types_refuse(type_: str, meta: dict[str, Any], error: str) -> None:
    with pytest.raises(CaptureError) as exc:
        source_for(ctx(type_, meta))
    assert str(exc.value).endswith(error)
    assert str(exc.value).startswith("capture on node node-1")


def test_mirror_name_is_skydives() -> None:
    assert mirror_name(PORT["UUID"]) == "mir75b76"


def test_ovsdb_address_forms() -> None:
    assert remote("unix:///var/run/openvswitch/db.sock") == "unix:/var/run/openvswitch/db.sock"
    assert remote("tcp://127.0.0.1:6640") == "tcp:127.0.0.1:6640"
    assert remote("127.0.0.1:6640") == "tcp:127.0.0.1:6640"
    assert remote("unix:/tmp/db.sock") == "unix:/tmp/db.sock"
