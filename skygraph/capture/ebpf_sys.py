"""The bpf() system call through ctypes: maps, program loading, socket attachment.

Owns the `union bpf_attr` layouts skygraph uses (declared tables below:
map creation, element operations, program load), the system call number
per machine, and the errors users see: a refused program carries the
verifier's log, a refused map names the map, and a kernel without bpf()
or without the privilege says so.  No BCC and no libbpf: this machine has
BPF and BTF but no kernel headers (ENVIRONMENT.md §5).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

# bpf() command numbers (linux/bpf.h `enum bpf_cmd`).
MAP_CREATE = 0
MAP_LOOKUP_ELEM = 1
MAP_UPDATE_ELEM = 2
MAP_DELETE_ELEM = 3
MAP_GET_NEXT_KEY = 4
PROG_LOAD = 5
PROG_TEST_RUN = 10
MAP_LOOKUP_AND_DELETE_ELEM = 21
MAP_LOOKUP_BATCH = 24

# Map and program types, flags.
MAP_TYPE_HASH = 1
MAP_TYPE_ARRAY = 2
MAP_TYPE_PERCPU_ARRAY = 6
MAP_TYPE_LRU_HASH = 9
F_NO_PREALLOC = 1  # hash map elements allocated on insert, not all at creation
PROG_TYPE_SOCKET_FILTER = 1
ANY, NOEXIST, EXIST = 0, 1, 2  # update flags

SO_ATTACH_BPF = 50
SO_DETACH_BPF = 27

SYSCALL_NUMBERS = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "ppc64le": 361,
                   "s390x": 351, "riscv64": 280, "i686": 357}
LOG_SIZE = 1 << 20
LOG_LEVEL = 1
NAME_LEN = 16

# union bpf_attr, the parts each command reads (zero-padded to ATTR_SIZE).
ATTR_SIZE = 144
MAP_CREATE_ATTR = struct.Struct("=IIIIIII16s")  # type, key, value, max, flags, inner fd, numa, name
ELEM_ATTR = struct.Struct("=I4xQQQ")  # map fd, key ptr, value/next-key ptr, flags
BATCH_ATTR = struct.Struct("=QQQQIIQQ")  # in/out batch ptrs, keys, values, count, map fd, flags x2
BATCH_COUNT_AT = 32
PROG_LOAD_ATTR = struct.Struct("=IIQQIIQII16s")  # type, count, insns, license, log level/size/buf,
# kern_version, flags, name
TEST_RUN_ATTR = struct.Struct("=IIIIQQII")  # prog fd, retval, data size in/out, data in/out ptrs,
# repeat, duration (ns per run)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class EBPFError(OSError):
    """A bpf() call failed.  `log` holds the verifier's output for a refused program."""

    def __init__(self, err: int, what: str, log: str = "", reason: str = "") -> None:
        super().__init__(err, f"{what}: {reason or describe(err)}")
        self.what = what
        self.log = log


def describe(err: int) -> str:
    if err == errno.ENOSYS:
        return "this kernel has no bpf() system call"
    if err == errno.EPERM:
        return "not permitted (needs root, or CAP_BPF with CAP_NET_ADMIN)"
    return os.strerror(err)


def syscall_number() -> int:
    machine = platform.machine()
    if machine not in SYSCALL_NUMBERS:
        raise EBPFError(errno.ENOSYS, f"bpf() on machine {machine!r}")
    return SYSCALL_NUMBERS[machine]


def bpf(cmd: int, attr: bytes | ctypes.Array[ctypes.c_char]) -> int:
    """One bpf() call; returns its result or raises OSError with the errno.  A
    ctypes buffer `attr` holds what the kernel wrote back into it afterwards."""
    buf = (ctypes.create_string_buffer(attr.ljust(ATTR_SIZE, b"\0"), ATTR_SIZE)
           if isinstance(attr, bytes) else attr)
    ret = _libc.syscall(ctypes.c_long(syscall_number()), ctypes.c_int(cmd), buf,
                        ctypes.c_uint(ATTR_SIZE))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, describe(err))
    return int(ret)


def possible_cpus(path: str = "/sys/devices/system/cpu/possible") -> int:
    """Per-CPU map values hold one slot per possible CPU (`0-3,6` style ranges)."""
    with open(path) as f:
        text = f.read().strip()
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


# ---- maps -------------------------------------------------------------------------
@dataclass
class Map:
    """A BPF map owned by this process (closed with `close`)."""

    fd: int
    name: str
    map_type: int
    key_size: int
    value_size: int
    max_entries: int

    @classmethod
    def create(cls, name: str, map_type: int, key_size: int, value_size: int,
               max_entries: int, flags: int = 0) -> Map:
        attr = MAP_CREATE_ATTR.pack(map_type, key_size, value_size, max_entries, flags, 0, 0,
                                    name.encode()[:NAME_LEN - 1])
        try:
            fd = bpf(MAP_CREATE, attr)
        except OSError as exc:
            raise EBPFError(exc.errno or 0, f"creating BPF map {name} ({max_entries} entries of "
                                           f"{key_size}+{value_size} bytes)") from None
        return cls(fd, name, map_type, key_size, value_size, max_entries)

    @property
    def per_cpu(self) -> bool:
        return self.map_type == MAP_TYPE_PERCPU_ARRAY

    def _value_buffer(self) -> ctypes.Array[ctypes.c_char]:
        size = self.value_size
        if self.per_cpu:
            size = (size + 7) // 8 * 8 * possible_cpus()
        return ctypes.create_string_buffer(size)

    def _elem(self, cmd: int, key: bytes, value: ctypes.Array[ctypes.c_char] | None,
              flags: int = 0) -> int:
        kbuf = ctypes.create_string_buffer(key, self.key_size)
        vaddr = ctypes.addressof(value) if value is not None else 0
        return bpf(cmd, ELEM_ATTR.pack(self.fd, ctypes.addressof(kbuf), vaddr, flags))

    def lookup(self, key: bytes) -> bytes | None:
        """The value under `key` (per-CPU maps: every CPU's slot, concatenated)."""
        value = self._value_buffer()
        try:
            self._elem(MAP_LOOKUP_ELEM, key, value)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise EBPFError(exc.errno or 0, f"lookup in BPF map {self.name}") from None
        return value.raw

    def lookup_and_delete(self, key: bytes) -> bytes | None:
        """Read and remove in one step (nothing counted between the two is lost)."""
        value = self._value_buffer()
        try:
            self._elem(MAP_LOOKUP_AND_DELETE_ELEM, key, value)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            if exc.errno in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
                found = self.lookup(key)  # kernel < 5.14: two steps
                self.delete(key)
                return found
            raise EBPFError(exc.errno or 0, f"lookup and delete in BPF map {self.name}") from None
        return value.raw

    def update(self, key: bytes, value: bytes, flags: int = ANY) -> None:
        buf = ctypes.create_string_buffer(value, len(value))
        try:
            self._elem(MAP_UPDATE_ELEM, key, buf, flags)
        except OSError as exc:
            raise EBPFError(exc.errno or 0, f"update of BPF map {self.name}") from None

    def delete(self, key: bytes) -> bool:
        try:
            self._elem(MAP_DELETE_ELEM, key, None)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise EBPFError(exc.errno or 0, f"delete in BPF map {self.name}") from None
        return True

    def iter_keys(self) -> Iterator[bytes]:
        """Every key (BPF_MAP_GET_NEXT_KEY from no key).  The map may change
        meanwhile: a deleted key makes the kernel restart from the first one,
        so a key can come twice; callers look each one up."""
        nxt = ctypes.create_string_buffer(self.key_size)
        key: bytes | None = None
        seen = 0
        while seen <= self.max_entries * 2:
            kbuf = ctypes.create_string_buffer(key, self.key_size) if key is not None else None
            attr = ELEM_ATTR.pack(self.fd, ctypes.addressof(kbuf) if kbuf is not None else 0,
                                  ctypes.addressof(nxt), 0)
            try:
                bpf(MAP_GET_NEXT_KEY, attr)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return
                raise EBPFError(exc.errno or 0, f"walking BPF map {self.name}") from None
            key = nxt.raw
            seen += 1
            yield key

    def items(self, batch: int = 256) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value), `batch` at a time (BPF_MAP_LOOKUP_BATCH, kernel 5.6+;
        older kernels: key by key).  Entries added meanwhile may be missed.  Not for
        per-CPU maps."""
        assert not self.per_cpu
        keys = ctypes.create_string_buffer(self.key_size * batch)
        values = ctypes.create_string_buffer(self.value_size * batch)
        cursor_in = ctypes.create_string_buffer(8)
        cursor_out = ctypes.create_string_buffer(8)
        first = True
        while True:
            attr = ctypes.create_string_buffer(BATCH_ATTR.pack(
                0 if first else ctypes.addressof(cursor_in), ctypes.addressof(cursor_out),
                ctypes.addressof(keys), ctypes.addressof(values), batch, self.fd, 0, 0), ATTR_SIZE)
            done = False
            try:
                bpf(MAP_LOOKUP_BATCH, attr)
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP) and first:
                    yield from self._items_one_by_one()
                    return
                if exc.errno != errno.ENOENT:  # ENOENT: the last (maybe empty) batch
                    raise EBPFError(exc.errno or 0, f"reading BPF map {self.name}") from None
                done = True
            count = struct.unpack_from("=I", attr, BATCH_COUNT_AT)[0]
            k, v = keys.raw, values.raw
            for i in range(count):
                yield (k[i * self.key_size:(i + 1) * self.key_size],
                       v[i * self.value_size:(i + 1) * self.value_size])
            if done:
                return
            ctypes.memmove(cursor_in, cursor_out, 8)
            first = False

    def _items_one_by_one(self) -> Iterator[tuple[bytes, bytes]]:
        for key in list(self.iter_keys()):
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def per_cpu_sum(raw: bytes, value_size: int = 8) -> int:
    """Sum of a per-CPU u64 counter's slots."""
    step = (value_size + 7) // 8 * 8
    return sum(struct.unpack_from("=Q", raw, i)[0] for i in range(0, len(raw), step))


# ---- programs ----------------------------------------------------------------------
def load_program(insns: bytes, name: str, prog_type: int = PROG_TYPE_SOCKET_FILTER,
                 license_: str = "GPL") -> int:
    """Load a program; the kernel's verifier log is in the error if it refuses it."""
    if not insns or len(insns) % 8:
        raise EBPFError(errno.EINVAL, f"BPF program {name}: not a list of 8-byte instructions")
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license_.encode())
    log = ctypes.create_string_buffer(LOG_SIZE)
    attr = PROG_LOAD_ATTR.pack(prog_type, len(insns) // 8, ctypes.addressof(code),
                               ctypes.addressof(lic), LOG_LEVEL, LOG_SIZE, ctypes.addressof(log),
                               0, 0, name.encode()[:NAME_LEN - 1])
    try:
        return bpf(PROG_LOAD, attr)
    except OSError as exc:
        text = log.value.decode(errors="replace")
        reason = f"the kernel's verifier refused it: {verifier_summary(text)}" if text.strip() else ""
        raise EBPFError(exc.errno or 0, f"loading BPF program {name}", text, reason) from None


def verifier_summary(log: str, lines: int = 6) -> str:
    """The lines of a verifier log that say why (its last ones, without the
    instruction trace and the statistics footer)."""
    kept = [ln for ln in log.strip().splitlines()
            if ln.strip() and not ln.startswith(("processed ", "verification time"))]
    return " | ".join(kept[-lines:])


def run_program(prog_fd: int, data: bytes, repeat: int = 1) -> tuple[int, int]:
    """Run a loaded program on `data` in the kernel (BPF_PROG_TEST_RUN): its return
    value and the mean duration of a run in ns.  A socket filter sees an Ethernet
    frame from its network header on (the kernel strips the link header)."""
    buf = ctypes.create_string_buffer(data, len(data))
    attr = ctypes.create_string_buffer(TEST_RUN_ATTR.pack(prog_fd, 0, len(data), 0,
                                                          ctypes.addressof(buf), 0, repeat, 0),
                                       ATTR_SIZE)
    try:
        bpf(PROG_TEST_RUN, attr)
    except OSError as exc:
        raise EBPFError(exc.errno or 0, "test run of a BPF program") from None
    _fd, retval, _in, _out, _din, _dout, _repeat, duration = TEST_RUN_ATTR.unpack_from(attr.raw)
    return retval, duration


def attach_socket(sock: socket.socket, prog_fd: int) -> None:
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, prog_fd)
