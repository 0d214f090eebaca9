"""The hub as one simulated server: the real keyword index, and who listed each torrent.

Searches run on the hub's own `KeywordIndex` (SQLite FTS5, here in memory), on the listings'
own expiry; the publishers of each torrent whose listings have not expired stand for what the
hub's tracker would hand out. A node that left stays listed until its listing expires.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..hub.index import KeywordIndex
from ..hub.listing import DEFAULT_TTL, Listing

# Torrents one search returns at most (what `shoal search` asks for by default).
SEARCH_LIMIT = 50
# A node refreshes its listing this often (`seed` and `share`, cli.common.LISTING_REFRESH); it
# expires DEFAULT_TTL after its last refresh.
REFRESH = 1800


@dataclass(slots=True)
class SimHub:
    """The hub's index and its publishers, and the messages it handled."""

    index: KeywordIndex = field(default_factory=lambda: KeywordIndex(":memory:"))
    # info-hash (hex) -> publisher key (hex) -> when that listing expires
    publishers: dict[str, dict[str, int]] = field(default_factory=dict)
    publishes: int = 0
    searches: int = 0

    def publish(self, info_hash: bytes, name: str, size: int, public_key: str, at: float) -> None:
        """A node lists a torrent at time at (one message); it expires DEFAULT_TTL later."""
        listing = Listing(info_hash.hex(), name, size, (), int(at))
        self.index.publish(listing, public_key)
        self.publishers.setdefault(listing.info_hash, {})[public_key] = listing.expires_at
        self.publishes += 1

    def search(self, text: str, now: float) -> list[tuple[bytes, list[str]]]:
        """Torrents matching text, each with the keys whose listings of it are unexpired."""
        self.searches += 1
        found = []
        for hit in self.index.search(text, SEARCH_LIMIT, now):
            listed = self.publishers.get(hit.info_hash, {})
            keys = [key for key, expires_at in listed.items() if expires_at > now]
            found.append((bytes.fromhex(hit.info_hash), keys))
        return found

    def close(self) -> None:
        """Close the index."""
        self.index.close()


def last_refresh(joined: float, left: float, now: float) -> float | None:
    """When a node there from joined to left last refreshed its listings, if they have not
    expired by now."""
    refreshed = joined + REFRESH * ((left - joined) // REFRESH)
    return refreshed if refreshed + DEFAULT_TTL > now else None
