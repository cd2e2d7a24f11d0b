"""The GraphiQL page served at ``/graphql``, working with no internet access.

This module owns the HTML of skygraph's GraphiQL page and the vendored browser assets it loads
(``skygraph/graphql/static/``: React 18.2.0 and ReactDOM 18.2.0 UMD builds, GraphiQL 3.8.3's UMD
bundle and CSS, and the @graphiql/plugin-explorer 3.2.5 UMD plugin and CSS, byte-identical to the
npm tarballs, with their licences and a ``SHA256SUMS`` manifest; ``scripts/vendor-graphiql.sh``
re-creates and audits them). Strawberry's own page loads the same libraries from unpkg.com, which
fails offline; the analyzer's GraphQL view overrides ``render_graphql_ide`` to return :func:`page`
and serves :func:`asset` under the static prefix instead.

- :func:`page` returns the HTML. Every script and stylesheet URL is under ``static_prefix`` (the
  page references no other origin). Queries and mutations are POSTed to ``endpoint``;
  subscriptions use graphql-transport-ws on the same URL with ``ws://`` (``wss://`` when the page
  is served over https), on the page's host when ``endpoint`` is a path.
- API token: open the page as ``/graphql?token=<token>`` once. The token is kept in the browser's
  localStorage (key ``skygraph.graphql.token``) and removed from the address bar; from then on
  every HTTP request carries ``Authorization: Bearer <token>`` and every websocket connection
  sends ``{"Authorization": "Bearer <token>"}`` as its ``connection_init`` payload.
  ``?token=`` (empty) forgets it. Headers typed in GraphiQL's headers editor are added on top
  (GraphiQL also merges them into the websocket connection params).
- URL parameters ``q`` (the query: not ``query``, which makes strawberry execute a GET request
  instead of rendering this page), ``variables``, ``headers`` and ``operationName`` prefill the
  editors, and editing updates them (``history.replaceState``), so a URL shares a query.
- :func:`asset` returns ``(bytes, content type)`` for a name in a fixed table, ``None`` for
  anything else: names are never joined to a path unless they are in the table.
"""

from __future__ import annotations

import functools
import html
import json
from pathlib import Path
from typing import Final

__all__ = ["asset", "page"]

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"

_JS: Final = "text/javascript; charset=utf-8"
_CSS: Final = "text/css; charset=utf-8"
_TEXT: Final = "text/plain; charset=utf-8"

# Every file of static/ that may be served, with its content type. Nothing else is ever read.
_ASSETS: Final[dict[str, str]] = {
    "react.production.min.js": _JS,
    "react-dom.production.min.js": _JS,
    "graphiql.min.js": _JS,
    "graphiql.min.css": _CSS,
    "graphiql-plugin-explorer.umd.js": _JS,
    "graphiql-plugin-explorer.css": _CSS,
    "LICENSE.react": _TEXT,
    "LICENSE.react-dom": _TEXT,
    "LICENSE.graphiql": _TEXT,
    "LICENSE.graphiql-plugin-explorer": _TEXT,
    "SHA256SUMS": _TEXT,
}

# Load order matters: React, then ReactDOM, then GraphiQL (uses window.React/ReactDOM), then the
# explorer plugin (uses window.GraphiQL.React and window.GraphiQL.GraphQL).
_STYLESHEETS: Final = ("graphiql.min.css", "graphiql-plugin-explorer.css")
_SCRIPTS: Final = (
    "react.production.min.js",
    "react-dom.production.min.js",
    "graphiql.min.js",
    "graphiql-plugin-explorer.umd.js",
)

_TEMPLATE: Final = """<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>skygraph GraphiQL</title>
    <link rel="icon" href="data:,">
    <style>
      html, body {{ height: 100%; margin: 0; width: 100%; overflow: hidden; }}
      #graphiql {{ height: 100vh; display: flex; }}
      .graphiql-explorer-actions select {{ margin-left: 4px; }}
    </style>
{links}
  </head>
  <body>
    <div id="graphiql">Loading...</div>
{scripts}
    <script id="skygraph-graphiql-config" type="application/json">{config}</script>
    <script>
{bootstrap}
    </script>
  </body>
</html>
"""

_BOOTSTRAP: Final = r"""
(function () {
  "use strict";
  var root = document.getElementById("graphiql");
  var cfg = JSON.parse(document.getElementById("skygraph-graphiql-config").textContent);
  if (typeof React === "undefined" || typeof ReactDOM === "undefined" || typeof GraphiQL === "undefined") {
    root.textContent = "GraphiQL could not load its assets from " + cfg.staticPrefix + "/";
    return;
  }

  var TOKEN_KEY = "skygraph.graphql.token";
  var params = new URLSearchParams(window.location.search);

  function storage(op, value) {  // localStorage may be disabled: then the token lives in the URL only
    try {
      if (op === "get") { return window.localStorage.getItem(TOKEN_KEY); }
      if (op === "set") { window.localStorage.setItem(TOKEN_KEY, value); }
      if (op === "del") { window.localStorage.removeItem(TOKEN_KEY); }
      return true;
    } catch (e) {
      return null;
    }
  }

  function replaceURL() {
    var search = params.toString();
    window.history.replaceState(null, "", window.location.pathname + (search ? "?" + search : "")
      + window.location.hash);
  }

  var token = null;
  if (params.has("token")) {
    token = params.get("token") || null;
    if (storage(token ? "set" : "del", token) !== null) {
      params.delete("token");  // remembered: keep it out of the address bar and history
      replaceURL();
    }
  } else {
    token = storage("get");
  }

  var auth = token ? { Authorization: "Bearer " + token } : {};
  var httpURL = new URL(cfg.endpoint, window.location.href);
  httpURL.hash = "";
  var wsURL = new URL(httpURL.href);
  wsURL.protocol = httpURL.protocol === "https:" ? "wss:" : "ws:";

  var fetcher = GraphiQL.createFetcher({
    url: httpURL.href,
    headers: auth,
    subscriptionUrl: wsURL.href,
    wsConnectionParams: auth,
  });

  var plugins = [];
  if (typeof GraphiQLPluginExplorer !== "undefined") {
    plugins.push(GraphiQLPluginExplorer.explorerPlugin());
  }

  function keep(name) {
    return function (value) {
      if (value) { params.set(name, value); } else { params.delete(name); }
      replaceURL();
    };
  }

  var props = {
    fetcher: fetcher,
    plugins: plugins,
    isHeadersEditorEnabled: true,
    inputValueDeprecation: true,
    onEditQuery: keep("q"),
    onEditVariables: keep("variables"),
    onEditHeaders: keep("headers"),
    onEditOperationName: keep("operationName"),
  };
  // "q", not "query": GET /graphql?query=... is executed by strawberry instead of showing this page
  var prefill = { q: "query", variables: "variables", headers: "headers", operationName: "operationName" };
  Object.keys(prefill).forEach(function (name) {
    if (params.has(name)) { props[prefill[name]] = params.get(name); }
  });

  ReactDOM.createRoot(root).render(React.createElement(GraphiQL, props));
})();
"""


def _script_json(value: object) -> str:
    """JSON that is safe inside a <script> element (no ``</script>``, ``<!--`` or U+2028/9)."""
    return (
        json.dumps(value)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def page(endpoint: str, static_prefix: str) -> str:
    """Return the GraphiQL page: assets from ``static_prefix``, queries to ``endpoint``.

    ``endpoint`` is normally a path (``"/graphql"``), resolved against the page's URL; the
    subscription URL is the same with a ``ws:``/``wss:`` scheme. ``static_prefix`` is the URL
    path under which :func:`asset` is served (``"/graphql/static"``; a trailing slash is ignored).
    """
    prefix = static_prefix.rstrip("/")
    links = "\n".join(
        f'    <link rel="stylesheet" href="{html.escape(f"{prefix}/{name}")}">' for name in _STYLESHEETS
    )
    scripts = "\n".join(f'    <script src="{html.escape(f"{prefix}/{name}")}"></script>' for name in _SCRIPTS)
    config = _script_json({"endpoint": endpoint, "staticPrefix": prefix})
    return _TEMPLATE.format(links=links, scripts=scripts, config=config, bootstrap=_BOOTSTRAP.strip("\n"))


@functools.cache
def _read(name: str) -> bytes | None:
    try:
        return (STATIC_DIR / name).read_bytes()
    except OSError:
        return None  # not installed (package data missing): served as "not found"


def asset(name: str) -> tuple[bytes, str] | None:
    """Return ``(bytes, content type)`` of the vendored file ``name``, or None if unknown.

    Only the base names of the fixed table are known (``"graphiql.min.js"``, ...); anything else,
    including paths such as ``"../graphiql.py"``, gives None. Files are read once and cached.
    """
    content_type = _ASSETS.get(name)
    if content_type is None:
        return None
    data = _read(name)
    return None if data is None else (data, content_type)
