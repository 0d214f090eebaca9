"""Words of a name, as every keyword search in shoal sees them (the hub's index, the DHT's)."""

from __future__ import annotations

import re

# Letters and digits; '.', '-', '_', spaces and the rest separate (as FTS5's unicode61 does).
WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """The lower-cased words of text, in order."""
    return [word.lower() for word in WORD.findall(text)]


def name_matches(name: str, query: list[str]) -> bool:
    """Whether every word of query is a word of name, the last as a prefix (as the hub's
    index matches)."""
    if not query:
        return False
    have = words(name)
    *whole, last = query
    return all(word in have for word in whole) and any(word.startswith(last) for word in have)
