"""Hello/Welcome over real grpc.aio on loopback: token, version, TLS, and a
second connection for the same host replacing the first."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import grpc
import pytest

import skygraph.rpc.client as client_module
from skygraph.rpc.client import AnalyzerRejected
from skygraph.rpc.server import RpcServer
from skygraph.rpc.tls import ClientTLS, ServerTLS
from skygraph.topology.model import Node
from skygraph.topology.mutations import NodeAdded
from tests.conftest import run
from tests.integration.rpc.conftest import Agent, Recorder, eventually


async def serve(handler: Recorder, token: str = "", tls: ServerTLS | None = None) -> RpcServer:
    server = RpcServer(handler, "127.0.0.1:0", token=token, tls=tls)
    await server.start()
    return server


def test_good_token_accepted_bad_or_missing_token_rejected() -> None:
    async def scenario() -> None:
        rec = Recorder()
        server = await serve(rec, token="s3cret")
        agent = Agent("h1")
        for token, expected in (("wrong", "invalid token"), ("", "missing token")):
            c = agent.client(server.address, token=token)
            with pytest.raises(AnalyzerRejected) as info:
                await asyncio.wait_for(c.run(), 10)
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert "agent 'h1' at ipv4:127.0.0.1:" in str(info.value)
            assert expected in str(info.value) and "s3cret" not in str(info.value)
        assert rec.events == []
        async with agent.running(agent.client(server.address, token="s3cret")) as c:
            assert await c.wait_connected(10)
            await eventually(lambda: ("sync", "h1", [], []) in rec.events)
        await server.stop()
        assert rec.kinds() == ["connect", "sync", "disconnect"]
    run(scenario())


def test_unsupported_version_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "PROTOCOL_VERSION", 99)

    async def scenario() -> None:
        server = await serve(Recorder())
        c = Agent("h1").client(server.address)
        with pytest.raises(AnalyzerRejected) as info:
            await asyncio.wait_for(c.run(), 10)
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "agent 'h1'" in info.value.reason
        assert "speaks protocol version 99; this analyzer speaks 1" in info.value.reason
        await server.stop()
    run(scenario())


def test_second_connection_replaces_the_first() -> None:
    async def scenario() -> None:
        rec = Recorder()
        server = await serve(rec)
        a1, a2 = Agent("h1"), Agent("h1")
        a2.graph.apply_nowait(NodeAdded(Node("n2", {"Name": "n2", "Type": "veth"}, Host="h1")))
        async with a1.running(a1.client(server.address)) as c1:
            assert await c1.wait_connected(10)
            await eventually(lambda: rec.kinds() == ["connect", "sync"])
            async with a2.running(a2.client(server.address, backoff=(5.0, 5.0))) as c2:
                assert await c2.wait_connected(10)
                await eventually(lambda: ("sync", "h1", ["n2"], []) in rec.events)
                assert rec.kinds()[:4] == ["connect", "sync", "disconnect", "connect"]
                await eventually(lambda: "replaced by a newer connection" in c1.counters.last_error)
                assert "ABORTED" in c1.counters.last_error
        await server.stop()
    run(scenario())


def test_tls_and_mutual_tls(tmp_path: Path) -> None:
    def cert(name: str) -> tuple[bytes, bytes]:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-keyout", str(tmp_path / f"{name}.key"), "-out", str(tmp_path / f"{name}.crt"),
                        "-subj", f"/CN={name}", "-addext",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True)
        return (tmp_path / f"{name}.crt").read_bytes(), (tmp_path / f"{name}.key").read_bytes()
    server_cert, server_key = cert("analyzer")
    cert("agent")   # the agent's own certificate, also the CA the analyzer trusts for agents

    async def scenario() -> None:
        rec = Recorder()
        server = await serve(rec, tls=ServerTLS(server_cert, server_key))
        agent = Agent("h1")
        async with agent.running(agent.client(server.address, tls=ClientTLS(ca=server_cert))) as c:
            assert await c.wait_connected(10)
        # A plaintext agent cannot talk to a TLS analyzer.
        async with agent.running(agent.client(server.address)) as c:
            assert not await c.wait_connected(1.5)
        await server.stop()

        tls = ServerTLS.from_files(str(tmp_path / "analyzer.crt"), str(tmp_path / "analyzer.key"),
                                   str(tmp_path / "agent.crt"))
        server = await serve(rec, tls=tls)
        async with agent.running(agent.client(server.address, tls=ClientTLS(ca=server_cert))) as c:
            assert not await c.wait_connected(1.5)           # no client certificate
        mutual = ClientTLS.from_files(str(tmp_path / "analyzer.crt"), str(tmp_path / "agent.crt"),
                                      str(tmp_path / "agent.key"))
        async with agent.running(agent.client(server.address, tls=mutual)) as c:
            assert await c.wait_connected(10)
        # close() returns promptly whatever the connection attempt is doing (a write made
        # before the TLS handshake fails used to ignore the call's cancellation)
        for i in range(12):
            c = agent.client(server.address, tls=ClientTLS(ca=server_cert))
            runner = asyncio.create_task(c.run())
            await asyncio.sleep(0.025 * i)
            await asyncio.wait_for(c.close(), 5)
            await asyncio.wait_for(runner, 5)
        await server.stop()
        assert rec.kinds().count("connect") == 2
    run(scenario())


def test_missing_tls_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"analyzer.rpc.tls.cert_file: cannot read .*/nope.crt"):
        ServerTLS.from_files(str(tmp_path / "nope.crt"), "x")
