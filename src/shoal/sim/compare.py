"""The three architectures side by side: one population, the same listings, the same queries.

N nodes each run a real DHT core (on `SimNetwork`) and a real overlay core (on
`OverlayNetwork`: all ultrapeers, a flat overlay, unless a share are leaves), on one event
queue; the hub is one more node holding the real keyword index (`SimHub`). Nodes join at
JOIN_RATE, each listing its holdings on the hub at once and in the DHT once its join lookup is
over; after SETTLE, queries run over QUERY_PHASE: each one asks, from one origin at one
moment, for one listing by its name through the hub, the DHT, and the overlay by flooding,
random walks and dynamic querying. Meanwhile nodes leave (Weibull sessions) and are replaced
at once by newcomers that take over their holdings, so N stays constant and so does the number
of holders.

A search succeeds when it finds a holder alive when the result arrives. Messages are those of
the search itself: hub request and reply; the DHT lookup's queries and their answers; the
overlay's queries, hits and statuses carrying the search's id (keep-alives and pongs are
background, counted apart).
"""

from __future__ import annotations

import functools
import gc
import random
import string
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..addresses import Address
from ..dht.core import DhtNode, ListingsFound, LookupDone
from ..dht.krpc import GET_LISTINGS
from ..dht.listings import keyword_key, keywords, matches, sign_listing
from ..dht.lookup import LOOKUP_DEADLINE
from ..identity import Identity
from ..overlay.core import Found
from ..overlay.messages import Kind, Result, Role
from ..overlay.search import WALK_DEADLINE, WANTED, Strategy
from ..words import words
from .compare_report import ARCHITECTURES, Asked, CompareReport, summarize
from .hub import SimHub, last_refresh
from .kernel import session_length
from .overlay import OverlayHost, OverlayNetwork, SearchRecord
from .swarm import SimNetwork, SimNode

# Nodes join at this many per simulated second.
JOIN_RATE = 200.0
# After the last join, this long for DHT tables and overlay links to fill.
SETTLE = 60.0
# Queries and churn are spread over this many simulated seconds.
QUERY_PHASE = 120.0
# After the last query, this long for every search to end.
TAIL = WALK_DEADLINE + 2 * LOOKUP_DEADLINE
TAIL_STEP = 5.0
# A node lists its holdings in the DHT once its join lookup has ended.
PUBLISH_AFTER = LOOKUP_DEADLINE
# Only nodes in this long ask: their own listings are published and their links made.
ORIGIN_AGE = 2 * LOOKUP_DEADLINE
# One way, any node to any other, the hub too.
LATENCY = 0.05
# Overlay addresses a newcomer is handed (by the hub, say) to start from.
BOOTSTRAP = 5
# Sessions of each seat run from this many mean sessions before the query phase, so that the
# nodes present at its start are the mix a long-running network has (long stays included).
WARMUP_SESSIONS = 10
SECONDS_PER_HOUR = 3600.0
GC_THRESHOLD = 50_000
# The DHT query that marks a listing search's traffic, and the end of a reply or an error.
_LISTING_QUERY = b"%d:%s" % (len(GET_LISTINGS), GET_LISTINGS)
_QUERY_END = b"1:y1:qe"
_ANSWER_ENDS = (b"1:y1:re", b"1:y1:ee")
_OVERLAY_QUERY_KINDS = frozenset(
    int(kind) for kind in (Kind.QUERY, Kind.QUERY_HIT, Kind.QUERY_STATUS)
)
_KIND_AT = 16  # the type byte follows the 16-byte id


@dataclass(frozen=True, slots=True)
class _Listing:
    """A torrent of the workload: who holds it (seats) and the words that find it."""

    info_hash: bytes
    name: str
    size: int
    seats: frozenset[int]


@dataclass(slots=True, eq=False)
class _Member:
    """One node: its DHT core and overlay core, its identity, and when it came and went."""

    number: int  # in the order of joining
    seat: int
    identity: Identity
    public_key: bytes
    dht_host: SimNode
    dht: DhtNode
    overlay: OverlayHost
    joined_at: float
    pump: Callable[[], None] = lambda: None
    left_at: float | None = None
    asking: Asked | None = None  # its DHT search in flight
    lookup: int = -1


class _DhtNetwork(SimNetwork):
    """The simulated network, telling the run of every datagram sent."""

    def __init__(self, on_send: Callable[[SimNode, Address, bytes], None], seed: int) -> None:
        super().__init__(seed=seed, latency=LATENCY)
        self.on_send = on_send
        self.datagrams = 0

    def send_datagram(self, node: SimNode, address: Address, data: bytes) -> None:
        """Tell, then send."""
        self.datagrams += 1
        self.on_send(node, address, data)
        super().send_datagram(node, address, data)


class _CompareRun:
    """The state of one run: members by seat, the listings, the searches and their loads."""

    def __init__(
        self, nodes: int, replication: float, listings: int, wanted: int, leaves: float, seed: int
    ) -> None:
        self.rng = random.Random(seed)
        self.dht_network = _DhtNetwork(self._dht_sent, seed)
        self.events = self.dht_network.events
        self.overlay = OverlayNetwork(self.events, seed=seed + 1, latency=LATENCY)
        self.overlay.on_send = self._overlay_sent
        self.overlay.on_found = self._overlay_found
        self.hub = SimHub()
        self.holders = max(1, round(replication * nodes))
        self.listings = [self._listing(nodes) for _ in range(listings)]
        self.holdings: list[list[_Listing]] = [[] for _ in range(nodes)]
        for listing in self.listings:
            for seat in listing.seats:
                self.holdings[seat].append(listing)
        self.seats: list[_Member | None] = [None] * nodes
        self.live: list[_Member] = []
        self.ultrapeers: list[_Member] = []  # the live members that are overlay ultrapeers
        self.leaves = leaves
        self.joined = 0
        self.by_dht: dict[Address, _Member] = {}  # live members only
        self.by_key: dict[bytes, _Member] = {}  # every member ever, by public key
        self.by_overlay_id: dict[bytes, _Member] = {}  # every member ever
        # Nodes that left before the run, still listed on the hub: key -> their number
        self.gone: dict[bytes, int] = {}
        self.asked: list[Asked] = []
        self.by_record: dict[SearchRecord, Asked] = {}
        self.loads: dict[str, Counter[object]] = {name: Counter() for name in ARCHITECTURES}
        self.left: set[int] = set()  # numbers of the members that left
        self.wanted = wanted

    def _listing(self, nodes: int) -> _Listing:
        """A torrent named by two made-up words, held by self.holders random seats."""
        name = " ".join(
            "".join(self.rng.choices(string.ascii_lowercase, k=length)) for length in (9, 7)
        )
        seats = frozenset(self.rng.sample(range(nodes), self.holders))
        return _Listing(self.rng.randbytes(20), name, self.rng.randrange(1 << 20, 1 << 32), seats)

    # Coming and going.

    def list_earlier(self, earlier: list[tuple[float, float, int]], phase_start: float) -> None:
        """Put on the hub the listings of nodes that left in the hour before the phase and
        have not expired: a running hub holds those too."""
        for joined, left, seat in earlier:
            if not self.holdings[seat]:
                continue
            refreshed = last_refresh(joined, left, 0.0)
            if refreshed is None:
                continue
            key = self.rng.randbytes(32)
            self.gone[key] = -1 - len(self.gone)
            for item in self.holdings[seat]:
                at = phase_start + refreshed
                self.hub.publish(item.info_hash, item.name, item.size, key.hex(), at)

    def join(self, seat: int) -> None:
        """A newcomer takes seat: it joins the DHT through a random live node and the overlay
        through a few, and lists the seat's holdings on the hub now, in the DHT soon."""
        now = self.events.now
        rng = self.rng
        identity = Identity(Ed25519PrivateKey.from_private_bytes(rng.randbytes(32)))
        holdings = self.holdings[seat]
        dht_host = self.dht_network.add_node(f"node{self.joined}")
        dht = DhtNode(rng.randbytes(20), now, rng=random.Random(rng.random()))
        # Newcomers are handed ultrapeers (a leaf refuses links from nodes that dial it).
        bootstrap = rng.sample(self.ultrapeers, min(BOOTSTRAP, len(self.ultrapeers)))
        role = Role.LEAF if self.leaves > 0 and rng.random() < self.leaves else Role.ULTRAPEER
        if bootstrap:
            dht.bootstrap([bootstrap[0].dht_host.address], now)
        overlay = self.overlay.add(
            role,
            listings=[Result(item.info_hash, item.size, item.name) for item in holdings],
            bootstrap=[other.overlay.address for other in bootstrap],
        )
        public_key = bytes.fromhex(identity.public_key_hex)
        member = _Member(
            self.joined, seat, identity, public_key, dht_host, dht, overlay, joined_at=now
        )
        self.joined += 1
        member.pump = self.dht_network.serve(
            dht_host, dht, lambda output: self._dht_heard(member, output)
        )
        self.seats[seat] = member
        self.live.append(member)
        if role == Role.ULTRAPEER:
            self.ultrapeers.append(member)
        self.by_dht[dht_host.address] = member
        self.by_key[public_key] = member
        self.by_overlay_id[overlay.core.node_id] = member
        for item in holdings:
            self.hub.publish(item.info_hash, item.name, item.size, identity.public_key_hex, now)
        if holdings:
            self.events.at(now + PUBLISH_AFTER, lambda: self._publish_in_dht(member))

    def _publish_in_dht(self, member: _Member) -> None:
        if member.left_at is not None:
            return
        now = self.events.now
        for item in self.holdings[member.seat]:
            listing = sign_listing(member.identity, item.info_hash, item.name, item.size, [], 0)
            member.dht.publish_listing(listing, now)
        member.pump()

    def replace(self, seat: int) -> None:
        """The node at seat leaves for good; a newcomer takes its place at once."""
        member = self.seats[seat]
        assert member is not None
        member.left_at = self.events.now
        self.left.add(member.number)
        self.dht_network.leave(member.dht_host)
        self.overlay.remove(member.overlay)
        self.live.remove(member)
        if member.overlay.core.role == Role.ULTRAPEER:
            self.ultrapeers.remove(member)
        del self.by_dht[member.dht_host.address]
        member.asking = None
        self.join(seat)

    # Searching.

    def ask(self, listing: _Listing) -> None:
        """One query for listing from one settled node, through every architecture at once."""
        now = self.events.now
        ready = [
            m for m in self.live if now - m.joined_at >= ORIGIN_AGE and m.asking is None
        ] or self.live
        origin = self.rng.choice(ready)
        text = listing.name
        for architecture in ARCHITECTURES:
            asked = Asked(architecture, origin.number, listing.info_hash, now, self.holders)
            self.asked.append(asked)
            if architecture == "hub":
                self._ask_hub(origin, text, asked)
            elif architecture == "dht":
                self._ask_dht(origin, text, asked)
            else:
                record = self.overlay.search(
                    origin.overlay, text, Strategy(architecture), wanted=self.wanted
                )
                self.by_record[record] = asked
                asked.record = record

    def _ask_hub(self, origin: _Member, text: str, asked: Asked) -> None:
        """A request reaches the hub a latency later; its reply comes back after another."""
        load = self.loads["hub"]

        def at_hub() -> None:
            found = self.hub.search(text, self.events.now)
            self.events.at(self.events.now + LATENCY, lambda: reply(found))

        def reply(found: list[tuple[bytes, list[str]]]) -> None:
            if origin.left_at is not None:
                return
            for info_hash, keys in found:
                if info_hash == asked.info_hash:
                    for key in keys:
                        self._found_key(asked, bytes.fromhex(key))
            asked.ended_at = self.events.now

        asked.messages = 2
        load["hub"] += 2
        load[origin.number] += 2
        self.events.at(self.events.now + LATENCY, at_hub)

    def _ask_dht(self, origin: _Member, text: str, asked: Asked) -> None:
        """As `shoal search --via dht`: the key of the longest word but the last."""
        given = words(text)
        chosen = keywords(" ".join(given[:-1])) or keywords(text)
        key = keyword_key(max(chosen, key=len))
        origin.asking = asked
        origin.lookup = origin.dht.search_listings(key, self.events.now)
        origin.pump()

    def _dht_heard(self, member: _Member, output: object) -> None:
        """A DHT core's output for the layer above: listings found, or its search's end."""
        asked = member.asking
        if asked is None or not isinstance(output, ListingsFound | LookupDone):
            return
        if output.lookup != member.lookup:
            return
        if isinstance(output, ListingsFound):
            wanted = words(self._name(asked))
            for listing in output.listings:
                if listing.info_hash == asked.info_hash and matches(listing, wanted):
                    self._found_key(asked, listing.public_key)
            return
        asked.ended_at = self.events.now
        asked.hops = output.hops
        member.asking = None

    def _name(self, asked: Asked) -> str:
        return next(item.name for item in self.listings if item.info_hash == asked.info_hash)

    def _overlay_found(self, record: SearchRecord, found: Found) -> None:
        asked = self.by_record.get(record)
        hit = found.hit
        if asked is None:
            return
        if any(result.info_hash == asked.info_hash for result in hit.results):
            self._found(asked, self.by_overlay_id.get(hit.node_id))

    def _found_key(self, asked: Asked, key: bytes) -> None:
        """A result naming the holder with this public key."""
        gone = self.gone.get(key)
        if gone is not None:
            asked.stale.add(gone)
        else:
            self._found(asked, self.by_key.get(key))

    def _found(self, asked: Asked, holder: _Member | None) -> None:
        """A result naming holder: a live holder found, or a stale one."""
        if holder is None:
            return
        if holder.left_at is not None:
            asked.stale.add(holder.number)
            return
        if holder.number in asked.found:
            return
        now = self.events.now
        asked.found.add(holder.number)
        if asked.first_at is None:
            asked.first_at = now
        asked.last_at = now

    # What the searches cost.

    def _dht_sent(self, node: SimNode, address: Address, data: bytes) -> None:
        """A datagram of a listing search: a query its origin sends, or an answer to it."""
        if data.endswith(_QUERY_END):
            origin = self.by_dht.get(node.address)
            if origin is None or origin.asking is None or _LISTING_QUERY not in data:
                return
        elif data.endswith(_ANSWER_ENDS):
            origin = self.by_dht.get(address)
            if origin is None or origin.asking is None:
                return
        else:
            return
        origin.asking.messages += 1
        load = self.loads["dht"]
        load[node.address] += 1
        load[address] += 1

    def _overlay_sent(self, sender: OverlayHost, receiver: OverlayHost, data: bytes) -> None:
        """A query, hit or status of one of the searches counts toward its cost and load."""
        if len(data) <= _KIND_AT or data[_KIND_AT] not in _OVERLAY_QUERY_KINDS:
            return
        record = self.overlay.searches.get(data[:_KIND_AT])
        asked = None if record is None else self.by_record.get(record)
        if asked is None:
            return
        asked.messages += 1
        load = self.loads[asked.architecture]
        load[sender.address] += 1
        load[receiver.address] += 1

    def all_ended(self) -> bool:
        """Whether every search has ended (or its origin has left)."""
        return all(
            asked.ended_at is not None
            or (asked.record is not None and asked.record.ended_at is not None)
            or asked.origin in self.left
            for asked in self.asked
        )

    def finish(self) -> None:
        """Searches of the overlay end when their record says so."""
        for record, asked in self.by_record.items():
            asked.ended_at = record.ended_at


def run_compare(
    nodes: int,
    churn: float = 0.0,
    replication: float = 0.01,
    queries: int = 20,
    seed: int = 1,
    *,
    listings: int = 5,
    wanted: int = WANTED,
    leaves: float = 0.0,
    session_shape: float = 0.5,
    phase: float = QUERY_PHASE,
) -> CompareReport:
    """Run the hub, the DHT and the overlay on one population of `nodes`, `listings` torrents
    each held by `replication` of the nodes, and `queries` queries over `phase` seconds while
    `churn` of the nodes per hour are replaced (Weibull sessions of `session_shape`)."""
    if nodes < 2:
        raise ValueError(f"a network needs at least two nodes, not {nodes}")
    if not 0.0 < replication <= 1.0:
        raise ValueError(
            f"replication is a share of the nodes, above 0 and at most 1, not {replication}"
        )
    if churn < 0.0:
        raise ValueError(f"churn is a share of the nodes per hour, not {churn}")
    if not 0.0 <= leaves < 1.0:
        raise ValueError(f"leaves are a share of the nodes, from 0 to below 1, not {leaves}")
    if queries < 1 or listings < 1:
        raise ValueError(f"a run needs a query and a listing, not {queries} and {listings}")
    thresholds = gc.get_threshold()
    # Millions of events and messages come and go; the collector's default pace scans the
    # whole heap far more often than the few cycles made here need (a fifth of the run).
    gc.set_threshold(GC_THRESHOLD, *thresholds[1:])
    try:
        return _run(
            nodes, churn, replication, queries, seed, listings, wanted, leaves, session_shape, phase
        )
    finally:
        gc.set_threshold(*thresholds)


def _run(
    nodes: int,
    churn: float,
    replication: float,
    queries: int,
    seed: int,
    listings: int,
    wanted: int,
    leaves: float,
    session_shape: float,
    phase: float,
) -> CompareReport:
    began = time.perf_counter()
    run = _CompareRun(nodes, replication, listings, wanted, leaves, seed)
    events = run.events
    start = events.now
    for seat in range(nodes):
        events.at(start + seat / JOIN_RATE, functools.partial(run.join, seat))
    query_start = start + nodes / JOIN_RATE + SETTLE
    events.run(query_start, lambda: False)
    sessions = _sessions(run.rng, nodes, churn, session_shape, phase)
    run.list_earlier(sessions.earlier, query_start)
    for when, seat in sessions.departures:
        events.at(query_start + when, functools.partial(run.replace, seat))
    for number in range(queries):
        listing = run.listings[number % listings]
        events.at(
            query_start + (number + 0.5) * phase / queries, functools.partial(run.ask, listing)
        )
    events.run(query_start + phase, lambda: False)
    deadline = events.now + TAIL
    while events.now < deadline and not run.all_ended():
        events.run(min(deadline, events.now + TAIL_STEP), lambda: False)
    run.finish()
    run.hub.close()
    return CompareReport(
        nodes=nodes,
        churn=churn,
        replication=replication,
        queries=queries,
        listings=listings,
        wanted=wanted,
        leaves=leaves,
        holders=run.holders,
        session_shape=session_shape,
        seed=seed,
        departed=len(run.left),
        hub_publishes=run.hub.publishes,
        dht_datagrams=run.dht_network.datagrams,
        overlay_messages=run.overlay.messages,
        simulated_seconds=round(events.now - start, 3),
        wall_seconds=round(time.perf_counter() - began, 3),
        events=events.processed,
        architectures={
            name: summarize([a for a in run.asked if a.architecture == name], run.loads[name])
            for name in ARCHITECTURES
        },
    )


@dataclass(frozen=True, slots=True)
class _Sessions:
    """Who leaves during the phase, and who left in the hour before it."""

    departures: list[tuple[float, int]]  # (seconds into the phase, seat)
    earlier: list[tuple[float, float, int]]  # (joined, left, seat), seconds from the phase


def _sessions(
    rng: random.Random, nodes: int, churn: float, shape: float, phase: float
) -> _Sessions:
    """Each seat's sessions, Weibull of mean 1/churn hours, one after another from
    WARMUP_SESSIONS before the phase (the nodes there at its start are then a long-running
    network's mix); those ending in the phase are its departures."""
    departures: list[tuple[float, int]] = []
    earlier: list[tuple[float, float, int]] = []
    if churn <= 0.0:
        return _Sessions(departures, earlier)
    mean = SECONDS_PER_HOUR / churn
    for seat in range(nodes):
        at = -WARMUP_SESSIONS * mean
        while at < phase:
            joined = at
            at += session_length(rng, mean, shape)
            if 0.0 <= at < phase:
                departures.append((at, seat))
            elif -SECONDS_PER_HOUR <= at < 0.0:
                earlier.append((joined, at, seat))
    departures.sort()
    return _Sessions(departures, earlier)
