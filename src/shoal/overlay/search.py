"""A search as its origin keeps it, and the arithmetic of the three strategies: a flood with a
TTL, k random walkers that check back every few hops, and dynamic querying as LimeWire did it
(a probe, then one link at a time with a TTL sized to the results still wanted)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

# A flood's default TTL, and the most any query may carry (Gnutella's 7).
FLOOD_TTL = 4
MAX_FLOOD_TTL = 7
# Walkers: how many, and how far at most (Lv et al. 2002 used 16-64 walkers that check
# back with the origin every 4 hops). Here links are TCP and a walker's node asks the origin
# back along the reverse path, whose length grows with the walk: so it asks after 4 hops,
# then after 8, 16, 32..., and checking costs at most about twice the walk itself.
WALKERS = 16
WALK_TTL = 128
MAX_WALK_TTL = 200
CHECK_EVERY = 4
# Results a search stops at, by default.
WANTED = 20
# How long a search waits for late hits after its last step, per hop of its TTL.
WAIT_PER_HOP = 0.5
# A walk ends by this long at the latest.
WALK_DEADLINE = 30.0
# Dynamic querying: the probe's TTL and links, and the TTL no step exceeds.
PROBE_TTL = 2
PROBE_LINKS = 3
MAX_DYNAMIC_TTL = 4


class Strategy(enum.StrEnum):
    """How a query is spread."""

    FLOOD = "flood"
    WALK = "walk"
    DYNAMIC = "dynamic"


@dataclass(slots=True, eq=False)
class Search:
    """A search this node started."""

    id: bytes
    words: str
    strategy: Strategy
    wanted: int
    ttl: int
    started: float
    deadline: float  # it ends at this time if no step or result ends it sooner
    results: set[tuple[bytes, bytes]] = field(default_factory=set)  # (holder id, info-hash)
    ended: bool = False
    # Dynamic querying: the TTL each link was asked with so far, and how many nodes those
    # steps could reach.
    asked: dict[int, int] = field(default_factory=dict)
    reached: float = 0.0
    next_step: float | None = None

    def enough(self) -> bool:
        """Whether the search has the results it wanted."""
        return len(self.results) >= self.wanted


def horizon(ttl: int, degree: int) -> float:
    """Nodes a query sent down one link with ttl may reach in a random graph of this degree:
    the first node, then degree - 1 new ones per node per further hop."""
    branching = max(1, degree - 1)
    return float(sum(branching**hop for hop in range(ttl)))


def step_ttl(search: Search, links_left: int, degree: int) -> int:
    """The TTL of a dynamic query's next step: the least that, over the links left, reaches as
    many nodes as the results still wanted need at the rate seen so far."""
    missing = search.wanted - len(search.results)
    if not search.results or search.reached <= 0:
        return MAX_DYNAMIC_TTL - 1  # nothing found yet: go wide, but keep the last TTL back
    per_node = len(search.results) / search.reached
    needed_per_link = missing / per_node / max(1, links_left)
    for ttl in range(1, MAX_DYNAMIC_TTL + 1):
        if horizon(ttl, degree) >= needed_per_link:
            return ttl
    return MAX_DYNAMIC_TTL


def wait_after(ttl: int) -> float:
    """How long to wait for the hits of a query sent with ttl."""
    return WAIT_PER_HOP * max(1, ttl) + WAIT_PER_HOP


def walker_ttl(ttl: int | None) -> int:
    """A walker's TTL, within the cap."""
    return max(1, min(MAX_WALK_TTL, ttl if ttl is not None else WALK_TTL))


def flood_ttl(ttl: int | None) -> int:
    """A flood's TTL, within the cap."""
    return max(1, min(MAX_FLOOD_TTL, ttl if ttl is not None else FLOOD_TTL))


def walkers_per_link(walkers: int, links: int) -> list[int]:
    """Walkers sent down each of links links, as even as can be."""
    if links <= 0:
        return []
    base, extra = divmod(walkers, links)
    return [base + (1 if index < extra else 0) for index in range(links)]


def check_due(hops: int) -> bool:
    """Whether a walker that has made hops hops asks the origin before going on: after
    CHECK_EVERY hops, and each time its walk has doubled since."""
    rounds, rest = divmod(hops, CHECK_EVERY)
    return rest == 0 and rounds > 0 and rounds & (rounds - 1) == 0


# A query for one torrent by its info-hash, as Gnutella's URN queries were: "btih HEX".
HASH_WORD = "btih"


def hash_query(info_hash: bytes) -> str:
    """The query text that finds the holders of info_hash."""
    return f"{HASH_WORD} {info_hash.hex()}"


def queried_hash(query: list[str]) -> bytes | None:
    """The info-hash a query's words ask for, if it is a hash query."""
    if len(query) == 2 and query[0] == HASH_WORD and len(query[1]) == 40:
        try:
            return bytes.fromhex(query[1])
        except ValueError:
            return None
    return None
