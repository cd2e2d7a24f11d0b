"""The offline GraphiQL page and its vendored assets (skygraph.graphql.graphiql, graphql/static/)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from skygraph.graphql import graphiql
from skygraph.graphql.graphiql import asset, page

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "skygraph" / "graphql" / "static"

# vendored name -> (npm package, version, path in the package), as pinned in scripts/vendor-graphiql.sh
UPSTREAM = {
    "react.production.min.js": ("react", "18.2.0", "umd/react.production.min.js"),
    "react-dom.production.min.js": ("react-dom", "18.2.0", "umd/react-dom.production.min.js"),
    "graphiql.min.js": ("graphiql", "3.8.3", "graphiql.min.js"),
    "graphiql.min.css": ("graphiql", "3.8.3", "graphiql.min.css"),
    "graphiql-plugin-explorer.umd.js": ("@graphiql/plugin-explorer", "3.2.5", "dist/index.umd.js"),
    "graphiql-plugin-explorer.css": ("@graphiql/plugin-explorer", "3.2.5", "dist/style.css"),
}


class _Refs(HTMLParser):
    """Collects (tag, attribute, value) of every URL-bearing attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "action", "data", "poster") and value is not None:
                self.refs.append((tag, name, value))


def _refs(html: str) -> list[tuple[str, str, str]]:
    parser = _Refs()
    parser.feed(html)
    parser.close()
    return parser.refs


@pytest.mark.parametrize("prefix", ["/graphql/static", "/graphql/static/", "/api/v1/ui-assets"])
def test_every_reference_is_a_vendored_asset_under_the_prefix(prefix: str) -> None:
    html = page("/graphql", prefix)
    refs = _refs(html)
    base = prefix.rstrip("/") + "/"
    scripts = [v for tag, attr, v in refs if tag == "script"]
    styles = [v for tag, attr, v in refs if tag == "link" and v != "data:,"]
    assert len(scripts) == 4 and len(styles) == 2, refs
    for tag, _attr, value in refs:
        if tag == "link" and value == "data:,":  # the empty favicon, so no /favicon.ico request
            continue
        assert value.startswith(base), value
        found = asset(value[len(base) :])
        assert found is not None, value
        data, content_type = found
        assert data
        assert content_type.startswith("text/javascript" if tag == "script" else "text/css"), value
    assert not re.search(r"https?://|wss?://|unpkg|jsdelivr|cdn\.", html, re.I)
    # React first, then ReactDOM, GraphiQL, then the explorer plugin (it uses window.GraphiQL)
    assert [s[len(base) :] for s in scripts] == [
        "react.production.min.js",
        "react-dom.production.min.js",
        "graphiql.min.js",
        "graphiql-plugin-explorer.umd.js",
    ]


def test_endpoint_and_prefix_cannot_break_out_of_the_page() -> None:
    evil = '</script><script>alert("x")</script><!--'
    html = page(evil, '/s"><script>alert(1)</script>')
    assert "<script>alert" not in html
    assert html.count("</script>") == 6  # 4 assets + the config + the bootstrap
    config = re.search(r'<script id="skygraph-graphiql-config" type="application/json">(.*?)</script>', html)
    assert config is not None
    assert json.loads(config.group(1))["endpoint"] == evil


def test_page_wires_endpoint_token_and_websocket() -> None:
    html = page("/graphql", "/graphql/static")
    assert '"endpoint": "/graphql"' in html
    assert "subscriptionUrl" in html and "wsConnectionParams" in html
    assert '"Bearer " + token' in html
    assert "skygraph.graphql.token" in html
    assert "GraphiQLPluginExplorer.explorerPlugin()" in html


def test_sha256sums_match_the_files_and_the_table() -> None:
    sums = {}
    for line in (STATIC / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name] = digest
    files = {p.name for p in STATIC.iterdir()}
    assert files == set(sums) | {"SHA256SUMS"}
    for name, digest in sums.items():
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == digest, name
    # the module's table is exactly the directory, and every file is served as itself
    assert set(graphiql._ASSETS) == files
    for name in files:
        found = asset(name)
        assert found is not None and found[0] == (STATIC / name).read_bytes(), name
    for name in UPSTREAM:
        assert name in sums
    for lic in ("LICENSE.react", "LICENSE.react-dom", "LICENSE.graphiql", "LICENSE.graphiql-plugin-explorer"):
        assert "MIT License" in (STATIC / lic).read_text()


def test_vendor_script_verifies_offline() -> None:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "vendor-graphiql.sh"), "--verify"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "matches SHA256SUMS" in out.stdout


def test_vendored_files_are_the_upstream_ones_strawberry_pins() -> None:
    """Cross-check with the SRI hashes of strawberry's own (CDN) GraphiQL page, where versions agree."""
    strawberry = pytest.importorskip("strawberry")
    template = Path(strawberry.__file__).parent / "static" / "graphiql.html"
    if not template.exists():
        pytest.skip("strawberry has no graphiql.html")
    pinned = dict(
        re.findall(r'(?:src|href)="https://unpkg\.com/([^"]+)"\s+integrity="([^"]+)"', template.read_text())
    )
    checked = 0
    for name, (pkg, version, path) in UPSTREAM.items():
        sri = pinned.get(f"{pkg}@{version}/{path}")
        if sri is None:
            continue
        algo, _, want = sri.partition("-")
        got = base64.b64encode(hashlib.new(algo, (STATIC / name).read_bytes()).digest()).decode()
        assert got == want, name
        checked += 1
    if checked == 0:
        pytest.skip("strawberry's page pins other versions")


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "../graphiql.py",
        "../../__init__.py",
        "graphiql.py",
        "static/graphiql.min.js",
        "./graphiql.min.js",
        "/etc/passwd",
        "graphiql.min.js/",
        "graphiql.min.js\x00",
        "GRAPHIQL.MIN.JS",
        "%2e%2e%2fgraphiql.py",
        "..%2fgraphiql.py",
        "graphiql.min.js.map",
        "unknown.js",
    ],
)
def test_unknown_and_traversal_names_give_none(name: str) -> None:
    assert asset(name) is None
