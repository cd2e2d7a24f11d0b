"""The `ovsmirror` capture type: OVS mirrors a port to an internal port the agent captures on.

Owns the capture of one OVS port (flow/probes/ovsmirror, SPEC §1b): the node
check (Type `ovsport` with its OVS `UUID` and a `TID`; a port skygraph made
as a mirror output is refused: no mirror of a mirror), then, in OVSDB
(`capture.ovsdb.add_mirror`), an internal interface and port named
`mir` + the port's UUID (8 characters, Skydive's name) on the port's bridge
and a `Mirror` row sending it every packet the port sends or receives;
then, once ovs-vswitchd has made that interface (in the bridge's
namespace), it is brought up and an `afpacket` capture runs on it with the
capture's options and filter, plus `inbound` so that only the mirrored
copies count, not what the kernel itself sends from the new interface.
The rows carry the capture's id and the mirrored port's UUID; from the
latter the OVS probe draws the `mirroring` edge (mirror port -> mirrored
port).  Stopping stops the afpacket capture, then removes the rows
(ovs-vswitchd removes the interface).

The `Captures` entry on the mirrored port gets `MirrorOf` = that port's
node ID, and the flows carry that port's TID: they are the port's traffic.
(Skydive attaches them, and a second `Captures` entry with `MirrorOf`, to
the mirror interface's node; skygraph keeps one capture on the node the
user asked for.)
"""

from __future__ import annotations

import dataclasses
import fcntl
import socket
import struct
import time
from typing import Any

from skygraph.capture import ovsdb
from skygraph.capture.sources.afpacket import AfpacketSource
from skygraph.capture.sources.base import CaptureNode, SourceContext
from skygraph.capture.sources.ovsbridge import Wrapping, remove_rows, write_rows
from skygraph.topology.netns import run_in

KIND = "ovsmirror"
PORT_TYPES = frozenset({"ovsport"})
APPEAR_TIMEOUT = 10.0  # s for ovs-vswitchd to create the mirror interface
POLL_S = 0.05
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
IFREQ_FLAGS = struct.Struct("16sh22x")  # struct ifreq: name, ifr_flags


def mirror_name(port_uuid: str) -> str:
    """Skydive's name of a port's mirror interface: `mir` + the UUID, 8 characters."""
    return f"mir{port_uuid}"[:8]


def bring_up(name: str) -> None:
    """Set IFF_UP on an interface of the calling thread's namespace (OSError)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = IFREQ_FLAGS.pack(name.encode(), 0)
        flags = IFREQ_FLAGS.unpack(fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(s, SIOCSIFFLAGS, IFREQ_FLAGS.pack(name.encode(), flags | IFF_UP))


class OvsMirrorSource(Wrapping):
    """One ovsmirror capture: the OVSDB rows and the afpacket capture (`inner`) on the
    mirror interface."""

    kind = KIND

    def __init__(self, ctx: SourceContext, appear_timeout: float = APPEAR_TIMEOUT) -> None:
        super().__init__(ctx)
        self.node = CaptureNode.from_metadata(ctx.node_id, ctx.metadata, ctx.netns, self.kind,
                                              require=("TID", "UUID"), node_types=PORT_TYPES,
                                              require_up=False)
        ext = ctx.metadata.get("ExtID") or {}
        if isinstance(ext, dict) and ext.get(ovsdb.MARK):
            raise ctx.error(f"port {self.node.name} is the mirror of capture "
                            f"{ext[ovsdb.MARK]}: mirroring a mirror is not allowed")
        self.port_uuid = str(ctx.metadata["UUID"])
        self.mirror = mirror_name(self.port_uuid)
        self.appear_timeout = float(ctx.extra.get("appear_timeout", appear_timeout))

    def start(self) -> None:
        ctx = self.ctx
        write_rows(ctx, f"mirror of port {self.node.name}", lambda: ovsdb.add_mirror(
            ctx.agent.ovsdb, self.port_uuid, ctx.spec.id, self.mirror))
        try:
            if_index = self._appeared()
            inner = AfpacketSource(self._inner_context(if_index))
            inner.start()
        except BaseException:
            remove_rows(ctx)
            raise
        self.inner = inner

    def _appeared(self) -> int:
        """Wait for ovs-vswitchd's interface, bring it up; return its index."""
        netns, name = self.ctx.netns, self.mirror

        def find() -> int:
            try:
                return socket.if_nametoindex(name)
            except OSError:
                return 0

        deadline = time.monotonic() + self.appear_timeout
        while not (if_index := run_in(netns, find)):
            if time.monotonic() > deadline:
                raise self.ctx.error(f"OVS did not create the mirror interface {name} within "
                                     f"{self.appear_timeout:.0f}s (is ovs-vswitchd running?)")
            time.sleep(POLL_S)
        try:
            run_in(netns, lambda: bring_up(name))
        except OSError as exc:
            raise self.ctx.error(f"mirror interface {name} not brought up: "
                                 f"{exc.strerror or exc}") from exc
        return if_index

    def _inner_context(self, if_index: int) -> SourceContext:
        """The afpacket capture on the mirror interface: the capture's own options, the
        mirrored port's TID (its flows), received copies only."""
        ctx, spec = self.ctx, self.ctx.spec
        user = spec.bpf_filter.strip()
        bpf = f"({user}) and inbound" if user else "inbound"
        meta = {"Name": self.mirror, "Type": "internal", "EncapType": "ether",
                "TID": self.node.tid, "LinkFlags": ["UP"], "IfIndex": if_index}
        return dataclasses.replace(ctx, spec=dataclasses.replace(spec, type="afpacket",
                                                                 bpf_filter=bpf),
                                   metadata=meta)

    def stop(self, timeout: float = 10.0) -> None:
        if self.inner is None:
            return
        try:
            self._stop_inner(timeout)
        finally:
            remove_rows(self.ctx)

    def metadata(self) -> dict[str, Any]:
        return {"MirrorOf": self.ctx.node_id}


def make(ctx: SourceContext) -> OvsMirrorSource:
    return OvsMirrorSource(ctx)
