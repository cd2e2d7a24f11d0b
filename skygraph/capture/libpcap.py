"""libpcap through ctypes: a live handle on one interface, its filter and counters.

Owns the C declarations of the few libpcap calls a live capture needs
(`pcap_create`/`pcap_activate` with snaplen, buffer, timeout and nanosecond
timestamps, `pcap_compile`/`pcap_setfilter`, non-blocking `pcap_dispatch`,
`pcap_stats`, `pcap_datalink`, `pcap_get_selectable_fd`) and `Handle`, which
wraps them with errors carrying libpcap's own message.  The library
(Debian's libpcap0.8, `libpcap.so.0.8`) is loaded on first use, so importing
this module never fails.

A handle's socket lives in the network namespace of the thread that called
`Handle.open` (libpcap opens an AF_PACKET socket in `pcap_activate`).
`dispatch` and `stats` may be called from different threads: a lock keeps
them apart.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable
from typing import Any

PCAP_ERRBUF_SIZE = 256
PCAP_TSTAMP_PRECISION_NANO = 1
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
PCAP_ERROR_BREAK = -2
_NAMES = ("libpcap.so.0.8", "libpcap.so.1", "libpcap.so")


class PcapError(OSError):
    """libpcap refused something; the message is libpcap's."""


class Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]  # ns with NANO precision


class PktHdr(ctypes.Structure):
    _fields_ = [("ts", Timeval), ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


class BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


class PcapStat(ctypes.Structure):
    _fields_ = [("ps_recv", ctypes.c_uint), ("ps_drop", ctypes.c_uint),
                ("ps_ifdrop", ctypes.c_uint)]


Handler = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(PktHdr),
                           ctypes.POINTER(ctypes.c_ubyte))
# (ts ns, captured bytes, wire length) per packet
OnPacket = Callable[[int, bytes, int], None]

# name -> (restype, argtypes)
_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "pcap_lib_version": (ctypes.c_char_p, []),
    "pcap_create": (ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]),
    "pcap_set_snaplen": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    "pcap_set_promisc": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    "pcap_set_timeout": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    "pcap_set_buffer_size": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    "pcap_set_tstamp_precision": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    "pcap_activate": (ctypes.c_int, [ctypes.c_void_p]),
    "pcap_statustostr": (ctypes.c_char_p, [ctypes.c_int]),
    "pcap_geterr": (ctypes.c_char_p, [ctypes.c_void_p]),
    "pcap_compile": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(BpfProgram), ctypes.c_char_p,
                                    ctypes.c_int, ctypes.c_uint32]),
    "pcap_setfilter": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(BpfProgram)]),
    "pcap_freecode": (None, [ctypes.POINTER(BpfProgram)]),
    "pcap_setnonblock": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p]),
    "pcap_get_selectable_fd": (ctypes.c_int, [ctypes.c_void_p]),
    "pcap_dispatch": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, Handler, ctypes.c_void_p]),
    "pcap_stats": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(PcapStat)]),
    "pcap_datalink": (ctypes.c_int, [ctypes.c_void_p]),
    "pcap_close": (None, [ctypes.c_void_p]),
}

_lib: Any = None
_lib_lock = threading.Lock()


def library() -> Any:
    """The loaded libpcap (PcapError when it is not installed)."""
    global _lib
    with _lib_lock:
        if _lib is None:
            names = [*_NAMES, *filter(None, [ctypes.util.find_library("pcap")])]
            errors = []
            for name in names:
                try:
                    lib = ctypes.CDLL(name, use_errno=True)
                    break
                except OSError as exc:
                    errors.append(str(exc))
            else:
                raise PcapError(f"libpcap is not installed (apt-get install libpcap0.8): "
                                f"{'; '.join(errors)}")
            for fn, (restype, argtypes) in _PROTOTYPES.items():
                f = getattr(lib, fn)
                f.restype, f.argtypes = restype, argtypes
            _lib = lib
        return _lib


def version() -> str:
    return str(library().pcap_lib_version().decode())


def _text(raw: bytes | None) -> str:
    return raw.decode(errors="replace") if raw else ""


class Handle:
    """An activated libpcap handle on one interface (non-blocking)."""

    def __init__(self, ptr: int, lib: Any) -> None:
        self._ptr: int | None = ptr
        self._lib = lib
        self._lock = threading.Lock()
        self.link_type = int(lib.pcap_datalink(ptr))
        self._on_packet: OnPacket | None = None
        self._callback = Handler(self._deliver)  # kept alive with the handle

    @classmethod
    def open(cls, device: str, snaplen: int, timeout_ms: int = 20,
             buffer_size: int = 4 << 20, promisc: bool = False) -> Handle:
        """Create and activate a handle on `device` (in the calling thread's namespace)."""
        lib = library()
        errbuf = ctypes.create_string_buffer(PCAP_ERRBUF_SIZE)
        ptr = lib.pcap_create(device.encode(), errbuf)
        if not ptr:
            raise PcapError(f"pcap_create({device}): {_text(errbuf.value)}")
        try:
            lib.pcap_set_snaplen(ptr, snaplen)
            lib.pcap_set_promisc(ptr, int(promisc))
            lib.pcap_set_timeout(ptr, timeout_ms)
            lib.pcap_set_buffer_size(ptr, buffer_size)
            lib.pcap_set_tstamp_precision(ptr, PCAP_TSTAMP_PRECISION_NANO)
            status = lib.pcap_activate(ptr)
            if status < 0:
                detail = _text(lib.pcap_geterr(ptr)) or _text(lib.pcap_statustostr(status))
                raise PcapError(f"pcap_activate({device}): {detail}")
            if lib.pcap_setnonblock(ptr, 1, errbuf) < 0:
                raise PcapError(f"pcap_setnonblock({device}): {_text(errbuf.value)}")
        except BaseException:
            lib.pcap_close(ptr)
            raise
        return cls(ptr, lib)

    def _live(self) -> int:
        if self._ptr is None:
            raise PcapError("the pcap handle is closed")
        return self._ptr

    def set_filter(self, expression: str) -> None:
        """Compile `expression` for this handle's link type and snaplen and set it
        (in the kernel on Linux); PcapError with libpcap's message if it does not compile."""
        ptr = self._live()
        prog = BpfProgram()
        if self._lib.pcap_compile(ptr, ctypes.byref(prog), expression.encode(), 1,
                                  PCAP_NETMASK_UNKNOWN) < 0:
            raise PcapError(_text(self._lib.pcap_geterr(ptr)))
        try:
            if self._lib.pcap_setfilter(ptr, ctypes.byref(prog)) < 0:
                raise PcapError(_text(self._lib.pcap_geterr(ptr)))
        finally:
            self._lib.pcap_freecode(ctypes.byref(prog))

    def fileno(self) -> int:
        return int(self._lib.pcap_get_selectable_fd(self._live()))

    def _deliver(self, _user: int | None, hdr: Any, data: Any) -> None:
        h = hdr.contents
        on_packet = self._on_packet
        if on_packet is not None:
            on_packet(h.ts.tv_sec * 1_000_000_000 + h.ts.tv_usec,
                      ctypes.string_at(data, h.caplen), h.len)

    def dispatch(self, on_packet: OnPacket, count: int = -1) -> int:
        """Hand the packets libpcap has ready to `on_packet`; returns how many."""
        with self._lock:
            ptr = self._live()
            self._on_packet = on_packet
            try:
                n = int(self._lib.pcap_dispatch(ptr, count, self._callback, None))
            finally:
                self._on_packet = None
            if n < 0 and n != PCAP_ERROR_BREAK:
                raise PcapError(f"pcap_dispatch: {_text(self._lib.pcap_geterr(ptr))}")
            return max(n, 0)

    def stats(self) -> tuple[int, int, int]:
        """libpcap's (ps_recv, ps_drop, ps_ifdrop)."""
        with self._lock:
            ptr = self._live()
            st = PcapStat()
            if self._lib.pcap_stats(ptr, ctypes.byref(st)) < 0:
                raise PcapError(f"pcap_stats: {_text(self._lib.pcap_geterr(ptr))}")
            return int(st.ps_recv), int(st.ps_drop), int(st.ps_ifdrop)

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def close(self) -> None:
        with self._lock:
            if self._ptr is not None:
                self._lib.pcap_close(self._ptr)
                self._ptr = None
