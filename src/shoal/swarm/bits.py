"""Conversions between wire bitfields and one-byte-per-piece arrays."""

from __future__ import annotations

from ..wire.messages import ProtocolError

# A byte per piece (0 or 1) is faster to index in Python than bit twiddling, and small.
_EXPAND = [bytes((byte >> (7 - bit)) & 1 for bit in range(8)) for byte in range(256)]
_PACK = {pattern: byte for byte, pattern in enumerate(_EXPAND)}


def from_wire(bits: bytes, num_pieces: int) -> bytearray:
    """Expand a wire bitfield, rejecting a wrong length or set spare bits."""
    if len(bits) != (num_pieces + 7) // 8:
        raise ProtocolError(f"bitfield of {len(bits)} bytes for {num_pieces} pieces")
    expanded = bytearray(b"".join(_EXPAND[byte] for byte in bits))
    if any(expanded[num_pieces:]):
        raise ProtocolError("bitfield sets bits past the last piece")
    del expanded[num_pieces:]
    return expanded


def to_wire(have: bytearray) -> bytes:
    """Pack a one-byte-per-piece array into a wire bitfield."""
    padded = bytes(have) + bytes(-len(have) % 8)
    return bytes(_PACK[padded[i : i + 8]] for i in range(0, len(padded), 8))
