"""GraphQL packet injections (SPEC §1g): `injectPacket` / `deleteInjection`
mutations and the `injections` query, over `skygraph.api.injections` (the
same resource REST serves at /api/injectpacket)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import strawberry

from skygraph.api.captures import CaptureInvalid
from skygraph.api.injections import Injections, Unavailable
from skygraph.graphql.types import FieldError, field

# (attribute, GraphQL field, Skydive JSON name)
INJECTION_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("src", "src", "Src"), ("dst", "dst", "Dst"), ("type", "type", "Type"),
    ("count", "count", "Count"), ("interval", "interval", "Interval"),
    ("payload", "payload", "Payload"), ("icmp_id", "icmpID", "ICMPID"), ("mode", "mode", "Mode"),
    ("increment_payload", "incrementPayload", "IncrementPayload"),
    ("src_ip", "srcIP", "SrcIP"), ("dst_ip", "dstIP", "DstIP"),
    ("src_mac", "srcMAC", "SrcMAC"), ("dst_mac", "dstMAC", "DstMAC"),
    ("src_port", "srcPort", "SrcPort"), ("dst_port", "dstPort", "DstPort"), ("ttl", "ttl", "TTL"),
    ("pcap", "pcap", "Pcap"),
)
GRAPHQL_FIELD = {skydive: gql for _, gql, skydive in INJECTION_FIELDS}


@strawberry.input(description="A packet injection (Skydive's injectpacket fields).")
class InjectionInput:
    src: str = strawberry.field(description="Gremlin query for the one node to send from")
    dst: str | None = strawberry.field(default=None, description="Gremlin query for the "
                                                                 "destination node")
    type: str | None = strawberry.field(default=None, description="icmp4 (default), icmp6, "
                                                                  "tcp4, tcp6, udp4, udp6")
    count: int | None = None
    interval: int | None = strawberry.field(default=None, description="ms between packets")
    payload: str | None = None
    icmp_id: int | None = strawberry.field(default=None, name="icmpID")
    mode: str | None = strawberry.field(default=None, description="unique (one flow) or random")
    increment_payload: bool | None = None
    src_ip: str | None = strawberry.field(default=None, name="srcIP")
    dst_ip: str | None = strawberry.field(default=None, name="dstIP")
    src_mac: str | None = strawberry.field(default=None, name="srcMAC")
    dst_mac: str | None = strawberry.field(default=None, name="dstMAC")
    src_port: int | None = None
    dst_port: int | None = None
    ttl: int | None = None
    pcap: str | None = strawberry.field(default=None, description="base64 pcap to replay")


def injection_spec(i: InjectionInput) -> dict[str, Any]:
    return {skydive: getattr(i, attr) for attr, _, skydive in INJECTION_FIELDS
            if getattr(i, attr) is not None}


@strawberry.type(description="A packet injection: what was asked, what it resolved to, and "
                             "while it runs what the agent reports.")
class Injection:
    raw: strawberry.Private[Mapping[str, Any]]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.raw.get("UUID", "")))

    def _s(self, key: str) -> str | None:
        value = self.raw.get(key)
        return None if value in (None, "") else str(value)

    def _i(self, key: str) -> int | None:
        value = self.raw.get(key)
        return int(value) if isinstance(value, int) else None

    @strawberry.field
    def src(self) -> str:
        return str(self.raw.get("Src", ""))

    @strawberry.field
    def dst(self) -> str | None:
        return self._s("Dst")

    @strawberry.field
    def type(self) -> str:
        return str(self.raw.get("Type", ""))

    @field(name="srcIP")
    def src_ip(self) -> str | None:
        return self._s("SrcIP")

    @field(name="dstIP")
    def dst_ip(self) -> str | None:
        return self._s("DstIP")

    @field(name="srcMAC")
    def src_mac(self) -> str | None:
        return self._s("SrcMAC")

    @field(name="dstMAC")
    def dst_mac(self) -> str | None:
        return self._s("DstMAC")

    @strawberry.field
    def src_port(self) -> int | None:
        return self._i("SrcPort")

    @strawberry.field
    def dst_port(self) -> int | None:
        return self._i("DstPort")

    @field(name="icmpID")
    def icmp_id(self) -> int | None:
        return self._i("ICMPID")

    @strawberry.field
    def count(self) -> int:
        return int(self.raw.get("Count", 1))

    @field(description="ms between packets")
    def interval(self) -> int:
        return int(self.raw.get("Interval", 0))

    @strawberry.field
    def mode(self) -> str:
        return str(self.raw.get("Mode", "unique"))

    @field(name="trackingID", description="TrackingID of the flow the first packet "
                                                     "starts: look for it with G.Flows()")
    def tracking_id(self) -> str | None:
        return self._s("TrackingID")

    @strawberry.field
    def start_time(self) -> str | None:
        return self._s("StartTime")

    @field(description="running or error while the agent reports it; null after")
    def state(self) -> str | None:
        return self._s("State")

    @strawberry.field
    def error(self) -> str | None:
        return self._s("Error")

    @strawberry.field
    def packets_sent(self) -> int | None:
        return self._i("PacketsSent")


@strawberry.type
class InjectionPayload:
    injection: Injection | None
    errors: list[FieldError]


def _service(info: Any) -> Injections | None:
    injections: Injections | None = info.context.api.injections
    return injections


async def inject_packet(info: Any, input: InjectionInput) -> InjectionPayload:
    service = _service(info)
    if service is None:
        return InjectionPayload(injection=None, errors=[FieldError(
            field="src", message="packet injection needs the analyzer's agent link",
            code="UNAVAILABLE")])
    try:
        created = await service.create(injection_spec(input))
    except CaptureInvalid as exc:
        return InjectionPayload(injection=None, errors=[
            FieldError(field=GRAPHQL_FIELD.get(e.field, e.field), message=e.message)
            for e in exc.errors])
    except Unavailable as exc:
        return InjectionPayload(injection=None, errors=[FieldError(
            field="src", message=str(exc), code="UNAVAILABLE")])
    return InjectionPayload(injection=Injection(raw=created), errors=[])


async def delete_injection(info: Any, id: strawberry.ID) -> bool:
    service = _service(info)
    return service is not None and await service.delete(str(id))


def injections(info: Any) -> list[Injection]:
    service = _service(info)
    return [Injection(raw=v) for v in (service.list().values() if service else [])]
