"""The GraphQL `flows` query on a real server (uvicorn, embedded Bolt server),
over flows made from the reference pcaps and written by the flow store."""

from __future__ import annotations

from typing import Any

import pytest

from skygraph.capture.offline import process_file
from skygraph.capture.options import CaptureOptions
from skygraph.topology.flowschema import write_row
from skygraph.topology.flowstore import FlowStore
from tests.conftest import PCAPS
from tests.integration.graphql.conftest import Served

pytestmark = pytest.mark.bolt

FLOWS = """query($f: FlowFilter, $since: String, $until: String, $first: Int, $after: String) {
  flows(filter: $f, since: $since, until: $until, first: $first, after: $after) {
    edges { cursor node { id application layersPath nodeTID trackingID l3TrackingID
                          parentUUID start last finishType host json } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""


def pcap(name: str, tid: str) -> list[dict[str, Any]]:
    return [f.to_json() for f in process_file(PCAPS / name, CaptureOptions(),
                                              node_tid=tid).flows]


DNS = pcap("dns.pcap", "tid-a")  # 6 DNS flows, 2019
GOOGLE = pcap("eth-ip4-arp-dns-req-http-google.pcap", "tid-b")  # 2 ARP, 2 DNS, 2 TCP, 2016
VXLAN = pcap("vxlan-src-port.pcap", "tid-b")  # 1 VXLAN, 2 TCP inside it, 2018
ALL = DNS + GOOGLE + VXLAN


@pytest.fixture(scope="module")
def flows(served: Served) -> Served:
    async def write() -> None:
        store = FlowStore(served.store)
        await store.write([write_row(f, "agentA", 1) for f in DNS])
        await store.write([write_row(f, "agentB", 1) for f in GOOGLE + VXLAN])
    served.run(write())
    return served


def page(s: Served, **variables: Any) -> dict[str, Any]:
    out: dict[str, Any] = s.data(FLOWS, variables)["flows"]
    return out


def ids(p: dict[str, Any]) -> list[str]:
    return [e["node"]["id"] for e in p["edges"]]


def uuids(flows: list[dict[str, Any]]) -> list[str]:
    return sorted(f["UUID"] for f in flows)


def test_all_flows_in_uuid_order_as_the_agents_sent_them(flows: Served) -> None:
    p = page(flows, first=100)
    assert ids(p) == uuids(ALL)
    assert p["pageInfo"]["hasNextPage"] is False and p["pageInfo"]["hasPreviousPage"] is False
    sent = {f["UUID"]: f for f in ALL}
    for edge in p["edges"]:
        node = edge["node"]
        assert node["json"] == sent[node["id"]]
        assert (node["application"], node["layersPath"], node["nodeTID"], node["start"],
                node["last"], node["trackingID"], node["parentUUID"]) == (
            sent[node["id"]]["Application"], sent[node["id"]]["LayersPath"],
            sent[node["id"]]["NodeTID"], sent[node["id"]]["Start"], sent[node["id"]]["Last"],
            sent[node["id"]]["TrackingID"], sent[node["id"]]["ParentUUID"])
        assert node["host"] == ("agentA" if node["nodeTID"] == "tid-a" else "agentB")
        assert node["finishType"] == sent[node["id"]].get("FinishType", "NOT_FINISHED")
    assert {e["node"]["finishType"] for e in p["edges"]} == {"NOT_FINISHED", "TCP_FIN"}


def test_pages_follow_each_other_without_gaps_or_repeats(flows: Served) -> None:
    seen: list[str] = []
    after = None
    for _ in range(10):
        p = page(flows, first=4, after=after, f={"nodeTID": "tid-b"})
        seen += ids(p)
        assert p["pageInfo"]["hasPreviousPage"] is (after is not None)
        if not p["pageInfo"]["hasNextPage"]:
            break
        assert p["pageInfo"]["endCursor"] == p["edges"][-1]["cursor"]
        after = p["pageInfo"]["endCursor"]
    assert seen == uuids(GOOGLE + VXLAN)  # 9 flows: pages of 4, 4, 1
    assert page(flows, first=0)["edges"] == []


def test_structured_filters(flows: Served) -> None:
    def find(**f: Any) -> list[str]:
        return ids(page(flows, f=f, first=100))
    dns = [f for f in ALL if f["Application"] == "DNS"]
    assert find(application="DNS") == uuids(dns)
    assert find(application="DNS", nodeTID="tid-a") == uuids(DNS)
    assert find(host="agentB", application="TCP") == uuids(
        [f for f in GOOGLE + VXLAN if f["Application"] == "TCP"])
    outer = VXLAN[0]
    assert find(parentUUID=outer["UUID"]) == uuids(VXLAN[1:])
    assert find(layersPath="Ethernet/ARP") == uuids(GOOGLE[:2])
    assert find(trackingID=DNS[0]["TrackingID"]) == [DNS[0]["UUID"]]
    assert find(l3TrackingID=DNS[0]["L3TrackingID"]) == [DNS[0]["UUID"]]
    assert find(captureId="none") == []


def test_predicates_on_flow_keys(flows: Served) -> None:
    def find(*preds: dict[str, Any]) -> list[str]:
        return ids(page(flows, f={"metadata": list(preds)}, first=100))
    google_dns = [f for f in GOOGLE if f["Application"] == "DNS"]
    assert find({"key": "Network", "eq": "8.8.8.8"}) == uuids(google_dns)  # A or B
    assert find({"key": "IPV4.B", "eq": "8.8.8.8"}) == uuids(google_dns)  # alias
    assert find({"key": "Network.A", "eq": "8.8.8.8"}) == []
    assert find({"key": "TCP.B", "eq": 80}) == uuids(GOOGLE[3:4] + GOOGLE[5:])
    assert find({"key": "Transport", "in": [80, 8080]}) == uuids(
        GOOGLE[3:4] + GOOGLE[5:] + VXLAN[1:])
    assert find({"key": "Metric.ABBytes", "gt": 500}) == uuids(
        [f for f in ALL if f["Metric"]["ABBytes"] > 500])
    assert find({"key": "Metric.ABBytes", "lt": 100}, {"key": "Application", "eq": "DNS"}) == \
        uuids([f for f in ALL if f["Metric"]["ABBytes"] < 100 and f["Application"] == "DNS"])
    assert find({"key": "Transport", "exists": False}) == uuids(GOOGLE[:2])  # ARP
    assert find({"key": "Network.ID", "eq": 10}) == [VXLAN[0]["UUID"]]
    assert find({"key": "LayersPath", "regex": ".*/VXLAN"}) == [VXLAN[0]["UUID"]]
    assert find({"key": "Application", "ne": "DNS"}) == uuids(
        [f for f in ALL if f["Application"] != "DNS"])


def test_time_range(flows: Served) -> None:
    def find(since: str | None = None, until: str | None = None) -> list[str]:
        return ids(page(flows, since=since, until=until, first=100))
    assert find(since="1559792400000") == uuids(DNS)  # 2019
    assert find(until="1500000000") == uuids(GOOGLE)  # 2016 (epoch seconds)
    assert find(since="1521219133000", until="1521219134000") == uuids(VXLAN[:2])
    assert find(since="NOW") == []


def test_user_errors(flows: Served) -> None:
    assert "invalid cursor" in flows.error(FLOWS, {"after": "bm9wZQ"})
    assert "first must be between 0 and 1000" in flows.error(FLOWS, {"first": 5000})
    assert "since is after until" in flows.error(FLOWS, {"since": "2000", "until": "1000"})
    assert "since:" in flows.error(FLOWS, {"since": "yesterday"})
    assert "filter metadata[0]: invalid key" in flows.error(
        FLOWS, {"f": {"metadata": [{"key": "a`b", "eq": 1}]}})
    assert "give exactly one of" in flows.error(
        FLOWS, {"f": {"metadata": [{"key": "Application", "eq": "x", "ne": "y"}]}})
    assert "expected a string, number or boolean" in flows.error(
        FLOWS, {"f": {"metadata": [{"key": "Application", "eq": {"a": 1}}]}})
    assert "filter metadata[0]: invalid regex" in flows.error(
        FLOWS, {"f": {"metadata": [{"key": "Application", "regex": "("}]}})
