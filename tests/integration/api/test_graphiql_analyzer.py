"""The acceptance scenario: `skygraph analyzer`, then GraphiQL in an offline
browser answers `nodes(filter: {type: "netns"})` (assets served by the analyzer)."""

from __future__ import annotations

import tempfile
import urllib.parse

import pytest

from tests.conftest import RUN_ID
from tests.integration.graphql_ui.test_graphiql_offline import CHROMIUM, OFFLINE_ARGS, _wait_result

QUERY = '{ nodes(filter: {type: "netns"}) { edges { node { name type } } } }'


@pytest.mark.slow
def test_graphiql_on_the_analyzer_answers_a_netns_query_offline(analyzer_at):
    from playwright import sync_api
    with analyzer_at() as a:
        for i, (name, kind) in enumerate((("vm1", "netns"), ("vm2", "netns"), ("eth0", "veth"))):
            meta = {"Name": name, "Type": kind, "Path": f"/var/run/netns/{name}"}
            node = {"ID": f"{RUN_ID}-n{i}", "Host": "h1", "Metadata": meta}
            assert a.request("POST", "/api/node", node).status == 201
        hosts: set[str | None] = set()
        with tempfile.TemporaryDirectory(prefix="sg-chromium-") as profile, \
                sync_api.sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=OFFLINE_ARGS)
            try:
                tab = context.new_page()
                tab.on("request", lambda r: hosts.add(urllib.parse.urlsplit(r.url).hostname))
                tab.goto(f"{a.url}/graphql?{urllib.parse.urlencode({'q': QUERY})}")
                tab.wait_for_selector(".graphiql-container .graphiql-query-editor .CodeMirror",
                                      timeout=30_000)
                tab.click(".graphiql-execute-button")
                text = _wait_result(tab, '"vm2"')
            finally:
                context.close()
        assert '"vm1"' in text and '"eth0"' not in text
        assert hosts == {"127.0.0.1"}
