"""The GraphQL ASGI app: `/graphql` over HTTP (POST, and GET for queries),
subscriptions over graphql-transport-ws on the same path, the offline
GraphiQL page (GET with Accept text/html) and its assets under
`/graphql/static/`.

Owns the per-request context (a fresh set of dataloaders per HTTP request)
and the websocket handshake check (`authorize_ws` on connection_init params).
HTTP authentication is the caller's middleware.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UNSET, UnsetType

from skygraph.api.service import Api
from skygraph.graphql import graphiql
from skygraph.graphql.loaders import Context, Loaders
from skygraph.graphql.schema import build_schema

ENDPOINT = "/graphql"
STATIC_PREFIX = "/graphql/static"
AuthorizeWs = Callable[[Mapping[str, Any] | None], bool]


class GraphQLView(GraphQL[Context, None]):
    def __init__(self, api: Api, *, max_depth: int, max_page: int, max_elements: int,
                 authorize_ws: AuthorizeWs | None, max_aliases: int, max_tokens: int) -> None:
        super().__init__(build_schema(max_depth=max_depth, max_aliases=max_aliases,
                                      max_tokens=max_tokens),
                         # graphql-transport-ws only: the legacy protocol adds nothing
                         subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,))
        self.api = api
        self.max_page = max_page
        self.max_elements = max_elements
        self.authorize_ws = authorize_ws

    async def get_context(self, request: Request | WebSocket,
                          response: Response | WebSocket) -> Context:
        websocket = isinstance(request, WebSocket)
        # a websocket context lives as long as the connection: no cache, no budget
        return Context(api=self.api, max_page=self.max_page,
                       loaders=Loaders(lambda: self.api.reads, cache=not websocket),
                       request=request, response=response,
                       budget=None if websocket else self.max_elements)

    async def render_graphql_ide(self, request: Request) -> Response:
        return HTMLResponse(graphiql.page(ENDPOINT, STATIC_PREFIX))

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        if self.authorize_ws is not None and not self.authorize_ws(context.connection_params):
            raise ConnectionRejectionError()
        return cast(UnsetType, UNSET)


class GraphQLApp:
    """`/graphql` and `/graphql/static/<name>`; 404 elsewhere."""

    def __init__(self, view: GraphQLView) -> None:
        self.view = view

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        path: str = scope.get("path", "")
        if path in (ENDPOINT, ENDPOINT + "/"):
            await self.view(scope, receive, send)
        elif scope["type"] == "http" and path.startswith(STATIC_PREFIX + "/"):
            await _static(path[len(STATIC_PREFIX) + 1:], scope["method"])(scope, receive, send)
        elif scope["type"] == "http":
            await PlainTextResponse("not found", status_code=404)(scope, receive, send)
        else:
            await send({"type": "websocket.close", "code": 1000})


def _static(name: str, method: str) -> Response:
    if method not in ("GET", "HEAD"):
        return PlainTextResponse("method not allowed", status_code=405)
    found = graphiql.asset(name)
    if found is None:
        return PlainTextResponse("not found", status_code=404)
    body, content_type = found
    return Response(body if method == "GET" else b"", media_type=content_type,
                    headers={"Cache-Control": "public, max-age=3600",
                             "Content-Length": str(len(body))})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def make_app(api: Api, *, max_depth: int = 12, max_page: int = 1000,
             authorize_ws: AuthorizeWs | None = None, max_aliases: int = 30,
             max_tokens: int = 5000, max_elements: int | None = None) -> GraphQLApp:
    """The GraphQL ASGI app on `api`.

    `authorize_ws(connection_params)` -> False rejects a websocket's connection_init
    (close 4403); None accepts every connection. `max_elements` bounds the nodes and
    edges one HTTP request returns (default: the API's Gremlin result limit)."""
    return GraphQLApp(GraphQLView(
        api, max_depth=max_depth, max_page=max_page, authorize_ws=authorize_ws,
        max_aliases=max_aliases, max_tokens=max_tokens,
        max_elements=api.limits.max_results if max_elements is None else max_elements))
