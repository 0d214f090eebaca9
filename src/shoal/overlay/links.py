"""The overlay's links: opening them (greeting and hello, roles, refusals), keeping them
(keep-alives, time-outs, a peer that stops reading), dialling ultrapeers to the target degree
from the host cache, trading addresses in pings and pongs, and each link's query budget.

Roles are Gnutella 0.6's. Ultrapeers link to about `degree` other ultrapeers and hold up to
MAX_LEAVES leaves; a leaf links to LEAF_TARGET ultrapeers and sends them a query routing
table of its listings. What travels over an open link (queries, hits, statuses) is the layer
above's (`queries.QueryRouting`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..addresses import Address, pack_ip, source_key
from ..contract import Close, Send
from ..ratelimit import RateLimiter
from .hosts import HostCache
from .messages import (
    GREETING,
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
from .routing import QueryRouteTable
from .search import hash_query

TARGET_DEGREE = 8
MAX_DEGREE = 16  # ultrapeer links an ultrapeer accepts at most
MAX_LEAVES = 30
LEAF_TARGET = 2
LEAF_MAX = 3
# Links still saying hello, beyond the ones above, so that a full node can still say why.
HANDSHAKING = 8
MAX_LINKS = MAX_DEGREE + MAX_LEAVES + HANDSHAKING
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
# Links one IP may hold with us, beyond loopback.
LINKS_PER_IP = 4
# Pongs a link may owe us (pings it has not answered yet).
MAX_PONGS_DUE = 4


@dataclass(frozen=True, slots=True)
class Dial:
    """Open a TCP connection to address for link, then call `connected` or `dial_failed`."""

    link: int
    address: Address


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
    dropped: int = 0
    table: QueryRouteTable | None = None  # a leaf's, held by its ultrapeer
    pongs_due: int = 0  # pongs we take from it: one per ping we sent, and one refusal's

    @property
    def listen(self) -> Address | None:
        """Where the other end accepts links, once it said."""
        return None if self.hello is None else (self.address[0], self.hello.port)

    def is_ultrapeer(self) -> bool:
        return self.hello is not None and self.hello.role == Role.ULTRAPEER

    def is_leaf(self) -> bool:
        return self.hello is not None and self.hello.role == Role.LEAF


class LinkLayer:
    """A node's links, the hosts it knows, and what it offers (its listings)."""

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
        self.counters = Counters()
        self._listings: list[Result] = []
        self._table = QueryRouteTable()
        self._links: dict[int, Link] = {}
        self._next_link = 1
        self._outputs: list[Output] = []
        # Each link's query budget, by link number (closed links' buckets fill and go).
        self._query_budget = RateLimiter(QUERY_RATE, QUERY_BURST, max_keys=4 * MAX_LINKS)
        self._next_maintenance = now
        self._now = now

    # The adapter's side.

    def take_outputs(self) -> Sequence[Output]:
        outputs, self._outputs = self._outputs, []
        return outputs

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
        # One source (an IP; on loopback, which every local node shares, an IP and port)
        # cannot take all our slots.
        source = _source(address)
        same = sum(1 for link in self._links.values() if _source(link.address) == source)
        if same >= LINKS_PER_IP:
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

    # What the node offers.

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
        return MAX_LINKS

    def _open_link(self, address: Address, *, outbound: bool) -> Link:
        number = self._next_link
        self._next_link += 1
        now = self._now
        link = Link(number, address, outbound, now, last_received=now, last_sent=now)
        # A node we dialled may refuse us with a pong of where else to go; nobody else may
        # send a pong we did not ask for.
        link.pongs_due = 1 if outbound else 0
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

    # Messages.

    def _on_message(self, link: Link, message: Message) -> None:
        payload = message.payload
        if link.hello is None:
            if not isinstance(payload, Hello):
                self._drop(link, "spoke before hello", ban=True)
            else:
                self._on_hello(link, payload)
        elif isinstance(payload, Query | QueryHit | QueryStatus):
            self._on_traffic(link, message)
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

    def _on_traffic(self, link: Link, message: Message) -> None:
        """A query, hit or status on an open link: the layer above routes it."""
        raise NotImplementedError

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
        if self._query_budget.allow(link.number.to_bytes(8, "big"), self._now):
            # Drops count net of what passed: an honest relay a little over the rate is
            # never closed, a flood is within a second.
            link.dropped = max(0, link.dropped - 1)
            return True
        link.dropped += 1
        self.counters.rate_dropped += 1
        if link.dropped > FLOOD_CLOSE:
            self._drop(link, "too many queries", ban=True)
        return False

    def _new_id(self) -> bytes:
        return self.rng.randbytes(16)


def _source(address: Address) -> bytes:
    """What per-source limits count a link by (addresses.source_key)."""
    return source_key(pack_ip(address[0]), address[1])
