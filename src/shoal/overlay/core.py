"""The overlay core: one node's links to its neighbours, and the queries that flow over them.

A sans-IO core of the one shape (see shoal.contract). The adapter (or the simulator) opens
the TCP connections the core asks for with `Dial`, reports them with `connected`,
`dial_failed`, `accept` and `closed`, feeds their bytes to `receive`, writes `Send`s, and
closes on `Close`. Everything else is decided here, so the simulator runs the same policy:
whom to dial and how many, which links to refuse, which queries to answer, forward, drop or
hold back, and when a search is over.

Roles are Gnutella 0.6's. Ultrapeers link to about `degree` other ultrapeers and hold up to
MAX_LEAVES leaves; a leaf links to LEAF_TARGET ultrapeers, sends them a query routing table
of its listings, answers queries and never forwards them. An ultrapeer hands a query to a
leaf only when the leaf's table says it may match.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..addresses import Address
from ..words import name_matches, words
from .hosts import HostCache
from .messages import (
    GREETING,
    MAX_HITS,
    MAX_PONG_ADDRESSES,
    Bye,
    Framer,
    Hello,
    Message,
    OverlayError,
    Ping,
    Pong,
    QrpTable,
    Query,
    QueryHit,
    QueryStatus,
    Result,
    Role,
    encode,
)
from .routing import OWN, QueryRouteTable, SeenIds
from .search import (
    MAX_DYNAMIC_TTL,
    MAX_FLOOD_TTL,
    MAX_WALK_TTL,
    PROBE_LINKS,
    PROBE_TTL,
    WALK_DEADLINE,
    WALKERS,
    WANTED,
    Search,
    Strategy,
    check_due,
    flood_ttl,
    hash_query,
    horizon,
    queried_hash,
    step_ttl,
    wait_after,
    walker_ttl,
    walkers_per_link,
)

TARGET_DEGREE = 8
MAX_DEGREE = 16  # ultrapeer links an ultrapeer accepts at most
MAX_LEAVES = 30
LEAF_TARGET = 2
LEAF_MAX = 3
# Links still saying hello, beyond the ones above, so that a full node can still say why.
HANDSHAKING = 8
HANDSHAKE_TIMEOUT = 10.0
# A link quiet for KEEPALIVE seconds sends a ping; one silent for IDLE_LIMIT is dropped.
KEEPALIVE = 30.0
# A ping with this TTL only keeps a link alive (Gnutella's TTL 1 ping) and gets no pong; one
# with a larger TTL asks for addresses.
KEEPALIVE_TTL = 1
IDLE_LIMIT = 90.0
# A link whose writes stay paused (its peer does not read) this long is dropped.
PAUSE_LIMIT = 60.0
# A link we dialled that the other end closes within this long counts as a failed dial.
SHORT_LINK = 30.0
# Links are checked, and dials made, this often; and this soon after a link is lost.
MAINTAIN_EVERY = 5.0
REDIAL_AFTER = 1.0
# Queries and pings a neighbour may send: a rate per second and a burst; a link that goes
# on after FLOOD_CLOSE are dropped is closed and its IP banned.
QUERY_RATE = 20.0
QUERY_BURST = 60.0
FLOOD_CLOSE = 600
# Results forwarded back along one query's route, at most; results one search counts.
MAX_ROUTED_RESULTS = 256
MAX_SEARCH_RESULTS = 1000
# Pongs a link may owe us (pings it has not answered yet).
MAX_PONGS_DUE = 4
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


@dataclass(frozen=True, slots=True)
class Send:
    """Bytes to write to a link."""

    link: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Dial:
    """Open a TCP connection to address for link, then call `connected` or `dial_failed`."""

    link: int
    address: Address


@dataclass(frozen=True, slots=True)
class Close:
    """Close link (everything sent before it is flushed first)."""

    link: int
    reason: str


@dataclass(frozen=True, slots=True)
class Found:
    """A hit for one of this node's searches, with the holder's address filled in."""

    search: bytes
    hit: QueryHit
    hops: int


@dataclass(frozen=True, slots=True)
class SearchEnded:
    """A search is over: it has enough results, or its time ran out."""

    search: bytes
    results: int


Output = Send | Dial | Close | Found | SearchEnded


@dataclass(slots=True)
class Counters:
    """What a node has handled, for the simulator's measurements and the node's status."""

    queries_received: int = 0
    duplicates: int = 0
    rate_dropped: int = 0
    queries_sent: int = 0
    hits_sent: int = 0
    statuses_sent: int = 0


@dataclass(slots=True, eq=False)
class Link:
    """One neighbour link."""

    number: int
    address: Address  # the other end as connected
    outbound: bool
    opened_at: float
    framer: Framer = field(default_factory=Framer)
    connected: bool = False
    hello: Hello | None = None
    last_received: float = 0.0
    last_sent: float = 0.0
    paused_since: float | None = None
    tokens: float = QUERY_BURST
    refilled_at: float = 0.0
    dropped: int = 0
    table: QueryRouteTable | None = None  # a leaf's, held by its ultrapeer
    pongs_due: int = 1  # pongs we take from it: one per ping we sent, and one refusal's

    @property
    def listen(self) -> Address | None:
        """Where the other end accepts links, once it said."""
        return None if self.hello is None else (self.address[0], self.hello.port)

    def is_ultrapeer(self) -> bool:
        return self.hello is not None and self.hello.role == Role.ULTRAPEER

    def is_leaf(self) -> bool:
        return self.hello is not None and self.hello.role == Role.LEAF


@dataclass(slots=True)
class _Parked:
    """A walker waiting at this node for its origin's word."""

    message: Message  # as it goes on, its ttl and hops already moved
    came_by: int
    until: float


class OverlayNode:
    """One node of the overlay."""

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
        self.node_id = node_id
        self.port = port
        self.role = role
        self.degree = degree if role == Role.ULTRAPEER else LEAF_TARGET
        self.rng = rng
        self.hosts = HostCache(rng)
        self.seen = SeenIds()
        self.counters = Counters()
        self._listings: list[Result] = []
        self._table = QueryRouteTable()
        self._links: dict[int, Link] = {}
        self._next_link = 1
        self._outputs: list[Output] = []
        self._searches: dict[bytes, Search] = {}
        self._questions: dict[bytes, list[int]] = {}
        self._question_count = 0
        self._parked: dict[bytes, list[_Parked]] = {}
        self._parked_count = 0
        self._next_maintenance = now
        self._now = now

    # The adapter's side.

    def take_outputs(self) -> Sequence[Output]:
        outputs, self._outputs = self._outputs, []
        return outputs

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

    def add_hosts(self, addresses: Iterable[Address], now: float) -> None:
        """Ultrapeers to try (named by the user, saved at the last exit, or from the hub or
        the DHT)."""
        self._now = now
        for address in addresses:
            self.hosts.heard(address, now)
        self._redial_soon()

    def accept(self, address: Address, now: float) -> int | None:
        """A connection came in from address: its link number, or None to refuse it."""
        self._now = now
        if self.hosts.banned(address[0], now) or len(self._links) >= self._max_links():
            return None
        link = self._open_link(address, outbound=False)
        link.connected = True
        self._greet(link)
        return link.number

    def connected(self, number: int, now: float) -> None:
        """The connection a Dial asked for is open."""
        self._now = now
        link = self._links.get(number)
        if link is not None and not link.connected:
            link.connected = True
            link.opened_at = now
            self._greet(link)

    def dial_failed(self, number: int, now: float) -> None:
        """The connection a Dial asked for could not be opened."""
        self._now = now
        link = self._links.pop(number, None)
        if link is not None:
            self.hosts.failed(link.address, now)
            self._redial_soon()

    def closed(self, number: int, now: float) -> None:
        """The other end closed link, or it broke."""
        self._now = now
        link = self._links.pop(number, None)
        if link is not None:
            self._lost(link)

    def set_paused(self, number: int, paused: bool, now: float) -> None:
        """The link's send buffer is over its high mark (paused) or drained below it again."""
        link = self._links.get(number)
        if link is not None:
            link.paused_since = (link.paused_since or now) if paused else None

    def receive(self, number: int, data: bytes, now: float) -> None:
        """Bytes arrived on link."""
        self._now = now
        link = self._links.get(number)
        if link is None:
            return
        link.last_received = now
        try:
            messages = link.framer.feed(data)
        except OverlayError as error:
            self._drop(link, f"malformed: {error}", ban=True)
            return
        for message in messages:
            if number not in self._links:
                return
            self._on_message(link, message)

    # What the node offers and asks.

    def set_listings(self, listings: Iterable[Result]) -> None:
        """What this node answers queries with (its shared torrents)."""
        self._listings = list(listings)
        # Each listing's name, and its hash query, so that a leaf is found by either.
        self._table = QueryRouteTable.of(result.name for result in self._listings)
        for result in self._listings:
            self._table.add(hash_query(result.info_hash))
        if self.role == Role.LEAF:
            for link in self._open_links():
                self._send(link, Message(self._new_id(), 1, 0, QrpTable(self._table.to_bytes())))

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

    @property
    def listings(self) -> list[Result]:
        """What this node answers queries with."""
        return self._listings

    def links(self) -> list[Link]:
        """The links that said hello."""
        return self._open_links()

    # Links.

    def _max_links(self) -> int:
        if self.role == Role.LEAF:
            return LEAF_MAX + HANDSHAKING
        return MAX_DEGREE + MAX_LEAVES + HANDSHAKING

    def _open_link(self, address: Address, *, outbound: bool) -> Link:
        number = self._next_link
        self._next_link += 1
        now = self._now
        link = Link(number, address, outbound, now, last_received=now, last_sent=now)
        link.refilled_at = now
        self._links[number] = link
        return link

    def _open_links(self) -> list[Link]:
        return [link for link in self._links.values() if link.hello is not None]

    def _ultrapeers(self) -> list[Link]:
        return [link for link in self._links.values() if link.is_ultrapeer()]

    def _greet(self, link: Link) -> None:
        hello = Hello(self.node_id, self.port, self.role)
        self._write(link, GREETING + encode(Message(self._new_id(), 1, 0, hello)))

    def _send(self, link: Link, message: Message) -> None:
        self._write(link, encode(message))

    def _write(self, link: Link, data: bytes) -> None:
        link.last_sent = self._now
        self._outputs.append(Send(link.number, data))

    def _drop(self, link: Link, reason: str, *, ban: bool = False) -> None:
        """Say why, and close link; a link that broke the protocol has its IP banned."""
        if self._links.pop(link.number, None) is None:
            return
        if link.connected:
            self._send(link, Message(self._new_id(), 1, 0, Bye(reason)))
        self._outputs.append(Close(link.number, reason))
        if ban:
            self.hosts.ban(link.address[0], self._now)
        self._redial_soon()

    def _ping(self, link: Link) -> None:
        """Ask link for addresses of ultrapeers."""
        link.pongs_due = min(link.pongs_due + 1, MAX_PONGS_DUE)
        self._send(link, Message(self._new_id(), KEEPALIVE_TTL + 1, 0, Ping()))

    def _lost(self, link: Link) -> None:
        """The other end ended link: one it ended soon after we dialled (it was full, or
        going) counts as a failed dial, so that we back off before trying it again."""
        if link.outbound and self._now - link.opened_at < SHORT_LINK:
            self.hosts.failed(link.address, self._now)
        self._redial_soon()

    def _redial_soon(self) -> None:
        """A link was lost: look for another soon, not at the next round."""
        self._next_maintenance = min(self._next_maintenance, self._now + REDIAL_AFTER)

    def _maintain(self) -> None:
        """Time out handshakes and silent links, keep quiet ones alive, and dial ultrapeers
        while below the target degree."""
        now = self._now
        for link in list(self._links.values()):
            if link.hello is None and now - link.opened_at > HANDSHAKE_TIMEOUT:
                if link.outbound:
                    self.hosts.failed(link.address, now)
                self._drop(link, "no hello")
            elif now - link.last_received > IDLE_LIMIT:
                self._drop(link, "silent")
            elif link.paused_since is not None and now - link.paused_since > PAUSE_LIMIT:
                self._drop(link, "not reading")
            elif link.hello is not None and now - link.last_sent >= KEEPALIVE:
                self._send(link, Message(self._new_id(), KEEPALIVE_TTL, 0, Ping()))
        linked = sum(1 for link in self._links.values() if link.outbound or link.is_ultrapeer())
        missing = self.degree - linked
        if missing > 0:
            busy = {link.address for link in self._links.values()}
            busy |= {link.listen for link in self._links.values() if link.listen is not None}
            for address in self.hosts.candidates(missing, now, busy):
                link = self._open_link(address, outbound=True)
                self._outputs.append(Dial(link.number, address))
        self._expire()

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

    # Messages.

    def _on_message(self, link: Link, message: Message) -> None:
        payload = message.payload
        if link.hello is None:
            if not isinstance(payload, Hello):
                self._drop(link, "spoke before hello", ban=True)
            else:
                self._on_hello(link, payload)
        elif isinstance(payload, Query):
            self._on_query(link, message, payload)
        elif isinstance(payload, QueryHit):
            self._on_hit(link, message, payload)
        elif isinstance(payload, QueryStatus):
            self._on_status(link, message, payload)
        elif isinstance(payload, Ping):
            if message.ttl > KEEPALIVE_TTL and self._spend(link):
                self._send(link, Message(message.id, 1, 0, Pong(tuple(self._pong(link)))))
        elif isinstance(payload, Pong):
            # Only pongs we asked for (and one a full node sends as it refuses us): a
            # neighbour cannot wash the host cache out with addresses of its choosing.
            if link.pongs_due > 0:
                link.pongs_due -= 1
                for address in payload.addresses:
                    self.hosts.heard(address, self._now)
        elif isinstance(payload, QrpTable):
            if not self._spend(link):
                return
            if self.role != Role.ULTRAPEER or not link.is_leaf():
                self._drop(link, "a routing table from a node that is not our leaf", ban=True)
            else:
                link.table = QueryRouteTable(payload.bits)
        elif isinstance(payload, Bye):
            self._links.pop(link.number, None)
            self._outputs.append(Close(link.number, "the other end said bye"))
            self._lost(link)
        else:
            self._drop(link, "a second hello", ban=True)

    def _on_hello(self, link: Link, hello: Hello) -> None:
        now = self._now
        if hello.node_id == self.node_id:
            self.hosts.forget(link.address)
            self._drop(link, "a link to ourselves")
            return
        if any(
            other.hello and other.hello.node_id == hello.node_id for other in self._links.values()
        ):
            self._drop(link, "already linked")
            return
        refusal = self._refusal(link, hello.role)
        if refusal is not None:
            if link.outbound and hello.role == Role.LEAF:
                self.hosts.forget(link.address)
            # Gnutella's X-Try-Ultrapeers: a refused node learns where else to go.
            self._send(link, Message(self._new_id(), 1, 0, Pong(tuple(self._pong(link)))))
            self._drop(link, refusal)
            return
        link.hello = hello
        if hello.role == Role.ULTRAPEER:
            listen = link.listen
            assert listen is not None
            self.hosts.linked(listen, now)
        if self.role == Role.LEAF and self._listings:
            self._send(link, Message(self._new_id(), 1, 0, QrpTable(self._table.to_bytes())))
        if len(self.hosts) < 2 * TARGET_DEGREE:
            self._ping(link)

    def _refusal(self, link: Link, role: Role) -> str | None:
        """Why a link with a node of role is refused, or None to keep it."""
        links = self._open_links()
        if self.role == Role.LEAF:
            if role != Role.ULTRAPEER:
                return "a leaf links to ultrapeers only"
            if sum(1 for other in links if other.is_ultrapeer()) >= LEAF_MAX:
                return "enough ultrapeers"
            return None
        if role == Role.LEAF:
            if link.outbound:
                return "we dial ultrapeers only"
            if sum(1 for other in links if other.is_leaf()) >= MAX_LEAVES:
                return "no room for another leaf"
            return None
        if sum(1 for other in links if other.is_ultrapeer()) >= MAX_DEGREE:
            return "no room for another ultrapeer"
        return None

    def _pong(self, asker: Link) -> list[Address]:
        """Ultrapeers to hand out: our own ultrapeer neighbours first, then the cache."""
        addresses = [
            listen
            for link in self._ultrapeers()
            if link is not asker and (listen := link.listen) is not None
        ]
        self.rng.shuffle(addresses)
        addresses = addresses[:MAX_PONG_ADDRESSES]
        skip = set(addresses)
        if asker.listen is not None:
            skip.add(asker.listen)
        addresses += self.hosts.sample(MAX_PONG_ADDRESSES - len(addresses), skip)
        return addresses

    def _spend(self, link: Link) -> bool:
        """Take one of link's query tokens; a link that floods on is closed and banned."""
        now = self._now
        link.tokens = min(QUERY_BURST, link.tokens + (now - link.refilled_at) * QUERY_RATE)
        link.refilled_at = now
        if link.tokens >= 1.0:
            link.tokens -= 1.0
            return True
        link.dropped += 1
        self.counters.rate_dropped += 1
        if link.dropped > FLOOD_CLOSE:
            self._drop(link, "too many queries", ban=True)
        return False

    # Queries.

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

    # Searches.

    def _end(self, search: Search) -> None:
        search.ended = True
        search.next_step = None
        self._outputs.append(SearchEnded(search.id, len(search.results)))

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

    def _new_id(self) -> bytes:
        return self.rng.randbytes(16)
