"""ethtool facts of a link (driver, bus info, speed) through the SIOCETHTOOL
ioctl on a socket that lives in the link's namespace."""

from __future__ import annotations

import ctypes
import fcntl
import socket
import struct

from skygraph.probes.netns.links import Ethtool

SIOCETHTOOL = 0x8946
ETHTOOL_GSET = 0x00000001
ETHTOOL_GDRVINFO = 0x00000003
# struct ethtool_drvinfo: cmd, driver[32], version[32], fw_version[32],
# bus_info[32], erom_version[32], reserved2[12], 5 x u32.
DRVINFO = struct.Struct("I32s32s32s32s32s12s5I")
# struct ethtool_cmd: cmd, supported, advertising, speed(u16), duplex, port,
# phy_address, transceiver, autoneg, mdio_support, maxtxpkt, maxrxpkt,
# speed_hi(u16), eth_tp_mdix, eth_tp_mdix_ctrl, lp_advertising, reserved[2].
ECMD = struct.Struct("IIIHBBBBBBIIHBBI2I")
# struct ifreq: ifr_name[16] then a union holding the data pointer.
IFREQ = struct.Struct("16sP8x")


def _call(sock: socket.socket, ifname: str, cmd: int, layout: struct.Struct) -> tuple[object, ...]:
    buf = ctypes.create_string_buffer(layout.size)
    struct.pack_into("I", buf, 0, cmd)
    req = IFREQ.pack(ifname.encode()[:15], ctypes.addressof(buf))
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, req)
    return layout.unpack(buf.raw)


def _text(raw: object) -> str:
    assert isinstance(raw, bytes)
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def query(sock: socket.socket, ifname: str) -> Ethtool:
    """Driver, bus info and speed of `ifname`; missing facts are None (lo has none)."""
    driver = bus = None
    speed = None
    try:
        info = _call(sock, ifname, ETHTOOL_GDRVINFO, DRVINFO)
        driver, bus = _text(info[1]) or None, _text(info[4]) or None
    except OSError:
        pass
    try:
        ecmd = _call(sock, ifname, ETHTOOL_GSET, ECMD)
        lo, hi = ecmd[3], ecmd[12]
        assert isinstance(lo, int) and isinstance(hi, int)
        speed = (hi << 16) | lo
    except OSError:
        pass
    return Ethtool(driver, speed, bus)
