"""A small eBPF assembler: instructions built in Python, labels resolved, bytes out.

Owns the instruction encoding of the kernel's `struct bpf_insn` (8 bytes:
opcode, dst/src register nibbles, signed 16-bit offset, signed 32-bit
immediate; `ld_imm64` takes two slots) and a `Program` builder whose jumps
name labels instead of counting instructions.  This machine has no kernel
headers (ENVIRONMENT.md §5), so skygraph's socket programs are written here
rather than compiled by clang.  Pure: no system call; `ebpf_sys` loads the
result.

Register conventions (kernel ABI): r0 return value, r1-r5 arguments
(clobbered by calls and by the legacy packet loads `ld_abs`/`ld_ind`, which
also read the socket buffer from r6), r6-r9 callee-saved, r10 the read-only
frame pointer.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass

# ---- opcode fields (linux/bpf_common.h, linux/bpf.h) -------------------------
# instruction classes
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
# load/store sizes
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
SIZES = {1: B, 2: H, 4: W, 8: DW}
# load/store modes
IMM, ABS, IND, MEM, ATOMIC = 0x00, 0x20, 0x40, 0x60, 0xC0
# operand source
K, X = 0x00, 0x08
# ALU operations
ALU_OPS = {
    "add": 0x00, "sub": 0x10, "mul": 0x20, "div": 0x30, "or": 0x40, "and": 0x50,
    "lsh": 0x60, "rsh": 0x70, "neg": 0x80, "mod": 0x90, "xor": 0xA0, "mov": 0xB0,
    "arsh": 0xC0,
}
END = 0xD0
TO_LE, TO_BE = 0x00, 0x08
# jump operations ("ja" is unconditional)
JMP_OPS = {
    "ja": 0x00, "jeq": 0x10, "jgt": 0x20, "jge": 0x30, "jset": 0x40, "jne": 0x50,
    "jsgt": 0x60, "jsge": 0x70, "jlt": 0xA0, "jle": 0xB0, "jslt": 0xC0, "jsle": 0xD0,
}
CALL, EXIT = 0x80, 0x90
ATOMIC_ADD, ATOMIC_OR = 0x00, 0x40
PSEUDO_MAP_FD = 1  # src_reg of an ld_imm64 whose immediate is a map file descriptor

# Registers.
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)
FP = R10

# Helper function ids (linux/bpf.h `__BPF_FUNC_MAPPER`).
MAP_LOOKUP_ELEM = 1
MAP_UPDATE_ELEM = 2
MAP_DELETE_ELEM = 3
KTIME_GET_NS = 5
SKB_LOAD_BYTES = 26

INSN = struct.Struct("<BBhi" if sys.byteorder == "little" else ">BBhi")


class AsmError(ValueError):
    """A program that cannot be encoded (bad register, unknown label, range)."""


@dataclass(frozen=True, slots=True)
class Insn:
    """One `struct bpf_insn` slot."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    def encode(self) -> bytes:
        for name, reg in (("dst", self.dst), ("src", self.src)):
            if not 0 <= reg <= 10:
                raise AsmError(f"{name} register r{reg} is not r0..r10")
        if not -0x8000 <= self.off <= 0x7FFF:
            raise AsmError(f"offset {self.off} does not fit 16 bits (opcode {self.code:#04x})")
        if not -0x8000_0000 <= self.imm <= 0xFFFF_FFFF:
            raise AsmError(f"immediate {self.imm} does not fit 32 bits (opcode {self.code:#04x})")
        imm = self.imm - (1 << 32) if self.imm > 0x7FFF_FFFF else self.imm
        # The register byte is a C bitfield: dst in the low nibble on little-endian.
        regs = (self.src << 4 | self.dst) if sys.byteorder == "little" else (self.dst << 4 | self.src)
        return INSN.pack(self.code, regs, self.off, imm)


@dataclass(frozen=True, slots=True)
class _Jump:
    """A jump whose offset is resolved from a label at assembly time."""

    code: int
    dst: int
    src: int
    imm: int
    label: str


class Program:
    """An instruction list with labels.  Methods append and return `self`."""

    def __init__(self) -> None:
        self._items: list[Insn | _Jump] = []
        self._labels: dict[str, int] = {}
        self._fresh = 0

    def __len__(self) -> int:
        """Slots used so far (ld_imm64 counts two)."""
        return len(self._items)

    # ---- building -------------------------------------------------------------
    def emit(self, *insns: Insn) -> Program:
        self._items.extend(insns)
        return self

    def unique(self, prefix: str) -> str:
        """A label name not used yet (for code emitted more than once)."""
        self._fresh += 1
        return f"{prefix}.{self._fresh}"

    def label(self, name: str) -> Program:
        if name in self._labels:
            raise AsmError(f"label {name!r} defined twice")
        self._labels[name] = len(self._items)
        return self

    def alu(self, op: str, dst: int, src_or_imm: int, reg: bool = False, bits: int = 64) -> Program:
        """`dst op= src` (reg=True: `src_or_imm` is a register) on 64 or 32 bits."""
        cls = ALU64 if bits == 64 else ALU
        if reg:
            return self.emit(Insn(cls | ALU_OPS[op] | X, dst, src_or_imm))
        return self.emit(Insn(cls | ALU_OPS[op] | K, dst, 0, 0, src_or_imm))

    def mov(self, dst: int, imm: int) -> Program:
        return self.alu("mov", dst, imm)

    def movr(self, dst: int, src: int) -> Program:
        return self.alu("mov", dst, src, reg=True)

    def add(self, dst: int, imm: int) -> Program:
        return self.alu("add", dst, imm)

    def addr(self, dst: int, src: int) -> Program:
        return self.alu("add", dst, src, reg=True)

    def to_be(self, dst: int, bits: int) -> Program:
        """Host order -> big-endian (a byte swap on little-endian machines)."""
        return self.emit(Insn(ALU | END | TO_BE, dst, 0, 0, bits))

    def ld_imm64(self, dst: int, value: int, src: int = 0) -> Program:
        lo, hi = value & 0xFFFF_FFFF, (value >> 32) & 0xFFFF_FFFF
        return self.emit(Insn(LD | DW | IMM, dst, src, 0, lo), Insn(0, 0, 0, 0, hi))

    def ld_map_fd(self, dst: int, fd: int) -> Program:
        """Load a map: the verifier turns the descriptor into the map's address."""
        return self.ld_imm64(dst, fd, PSEUDO_MAP_FD)

    def ldx(self, size: int, dst: int, src: int, off: int) -> Program:
        """`dst = *(size *)(src + off)`."""
        return self.emit(Insn(LDX | SIZES[size] | MEM, dst, src, off))

    def stx(self, size: int, dst: int, off: int, src: int) -> Program:
        """`*(size *)(dst + off) = src`."""
        return self.emit(Insn(STX | SIZES[size] | MEM, dst, src, off))

    def st(self, size: int, dst: int, off: int, imm: int) -> Program:
        """`*(size *)(dst + off) = imm`."""
        return self.emit(Insn(ST | SIZES[size] | MEM, dst, 0, off, imm))

    def atomic_add(self, size: int, dst: int, off: int, src: int) -> Program:
        """`lock *(size *)(dst + off) += src` (size 4 or 8)."""
        if size not in (4, 8):
            raise AsmError(f"atomic add on {size} bytes: only 4 or 8")
        return self.emit(Insn(STX | SIZES[size] | ATOMIC, dst, src, off, ATOMIC_ADD))

    def atomic_or(self, size: int, dst: int, off: int, src: int) -> Program:
        """`lock *(size *)(dst + off) |= src` (size 4 or 8; kernel 5.12+)."""
        if size not in (4, 8):
            raise AsmError(f"atomic or on {size} bytes: only 4 or 8")
        return self.emit(Insn(STX | SIZES[size] | ATOMIC, dst, src, off, ATOMIC_OR))

    def ld_abs(self, size: int, off: int) -> Program:
        """`r0 = packet[off]` (network order to host; out of bounds ends the program with 0)."""
        return self.emit(Insn(LD | SIZES[size] | ABS, 0, 0, 0, off))

    def ld_ind(self, size: int, src: int, off: int) -> Program:
        """`r0 = packet[src + off]` (like `ld_abs`)."""
        return self.emit(Insn(LD | SIZES[size] | IND, 0, src, 0, off))

    def jump(self, op: str, dst: int, src_or_imm: int, label: str, reg: bool = False,
             bits: int = 64) -> Program:
        """`if dst op src_or_imm goto label` (64-bit compare unless bits=32)."""
        cls = JMP if bits == 64 else JMP32
        if reg:
            return self.emit_jump(_Jump(cls | JMP_OPS[op] | X, dst, src_or_imm, 0, label))
        return self.emit_jump(_Jump(cls | JMP_OPS[op] | K, dst, 0, src_or_imm, label))

    def goto(self, label: str) -> Program:
        return self.emit_jump(_Jump(JMP | JMP_OPS["ja"], 0, 0, 0, label))

    def emit_jump(self, jump: _Jump) -> Program:
        self._items.append(jump)
        return self

    def call(self, helper: int) -> Program:
        return self.emit(Insn(JMP | CALL, 0, 0, 0, helper))

    def exit(self) -> Program:
        return self.emit(Insn(JMP | EXIT))

    def ret(self, value: int) -> Program:
        return self.mov(R0, value).exit()

    # ---- output ----------------------------------------------------------------
    def instructions(self) -> list[Insn]:
        """The slots with every label resolved (`off` counts from the next slot)."""
        out: list[Insn] = []
        for pc, item in enumerate(self._items):
            if isinstance(item, Insn):
                out.append(item)
                continue
            if item.label not in self._labels:
                raise AsmError(f"jump to undefined label {item.label!r} at slot {pc}")
            off = self._labels[item.label] - (pc + 1)
            if not -0x8000 <= off <= 0x7FFF:
                raise AsmError(f"jump to {item.label!r} at slot {pc} is out of range")
            out.append(Insn(item.code, item.dst, item.src, off, item.imm))
        return out

    def assemble(self) -> bytes:
        return b"".join(insn.encode() for insn in self.instructions())
