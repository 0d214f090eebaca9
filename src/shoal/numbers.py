"""Numbers written by strangers (ports, counts, sizes), read with a bound before any work."""

from __future__ import annotations


def bounded_int(text: str | bytes, low: int, high: int) -> int | None:
    """The integer written in ASCII digits in text if low <= it <= high, else None."""
    # Checked before int(): it takes other digits ("²", "٣"), signs, spaces and underscores,
    # and thousands of digits cost time (or raise ValueError past Python's limit).
    if not text or len(text) > len(str(high)) or not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if low <= number <= high else None
