"""Namespaces as the netns probe sees them: identities (device and inode of
the nsfs file) and the sockets it opens inside one (entered with
`topology.netns.run_in`).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from skygraph.topology.netns import run_in


@dataclass(frozen=True, slots=True)
class NsId:
    """A namespace's identity: the (device, inode) of its nsfs file."""

    dev: int
    ino: int


def ns_id(path: str) -> NsId:
    st = os.stat(path)
    return NsId(st.st_dev, st.st_ino)


def self_ns_path() -> str:
    return f"/proc/{os.getpid()}/ns/net"


def netlink_socket(path: str | None) -> socket.socket:
    """A NETLINK_ROUTE socket in the namespace at `path`."""
    return run_in(path, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0))


def inet_socket(path: str | None) -> socket.socket:
    """An AF_INET datagram socket in the namespace at `path` (for ethtool ioctls)."""
    return run_in(path, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 0))
