"""The embedded Bolt server: ArcadeDB from the `arcadedb-embedded` wheel, run
as a supervised child process with the wheel's own JRE.

Loopback only, Bolt plugin, explicit heap, data under `data_dir`
(`<data_dir>/databases/<database>`). The root password is generated on first
start and kept in `<data_dir>/credentials` (mode 0600), so later starts, and
other skygraph commands, reuse the same server and data. A running server
(another skygraph process) is found through `<data_dir>/server.pid` and reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import secrets
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("skygraph.embedded")

USER = "root"
_STARTED = "ArcadeDB Server started"


@dataclass(frozen=True, slots=True)
class EmbeddedConfig:
    data_dir: Path
    bolt_port: int = 7687
    http_port: int = 2480
    heap: str = "1g"
    database: str = "skygraph"
    host: str = "127.0.0.1"


def package_dir() -> Path:
    spec = importlib.util.find_spec("arcadedb_embedded")
    if spec is None or spec.origin is None:
        raise RuntimeError("the embedded graph server needs the arcadedb-embedded package "
                           "(pip install arcadedb-embedded), or configure graph.uri")
    return Path(spec.origin).parent


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now (for tests, benchmarks and side-by-side servers)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    with socket.socket() as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0


class EmbeddedServer:
    """Start, supervise (restart when it dies) and stop the embedded server."""

    def __init__(self, config: EmbeddedConfig) -> None:
        self.config = config
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.reused = False
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def uri(self) -> str:
        return f"bolt://{self.config.host}:{self.config.bolt_port}"

    @property
    def password(self) -> str:
        path = self.config.data_dir / "credentials"
        if not path.exists():
            self.config.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                # hex: never begins with "-", which a command line takes for an option
                f.write(secrets.token_hex(16) + "\n")
        return path.read_text().strip()

    @property
    def log_path(self) -> Path:
        return self.config.data_dir / "server.log"

    def _pidfile(self) -> Path:
        return self.config.data_dir / "server.pid"

    def running_elsewhere(self) -> bool:
        """True when another process's embedded server already serves this data dir."""
        try:
            pid = int(self._pidfile().read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return port_open(self.config.host, self.config.bolt_port)

    async def start(self, timeout: float = 90.0) -> None:
        self._stopping = False
        if self.running_elsewhere():
            self.reused = True
            log.info("embedded graph server already running for %s; reusing it",
                     self.config.data_dir)
            return
        if port_open(self.config.host, self.config.bolt_port):
            raise RuntimeError(
                f"cannot start the embedded graph server: port {self.config.bolt_port} on "
                f"{self.config.host} is already in use (set graph.embedded.bolt_port, or "
                "graph.uri to use that server)")
        await self._spawn(timeout)
        self._supervisor = asyncio.create_task(self._supervise(), name="skygraph-embedded")

    def _command(self) -> list[str]:
        pkg = package_dir()
        c = self.config
        props = {
            "arcadedb.server.rootPath": str(c.data_dir),
            "arcadedb.server.databaseDirectory": str(c.data_dir / "databases"),
            "arcadedb.server.rootPassword": self.password,
            "arcadedb.server.httpIncomingHost": c.host,
            "arcadedb.server.httpIncomingPort": str(c.http_port),
            "arcadedb.bolt.host": c.host,
            "arcadedb.bolt.port": str(c.bolt_port),
            "arcadedb.server.plugins": "Bolt:com.arcadedb.bolt.BoltProtocolPlugin",
            "arcadedb.server.defaultDatabases": f"{c.database}[{USER}]",
            "arcadedb.server.mode": "production",
        }
        return [str(pkg / "jre" / "bin" / "java"), f"-Xmx{c.heap}", f"-Xms{c.heap}",
                "--add-modules", "jdk.incubator.vector", "-cp", f"{pkg / 'jars'}/*",
                *(f"-D{k}={v}" for k, v in props.items()), "com.arcadedb.server.ArcadeDBServer"]

    async def _spawn(self, timeout: float) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        logf = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self._command(), stdout=logf, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL, cwd=self.config.data_dir,
                start_new_session=True)
        finally:
            logf.close()
        self._pidfile().write_text(f"{self.proc.pid}\n")
        deadline = time.monotonic() + timeout
        while not self._started(offset):
            if self.proc.returncode is not None:
                raise RuntimeError(f"the embedded graph server exited with code "
                                   f"{self.proc.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                await self._terminate()
                raise RuntimeError(f"the embedded graph server did not open Bolt port "
                                   f"{self.config.bolt_port} within {timeout:.0f}s; "
                                   f"see {self.log_path}")
            await asyncio.sleep(0.1)
        log.info("embedded graph server up (pid %d, %s, data %s)", self.proc.pid, self.uri,
                 self.config.data_dir)

    def _started(self, offset: int) -> bool:
        """The server logs its start line once the database is open, after Bolt listens."""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return _STARTED.encode() in f.read()

    async def _supervise(self) -> None:
        backoff = 0.5
        while not self._stopping:
            assert self.proc is not None
            code = await self.proc.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.error("embedded graph server exited (code %s); restarting in %.1fs (see %s)",
                      code, backoff, self.log_path)
            await asyncio.sleep(backoff)
            try:
                await self._spawn(90.0)
                backoff = 0.5
            except RuntimeError as exc:
                log.error("%s", exc)
                backoff = min(backoff * 2, 30.0)

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._terminate()

    async def _terminate(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        with contextlib.suppress(FileNotFoundError):
            self._pidfile().unlink()
