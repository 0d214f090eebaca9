"""Words of a name, as every keyword search in shoal sees them (the hub's index, the DHT's)."""

from __future__ import annotations

import re

# Letters and digits; '.', '-', '_', spaces and the rest separate (as FTS5's unicode61 does).
WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """The lower-cased words of text, in order."""
    return [word.lower() for word in WORD.findall(text)]
