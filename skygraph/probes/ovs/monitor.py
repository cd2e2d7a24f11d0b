"""The OVSDB monitor: python-ovs IDL in a thread of its own (its poll loop
blocks), handing a snapshot of the Open_vSwitch, Bridge, Port and Interface
tables to the agent's event loop after every change.

The IDL reconnects by itself with backoff when ovsdb-server goes away and
fetches the tables again when it is back; a snapshot after that carries the
whole new state, so the probe resyncs by diffing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from collections.abc import Callable
from typing import Any

import ovs.db.idl
import ovs.jsonrpc
import ovs.poller
import ovs.stream

from skygraph.probes.ovs.mapping import Snapshot

log = logging.getLogger("skygraph.probes.ovs")

DEFAULT_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
COLUMNS: dict[str, list[str]] = {
    "Open_vSwitch": ["ovs_version", "db_version", "external_ids", "other_config",
                     "bridges"],
    "Bridge": ["name", "ports", "external_ids", "other_config", "protocols",
               "datapath_type"],
    "Port": ["name", "interfaces", "external_ids", "other_config", "bond_mode", "lacp",
             "tag", "trunks"],
    "Interface": ["name", "type", "ofport", "mac_in_use", "ifindex", "external_ids",
                  "options", "other_config", "status", "error"],
}


def remote(address: str) -> str:
    """SPEC's `ovs.ovsdb` forms (unix:///path, tcp://h:p, h:p) in python-ovs syntax."""
    for scheme in ("unix", "tcp", "ssl"):
        if address.startswith(f"{scheme}://"):
            rest = address[len(scheme) + 3:]
            return f"{scheme}:{rest}"
    if address.startswith(("unix:", "tcp:", "ssl:", "punix:")):
        return address
    return f"tcp:{address}"


def _plain(value: Any) -> Any:
    if isinstance(value, ovs.db.idl.Row):
        return str(value.uuid)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    return value


def snapshot(idl: ovs.db.idl.Idl, columns: dict[str, list[str]] = COLUMNS) -> Snapshot:
    def rows(table: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for u, row in idl.tables[table].rows.items():
            data = {c: _plain(getattr(row, c)) for c in columns[table]}
            data["_uuid"] = str(u)
            out[str(u)] = data
        return out
    return Snapshot(tuple(rows("Open_vSwitch").values()), rows("Bridge"), rows("Port"),
                    rows("Interface"))


def schema_helper(address: str, fallback: str = DEFAULT_SCHEMA) -> ovs.db.idl.SchemaHelper:
    """The server's own schema (get_schema), else the schema file."""
    err, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(address), 5000)
    if not err and stream is not None:
        conn = ovs.jsonrpc.Connection(stream)
        try:
            req = ovs.jsonrpc.Message.create_request("get_schema", ["Open_vSwitch"])
            err, reply = conn.transact_block(req)
            if not err and reply is not None and reply.result is not None:
                return ovs.db.idl.SchemaHelper(None, reply.result)
        finally:
            conn.close()
    return ovs.db.idl.SchemaHelper(location=fallback)


class Monitor:
    """Runs the IDL; calls `on_snapshot(snapshot)` on `loop` after each change."""

    def __init__(self, address: str, on_snapshot: Callable[[Snapshot], None],
                 loop: asyncio.AbstractEventLoop, statistics: bool = False) -> None:
        self.address = remote(address)
        # Interface.statistics changes every few seconds: monitored only when asked.
        self.columns = {t: [*c, *(["statistics"] if statistics and t == "Interface" else [])]
                        for t, c in COLUMNS.items()}
        self._on_snapshot = on_snapshot
        self._loop = loop
        self._stop_r, self._stop_w = os.pipe()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ovsdb-idl", daemon=True)
        self.connected = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        os.close(self._stop_r)
        os.close(self._stop_w)

    def _helper(self) -> ovs.db.idl.SchemaHelper | None:
        delay = 1000
        while not self._stopping:
            try:
                helper = schema_helper(self.address)
                for table, cols in self.columns.items():
                    helper.register_columns(table, cols)
                return helper
            except Exception as exc:
                (log.warning if delay == 1000 else log.debug)(
                    "ovsdb %s: no schema (neither from the server nor %s): %s; retrying",
                    self.address, DEFAULT_SCHEMA, exc)
                poller = ovs.poller.Poller()
                poller.fd_wait(self._stop_r, ovs.poller.POLLIN)
                poller.timer_wait(delay)
                poller.block()
                delay = min(delay * 2, 30_000)
        return None

    def _run(self) -> None:
        helper = self._helper()
        if helper is None:
            return
        idl = ovs.db.idl.Idl(self.address, helper)
        seqno = idl.change_seqno
        was_connected = False
        try:
            while not self._stopping:
                idl.run()
                connected = idl._session.is_connected()
                if connected != was_connected:
                    was_connected = connected
                    log.info("ovsdb %s: %s", self.address,
                             "connected" if connected else "disconnected; reconnecting")
                if idl.change_seqno != seqno and idl.has_ever_connected():
                    seqno = idl.change_seqno
                    snap = snapshot(idl, self.columns)
                    self._loop.call_soon_threadsafe(self._on_snapshot, snap)
                    self.connected.set()
                poller = ovs.poller.Poller()
                idl.wait(poller)
                poller.fd_wait(self._stop_r, ovs.poller.POLLIN)
                poller.block()
        except Exception:
            log.exception("ovsdb %s: monitor stopped", self.address)
        finally:
            idl.close()

