"""BPF filters: pcap-syntax expressions compiled once by libpcap, run in userspace.

Owns compilation (`tcpdump -dd`, i.e. libpcap's compiler, for the capture's
link type and snaplen; a filter libpcap rejects raises `BPFError` with
libpcap's message), the classic-BPF program value (also what live captures
attach with SO_ATTACH_FILTER), and a classic-BPF interpreter for the
offline path.  `compile_filter` runs a subprocess; `Program.matches` is pure.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from typing import NamedTuple

# tcpdump -y names for pcap link types.
DLT_NAMES = {1: "EN10MB", 101: "RAW", 12: "RAW", 113: "LINUX_SLL", 228: "IPV4",
             229: "IPV6", 276: "LINUX_SLL2"}
DEFAULT_SNAPLEN = 262144

# classic BPF opcode fields (linux/bpf_common.h)
BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_RET, BPF_MISC = range(8)
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM, BPF_LEN, BPF_MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
BPF_K, BPF_X, BPF_A = 0x00, 0x08, 0x10
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x20, 0x30, 0x40
BPF_TAX, BPF_TXA = 0x00, 0x80
SIZES = {BPF_W: struct.Struct("!I"), BPF_H: struct.Struct("!H"), BPF_B: struct.Struct("!B")}
M32 = 0xFFFFFFFF

_LINE = re.compile(r"\{\s*(0x[0-9a-f]+),\s*(\d+),\s*(\d+),\s*(0x[0-9a-f]+)\s*\}")


class BPFError(ValueError):
    """A filter libpcap does not compile; the message is libpcap's."""


class Instruction(NamedTuple):
    code: int
    jt: int
    jf: int
    k: int


@dataclass(frozen=True, slots=True)
class Program:
    expression: str
    instructions: tuple[Instruction, ...]

    def pack(self) -> bytes:
        """`struct sock_filter[]` bytes, for SO_ATTACH_FILTER."""
        return b"".join(struct.pack("HBBI", *ins) for ins in self.instructions)

    def matches(self, data: bytes, wire_length: int | None = None) -> bool:
        return run(self.instructions, data,
                   len(data) if wire_length is None else wire_length) != 0


def compile_filter(expression: str, link_type: int = 1,
                   snaplen: int = DEFAULT_SNAPLEN) -> Program:
    """Compile `expression` with libpcap (through tcpdump) for `link_type`."""
    tcpdump = shutil.which("tcpdump") or shutil.which("tcpdump", path="/usr/sbin:/sbin")
    if tcpdump is None:
        raise BPFError("BPF filter: tcpdump (libpcap's compiler) is not installed")
    dlt = DLT_NAMES.get(link_type)
    if dlt is None:
        raise BPFError(f"BPF filter: link type {link_type} is not supported")
    proc = subprocess.run([tcpdump, "-dd", "-y", dlt, "-s", str(snaplen), "--", expression],
                          capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        message = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        message = message.removeprefix("tcpdump: ")
        raise BPFError(f"BPF filter {expression!r}: {message}")
    return parse_program(expression, proc.stdout)


def parse_program(expression: str, text: str) -> Program:
    """Parse `tcpdump -dd` output into a program."""
    instructions = tuple(Instruction(int(c, 16), int(jt), int(jf), int(k, 16))
                         for c, jt, jf, k in _LINE.findall(text))
    if not instructions:
        raise BPFError(f"BPF filter {expression!r}: libpcap produced no program")
    return Program(expression, instructions)


def _load(data: bytes, size: int, offset: int) -> int | None:
    s = SIZES[size]
    if offset < 0 or offset + s.size > len(data):
        return None
    value: int = s.unpack_from(data, offset)[0]
    return value


def run(prog: tuple[Instruction, ...], data: bytes, wire_length: int) -> int:
    """Interpret a classic BPF program; returns the accepted length (0: rejected)."""
    a = x = 0
    mem = [0] * 16
    pc = 0
    n = len(prog)
    while pc < n:
        code, jt, jf, k = prog[pc]
        pc += 1
        cls = code & 0x07
        if cls == BPF_RET:
            return (a if code & 0x18 == BPF_A else k) & M32
        if cls == BPF_JMP:
            op = code & 0xF0
            if op == BPF_JA:
                pc += k
                continue
            src = x if code & BPF_X else k
            if op == BPF_JEQ:
                cond = a == src
            elif op == BPF_JGT:
                cond = a > src
            elif op == BPF_JGE:
                cond = a >= src
            else:
                cond = bool(a & src)
            pc += jt if cond else jf
        elif cls in (BPF_LD, BPF_LDX):
            mode = code & 0xE0
            size = code & 0x18
            value: int | None
            if mode == BPF_IMM:
                value = k
            elif mode == BPF_ABS:
                value = _load(data, size, k)
            elif mode == BPF_IND:
                value = _load(data, size, x + k)
            elif mode == BPF_MEM:
                value = mem[k & 15]
            elif mode == BPF_LEN:
                value = wire_length
            elif mode == BPF_MSH:
                b = _load(data, BPF_B, k)
                value = None if b is None else (b & 0x0F) * 4
            else:
                return 0
            if value is None:
                return 0
            if cls == BPF_LD:
                a = value
            else:
                x = value
        elif cls == BPF_ST:
            mem[k & 15] = a
        elif cls == BPF_STX:
            mem[k & 15] = x
        elif cls == BPF_ALU:
            a = _alu(code, a, x if code & BPF_X else k)
            if a < 0:
                return 0
        else:  # BPF_MISC
            if code & 0xF8 == BPF_TXA:
                a = x
            else:
                x = a
    return 0


def _alu(code: int, a: int, src: int) -> int:
    """One ALU operation; -1 on division by zero (the program then rejects)."""
    op = code & 0xF0
    if op == 0x00:
        return (a + src) & M32
    if op == 0x10:
        return (a - src) & M32
    if op == 0x20:
        return (a * src) & M32
    if op == 0x30:
        return -1 if src == 0 else a // src
    if op == 0x40:
        return a | src
    if op == 0x50:
        return a & src
    if op == 0x60:
        return (a << src) & M32 if src < 32 else 0
    if op == 0x70:
        return a >> src if src < 32 else 0
    if op == 0x80:
        return -a & M32
    if op == 0x90:
        return -1 if src == 0 else a % src
    if op == 0xA0:
        return a ^ src
    return -1
