"""Proof of work: compact targets (Bitcoin's nBits), the work a target stands for, and the
retarget rule."""

from __future__ import annotations


def target_from_bits(bits: int) -> int:
    """The 256-bit target a compact form stands for; ValueError for a negative or
    overflowing one (they are never valid)."""
    exponent = bits >> 24
    mantissa = bits & 0x007FFFFF
    if bits & 0x00800000 and mantissa:
        raise ValueError(f"compact target {bits:#010x} is negative")
    target = mantissa >> 8 * (3 - exponent) if exponent <= 3 else mantissa << 8 * (exponent - 3)
    if target >> 256:
        raise ValueError(f"compact target {bits:#010x} overflows 256 bits")
    return target


def bits_from_target(target: int) -> int:
    """The compact form of target (rounded down, as Bitcoin rounds)."""
    size = (target.bit_length() + 7) // 8
    mantissa = target << 8 * (3 - size) if size <= 3 else target >> 8 * (size - 3)
    if mantissa & 0x00800000:  # the sign bit: move a byte into the exponent
        mantissa >>= 8
        size += 1
    return (size << 24) | mantissa


def work_of(target: int) -> int:
    """Expected hashes to meet target: what "most work" adds up."""
    return (1 << 256) // (target + 1)


def meets_target(block_hash: bytes, target: int) -> bool:
    """Whether a block hash (read as a little-endian number) is at or below target."""
    return int.from_bytes(block_hash, "little") <= target


def retarget(old_target: int, actual_span: int, wanted_span: int, limit: int) -> int:
    """The next period's target: scaled by how long the last one took against how long it
    should have, the change clamped to four times either way, never easier than limit."""
    span = min(max(actual_span, wanted_span // 4), wanted_span * 4)
    return min(old_target * span // wanted_span, limit)
