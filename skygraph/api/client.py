"""The command line as a client of a running analyzer (Skydive's `client`
commands): `skygraph capture create|list|get|delete` and `skygraph query
--analyzer`, over the REST API with Skydive's flags.

Errors name the analyzer and what it answered (`analyzer 127.0.0.1:8082:
400: invalid capture: BPFFilter: ...`).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_ANALYZER = "127.0.0.1:8082"


class ClientError(RuntimeError):
    """The analyzer is unreachable or refused the request."""


class Client:
    def __init__(self, analyzer: str, token: str = "", username: str = "", password: str = "",
                 cafile: str = "", insecure: bool = False) -> None:
        scheme = "https" if cafile or insecure or analyzer.startswith("https://") else "http"
        self.base = analyzer if "://" in analyzer else f"{scheme}://{analyzer}"
        self.analyzer = analyzer
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif username:
            basic = base64.b64encode(f"{username}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {basic}"
        self.context: ssl.SSLContext | None = None
        if self.base.startswith("https://"):
            self.context = ssl.create_default_context(cafile=cafile or None)
            if insecure:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE

    def request(self, method: str, path: str, body: Any = None,
                accept: str = "application/json", raw: bytes | None = None,
                content_type: str = "application/json") -> tuple[int, bytes]:
        """`body` is sent as JSON; `raw` as is, with `content_type`."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={**self.headers, "Accept": accept,
                                              "Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=60, context=self.context) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode(errors="replace").strip() or exc.reason
            raise ClientError(f"analyzer {self.analyzer}: {exc.code}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"analyzer {self.analyzer}: unreachable: {reason}") from None

    def json(self, method: str, path: str, body: Any = None) -> Any:
        status, raw = self.request(method, path, body)
        return None if status == 204 or not raw else json.loads(raw)


def add_client_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("analyzer (client)")
    g.add_argument("--analyzer", default=os.environ.get("SKYGRAPH_ANALYZER", ""),
                   help=f"analyzer HOST:PORT (env SKYGRAPH_ANALYZER; default {DEFAULT_ANALYZER} "
                        f"for capture commands)")
    g.add_argument("--token", default=os.environ.get("SKYGRAPH_TOKEN", ""),
                   help="API token (env SKYGRAPH_TOKEN)")
    g.add_argument("--username", default=os.environ.get("SKYGRAPH_USERNAME", ""))
    g.add_argument("--password", default=os.environ.get("SKYGRAPH_PASSWORD", ""))
    g.add_argument("--cacert", default="", help="CA file for an HTTPS analyzer")
    g.add_argument("--insecure", action="store_true", help="do not verify the TLS certificate")


def client_from_args(args: argparse.Namespace) -> Client:
    return Client(args.analyzer or DEFAULT_ANALYZER, args.token, args.username, args.password,
                  args.cacert, args.insecure)


def add_capture_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="capture_command", required=True, metavar="ACTION")
    c = sub.add_parser("create", help="create a capture (Skydive's flags)")
    what = c.add_mutually_exclusive_group(required=True)
    what.add_argument("--gremlin", help="Gremlin query selecting the nodes to capture on")
    what.add_argument("--node", help="TID of one node (G.V().Has('TID', <tid>))")
    c.add_argument("--bpf", default="", help="BPF filter (libpcap syntax)")
    c.add_argument("--name", default="")
    c.add_argument("--description", default="")
    c.add_argument("--type", default="", help="afpacket, pcap, pcapsocket, sflow, ebpf, "
                                              "ovssflow, ovsnetflow, ovsmirror, dpdk")
    c.add_argument("--port", type=int, default=0, help="sFlow listen port (sflow type)")
    c.add_argument("--samplingrate", type=int, default=1)
    c.add_argument("--pollinginterval", type=int, default=10)
    c.add_argument("--header-size", type=int, default=0, help="snaplen (0: 256)")
    c.add_argument("--rawpacket-limit", type=int, default=0, help="raw packets kept per flow")
    c.add_argument("--extra-tcp-metric", action="store_true")
    c.add_argument("--ip-defrag", action="store_true")
    c.add_argument("--reassemble-tcp", "--reassamble-tcp", action="store_true",
                   dest="reassemble_tcp")
    c.add_argument("--layer-key-mode", default="L2", choices=("L2", "L3"))
    c.add_argument("--extra-layer", action="append", default=[], metavar="LAYER",
                   help="DNS, DHCPv4 or VRRP (repeatable)")
    c.add_argument("--target", default="", help="ip:port of an external target")
    c.add_argument("--target-type", default="", help="netflowv5, sflow, erspanv1, erspanv2")
    c.add_argument("--session-id", type=int, default=1, help="ERSPAN session id (erspanv1/v2)")
    c.add_argument("--workers", type=int, default=0,
                   help="afpacket readers sharing the packets (PACKET_FANOUT), 0..64 "
                        "(0: the agent's agent.capture.workers)")
    c.add_argument("--ttl", type=int, default=0, help="delete the capture after TTL ms")
    add_client_flags(c)
    add_resource_actions(sub, "captures")


def capture_spec(args: argparse.Namespace) -> dict[str, Any]:
    query = args.gremlin or _has_tid(args.node)
    return {
        "GremlinQuery": query, "Name": args.name, "Description": args.description,
        "Type": args.type, "BPFFilter": args.bpf, "Port": args.port,
        "SamplingRate": args.samplingrate, "PollingInterval": args.pollinginterval,
        "HeaderSize": args.header_size, "RawPacketLimit": args.rawpacket_limit,
        "ExtraTCPMetric": args.extra_tcp_metric, "IPDefrag": args.ip_defrag,
        "ReassembleTCP": args.reassemble_tcp, "LayerKeyMode": args.layer_key_mode,
        "ExtraLayers": args.extra_layer, "Target": args.target, "TargetType": args.target_type,
        "SessionID": args.session_id, "TTL": args.ttl, "Workers": args.workers,
    }


def _has_tid(tid: str) -> str:
    """`G.V().Has('TID', '<tid>')` with the TID quoted as a Gremlin string."""
    return "G.V().Has('TID', '" + tid.replace("\\", "\\\\").replace("'", "\\'") + "')"


def add_resource_actions(sub: Any, what: str) -> None:
    """`list`, `get ID...` and `delete ID...` of a Skydive resource."""
    for action in ("list", "get", "delete"):
        a = sub.add_parser(action, help=f"{action} {what}")
        if action != "list":
            a.add_argument("ids", nargs="+", metavar="ID")
        add_client_flags(a)


def run_resource(args: argparse.Namespace, path: str, action: str,
                 spec: Callable[[argparse.Namespace], dict[str, Any]]) -> int:
    """create/list/get/delete on a Skydive resource (`/api/capture`, `/api/injectpacket`):
    prints the JSON answer (nothing for delete)."""
    client = client_from_args(args)
    out: Any
    if action == "create":
        out = client.json("POST", path, spec(args))
    elif action == "list":
        out = client.json("GET", path)
    elif action == "get":
        out = {i: client.json("GET", f"{path}/{i}") for i in args.ids}
    else:
        for ident in args.ids:
            client.json("DELETE", f"{path}/{ident}")
        return 0
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def run_capture(args: argparse.Namespace) -> int:
    return run_resource(args, "/api/capture", args.capture_command, capture_spec)


def add_inject_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="inject_command", required=True, metavar="ACTION")
    c = sub.add_parser("create", help="send packets from a node (Skydive's flags)")
    c.add_argument("--src", required=True, help="Gremlin query for the node to send from")
    c.add_argument("--dst", default="", help="Gremlin query for the destination node")
    c.add_argument("--type", default="icmp4", help="icmp4, icmp6, tcp4, tcp6, udp4 or udp6")
    c.add_argument("--count", type=int, default=1)
    c.add_argument("--interval", type=int, default=0, help="ms between two packets")
    c.add_argument("--payload", default="")
    c.add_argument("--id", type=int, default=0, help="ICMP id (0: chosen)")
    c.add_argument("--mode", default="unique", choices=("unique", "random"),
                   help="unique: one flow; random: a new ICMP id/source port per packet")
    c.add_argument("--inc-payload", action="store_true", help="one more payload byte per packet")
    c.add_argument("--src-ip", default="")
    c.add_argument("--dst-ip", default="")
    c.add_argument("--src-mac", default="")
    c.add_argument("--dst-mac", default="")
    c.add_argument("--src-port", type=int, default=0)
    c.add_argument("--dst-port", type=int, default=0)
    c.add_argument("--ttl", type=int, default=64)
    c.add_argument("--pcap", default="", metavar="FILE", help="replay the frames of this pcap")
    add_client_flags(c)
    add_resource_actions(sub, "packet injections")


def injection_spec(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "Src": args.src, "Dst": args.dst, "Type": args.type, "Count": args.count,
        "Interval": args.interval, "Payload": args.payload, "ICMPID": args.id, "Mode": args.mode,
        "IncrementPayload": args.inc_payload, "SrcIP": args.src_ip, "DstIP": args.dst_ip,
        "SrcMAC": args.src_mac, "DstMAC": args.dst_mac, "SrcPort": args.src_port,
        "DstPort": args.dst_port, "TTL": args.ttl,
    }
    if args.pcap:
        try:
            spec["Pcap"] = base64.b64encode(Path(args.pcap).read_bytes()).decode()
        except OSError as exc:
            raise ValueError(f"--pcap {args.pcap}: {exc.strerror}") from None
    return {k: v for k, v in spec.items() if v not in ("", 0, False) or k == "Src"}


def run_inject(args: argparse.Namespace) -> int:
    return run_resource(args, "/api/injectpacket", args.inject_command, injection_spec)


ACCEPT = {"json": "application/json", "dot": "text/vnd.graphviz",
          "pcap": "application/vnd.tcpdump.pcap"}


def add_pcap_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="pcap_command", required=True, metavar="ACTION")
    i = sub.add_parser("import", help="push a trace through a fresh flow table into the "
                                      "analyzer's flow store (POST /api/pcap)")
    i.add_argument("file", help="pcap or pcapng file")
    add_client_flags(i)


def run_pcap(args: argparse.Namespace) -> int:
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise ValueError(f"{args.file}: {exc.strerror}") from None
    _, raw = client_from_args(args).request("POST", "/api/pcap", raw=data,
                                            content_type="application/vnd.tcpdump.pcap")
    json.dump(json.loads(raw), sys.stdout)
    sys.stdout.write("\n")
    return 0


def run_query(args: argparse.Namespace, gremlin: str, fmt: str) -> int:
    """`skygraph query --analyzer ...`: POST /api/topology; writes JSON, DOT or a pcap
    (Skydive's `--format pcap` download of a RawPackets() result) to stdout or -o FILE."""
    output = getattr(args, "output", "-") or "-"
    if fmt == "pcap" and output == "-" and sys.stdout.isatty():
        raise ClientError("a pcap is binary: redirect the output (> icmp.pcap) or give -o FILE")
    client = client_from_args(args)
    status, raw = client.request("POST", "/api/topology", {"GremlinQuery": gremlin},
                                 ACCEPT.get(fmt, "application/json"))
    data: bytes = raw
    if fmt == "json" and status != 204:
        data = (json.dumps(json.loads(raw), indent=None) + "\n").encode()
    elif fmt == "json":
        data = b""
    if output != "-":
        with open(output, "wb") as fh:
            fh.write(data)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return 0
