"""The eBPF assembler: instruction encodings against the kernel's ABI (the bytes
the kernel's `BPF_*` macros and `llvm-objdump` show, little-endian as on the
CI machines), label resolution, and errors for what cannot be encoded; the
flow program's map layouts."""

from __future__ import annotations

import struct

import pytest

from skygraph.capture.ebpf_asm import FP, KTIME_GET_NS, R0, R1, R2, R6, R9, AsmError, Insn, Program
from skygraph.capture.ebpf_prog import FLOW_KEY, FLOW_VALUE, HEAD_SIZE, KEY, VALUE, flow_program


def hexes(p: Program) -> list[str]:
    code = p.assemble()
    return [code[i:i + 8].hex(" ") for i in range(0, len(code), 8)]


@pytest.mark.parametrize(("build", "expected"), [
    (lambda p: p.mov(R0, 0), "b7 00 00 00 00 00 00 00"),  # r0 = 0
    (lambda p: p.exit(), "95 00 00 00 00 00 00 00"),  # exit
    (lambda p: p.movr(R6, R1), "bf 16 00 00 00 00 00 00"),  # r6 = r1
    (lambda p: p.add(R2, -4), "07 02 00 00 fc ff ff ff"),  # r2 += -4
    (lambda p: p.alu("and", R0, 0x0F, bits=32), "54 00 00 00 0f 00 00 00"),  # w0 &= 15
    (lambda p: p.alu("lsh", R0, 24), "67 00 00 00 18 00 00 00"),  # r0 <<= 24
    (lambda p: p.alu("or", R1, R0, reg=True), "4f 01 00 00 00 00 00 00"),  # r1 |= r0
    (lambda p: p.to_be(R0, 16), "dc 00 00 00 10 00 00 00"),  # r0 = be16 r0
    (lambda p: p.ldx(4, R0, R6, 20), "61 60 14 00 00 00 00 00"),  # r0 = *(u32 *)(r6 + 20)
    (lambda p: p.ldx(8, R1, R9, 96), "79 91 60 00 00 00 00 00"),  # r1 = *(u64 *)(r9 + 96)
    (lambda p: p.stx(2, FP, -16, R0), "6b 0a f0 ff 00 00 00 00"),  # *(u16 *)(r10 - 16) = r0
    (lambda p: p.st(8, FP, -8, 0), "7a 0a f8 ff 00 00 00 00"),  # *(u64 *)(r10 - 8) = 0
    (lambda p: p.st(1, FP, -13, 1), "72 0a f3 ff 01 00 00 00"),  # *(u8 *)(r10 - 13) = 1
    (lambda p: p.atomic_add(8, R9, 0, R1), "db 19 00 00 00 00 00 00"),  # lock *(u64 *)(r9) += r1
    (lambda p: p.atomic_or(4, R9, 128, R2), "c3 29 80 00 40 00 00 00"),  # lock *(u32 *) |= r2
    (lambda p: p.ld_abs(2, 12), "28 00 00 00 0c 00 00 00"),  # r0 = ntohs(*(u16 *)skb[12])
    (lambda p: p.ld_ind(1, R9, -2), "50 90 00 00 fe ff ff ff"),  # r0 = *(u8 *)skb[r9 - 2]
    (lambda p: p.call(KTIME_GET_NS), "85 00 00 00 05 00 00 00"),  # call bpf_ktime_get_ns
])
def test_instruction_encodings(build: object, expected: str) -> None:
    p = Program()
    build(p)  # type: ignore[operator]
    assert hexes(p) == [expected]


def test_ld_imm64_takes_two_slots_and_map_fds_are_pseudo() -> None:
    p = Program().ld_map_fd(R1, 5).ld_imm64(R2, 0x1122334455667788)
    assert len(p) == 4
    assert hexes(p) == ["18 11 00 00 05 00 00 00", "00 00 00 00 00 00 00 00",
                        "18 02 00 00 88 77 66 55", "00 00 00 00 44 33 22 11"]


def test_jumps_count_slots_from_the_next_instruction() -> None:
    p = Program()
    p.label("top").jump("jeq", R0, 0, "end").ld_imm64(R1, 1).jump("jgt", R1, R2, "top", reg=True)
    p.goto("end").label("end").exit()
    assert hexes(p) == [
        "15 00 04 00 00 00 00 00",  # if r0 == 0 goto +4 (ld_imm64 is 2 slots)
        "18 01 00 00 01 00 00 00", "00 00 00 00 00 00 00 00",
        "2d 21 fc ff 00 00 00 00",  # if r1 > r2 goto -4
        "05 00 00 00 00 00 00 00",  # goto +0
        "95 00 00 00 00 00 00 00",
    ]
    # A negative immediate compares against the sign-extended value (-EEXIST).
    assert hexes(Program().jump("jeq", R0, -17, "x").label("x").exit())[0] == \
        "15 00 00 00 ef ff ff ff"


def test_unique_labels() -> None:
    p = Program()
    assert p.unique("skip") != p.unique("skip")


@pytest.mark.parametrize(("build", "message"), [
    (lambda p: p.goto("nowhere").exit(), "undefined label 'nowhere' at slot 0"),
    (lambda p: p.label("a").label("a"), "label 'a' defined twice"),
    (lambda p: p.mov(11, 0), "dst register r11 is not r0..r10"),
    (lambda p: p.ldx(8, R0, R1, 0x8000), "offset 32768 does not fit 16 bits"),
    (lambda p: p.mov(R0, 1 << 32), "immediate 4294967296 does not fit 32 bits"),
    (lambda p: p.atomic_add(2, R1, 0, R2), "atomic add on 2 bytes"),
])
def test_what_cannot_be_encoded_is_an_error(build: object, message: str) -> None:
    p = Program()
    with pytest.raises(AsmError, match=message):
        build(p)  # type: ignore[operator]
        p.assemble()


def test_far_jump_is_an_error() -> None:
    p = Program().goto("far")
    for _ in range(0x8000):
        p.mov(R0, 0)
    p.label("far").exit()
    with pytest.raises(AsmError, match="jump to 'far' at slot 0 is out of range"):
        p.assemble()


def test_insn_round_trip() -> None:
    raw = Insn(0x61, 3, 6, -4, -1).encode()
    code, regs, off, imm = struct.unpack("<BBhi", raw)
    assert (code, regs & 0xF, regs >> 4, off, imm) == (0x61, 3, 6, -4, -1)


def test_flow_program_layouts_and_frame() -> None:
    assert (FLOW_KEY.size, FLOW_VALUE.size) == (48, 136 + HEAD_SIZE)
    assert FLOW_VALUE.offset("head") % 8 == 0
    assert VALUE >= -512 and KEY % 8 == 0  # the eBPF stack is 512 bytes
    code = flow_program(3, 4).assemble()
    assert len(code) % 8 == 0 and code[:8] == bytes.fromhex("bf16000000000000")  # r6 = r1
    assert code[-16:] == bytes.fromhex("b700000000000000 9500000000000000")  # return 0
    # Both map descriptors are loaded as pseudo map fds.
    slots = [code[i:i + 8] for i in range(0, len(code), 8)]
    fds = {int.from_bytes(s[4:], "little") for s in slots if s[0] == 0x18 and s[1] >> 4 == 1}
    assert fds == {3, 4}
