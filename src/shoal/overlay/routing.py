"""What an overlay node remembers to route queries: the query ids it has seen (each query is
handled once), and query routing tables (QRP), with which an ultrapeer forwards a query only
to the leaves that may hold a match.

A query routing table is QRP_BITS bits, one set for each keyword a node's listings could
match. A query matches a listing's name when the name holds every word of the query and the
last as a prefix, so the table holds each word's prefixes of MIN_PREFIX letters and more; a
query may match if every one of its words of MIN_PREFIX letters or more hashes to a set bit.
Shorter words cannot be filtered on and pass.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from ..words import words
from .messages import QRP_BITS, QRP_BYTES

MIN_PREFIX = 3
# Queries remembered, and for how long: a query's flood is over in well under a minute.
SEEN_CAPACITY = 20_000
SEEN_LIFETIME = 120.0
# The route of a node's own searches.
OWN = -1


def _slot(word: str) -> int:
    """The bit a word (or prefix) sets in a query routing table."""
    digest = hashlib.sha1(b"shoal-qrp\0" + word.encode()).digest()
    return int.from_bytes(digest[:4], "big") % QRP_BITS


class QueryRouteTable:
    """The keyword slots of a set of names."""

    def __init__(self, bits: bytes | None = None) -> None:
        if bits is not None and len(bits) != QRP_BYTES:
            raise ValueError(f"a query routing table is {QRP_BYTES} bytes, not {len(bits)}")
        self._bits = bytearray(bits if bits is not None else QRP_BYTES)

    @classmethod
    def of(cls, names: Iterable[str]) -> QueryRouteTable:
        """The table of these names."""
        table = cls()
        for name in names:
            table.add(name)
        return table

    def add(self, name: str) -> None:
        """Set the slots of every prefix of every word of name."""
        for word in words(name):
            for end in range(MIN_PREFIX, len(word) + 1):
                slot = _slot(word[:end])
                self._bits[slot >> 3] |= 0x80 >> (slot & 7)

    def may_match(self, query: str) -> bool:
        """Whether a name under this table may hold every word of query."""
        for word in words(query):
            if len(word) < MIN_PREFIX:
                continue
            slot = _slot(word)
            if not self._bits[slot >> 3] & (0x80 >> (slot & 7)):
                return False
        return True

    def to_bytes(self) -> bytes:
        """The table as a QrpTable message carries it."""
        return bytes(self._bits)

    def fill(self) -> float:
        """The share of slots set (a table near full filters nothing)."""
        return sum(bin(byte).count("1") for byte in self._bits) / QRP_BITS


@dataclass(slots=True)
class Route:
    """Where a query came from (the link its hits go back by), and what went back."""

    seen_at: float
    link: int  # OWN for the node's own searches
    results: int = 0  # results of hits sent back along this route
    ttl: int = 0  # the most TTL the query came with: a copy with more may go further


class SeenIds:
    """Query ids seen lately and the link each came by first, so that a node handles each
    query once however many neighbours forward it, and hits find their way back; bounded in
    number and in time."""

    def __init__(self, capacity: int = SEEN_CAPACITY, lifetime: float = SEEN_LIFETIME) -> None:
        self.capacity = capacity
        self.lifetime = lifetime
        self._seen: OrderedDict[bytes, Route] = OrderedDict()  # in the order first seen

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._seen

    def first_time(self, message_id: bytes, now: float, link: int = OWN) -> bool:
        """Note message_id, come by link; whether it was new (not seen within the lifetime)."""
        seen = self._seen
        while seen:
            oldest, route = next(iter(seen.items()))
            if now - route.seen_at < self.lifetime and len(seen) < self.capacity:
                break
            del seen[oldest]
        if message_id in seen:
            return False
        seen[message_id] = Route(now, link)
        return True

    def route(self, message_id: bytes) -> Route | None:
        """Where message_id came from, if it is remembered."""
        return self._seen.get(message_id)
