"""The overlay core: one node's links to its neighbours, and the queries that flow over them.

A sans-IO core of the one shape (see shoal.contract). The adapter (or the simulator) opens
the TCP connections the core asks for with `Dial`, reports them with `connected`,
`dial_failed`, `accept` and `closed`, feeds their bytes to `receive`, writes `Send`s, and
closes on `Close`. Everything else is decided here, so the simulator runs the same policy:
whom to dial and how many, which links to refuse, which queries to answer, forward, drop or
hold back, and when a search is over.

In layers, each calling only those below: `links.LinkLayer` (links, roles, dialling,
pings and pongs) <- `queries.QueryRouting` (queries, hits, walkers' questions) <-
`OverlayNode` here (the node's own searches: starting them, widening dynamic ones, ending
them).
"""

from __future__ import annotations

from ..contract import Close, Send
from ..words import words
from .links import (
    MAINTAIN_EVERY,
    Counters,
    Dial,
    Found,
    Link,
    Output,
    SearchEnded,
)
from .messages import Message, Query
from .queries import MAX_SEARCH_RESULTS, QueryRouting
from .routing import OWN
from .search import (
    MAX_DYNAMIC_TTL,
    MAX_WALK_TTL,
    PROBE_LINKS,
    PROBE_TTL,
    WALK_DEADLINE,
    WALKERS,
    WANTED,
    Search,
    Strategy,
    flood_ttl,
    horizon,
    step_ttl,
    wait_after,
    walker_ttl,
    walkers_per_link,
)

__all__ = [
    "Close",
    "Counters",
    "Dial",
    "Found",
    "Link",
    "Output",
    "OverlayNode",
    "SearchEnded",
    "Send",
]


class OverlayNode(QueryRouting):
    """One node of the overlay."""

    def get_timer(self) -> float | None:
        soonest = self._next_maintenance
        for search in self._searches.values():
            if not search.ended:
                soonest = min(soonest, search.deadline)
                if search.next_step is not None:
                    soonest = min(soonest, search.next_step)
        return soonest

    def handle_timer(self, now: float) -> None:
        self._now = now
        for search in list(self._searches.values()):
            if search.ended:
                continue
            if search.next_step is not None and search.next_step <= now:
                self._dynamic_step(search)
            if not search.ended and search.deadline <= now:
                self._end(search)
        if now >= self._next_maintenance:
            self._next_maintenance = now + MAINTAIN_EVERY
            self._maintain()
            self._expire()

    def search(
        self,
        text: str,
        strategy: Strategy,
        now: float,
        *,
        wanted: int = WANTED,
        ttl: int | None = None,
        walkers: int = WALKERS,
    ) -> bytes:
        """Start a search for the words of text; its id, which its Found events carry."""
        self._now = now
        search_id = self._new_id()
        self.seen.first_time(search_id, now, OWN)
        own = self.seen.route(search_id)
        assert own is not None
        own.ttl = MAX_WALK_TTL  # our own query, come back, goes no further from here
        query = Query(" ".join(words(text)), walk=strategy == Strategy.WALK)
        wanted = max(1, min(wanted, MAX_SEARCH_RESULTS))
        search = Search(search_id, query.words, strategy, wanted, PROBE_TTL, now, now)
        self._searches[search_id] = search
        if strategy == Strategy.DYNAMIC:
            self._probe(search)
            return search_id
        if strategy == Strategy.WALK:
            search.ttl = walker_ttl(ttl)
            search.deadline = now + WALK_DEADLINE
            links = self._ultrapeers()
            self.rng.shuffle(links)
            counts = walkers_per_link(walkers, len(links))
        else:
            search.ttl = flood_ttl(ttl)
            search.deadline = now + wait_after(search.ttl)
            links = self._ultrapeers()
            counts = [1] * len(links)
        for link, count in zip(links, counts, strict=True):
            for _ in range(count):
                self._send_query(link, Message(search_id, search.ttl, 0, query))
        self._to_leaves(Message(search_id, 1, 0, Query(query.words)), None)
        return search_id

    def _probe(self, search: Search) -> None:
        """Dynamic querying's first step: a short query down a few links."""
        links = self._ultrapeers()
        self.rng.shuffle(links)
        query = Query(search.words)
        for link in links[:PROBE_LINKS]:
            self._send_query(link, Message(search.id, PROBE_TTL, 0, query))
            search.asked[link.number] = PROBE_TTL
            search.reached += horizon(PROBE_TTL, self._degree_seen())
        self._to_leaves(Message(search.id, 1, 0, query), None)
        search.next_step = self._now + wait_after(PROBE_TTL)
        search.deadline = search.next_step + wait_after(PROBE_TTL)

    def _dynamic_step(self, search: Search) -> None:
        """Widen a dynamic query by one link, with a TTL sized to what is missing: a link
        not asked yet, else the one asked with the least TTL, again with more."""
        if search.enough():
            self._end(search)
            return
        asked = search.asked
        open_to_more = [
            link for link in self._ultrapeers() if asked.get(link.number, 0) < MAX_DYNAMIC_TTL
        ]
        if not open_to_more:
            search.next_step = None
            return
        fresh = [link for link in open_to_more if link.number not in asked]
        if fresh:
            link = self.rng.choice(fresh)
        else:
            link = min(open_to_more, key=lambda other: asked[other.number])
        degree = self._degree_seen()
        before = asked.get(link.number, 0)
        ttl = max(step_ttl(search, len(fresh) or len(open_to_more), degree), before + 1)
        ttl = min(ttl, MAX_DYNAMIC_TTL)
        self._send_query(link, Message(search.id, ttl, 0, Query(search.words)))
        asked[link.number] = ttl
        search.reached += horizon(ttl, degree) - horizon(before, degree)
        search.ttl = ttl
        search.next_step = self._now + wait_after(ttl)
        search.deadline = search.next_step + wait_after(ttl)

    def _degree_seen(self) -> int:
        """The overlay's degree as this node sees it (its own ultrapeer links)."""
        return max(2, len(self._ultrapeers()))
