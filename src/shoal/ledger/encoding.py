"""Bounded readers and writers of the ledger's binary forms: fixed-width little-endian
integers, canonical CompactSize counts, and length-prefixed bytes."""

from __future__ import annotations

import struct

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class DecodeError(ValueError):
    """Bytes from outside that are not a well-formed ledger object."""


def compact_size(number: int) -> bytes:
    """Bitcoin's CompactSize: one byte below 0xfd, else a marker and 2, 4 or 8 bytes."""
    if number < 0xFD:
        return bytes((number,))
    if number <= 0xFFFF:
        return b"\xfd" + _U16.pack(number)
    if number <= 0xFFFFFFFF:
        return b"\xfe" + _U32.pack(number)
    return b"\xff" + _U64.pack(number)


class Reader:
    """Reads one object from bytes; every count and length is checked against a bound and
    against what is left, so a stranger's numbers never make us allocate or loop."""

    __slots__ = ("data", "offset")

    def __init__(self, data: bytes | memoryview, offset: int = 0) -> None:
        self.data = memoryview(data)
        self.offset = offset

    def take(self, length: int) -> bytes:
        """The next length bytes."""
        end = self.offset + length
        if end > len(self.data):
            raise DecodeError(f"truncated: {length} bytes wanted, {self.left()} left")
        chunk = bytes(self.data[self.offset : end])
        self.offset = end
        return chunk

    def left(self) -> int:
        """Bytes not yet read."""
        return len(self.data) - self.offset

    def u8(self) -> int:
        """One unsigned byte."""
        return self.take(1)[0]

    def u32(self) -> int:
        """A little-endian unsigned 32-bit integer."""
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def u64(self) -> int:
        """A little-endian unsigned 64-bit integer."""
        value: int = _U64.unpack(self.take(8))[0]
        return value

    def count(self, limit: int) -> int:
        """A canonical CompactSize no larger than limit (a shorter form must be used where
        one fits, so each object has one encoding and one hash)."""
        first = self.u8()
        if first < 0xFD:
            number = first
        elif first == 0xFD:
            number = _U16.unpack(self.take(2))[0]
            if number < 0xFD:
                raise DecodeError("a count not in its shortest form")
        elif first == 0xFE:
            number = self.u32()
            if number <= 0xFFFF:
                raise DecodeError("a count not in its shortest form")
        else:
            number = self.u64()
            if number <= 0xFFFFFFFF:
                raise DecodeError("a count not in its shortest form")
        if number > limit:
            raise DecodeError(f"a count of {number} is over the limit of {limit}")
        return number

    def var_bytes(self, limit: int) -> bytes:
        """Bytes after their CompactSize length, at most limit of them."""
        return self.take(self.count(limit))

    def end(self) -> None:
        """Raise unless every byte was read: trailing bytes would give one object two forms."""
        if self.left():
            raise DecodeError(f"{self.left()} bytes left over")


def u32(number: int) -> bytes:
    """number as 4 little-endian bytes."""
    return _U32.pack(number)


def u64(number: int) -> bytes:
    """number as 8 little-endian bytes."""
    return _U64.pack(number)


def var_bytes(data: bytes) -> bytes:
    """data after its CompactSize length."""
    return compact_size(len(data)) + data
