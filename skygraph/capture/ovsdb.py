"""The rows the OVS capture types put in Open vSwitch's database, and take out.

Owns skygraph's writes to OVSDB (the topology probe only reads it):

* `set_sflow` / `set_netflow`: an `sFlow` or `NetFlow` row referenced by a
  bridge's `sflow` / `netflow` column (ovssflow, ovsnetflow);
* `add_mirror`: an internal interface and its port on the mirrored port's
  bridge, and a `Mirror` row selecting the mirrored port's traffic both
  ways (`select_src_port` = `select_dst_port` = that port) with that new
  port as `output_port` (ovsmirror);
* `remove_capture(id)`: a capture's rows out again; `remove_stale()`: every
  row skygraph marked (what an agent that crashed left behind).

Every row skygraph inserts carries `external_ids:skygraph-capture-id` = the
capture's id; a mirror's port and interface also carry
`skygraph-mirror-of` = the mirrored port's UUID, from which the OVS probe
draws the `mirroring` edge.  A bridge that already has an sFlow or NetFlow
row skygraph did not write is refused, not overwritten.  These tables are
not root tables: taking a bridge's reference out is the whole removal,
ovsdb-server garbage-collects the rows (and a port's interface with it).

Talks to ovsdb-server through the python-ovs IDL, a short session per
call: the server's schema, a replica of the few tables and columns used,
one transaction (built again while the server answers TRY_AGAIN), closed;
every wait is bounded by the call's timeout.  The IDL (rather than
`ovs-vsctl` in a subprocess) gives transactions whose checks and writes are
atomic, inserted rows referenced by their named UUIDs, values that need no
quoting, and the server's own error text.  Blocking: call it from a worker
thread.
"""

from __future__ import annotations

import errno
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import ovs.db.idl
import ovs.jsonrpc
import ovs.poller
import ovs.stream

MARK = "skygraph-capture-id"
MIRROR_OF = "skygraph-mirror-of"
DEFAULT_TIMEOUT = 10.0

# What a session replicates: enough to find skygraph's rows and write them.
COLUMNS: Mapping[str, Sequence[str]] = {
    "Bridge": ("name", "ports", "mirrors", "sflow", "netflow"),
    "Port": ("name", "interfaces", "external_ids"),
    "Interface": ("name", "type", "external_ids"),
    "sFlow": ("agent", "targets", "header", "sampling", "polling", "external_ids"),
    "NetFlow": ("targets", "engine_type", "engine_id", "add_id_to_interface",
                "active_timeout", "external_ids"),
    "Mirror": ("name", "select_src_port", "select_dst_port", "output_port", "external_ids"),
}
# Bridge column -> the table of the marked rows it references.
BRIDGE_REFS: Mapping[str, str] = {"sflow": "sFlow", "netflow": "NetFlow", "mirrors": "Mirror",
                                  "ports": "Port"}

T = TypeVar("T")
Row = Any  # ovs.db.idl.Row: columns are attributes


class OvsdbError(Exception):
    """OVSDB could not be reached or refused a change; the message says which and why."""


@dataclass(frozen=True, slots=True)
class SFlowRow:
    targets: tuple[str, ...]  # "ip:port"
    agent: str  # interface whose address OVS puts in the datagrams
    header: int  # bytes of each sampled packet
    sampling: int  # 1 in N packets
    polling: int  # counter samples every N s (0: none)


@dataclass(frozen=True, slots=True)
class NetFlowRow:
    targets: tuple[str, ...]
    engine_type: int
    engine_id: int
    active_timeout: int  # s between records of a flow still active (0: OVS's 600 s)
    add_id_to_interface: bool = True


def remote(address: str) -> str:
    """`ovs.ovsdb` forms (unix:///path, tcp://h:p, h:p) in python-ovs syntax."""
    scheme, sep, rest = address.partition("://")
    if sep and scheme in ("unix", "tcp", "ssl"):
        return f"{scheme}:{rest}"
    if address.startswith(("unix:", "tcp:", "ssl:")):
        return address
    return f"tcp:{address}"


# ---- one session ---------------------------------------------------------------------
class Session:
    """An IDL replica of `COLUMNS`, synced, for one call; `close()` when done."""

    def __init__(self, address: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.address = address
        self.deadline = time.monotonic() + timeout
        self._remote = remote(address)
        helper = ovs.db.idl.SchemaHelper(None, self._schema())
        for table, columns in COLUMNS.items():
            helper.register_columns(table, list(columns))
        self.idl = ovs.db.idl.Idl(self._remote, helper)
        try:
            self._until(self.idl.has_ever_connected, "no answer to the monitor request")
        except BaseException:
            self.idl.close()
            raise

    def close(self) -> None:
        self.idl.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _left_ms(self) -> int:
        return max(int((self.deadline - time.monotonic()) * 1000), 0)

    def _fail(self, what: str) -> OvsdbError:
        hint = ""
        if self._remote.startswith("unix:") and not os.path.exists(self._remote[5:]):
            hint = f" ({self._remote[5:]} does not exist: is ovsdb-server running?)"
        return OvsdbError(f"OVSDB {self.address}: {what}{hint}")

    def _schema(self) -> Any:
        """The server's Open_vSwitch schema (get_schema), within the deadline."""
        err, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(self._remote),
                                                   self._left_ms())
        if err or stream is None:
            raise self._fail(f"cannot connect: {os.strerror(err) if err else 'no stream'}")
        conn = ovs.jsonrpc.Connection(stream)
        try:
            request = ovs.jsonrpc.Message.create_request("get_schema", ["Open_vSwitch"])
            err = conn.send(request)
            while not err:
                conn.run()
                err, msg = conn.recv()
                if msg is not None and msg.id == request.id:
                    if msg.type != ovs.jsonrpc.Message.T_REPLY or msg.result is None:
                        raise self._fail(f"get_schema answered {msg.error}")
                    return msg.result
                if err == errno.EAGAIN:
                    err = 0
                    if not self._left_ms():
                        raise self._fail("no answer to get_schema")
                    poller = ovs.poller.Poller()
                    conn.wait(poller)
                    conn.recv_wait(poller)
                    poller.timer_wait(self._left_ms())
                    poller.block()
            raise self._fail(f"get_schema: {os.strerror(err) if err > 0 else 'connection closed'}")
        finally:
            conn.close()

    def _until(self, done: Callable[[], bool], what: str,
               txn: ovs.db.idl.Transaction | None = None) -> None:
        while True:
            self.idl.run()
            if done():
                return
            if not self._left_ms():
                raise self._fail(what)
            poller = ovs.poller.Poller()
            self.idl.wait(poller)
            if txn is not None:
                txn.wait(poller)
            poller.timer_wait(min(self._left_ms(), 500))
            poller.block()

    def rows(self, table: str) -> Iterable[Row]:
        return list(self.idl.tables[table].rows.values())

    def transact(self, build: Callable[[ovs.db.idl.Transaction], T], what: str) -> T:
        """Run `build(txn)` (it reads the replica and writes through `txn`) and commit;
        build again while the server answers TRY_AGAIN (the replica changed)."""
        Txn = ovs.db.idl.Transaction
        while True:
            txn = Txn(self.idl)
            try:
                result = build(txn)
            except BaseException:
                txn.abort()
                raise
            status = self._commit(txn, what)
            if status in (Txn.SUCCESS, Txn.UNCHANGED):
                return result
            if status != Txn.TRY_AGAIN:
                raise self._fail(f"{what}: {txn.get_error()}")
            self._changed(f"{what}: the database kept changing")

    def _commit(self, txn: ovs.db.idl.Transaction, what: str) -> str:
        txn.commit()  # sends it; later calls return where it stands
        incomplete = ovs.db.idl.Transaction.INCOMPLETE
        try:
            self._until(lambda: txn.commit() != incomplete, f"{what}: no answer", txn)
        except OvsdbError:
            txn.abort()
            raise
        status: str = txn.commit()
        return status

    def _changed(self, what: str) -> None:
        seqno = self.idl.change_seqno
        self._until(lambda: self.idl.change_seqno != seqno, what)


def _mark(row: Row) -> str:
    return str((row.external_ids or {}).get(MARK, ""))


def _one(value: Any) -> Any:
    """An optional column (a list of at most one value) as the value or None."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _bridge(session: Session, bridge_uuid: str) -> Row:
    try:
        return session.idl.tables["Bridge"].rows[uuid.UUID(bridge_uuid)]
    except (KeyError, ValueError):
        raise OvsdbError(f"OVSDB {session.address}: no bridge with UUID {bridge_uuid}") from None


# ---- sFlow and NetFlow on a bridge --------------------------------------------------------
def _set_exporter(address: str, bridge_uuid: str, capture_id: str, column: str,
                  values: Mapping[str, Any], timeout: float) -> None:
    table = BRIDGE_REFS[column]

    def build(txn: ovs.db.idl.Transaction) -> None:
        bridge = _bridge(session, bridge_uuid)
        current = _one(getattr(bridge, column))
        if current is not None:
            owner = _mark(current)
            if owner != capture_id:
                whose = f"capture {owner}'s row" if owner else "a row skygraph did not write"
                raise OvsdbError(f"bridge {bridge.name} already exports {table} ({whose}, "
                                 f"targets {', '.join(current.targets)})")
            return  # already ours (a retried start)
        bridge.verify(column)
        row = txn.insert(session.idl.tables[table])
        for key, value in values.items():
            setattr(row, key, value)
        row.external_ids = {MARK: capture_id}
        setattr(bridge, column, [row])

    with Session(address, timeout) as session:
        session.transact(build, f"{table} row on bridge {bridge_uuid}")


def set_sflow(address: str, bridge_uuid: str, capture_id: str, row: SFlowRow,
              timeout: float = DEFAULT_TIMEOUT) -> None:
    """The bridge sends sFlow as `row` says (raises `OvsdbError`)."""
    _set_exporter(address, bridge_uuid, capture_id, "sflow", {
        "targets": list(row.targets), "agent": [row.agent] if row.agent else [],
        "header": [row.header], "sampling": [row.sampling], "polling": [row.polling]},
        timeout)


def set_netflow(address: str, bridge_uuid: str, capture_id: str, row: NetFlowRow,
                timeout: float = DEFAULT_TIMEOUT) -> None:
    """The bridge sends NetFlow v5 as `row` says (raises `OvsdbError`)."""
    _set_exporter(address, bridge_uuid, capture_id, "netflow", {
        "targets": list(row.targets), "engine_type": [row.engine_type],
        "engine_id": [row.engine_id], "active_timeout": row.active_timeout,
        "add_id_to_interface": row.add_id_to_interface}, timeout)


# ---- mirrors ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Mirror:
    bridge: str  # name of the mirrored port's bridge
    port: str  # name of the mirrored port
    output: str  # name of the new internal interface (and its port)


def add_mirror(address: str, port_uuid: str, capture_id: str, name: str,
               timeout: float = DEFAULT_TIMEOUT) -> Mirror:
    """An internal port `name` on the bridge of port `port_uuid`, receiving a copy of
    every packet that port sends or receives (raises `OvsdbError`)."""
    mark = {MARK: capture_id, MIRROR_OF: port_uuid}

    def build(txn: ovs.db.idl.Transaction) -> Mirror:
        idl = session.idl
        try:
            port = idl.tables["Port"].rows[uuid.UUID(port_uuid)]
        except (KeyError, ValueError):
            raise OvsdbError(f"OVSDB {address}: no port with UUID {port_uuid}") from None
        if _mark(port):
            raise OvsdbError(f"port {port.name} is a mirror port of capture {_mark(port)}: "
                             "mirroring a mirror is not allowed")
        bridges = [b for b in session.rows("Bridge") if port in b.ports]
        if not bridges:
            raise OvsdbError(f"port {port.name} is on no bridge")
        bridge = bridges[0]
        for p in session.rows("Port"):
            if p.name == name:
                if (p.external_ids or {}) == mark:
                    return Mirror(bridge.name, port.name, name)  # a retried start
                raise OvsdbError(f"a port named {name} already exists")
        intf = txn.insert(idl.tables["Interface"])
        intf.name, intf.type, intf.external_ids = name, "internal", mark
        out = txn.insert(idl.tables["Port"])
        out.name, out.interfaces, out.external_ids = name, [intf], mark
        mirror = txn.insert(idl.tables["Mirror"])
        mirror.name = name
        mirror.select_src_port = [port]
        mirror.select_dst_port = [port]
        mirror.output_port = [out]
        mirror.external_ids = mark
        bridge.addvalue("ports", out.uuid)
        bridge.addvalue("mirrors", mirror.uuid)
        return Mirror(bridge.name, port.name, name)

    with Session(address, timeout) as session:
        return session.transact(build, f"mirror of port {port_uuid}")


# ---- removal --------------------------------------------------------------------------------
def _remove(address: str, wanted: Callable[[str], bool], what: str, timeout: float) -> int:
    """Take every marked row whose capture id is `wanted` off its bridge."""
    def build(txn: ovs.db.idl.Transaction) -> int:
        removed = 0
        for bridge in session.rows("Bridge"):
            for column in BRIDGE_REFS:
                refs = getattr(bridge, column)
                for row in refs if isinstance(refs, list) else [refs]:
                    if row is not None and _mark(row) and wanted(_mark(row)):
                        bridge.delvalue(column, row.uuid)
                        removed += 1
        return removed

    with Session(address, timeout) as session:
        return session.transact(build, what)


def remove_capture(address: str, capture_id: str, timeout: float = DEFAULT_TIMEOUT) -> int:
    """Remove the rows of one capture; return how many bridge references went."""
    return _remove(address, lambda mark: mark == capture_id, f"rows of capture {capture_id}",
                   timeout)


def remove_stale(address: str, keep: Iterable[str] = (), timeout: float = DEFAULT_TIMEOUT) -> int:
    """Remove every skygraph row but those of the captures in `keep` (agent start)."""
    kept = frozenset(keep)
    return _remove(address, lambda mark: mark not in kept, "stale skygraph rows", timeout)


def marked(address: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, list[dict[str, Any]]]:
    """Every row skygraph marked, by table: `{"uuid", "capture", ...columns}` (status, tests)."""
    out: dict[str, list[dict[str, Any]]] = {}
    with Session(address, timeout) as session:
        for table in ("sFlow", "NetFlow", "Mirror", "Port", "Interface"):
            for row in session.rows(table):
                if _mark(row):
                    values = {c: _plain(getattr(row, c)) for c in COLUMNS[table]}
                    out.setdefault(table, []).append(
                        {"uuid": str(row.uuid), "capture": _mark(row), **values})
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, ovs.db.idl.Row):
        return str(value.uuid)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
