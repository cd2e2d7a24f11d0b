"""Fixtures of the lab's tests: the analyzer fixtures of the API tests, and the
single-machine lab brought up once per module with `skygraph lab up` (on the
session's Bolt server, so no second graph server starts) and removed with
`skygraph lab down` after SIGKILLing its analyzer and one agent (a crash),
checking that nothing of it is left."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RUN_ID, BoltServer, free_port, http, open_store, wait
from tests.integration.api.conftest import analyzer_at, fresh_graph

__all__ = ["analyzer_at", "fresh_graph"]

REPO = Path(__file__).resolve().parents[3]


def skygraph(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYGRAPH_")}
    return subprocess.run([sys.executable, "-m", "skygraph.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


@dataclass
class Lab:
    prefix: str
    dir: Path
    listen: str
    bolt: BoltServer

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    def cli(self, *args: str) -> Any:
        """`skygraph <args> --analyzer <lab>`; the JSON it prints."""
        out = skygraph(*args, "--analyzer", self.listen)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else None

    def gremlin(self, query: str) -> Any:
        r = http(self.url + "/api/topology", "POST", {"GremlinQuery": query})
        assert r.status in (200, 204), r.body
        return r.json() if r.status == 200 else []

    def graphql(self, query: str) -> Any:
        r = http(self.url + "/graphql", "POST", {"query": query})
        body = r.json()
        assert r.status == 200 and "errors" not in body, body
        return body["data"]

    def cypher(self, query: str) -> list[dict[str, Any]]:
        async def run() -> list[dict[str, Any]]:
            store = await open_store(self.bolt, clear=False)
            try:
                return [dict(r) for r in await store.read(query, {})]
            finally:
                await store.close()
        return self.bolt.loop.run(run())

    def netns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def sh(self, *cmd: str, ns: str | None = None, check: bool = True) -> str:
        full = ["ip", "netns", "exec", self.netns(ns), *cmd] if ns else list(cmd)
        out = subprocess.run(full, capture_output=True, text=True, timeout=60)
        assert not check or out.returncode == 0, f"{full}: {out.stderr}"
        return out.stdout

    def captures_on(self, capture_id: str) -> list[dict[str, Any]]:
        """(node, its Captures entry) for every node carrying `capture_id`."""
        out = []
        for n in self.gremlin("G.V().Has('Captures')"):
            for c in n["Metadata"].get("Captures") or []:
                if c["ID"] == capture_id:
                    out.append({"Host": n["Host"], "Name": n["Metadata"]["Name"],
                                "NodeType": n["Metadata"]["Type"], **c})
        return out

    def capture(self, *args: str, nodes: int = 1, **fields: Any) -> str:
        """Create a capture with the CLI (`args`) or through REST (Skydive's `fields`);
        wait until it is active on `nodes` nodes."""
        if args:
            cap = self.cli("capture", "create", *args)
        else:
            r = http(self.url + "/api/capture", "POST", fields)
            assert r.status in (200, 201), r.body
            cap = r.json()
        uuid = str(cap["UUID"])
        wait(f"capture {args or fields} active on {nodes} node(s)", lambda: len(
            [c for c in self.captures_on(uuid) if c["State"] == "active"]) == nodes)
        return uuid

    def delete_captures(self) -> None:
        for uuid in http(self.url + "/api/capture", "GET").json():
            assert http(self.url + f"/api/capture/{uuid}", "DELETE").status == 200


def lab_leftovers(prefix: str, directory: Path) -> list[str]:
    left = [ns for ns in os.listdir("/var/run/netns") if ns.startswith(f"{prefix}-")]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if f"{directory}/".encode() in cmd and int(entry) != os.getpid():
                left.append(f"process {entry}: {cmd.decode(errors='replace')[:120]}")
    if directory.exists():
        left.append(f"{directory}: {sorted(os.listdir(directory))}")
    return left


@pytest.fixture(scope="module")
def lab(bolt_server: BoltServer) -> Iterator[Lab]:
    async def clear() -> None:
        store = await open_store(bolt_server)     # an empty graph for the lab
        await store.run("MATCH (c:Capture) DELETE c")
        await store.close()
    bolt_server.loop.run(clear())
    prefix = re.sub(r"[^A-Za-z0-9]", "", f"{RUN_ID}l")
    directory = Path(tempfile.mkdtemp(prefix=f"{RUN_ID}-lab-")) / "lab"
    listen = f"127.0.0.1:{free_port()}"
    common = ("--prefix", prefix, "--dir", str(directory))
    up = skygraph("lab", "up", *common, "--listen", listen, "--rpc", f"127.0.0.1:{free_port()}",
                  "--flow-update", "1", "--graph-uri", bolt_server.uri, "--graph-user",
                  bolt_server.user, f"--graph-password={bolt_server.password}")
    try:
        assert up.returncode == 0, up.stderr
        yield Lab(prefix, directory, listen, bolt_server)
    finally:
        # a crash first: the analyzer and agent1 die without cleaning up
        for name in ("analyzer", "agent1"):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int((directory / f"{name}.pid").read_text()), signal.SIGKILL)
        down = skygraph("lab", "down", *common)
        left = lab_leftovers(prefix, directory)
        with contextlib.suppress(OSError):
            directory.parent.rmdir()
        assert down.returncode == 0, down.stderr
        assert left == [], f"lab down left {left}"
