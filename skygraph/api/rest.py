"""Skydive's REST API (SPEC §1g) on the analyzer port, for existing Skydive
clients and scripts (the `skydive-client` package among them).

Owns the routes, status codes and body shapes: `GET /api`, `GET /api/status`,
`GET|POST /api/topology` (Gremlin; JSON, DOT with
`Accept: text/vnd.graphviz`, or a capture file of a `RawPackets()` result with
`Accept: application/vnd.tcpdump.pcap`), the generic resource semantics for captures,
nodes and edges (`GET` a map id -> resource, `POST` 201/400/409,
`GET|DELETE /<id>` 404 when unknown, `X-Resource-TTL`, JSON or YAML bodies,
captures not updatable), and `POST /login`. User errors answer 4xx with a
precise message; anything else is logged and answers 500 without details.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from skygraph import __version__
from skygraph.api.auth import COOKIE, Authenticator
from skygraph.api.captures import CaptureDuplicate, CaptureInvalid
from skygraph.api.injections import Injections, Unavailable
from skygraph.api.pcapimport import PcapImportError, import_pcap
from skygraph.api.service import Api
from skygraph.gremlin import GremlinError, packets
from skygraph.gremlin.dot import NotRenderable, render
from skygraph.gremlin.timeparse import parse_duration_ms
from skygraph.topology.errors import NotFoundError, StoreUnavailable, ValidationError
from skygraph.topology.model import Edge, Node
from skygraph.topology.mutations import (
    EdgeAdded,
    EdgeDeleted,
    EdgePartiallyUpdated,
    MetadataOp,
    NodeAdded,
    NodeDeleted,
    NodePartiallyUpdated,
    apply_ops,
)
from skygraph.topology.snapshot import to_json

log = logging.getLogger("skygraph.api")

DOT = "text/vnd.graphviz"
PCAP = "application/vnd.tcpdump.pcap"
PCAPNG = "application/x-pcapng"  # a download mixing link types tcpdump cannot share a file
MAX_BODY = 16 * 1024 * 1024
PERMISSIONS = {r: ["read", "write"] for r in ("capture", "topology", "status", "node", "edge",
                                              "injectpacket", "pcap")}
Handler = Callable[[Request], Awaitable[Response]]


class HTTPError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **extra}


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _guard(handler: Handler) -> Handler:
    """Turn user errors into 4xx answers and hide everything else behind a 500."""
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except HTTPError as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        except GremlinError as exc:
            return _error(400, str(exc))
        except StoreUnavailable as exc:
            return _error(503, str(exc))
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return _error(500, "internal error (details in the analyzer log)")
    return guarded


async def _body(request: Request) -> Any:
    """The request body as JSON, or YAML with `Content-Type: application/yaml`."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise HTTPError(413, f"body larger than {MAX_BODY} bytes")
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    try:
        if ctype in ("application/yaml", "application/x-yaml", "text/yaml"):
            return yaml.safe_load(raw.decode())
        return json.loads(raw.decode() or "null")
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as exc:
        kind = "YAML" if "yaml" in ctype else "JSON"
        raise HTTPError(400, f"request body is not valid {kind}: {exc}") from None


def _object(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise HTTPError(400, f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


class RestApi:
    def __init__(self, api: Api, auth: Authenticator) -> None:
        self.api = api
        self.auth = auth

    def routes(self) -> list[Route]:
        g = _guard
        return [
            Route("/api", g(self.info), methods=["GET"]),
            Route("/api/status", g(self.status), methods=["GET"]),
            Route("/api/topology", g(self.topology), methods=["GET"]),
            Route("/api/topology", g(self.query), methods=["POST"]),
            Route("/api/capture", g(self.capture_list), methods=["GET"]),
            Route("/api/capture", g(self.capture_create), methods=["POST"]),
            Route("/api/capture/{id}", g(self.capture_get), methods=["GET"]),
            Route("/api/capture/{id}", g(self.capture_delete), methods=["DELETE"]),
            Route("/api/capture/{id}", g(self.not_updatable), methods=["PATCH", "PUT"]),
            Route("/api/injectpacket", g(self.injection_list), methods=["GET"]),
            Route("/api/injectpacket", g(self.injection_create), methods=["POST"]),
            Route("/api/injectpacket/{id}", g(self.injection_get), methods=["GET"]),
            Route("/api/injectpacket/{id}", g(self.injection_delete), methods=["DELETE"]),
            Route("/api/pcap", g(self.pcap_import), methods=["POST"]),
            Route("/api/node", g(self.node_list), methods=["GET"]),
            Route("/api/node", g(self.node_create), methods=["POST"]),
            Route("/api/node/{id}", g(self.node_get), methods=["GET"]),
            Route("/api/node/{id}", g(self.node_delete), methods=["DELETE"]),
            Route("/api/node/{id}", g(self.node_patch), methods=["PATCH"]),
            Route("/api/edge", g(self.edge_list), methods=["GET"]),
            Route("/api/edge", g(self.edge_create), methods=["POST"]),
            Route("/api/edge/{id}", g(self.edge_get), methods=["GET"]),
            Route("/api/edge/{id}", g(self.edge_delete), methods=["DELETE"]),
            Route("/api/edge/{id}", g(self.edge_patch), methods=["PATCH"]),
            Route("/login", g(self.login), methods=["POST"]),
        ]

    # ------------------------------------------------------------ service
    async def info(self, request: Request) -> Response:
        return JSONResponse({"Version": __version__, "Service": "analyzer",
                             "Host": socket.gethostname()})

    async def status(self, request: Request) -> Response:
        return JSONResponse(await self.api.status())

    async def login(self, request: Request) -> Response:
        form = await request.form()
        user, password = form.get("username"), form.get("password")
        if not self.auth.enabled:
            return JSONResponse({"Token": "", "Permissions": PERMISSIONS})
        if not isinstance(user, str) or not isinstance(password, str):
            raise HTTPError(400, "login: form fields username and password are required")
        token = self.auth.login(user, password)
        if token is None:
            raise HTTPError(401, "login: wrong user name or password")
        response = JSONResponse({"Token": token, "Permissions": PERMISSIONS})
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https",
                            max_age=int(self.auth.session_ttl))
        return response

    # ------------------------------------------------------------ topology
    async def topology(self, request: Request) -> Response:
        at = self.api.time_point(request.query_params.get("at"))
        nodes, edges = await self.api.store.graph(at)
        return JSONResponse(to_json(nodes, edges))

    async def query(self, request: Request) -> Response:
        body = _object(await _body(request), "topology query")
        query = body.get("GremlinQuery")
        if query is None or query == "":
            return Response(status_code=204)
        if not isinstance(query, str):
            raise HTTPError(400, "GremlinQuery: expected a string")
        result = await self.api.gremlin(query)
        accept = request.headers.get("accept", "")
        if DOT in accept:
            try:
                return Response(render(result), media_type=DOT)
            except NotRenderable as exc:
                raise HTTPError(406, f"{DOT}: {exc}") from None
        if PCAP in accept:
            try:
                data = packets.render(result)
            except packets.NotRenderable as exc:
                raise HTTPError(406, f"{PCAP}: {exc}") from None
            ng = data[:4] == packets.PCAPNG_SHB.to_bytes(4, "little")
            return Response(data, media_type=PCAPNG if ng else PCAP, headers={
                "Content-Disposition":
                    f'attachment; filename="rawpackets.{"pcapng" if ng else "pcap"}"'})
        return JSONResponse(result)

    # ------------------------------------------------------------ captures
    async def capture_list(self, request: Request) -> Response:
        return JSONResponse({c.uuid: c.to_json() for c in await self.api.captures.list()})

    async def capture_create(self, request: Request) -> Response:
        spec = _object(await _body(request), "capture")
        ttl = request.headers.get("x-resource-ttl")
        if ttl:
            ms = parse_duration_ms(ttl)
            if ms is None or ms < 0:
                raise HTTPError(400, f"X-Resource-TTL: {ttl!r} is not a duration (e.g. 30s, 5m)")
            spec = {**spec, "TTL": ms}
        try:
            capture = await self.api.captures.create(spec)
        except CaptureInvalid as exc:
            raise HTTPError(400, f"invalid capture: {exc}", errors=[
                {"field": e.field, "message": e.message} for e in exc.errors]) from None
        except CaptureDuplicate as exc:
            raise HTTPError(409, str(exc), existing=exc.existing) from None
        return JSONResponse(capture.to_json(), status_code=201)

    async def capture_get(self, request: Request) -> Response:
        capture = await self.api.captures.get(request.path_params["id"])
        if capture is None:
            raise HTTPError(404, f"capture {request.path_params['id']} not found")
        return JSONResponse(capture.to_json())

    async def capture_delete(self, request: Request) -> Response:
        ident = request.path_params["id"]
        if not await self.api.captures.delete(ident):
            raise HTTPError(404, f"capture {ident} not found")
        return JSONResponse({"UUID": ident, "deleted": True})

    async def not_updatable(self, request: Request) -> Response:
        raise HTTPError(405, "captures are not updatable: delete and create again")

    # ------------------------------------------------------------ packet injections
    def _injections(self) -> Injections:
        if self.api.injections is None:
            raise HTTPError(503, "packet injection needs the analyzer's agent link")
        return self.api.injections

    async def injection_list(self, request: Request) -> Response:
        return JSONResponse(self._injections().list())

    async def injection_create(self, request: Request) -> Response:
        spec = _object(await _body(request), "packet injection")
        try:
            created = await self._injections().create(spec)
        except CaptureInvalid as exc:
            raise HTTPError(400, f"invalid packet injection: {exc}", errors=[
                {"field": e.field, "message": e.message} for e in exc.errors]) from None
        except Unavailable as exc:
            raise HTTPError(503, str(exc)) from None
        return JSONResponse(created, status_code=201)

    async def injection_get(self, request: Request) -> Response:
        found = self._injections().get(request.path_params["id"])
        if found is None:
            raise HTTPError(404, f"packet injection {request.path_params['id']} not found")
        return JSONResponse(found)

    async def injection_delete(self, request: Request) -> Response:
        ident = request.path_params["id"]
        if not await self._injections().delete(ident):
            raise HTTPError(404, f"packet injection {ident} not found")
        return JSONResponse({"UUID": ident, "deleted": True})

    # ------------------------------------------------------------ pcap import
    async def pcap_import(self, request: Request) -> Response:
        if self.api.put_flows is None:
            raise HTTPError(503, "pcap import needs the analyzer's flow store")
        try:
            done = await import_pcap(request.stream(), self.api.put_flows)
        except PcapImportError as exc:
            raise HTTPError(400, f"pcap import: {exc}") from None
        return JSONResponse(done.to_json(), status_code=202)

    # ------------------------------------------------------------ nodes and edges
    async def node_list(self, request: Request) -> Response:
        return JSONResponse({i: n.to_json() for i, n in self.api.graph.nodes.items()})

    async def node_get(self, request: Request) -> Response:
        return JSONResponse(self._node(request.path_params["id"]).to_json())

    async def node_create(self, request: Request) -> Response:
        data = _object(await _body(request), "node")
        try:
            node = Node.from_json({**data, "Revision": 0})
            if node.ID in self.api.graph.nodes:
                raise HTTPError(409, f"node {node.ID} already exists")
            await self.api.apply([NodeAdded(node)])
        except (ValidationError, NotFoundError) as exc:
            raise HTTPError(400, str(exc)) from None
        await self.api.writer.flush()
        return JSONResponse(self.api.graph.nodes[node.ID].to_json(), status_code=201)

    async def node_delete(self, request: Request) -> Response:
        node = self._node(request.path_params["id"])
        await self.api.apply([NodeDeleted(node.with_(DeletedAt=self.api.now_ms()))])
        await self.api.writer.flush()
        return JSONResponse({"ID": node.ID, "deleted": True})

    async def node_patch(self, request: Request) -> Response:
        node = self._node(request.path_params["id"])
        ops = _patch_ops(await _body(request))
        if apply_ops(dict(node.Metadata), ops) == dict(node.Metadata):
            return Response(status_code=304)
        try:
            await self.api.apply([NodePartiallyUpdated(node.ID, ops, self.api.now_ms())])
        except ValidationError as exc:
            raise HTTPError(400, str(exc)) from None
        await self.api.writer.flush()
        return JSONResponse(self.api.graph.nodes[node.ID].to_json())

    async def edge_list(self, request: Request) -> Response:
        return JSONResponse({i: e.to_json() for i, e in self.api.graph.edges.items()})

    async def edge_get(self, request: Request) -> Response:
        return JSONResponse(self._edge(request.path_params["id"]).to_json())

    async def edge_create(self, request: Request) -> Response:
        data = _object(await _body(request), "edge")
        try:
            edge = Edge.from_json({**data, "Revision": 0})
            if edge.ID in self.api.graph.edges:
                raise HTTPError(409, f"edge {edge.ID} already exists")
            await self.api.apply([EdgeAdded(edge)])
        except (ValidationError, NotFoundError) as exc:
            raise HTTPError(400, str(exc)) from None
        await self.api.writer.flush()
        return JSONResponse(self.api.graph.edges[edge.ID].to_json(), status_code=201)

    async def edge_delete(self, request: Request) -> Response:
        edge = self._edge(request.path_params["id"])
        await self.api.apply([EdgeDeleted(edge.with_(DeletedAt=self.api.now_ms()))])
        await self.api.writer.flush()
        return JSONResponse({"ID": edge.ID, "deleted": True})

    async def edge_patch(self, request: Request) -> Response:
        edge = self._edge(request.path_params["id"])
        ops = _patch_ops(await _body(request))
        if apply_ops(dict(edge.Metadata), ops) == dict(edge.Metadata):
            return Response(status_code=304)
        try:
            await self.api.apply([EdgePartiallyUpdated(edge.ID, ops, self.api.now_ms())])
        except ValidationError as exc:
            raise HTTPError(400, str(exc)) from None
        await self.api.writer.flush()
        return JSONResponse(self.api.graph.edges[edge.ID].to_json())

    def _node(self, ident: str) -> Node:
        node = self.api.graph.nodes.get(ident)
        if node is None:
            raise HTTPError(404, f"node {ident} not found")
        return node

    def _edge(self, ident: str) -> Edge:
        edge = self.api.graph.edges.get(ident)
        if edge is None:
            raise HTTPError(404, f"edge {ident} not found")
        return edge


def _patch_ops(data: Any) -> tuple[MetadataOp, ...]:
    """JSON-patch operations on `/Metadata/...` paths -> metadata operations."""
    if not isinstance(data, list):
        raise HTTPError(400, "patch: expected a JSON-patch array of operations")
    ops: list[MetadataOp] = []
    for i, op in enumerate(data):
        where = f"patch operation {i}"
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise HTTPError(400, f"{where}: expected {{op, path[, value]}}")
        path: str = op["path"]
        if not path.startswith("/Metadata/") or path == "/Metadata/":
            raise HTTPError(400, f"{where}: only /Metadata/<key> paths can change, got {path!r}")
        key = ".".join(p.replace("~1", "/").replace("~0", "~")
                       for p in path[len("/Metadata/"):].split("/"))
        kind = op.get("op")
        if kind in ("add", "replace"):
            if "value" not in op:
                raise HTTPError(400, f"{where}: {kind} needs a value")
            ops.append(MetadataOp(key, op["value"]))
        elif kind == "remove":
            ops.append(MetadataOp(key, delete=True))
        else:
            raise HTTPError(400, f"{where}: op {kind!r} is not add, replace or remove")
    return tuple(ops)


def rest_app(api: Api, auth: Authenticator, extra: list[Route] | None = None) -> Starlette:
    """The REST routes (plus `extra`, e.g. /health) as one ASGI app."""
    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, f"no such resource: {request.url.path}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return _error(405, f"{request.method} is not allowed on {request.url.path}")
    return Starlette(routes=[*RestApi(api, auth).routes(), *(extra or [])],
                     exception_handlers={404: not_found, 405: not_allowed})
