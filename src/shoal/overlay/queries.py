"""How queries travel: each answered and forwarded once (a copy with more TTL goes further),
floods to every ultrapeer link, walkers to one at a time, parked every so often while their
node asks the origin back along the route; hits back along the route; and an ultrapeer's
leaves asked only what their routing tables may hold."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..words import name_matches
from .links import TARGET_DEGREE, Found, Link, LinkLayer, SearchEnded
from .messages import MAX_HITS, Message, Query, QueryHit, QueryStatus, Role
from .routing import OWN, SeenIds
from .search import MAX_FLOOD_TTL, MAX_WALK_TTL, Search, check_due, queried_hash

# Results forwarded back along one query's route, at most; results one search counts.
MAX_ROUTED_RESULTS = 256
MAX_SEARCH_RESULTS = 1000
# Walkers held while their node asks the origin whether to go on, and for how long at most;
# questions relayed toward origins and not yet answered.
MAX_PARKED = 1000
PARK_TIMEOUT = 10.0
MAX_QUESTIONS = 5000
MAX_QUESTIONS_PER_QUERY = 32
# What stands for "this walker, parked here" among the askers of a query's question.
PARKED = -2
# A hit's holder IP is left unspecified by its sender and filled in by the first hop.
UNSPECIFIED = "0.0.0.0"


@dataclass(slots=True)
class _Parked:
    """A walker waiting at this node for its origin's word."""

    message: Message  # as it goes on, its ttl and hops already moved
    came_by: int
    until: float


class QueryRouting(LinkLayer):
    """Routes queries, hits and statuses over the links; keeps the node's own searches' tally."""

    def __init__(
        self,
        node_id: bytes,
        port: int,
        role: Role,
        rng: random.Random,
        *,
        degree: int = TARGET_DEGREE,
        now: float = 0.0,
    ) -> None:
        super().__init__(node_id, port, role, rng, degree=degree, now=now)
        self.seen = SeenIds()
        self._searches: dict[bytes, Search] = {}  # this node's own, by id
        # Per query: who asked the origin through us (a link, or PARKED for a walker here).
        self._questions: dict[bytes, list[int]] = {}
        self._question_count = 0
        self._parked: dict[bytes, list[_Parked]] = {}
        self._parked_count = 0

    def _on_traffic(self, link: Link, message: Message) -> None:
        payload = message.payload
        if message.hops >= MAX_WALK_TTL:
            return  # further than any query goes: and one more hop would not fit its byte
        if isinstance(payload, Query):
            self._on_query(link, message, payload)
        elif isinstance(payload, QueryHit):
            self._on_hit(link, message, payload)
        elif isinstance(payload, QueryStatus):
            self._on_status(link, message, payload)

    def _on_query(self, link: Link, message: Message, query: Query) -> None:
        self.counters.queries_received += 1
        if not self._spend(link):
            return
        cap = MAX_WALK_TTL if query.walk else MAX_FLOOD_TTL
        ttl = min(message.ttl, cap - message.hops)
        if ttl <= 0:
            return
        first = self.seen.first_time(message.id, self._now, link.number)
        route = self.seen.route(message.id)
        assert route is not None
        if first:
            route.ttl = ttl
        elif query.walk:
            if self._finished_here(message.id):
                self.counters.duplicates += 1
                return
        elif ttl > route.ttl:
            # A copy that can go further than the one handled (a dynamic query's wider step,
            # or a flood's faster but longer way): forwarded again, not answered again.
            route.ttl = ttl
        else:
            self.counters.duplicates += 1
            return
        if first:
            self._answer(link, message, query)
            if self.role == Role.ULTRAPEER:
                self._to_leaves(Message(message.id, 1, message.hops + 1, Query(query.words)), link)
        if self.role == Role.LEAF or ttl <= 1:
            return
        onward = Message(message.id, ttl - 1, message.hops + 1, query)
        if not query.walk:
            for other in self._ultrapeers():
                if other is not link:
                    self._send_query(other, onward)
        elif check_due(onward.hops) and self._route_link(message.id) is not None:
            self._park(onward, link)
        else:
            self._walk_on(onward, link)

    def _finished_here(self, query_id: bytes) -> bool:
        """Whether query_id is a search of ours that is over (a walker back home stops)."""
        route = self.seen.route(query_id)
        if route is None or route.link != OWN:
            return False
        search = self._searches.get(query_id)
        return search is None or search.ended or search.enough()

    def _answer(self, link: Link, message: Message, query: Query) -> None:
        """Send back what this node holds that matches."""
        wanted = query.words.split()
        info_hash = queried_hash(wanted)
        if info_hash is not None:
            matches = [r for r in self._listings if r.info_hash == info_hash][:1]
        else:
            matches = [r for r in self._listings if name_matches(r.name, wanted)][:MAX_HITS]
        if matches:
            hit = QueryHit((UNSPECIFIED, self.port), self.node_id, tuple(matches))
            self.counters.hits_sent += 1
            self._send(link, Message(message.id, message.hops + 1, 0, hit))

    def _to_leaves(self, message: Message, came_by: Link | None) -> None:
        """Hand a query to the leaves whose routing tables say they may hold a match."""
        assert isinstance(message.payload, Query)
        text = message.payload.words
        for link in self._links.values():
            table = link.table
            if link is not came_by and table is not None and table.may_match(text):
                self._send_query(link, message)

    def _send_query(self, link: Link, message: Message) -> None:
        if link.paused_since is None:
            self.counters.queries_sent += 1
            self._send(link, message)

    def _walk_on(self, walker: Message, came_by: Link | None) -> None:
        """Send a walker to one random ultrapeer neighbour, back only if there is no other."""
        choices = [link for link in self._ultrapeers() if link is not came_by]
        if not choices and came_by is not None and came_by.number in self._links:
            choices = [came_by]
        if choices:
            self._send_query(self.rng.choice(choices), walker)

    def _route_link(self, query_id: bytes) -> Link | None:
        route = self.seen.route(query_id)
        if route is None or route.link == OWN:
            return None
        return self._links.get(route.link)

    def _park(self, walker: Message, came_by: Link) -> None:
        """Hold a walker and ask its origin, back along the route, whether to go on."""
        upstream = self._route_link(walker.id)
        if upstream is None or self._parked_count >= MAX_PARKED:
            return
        if not self._note_question(walker.id, PARKED):
            return
        self._parked.setdefault(walker.id, []).append(
            _Parked(walker, came_by.number, self._now + PARK_TIMEOUT)
        )
        self._parked_count += 1
        self.counters.statuses_sent += 1
        self._send(upstream, Message(walker.id, walker.hops + 1, 0, QueryStatus(0, False)))

    def _note_question(self, query_id: bytes, asker: int) -> bool:
        askers = self._questions.setdefault(query_id, [])
        if len(askers) >= MAX_QUESTIONS_PER_QUERY or self._question_count >= MAX_QUESTIONS:
            return False
        askers.append(asker)
        self._question_count += 1
        return True

    def _on_status(self, link: Link, message: Message, status: QueryStatus) -> None:
        """A walker's question on its way to the origin, or the origin's answer on its way
        back: which one it is, the link it came by tells (answers come from upstream)."""
        route = self.seen.route(message.id)
        if route is None or not self._spend(link):
            return
        if route.link == OWN:
            search = self._searches.get(message.id)
            done = search is None or search.ended or search.enough()
            results = 0 if search is None else len(search.results)
            self.counters.statuses_sent += 1
            self._send(link, Message(message.id, message.hops + 1, 0, QueryStatus(results, done)))
        elif route.link != link.number:
            upstream = self._links.get(route.link)
            if upstream is not None and self._note_question(message.id, link.number):
                self.counters.statuses_sent += 1
                self._send(upstream, Message(message.id, message.ttl, message.hops + 1, status))
        else:
            self._answered(message, status)

    def _answered(self, message: Message, status: QueryStatus) -> None:
        """The origin's answer to the oldest question of this query held here."""
        askers = self._questions.get(message.id)
        if not askers:
            return
        asker = askers.pop(0)
        self._question_count -= 1
        if asker != PARKED:
            downstream = self._links.get(asker)
            if downstream is not None:
                self.counters.statuses_sent += 1
                self._send(downstream, Message(message.id, 1, message.hops + 1, status))
            return
        walkers = self._parked.get(message.id)
        if not walkers:
            return
        walker = walkers.pop(0)
        self._parked_count -= 1
        if not walkers:
            del self._parked[message.id]
        if not status.done:
            self._walk_on(walker.message, self._links.get(walker.came_by))

    def _on_hit(self, link: Link, message: Message, hit: QueryHit) -> None:
        if message.hops == 0 and hit.holder[0] == UNSPECIFIED:
            # The holder is at the other end of this link; it could not know its own IP.
            hit = QueryHit((link.address[0], hit.holder[1]), hit.node_id, hit.results)
        route = self.seen.route(message.id)
        if route is None:
            return  # a hit for nothing we routed: dropped
        if route.link == OWN:
            search = self._searches.get(message.id)
            if search is None or search.ended:
                return
            for result in hit.results:
                if len(search.results) < MAX_SEARCH_RESULTS:
                    search.results.add((hit.node_id, result.info_hash))
            self._outputs.append(Found(search.id, hit, message.hops + 1))
            if search.enough() or len(search.results) >= MAX_SEARCH_RESULTS:
                self._end(search)
            return
        upstream = self._links.get(route.link)
        if upstream is None or route.results + len(hit.results) > MAX_ROUTED_RESULTS:
            return
        route.results += len(hit.results)
        self._send(upstream, Message(message.id, message.ttl, message.hops + 1, hit))

    def _end(self, search: Search) -> None:
        search.ended = True
        search.next_step = None
        self._outputs.append(SearchEnded(search.id, len(search.results)))

    def _expire(self) -> None:
        """Forget searches, questions and parked walkers that are over."""
        now = self._now
        for search_id, search in list(self._searches.items()):
            if search.ended and search_id not in self.seen:
                del self._searches[search_id]
        for query_id in [q for q in self._questions if q not in self.seen]:
            self._question_count -= len(self._questions.pop(query_id))
        for query_id, walkers in list(self._parked.items()):
            kept = [walker for walker in walkers if walker.until > now]
            self._parked_count -= len(walkers) - len(kept)
            if kept:
                self._parked[query_id] = kept
            else:
                del self._parked[query_id]
