"""Extra layers: DNS, DHCPv4 and VRRPv2 decoded into Skydive's flow JSON shape.

Each parser takes the layer's bytes and returns the JSON object Skydive puts
in `Flow.DNS` / `Flow.DHCPv4` / `Flow.VRRPv2`, or None when the bytes do not
decode (gopacket's DecodeFailure: the layer is then absent from the path).
Enum-like values use gopacket's `String()` names. Pure, never raises.
"""

from __future__ import annotations

import ipaddress
import struct

DNS_HEADER = struct.Struct("!HHHHHH")  # id, flags, qd, an, ns, ar
DNS_QUESTION = struct.Struct("!HH")  # type, class
DNS_RR = struct.Struct("!HHIH")  # type, class, ttl, rdlength
DNS_SOA = struct.Struct("!IIIII")
DNS_SRV = struct.Struct("!HHH")
DHCPV4 = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # fixed 236-byte BOOTP header
VRRPV2 = struct.Struct("!BBBBBBH")  # ver|type, vrid, prio, count, auth, adver int, csum

DNS_TYPES: dict[int, str] = {
    1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG", 9: "MR",
    10: "NULL", 11: "WKS", 12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX", 16: "TXT",
    28: "AAAA", 33: "SRV", 35: "NAPTR", 41: "OPT", 43: "DS", 46: "RRSIG", 47: "NSEC",
    48: "DNSKEY", 256: "URI", 255: "ANY",
}
DNS_CLASSES: dict[int, str] = {1: "IN", 2: "CS", 3: "CH", 4: "HS", 255: "Any"}
DNS_OPCODES: dict[int, str] = {0: "Query", 1: "IQuery", 2: "Status", 4: "Notify", 5: "Update"}
DNS_RCODES: dict[int, str] = {
    0: "No Error", 1: "Format Error", 2: "Server Failure", 3: "Non-Existent Domain",
    4: "Not Implemented", 5: "Query Refused", 6: "Name Exists when it should not",
    7: "RR Set Exists when it should not", 8: "RR Set that should exist does not",
    9: "Server Not Authoritative for zone", 10: "Name not contained in zone",
}
MAX_POINTERS = 32


class _Malformed(Exception):
    pass


def _name(data: bytes, off: int) -> tuple[str, int]:
    """Read a (possibly compressed) domain name; return it and the offset after it."""
    labels: list[str] = []
    end = -1
    jumps = 0
    while True:
        if off >= len(data):
            raise _Malformed("name past end")
        length = data[off]
        if length & 0xC0 == 0xC0:
            if off + 1 >= len(data) or jumps > MAX_POINTERS:
                raise _Malformed("bad pointer")
            if end < 0:
                end = off + 2
            off = ((length & 0x3F) << 8) | data[off + 1]
            jumps += 1
            continue
        if length == 0:
            return ".".join(labels), (end if end >= 0 else off + 1)
        if off + 1 + length > len(data):
            raise _Malformed("label past end")
        labels.append(data[off + 1:off + 1 + length].decode("latin-1"))
        off += 1 + length


def _record(data: bytes, off: int) -> tuple[dict[str, object], int]:
    name, off = _name(data, off)
    if off + DNS_RR.size > len(data):
        raise _Malformed("record header past end")
    rtype, rclass, ttl, rdlen = DNS_RR.unpack_from(data, off)
    off += DNS_RR.size
    rdata = data[off:off + rdlen]
    if len(rdata) < rdlen:
        raise _Malformed("record data past end")
    rr: dict[str, object] = {
        "Name": name, "Type": DNS_TYPES.get(rtype, str(rtype)),
        "Class": DNS_CLASSES.get(rclass, str(rclass)), "TTL": ttl, "DataLength": rdlen,
    }
    if (rtype == 1 and rdlen == 4) or (rtype == 28 and rdlen == 16):
        rr["IP"] = str(ipaddress.ip_address(rdata))
    elif rtype in (2, 5, 12):
        rr[{2: "NS", 5: "CNAME", 12: "PTR"}[rtype]] = _name(data, off)[0]
    elif rtype == 15 and rdlen >= 3:
        rr["MX"] = {"Preference": struct.unpack_from("!H", rdata)[0],
                    "Name": _name(data, off + 2)[0]}
    elif rtype == 16:
        txts: list[str] = []
        i = 0
        while i < rdlen:
            txts.append(rdata[i + 1:i + 1 + rdata[i]].decode("latin-1"))
            i += 1 + rdata[i]
        rr["TXTs"] = txts
    elif rtype == 6:
        mname, moff = _name(data, off)
        rname, roff = _name(data, moff)
        if roff + DNS_SOA.size > len(data):
            raise _Malformed("SOA past end")
        serial, refresh, retry, expire, minimum = DNS_SOA.unpack_from(data, roff)
        rr["SOA"] = {"MName": mname, "RName": rname, "Serial": serial, "Refresh": refresh,
                     "Retry": retry, "Expire": expire, "Minimum": minimum}
    elif rtype == 33 and rdlen >= 7:
        prio, weight, port = DNS_SRV.unpack_from(rdata)
        rr["SRV"] = {"Priority": prio, "Weight": weight, "Port": port,
                     "Name": _name(data, off + 6)[0]}
    elif rtype == 41:
        opts: list[dict[str, object]] = []
        i = 0
        while i + 4 <= rdlen:
            code, olen = struct.unpack_from("!HH", rdata, i)
            opts.append({"Code": code, "Data": rdata[i + 4:i + 4 + olen].hex()})
            i += 4 + olen
        rr["OPT"] = opts
    return rr, off + rdlen


def parse_dns(data: bytes) -> dict[str, object] | None:
    try:
        return _parse_dns(data)
    except (_Malformed, ValueError, struct.error, IndexError):
        return None


def _parse_dns(data: bytes) -> dict[str, object]:
    if len(data) < DNS_HEADER.size:
        raise _Malformed("header")
    ident, flags, qd, an, ns, ar = DNS_HEADER.unpack_from(data)
    off = DNS_HEADER.size
    questions: list[dict[str, object]] = []
    for _ in range(qd):
        name, off = _name(data, off)
        if off + 4 > len(data):
            raise _Malformed("question past end")
        qtype, qclass = DNS_QUESTION.unpack_from(data, off)
        off += 4
        questions.append({"Name": name, "Type": DNS_TYPES.get(qtype, str(qtype)),
                          "Class": DNS_CLASSES.get(qclass, str(qclass))})
    sections: list[list[dict[str, object]]] = []
    for count in (an, ns, ar):
        records: list[dict[str, object]] = []
        for _ in range(count):
            rr, off = _record(data, off)
            records.append(rr)
        sections.append(records)
    msg: dict[str, object] = {
        "ID": ident, "QR": bool(flags & 0x8000),
        "OpCode": DNS_OPCODES.get((flags >> 11) & 0xF, str((flags >> 11) & 0xF)),
        "AA": bool(flags & 0x0400), "TC": bool(flags & 0x0200),
        "RD": bool(flags & 0x0100), "RA": bool(flags & 0x0080), "Z": (flags >> 4) & 0x7,
        "ResponseCode": DNS_RCODES.get(flags & 0xF, str(flags & 0xF)),
        "QDCount": qd, "ANCount": an, "NSCount": ns, "ARCount": ar,
    }
    if questions:
        msg["Questions"] = questions
    for key, records in zip(("Answers", "Authorities", "Additionals"), sections, strict=True):
        if records:
            msg[key] = records
    return msg


def parse_dhcpv4(data: bytes) -> dict[str, object] | None:
    # gopacket rejects anything shorter than the fixed header plus magic cookie.
    if len(data) < 240:
        return None
    (_op, _htype, hlen, hops, _xid, secs, flags, _ci, _yi, _si, _gi, _chaddr, sname,
     file_) = DHCPV4.unpack_from(data)
    return {"File": file_.rstrip(b"\0").decode("latin-1"), "Flags": flags,
            "HardwareLen": hlen, "HardwareOpts": hops,
            "ServerName": sname.rstrip(b"\0").decode("latin-1"), "Secs": secs}


def parse_vrrp(data: bytes) -> dict[str, object] | None:
    if len(data) < VRRPV2.size:
        return None
    vt, vrid, prio, count, auth, adver, csum = VRRPV2.unpack_from(data)
    if vt >> 4 != 2 or len(data) < VRRPV2.size + 4 * count:
        return None
    addrs = [str(ipaddress.IPv4Address(data[8 + 4 * i:12 + 4 * i])) for i in range(count)]
    return {"Version": vt >> 4, "Type": vt & 0xF, "VirtualRtrID": vrid, "Priority": prio,
            "CountIPAddr": count, "AuthType": auth, "AdverInt": adver, "Checksum": csum,
            "IPAddress": addrs}
