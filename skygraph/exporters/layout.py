"""Declared wire layouts: headers and records as tables of named fields.

Owns `Layout` (byte-aligned fields -> one big-endian `struct.Struct`, packed
and unpacked by field name) and `BitWord` (a 16- or 32-bit word made of bit
fields, most significant first), so each format module declares its headers
as field tables the way the specifications print them, not as offsets.
Pure.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping


class Layout:
    """Byte-aligned fields in wire order: `Layout("hdr", ("version", "H"), ...)`."""

    __slots__ = ("fields", "name", "size", "struct")

    def __init__(self, name: str, *fields: tuple[str, str]) -> None:
        self.name = name
        self.fields = tuple(f for f, _ in fields)
        self.struct = struct.Struct("!" + "".join(code for _, code in fields))
        self.size = self.struct.size

    def pack(self, **values: int | bytes) -> bytes:
        """Pack by field name (every field, no other).  Hot paths call
        `self.struct.pack` with the values in field order instead."""
        try:
            if len(values) == len(self.fields):
                return self.struct.pack(*[values[f] for f in self.fields])
        except KeyError:
            pass
        except struct.error as exc:
            raise ValueError(f"{self.name}: {exc} in {values}") from None
        missing = [f for f in self.fields if f not in values]
        extra = [f for f in values if f not in self.fields]
        raise ValueError(f"{self.name}: missing fields {missing}, unknown fields {extra}")

    def unpack(self, data: bytes, offset: int = 0) -> dict[str, int | bytes]:
        return dict(zip(self.fields, self.struct.unpack_from(data, offset), strict=True))


class BitWord:
    """A word of bit fields, most significant first: `BitWord("w", 16, ("ver", 4), ...)`."""

    __slots__ = ("bits", "fields", "name", "shifts", "widths")

    def __init__(self, name: str, bits: int, *fields: tuple[str, int]) -> None:
        total = sum(w for _, w in fields)
        if total != bits:
            raise ValueError(f"{name}: fields take {total} bits, not {bits}")
        self.name = name
        self.bits = bits
        self.fields = tuple(f for f, _ in fields)
        self.widths = {f: w for f, w in fields}
        shifts: dict[str, int] = {}
        left = bits
        for f, w in fields:
            left -= w
            shifts[f] = left
        self.shifts = shifts

    def pack(self, **values: int) -> int:
        word = 0
        for f in self.fields:
            value = values.get(f, 0)
            if not 0 <= value < 1 << self.widths[f]:
                raise ValueError(f"{self.name}: {f}={value} does not fit {self.widths[f]} bits")
            word |= value << self.shifts[f]
        unknown = set(values) - set(self.fields)
        if unknown:
            raise ValueError(f"{self.name}: unknown fields {sorted(unknown)}")
        return word

    def unpack(self, word: int) -> Mapping[str, int]:
        return {f: (word >> self.shifts[f]) & ((1 << self.widths[f]) - 1) for f in self.fields}
