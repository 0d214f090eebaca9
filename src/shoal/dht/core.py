"""A Mainline DHT node (BEP 5) as a sans-IO datagram core: KRPC in, datagrams and results out.

It answers ping, find_node, get_peers and announce_peer; runs lookups (find_node, get_peers,
and get_peers then announce_peer) with the iterative `Lookup`; keeps its routing table fresh;
and stores the peers announced to it. Like every core (see shoal/contract.py), it takes
`now`, says when it next needs `handle_timer`, and leaves its outputs in one queue: datagrams
to send, and `PeersFound` / `LookupDone` for the layer above.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import addresses
from ..addresses import Address
from ..bencode import encode
from ..contract import Datagram
from ..ratelimit import RateLimiter
from . import krpc
from .listings import MAX_REPLY_LISTINGS, DhtListing, ListingError, ListingStore, parse_listing
from .lookup import Lookup
from .routing import K, NodeInfo, RoutingTable
from .store import PeerStore
from .tokens import Tokens

QUERY_TIMEOUT = 3.0
MAINTENANCE_INTERVAL = 60.0
# With an empty table, the routers are asked again this often.
BOOTSTRAP_RETRY = 15.0
IPV6_LOOPBACK = bytes(15) + b"\x01"
# Queries we answer per source IP: a DHT node asks a few a second at most.
QUERY_RATE = 20.0
QUERY_BURST = 50.0
MAX_RATE_LIMITED_IPS = 10_000
# Queries of ours in flight at once, whatever asks for them.
MAX_PENDING = 1000
# Bytes of listings in one reply: with the nodes and the rest, it stays under 1,500.
MAX_LISTINGS_BYTES = 900
# Nodes read from one reply.
MAX_REPLY_NODES = 2 * K

PING, FIND_NODE, GET_PEERS, ANNOUNCE_PEER = b"ping", b"find_node", b"get_peers", b"announce_peer"
# shoal's own methods, for the keyword index; other clients answer them with error 204.
GET_LISTINGS, PUT_LISTING = b"shoal_get_listings", b"shoal_put_listing"
# The argument that names each lookup's target.
TARGET_ARGUMENT = {FIND_NODE: b"target", GET_PEERS: b"info_hash", GET_LISTINGS: b"key"}


@dataclass(frozen=True, slots=True)
class PeersFound:
    """Peers of the info-hash a get_peers lookup asked for (more may follow)."""

    lookup: int
    info_hash: bytes
    peers: list[Address]


@dataclass(frozen=True, slots=True)
class ListingsFound:
    """Listings under the key a listing search asked for, signatures checked (more may
    follow)."""

    lookup: int
    key: bytes
    listings: list[DhtListing]


@dataclass(frozen=True, slots=True)
class LookupDone:
    """A lookup ended: the closest nodes that answered, how far it went, what it cost."""

    lookup: int
    target: bytes
    closest: list[NodeInfo]
    hops: int
    queries: int
    timed_out: bool


Output = Datagram | PeersFound | ListingsFound | LookupDone


@dataclass(slots=True)
class _Pending:
    """One query of ours awaiting its answer."""

    address: Address
    node_id: bytes | None  # None for a bootstrap address, whose id we do not know yet
    deadline: float
    search: int | None


@dataclass(slots=True)
class _Search:
    """A lookup in progress and what it is for."""

    number: int
    lookup: Lookup
    method: bytes
    # At the end, this query (with each node's token) to the closest nodes: announce_peer
    # after get_peers, put_listing after get_listings.
    store: tuple[bytes, dict[bytes, Any]] | None = None
    report: bool = True  # internal lookups (bootstrap, refresh) say nothing above
    tokens: dict[bytes, bytes] = field(default_factory=dict)  # node id -> its token
    peers: set[Address] = field(default_factory=set)
    listings: set[tuple[bytes, bytes]] = field(default_factory=set)  # (info-hash, publisher)


class DhtNode:
    """One DHT node."""

    def __init__(
        self,
        node_id: bytes,
        now: float,
        *,
        rng: random.Random | None = None,
        read_only: bool = False,
        table: RoutingTable | None = None,
    ) -> None:
        self.node_id = node_id
        self.rng = rng or random.Random()
        self.read_only = read_only
        self.table = table or RoutingTable(node_id, rng=self.rng)
        self.store = PeerStore(self.rng)
        self.listings = ListingStore(self.rng)
        self._tokens = Tokens(self.rng, now)
        self._limiter = RateLimiter(QUERY_RATE, QUERY_BURST, MAX_RATE_LIMITED_IPS)
        self._outputs: list[Output] = []
        self._pending: dict[bytes, _Pending] = {}
        self._deadlines: list[tuple[float, bytes]] = []  # heap over _pending
        self._searches: dict[int, _Search] = {}
        self._next_search = 0
        self._joining: int | None = None  # the lookup of our own id that joins the network
        self._pinging: set[bytes] = set()  # questionable nodes we asked whether they live
        self._routers: list[Address] = []
        self._next_bootstrap = now
        self._next_maintenance = now + MAINTENANCE_INTERVAL
        self.queries_sent = 0
        self.queries_answered = 0

    # -- commands from the layer above -----------------------------------------------------------

    def bootstrap(self, routers: Iterable[Address], now: float) -> None:
        """Join through known addresses (their ids unknown): ask each for the nodes closest
        to our own id; their answers seed a lookup of our own id, which fills the table."""
        self._routers = list(routers)
        self._ask_routers(now)
        if self.usable():
            self._join(now, [])

    def usable(self) -> bool:
        """Whether the table holds a node worth asking (not one that stopped answering)."""
        return bool(self.table.closest(self.node_id, 1))

    def _ask_routers(self, now: float) -> None:
        """Ask the routers, and the nodes that stopped answering, for a way back in."""
        for address in self._routers:
            self._send_query(address, None, FIND_NODE, {b"target": self.node_id}, now, None)
        for node in self.table.closest(self.node_id, K, include_bad=True):
            self._send_query(node.address, None, FIND_NODE, {b"target": self.node_id}, now, None)
        self._next_bootstrap = now + BOOTSTRAP_RETRY

    def find_node(self, target: bytes, now: float) -> int:
        """Look up the nodes closest to target; a LookupDone follows."""
        return self._start(target, FIND_NODE, now)

    def get_peers(self, info_hash: bytes, now: float, *, announce_port: int | None = None) -> int:
        """Look up the peers of info_hash (PeersFound as they come, then LookupDone); with
        announce_port, announce ourselves to the closest nodes at the end (0: the port our
        datagrams come from, BEP 5's implied_port)."""
        store = None
        if announce_port is not None:
            args: dict[bytes, Any] = {b"info_hash": info_hash, b"port": announce_port or 1}
            if not announce_port:
                args[b"implied_port"] = 1  # the port then is ignored, but some nodes need one
            store = (ANNOUNCE_PEER, args)
        return self._start(info_hash, GET_PEERS, now, store=store)

    def search_listings(self, key: bytes, now: float) -> int:
        """Look up the listings under a keyword key (ListingsFound as they come, then
        LookupDone)."""
        return self._start(key, GET_LISTINGS, now)

    def publish_listing(self, listing: DhtListing, now: float) -> list[int]:
        """Store a signed listing on the nodes closest to each of its keyword keys."""
        return [
            self._start(
                key,
                GET_LISTINGS,
                now,
                store=(PUT_LISTING, {b"key": key, b"listing": listing.to_value()}),
                report=False,
            )
            for key in listing.keyword_keys()
        ]

    # -- the core contract -----------------------------------------------------------------------

    def take_outputs(self) -> list[Output]:
        """Datagrams to send and results, in order."""
        outputs, self._outputs = self._outputs, []
        return outputs

    def get_timer(self) -> float | None:
        """The next query deadline, lookup deadline or maintenance, whichever is first."""
        wake = self._next_maintenance
        if not self.usable():
            wake = min(wake, self._next_bootstrap)
        if self._deadlines:
            wake = min(wake, self._deadlines[0][0])
        for search in self._searches.values():
            wake = min(wake, search.lookup.deadline)
        return wake

    def handle_timer(self, now: float) -> None:
        """Time out queries, end overdue lookups, and keep the table and stores fresh."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _deadline, transaction = heapq.heappop(deadlines)
            pending = self._pending.pop(transaction, None)
            if pending is not None:
                self._timed_out(pending, now)
        for search in list(self._searches.values()):
            self._advance(search, now)
        if now >= self._next_bootstrap and not self.usable():
            self._ask_routers(now)  # nobody answered, or everybody left: try again
        if now >= self._next_maintenance:
            self._next_maintenance = now + MAINTENANCE_INTERVAL
            self._tokens.rotate(now)
            self.store.expire(now)
            self.listings.expire(now)
            for target in self.table.refresh_targets(now):
                self._start(target, FIND_NODE, now, report=False)

    def receive(self, data: bytes, sender: Address, now: float) -> None:
        """A datagram from sender; malformed ones are dropped without a reply."""
        try:
            message = krpc.parse(data)
        except krpc.KrpcError:
            return
        if isinstance(message, krpc.Query):
            self._on_query(message, sender, now)
        else:
            self._on_reply(message, sender, now)

    # -- answering queries -----------------------------------------------------------------------

    def _on_query(self, query: krpc.Query, sender: Address, now: float) -> None:
        if self.read_only:
            return  # BEP 43: a read-only node asks but never answers
        try:
            ip = addresses.pack_ip(sender[0])
        except ValueError:
            return
        # Per IP; on loopback, where tests run many nodes on one IP, per address.
        loopback = ip[0] == 127 if len(ip) == 4 else ip == IPV6_LOOPBACK
        source = ip + sender[1].to_bytes(2, "big") if loopback else ip
        if not self._limiter.allow(source, now):
            return
        if not query.read_only:
            self._heard_from(NodeInfo(query.sender, sender), now, responded=False)
        try:
            values = self._answer(query, sender, ip, now)
        except krpc.KrpcError as exc:
            self._send(krpc.error(query.transaction, krpc.PROTOCOL_ERROR, str(exc)), sender)
            return
        if values is None:
            reply = krpc.error(query.transaction, krpc.METHOD_UNKNOWN, "method unknown")
        else:
            reply = krpc.response(query.transaction, values, sender=self.node_id, requester=sender)
        self._send(reply, sender)

    def _answer(
        self, query: krpc.Query, sender: Address, ip: bytes, now: float
    ) -> dict[bytes, Any] | None:
        """The values of the response to a query; None for a method we do not know."""
        args = query.args
        method = query.method
        if method == PING:
            return {}
        if method == FIND_NODE:
            return self._nodes(krpc.node_id(args, b"target"), sender, args)
        if method == GET_PEERS:
            info_hash = krpc.node_id(args, b"info_hash")
            peers = [addresses.pack(peer) for peer in self.store.peers(info_hash, now)]
            return self._held(info_hash, sender, args, ip, b"values", peers)
        if method == ANNOUNCE_PEER:
            info_hash = krpc.node_id(args, b"info_hash")
            self._check_token(args, ip)
            port = sender[1] if args.get(b"implied_port") == 1 else krpc.port(args, b"port")
            self.store.announce(info_hash, (sender[0], port), now)
            return {}
        if method == GET_LISTINGS:
            key = krpc.node_id(args, b"key")
            found: list[Any] = []
            room = MAX_LISTINGS_BYTES
            for listing in self.listings.get(key, now):
                value = listing.to_value()
                room -= len(encode(value))
                if room < 0:
                    break  # a reply must fit a datagram, whatever was published
                found.append(value)
            return self._held(key, sender, args, ip, b"listings", found)
        if method == PUT_LISTING:
            key = krpc.node_id(args, b"key")
            self._check_token(args, ip)
            try:
                self.listings.put(key, parse_listing(args.get(b"listing")), now)
            except ListingError as exc:
                raise krpc.KrpcError(str(exc)) from None
            return {}
        return None

    def _held(
        self,
        target: bytes,
        sender: Address,
        args: dict[bytes, Any],
        ip: bytes,
        field: bytes,
        held: list[Any],
    ) -> dict[bytes, Any]:
        """The closest nodes to target, a token to store there later, and what we hold."""
        values = self._nodes(target, sender, args)
        values[b"token"] = self._tokens.issue(ip)
        if held:
            values[field] = held
        return values

    def _check_token(self, args: dict[bytes, Any], ip: bytes) -> None:
        if not self._tokens.valid(args.get(b"token"), ip):
            raise krpc.KrpcError("the token is wrong or too old")

    def _nodes(self, target: bytes, sender: Address, args: dict[bytes, Any]) -> dict[bytes, Any]:
        """The closest nodes we know to target, for the families the requester wants."""
        # The asker is left out: it knows itself (libtorrent would query itself). Up to K
        # of each family: the closest of both might all be of one.
        closest = [n for n in self.table.closest(target, 4 * K) if n.address != sender]
        v4_nodes = [n for n in closest if ":" not in n.address[0]][:K]
        v6_nodes = [n for n in closest if ":" in n.address[0]][:K]
        v4, v6 = krpc.pack_nodes(v4_nodes + v6_nodes)
        want = args.get(b"want")
        if not isinstance(want, list):
            want = [b"n6" if ":" in sender[0] else b"n4"]
        values: dict[bytes, Any] = {}
        if b"n4" in want:
            values[b"nodes"] = v4
        if b"n6" in want:
            values[b"nodes6"] = v6
        return values

    # -- our queries and their answers -----------------------------------------------------------

    def _join(self, now: float, nodes: list[NodeInfo]) -> None:
        """Look up our own id (once at a time), with these nodes to start from too."""
        joining = self._searches.get(self._joining) if self._joining is not None else None
        if joining is None:
            self._joining = self._start(self.node_id, FIND_NODE, now, report=False, seeds=nodes)
        else:
            joining.lookup.add(nodes)
            self._advance(joining, now)

    def _start(
        self,
        target: bytes,
        method: bytes,
        now: float,
        *,
        store: tuple[bytes, dict[bytes, Any]] | None = None,
        report: bool = True,
        seeds: list[NodeInfo] | None = None,
    ) -> int:
        number = self._next_search
        self._next_search += 1
        lookup = Lookup(target, self.table.closest(target, K) + (seeds or []), now)
        search = _Search(number, lookup, method, store, report)
        self._searches[number] = search
        self._advance(search, now)
        return number

    def _advance(self, search: _Search, now: float) -> None:
        """Send the queries the lookup wants next, or finish it."""
        lookup = search.lookup
        if lookup.done(now):
            self._finish(search, now)
            return
        args = {TARGET_ARGUMENT[search.method]: lookup.target}
        for node in lookup.next_queries(now):
            if not self._send_query(node.address, node.id, search.method, args, now, search.number):
                lookup.failed(node.id)

    def _finish(self, search: _Search, now: float) -> None:
        del self._searches[search.number]
        lookup = search.lookup
        closest = lookup.closest()
        if search.store is not None:
            method, args = search.store
            for node in closest:
                token = search.tokens.get(node.id)
                if token is not None:
                    self._send_query(
                        node.address, node.id, method, {**args, b"token": token}, now, None
                    )
        if search.report:
            self._outputs.append(
                LookupDone(
                    search.number,
                    lookup.target,
                    closest,
                    lookup.hops(),
                    lookup.queries,
                    lookup.timed_out,
                )
            )

    def _send_query(
        self,
        address: Address,
        node_id: bytes | None,
        method: bytes,
        args: dict[bytes, Any],
        now: float,
        search: int | None,
    ) -> bool:
        """Send a query and wait for its answer; False if too many are in flight already."""
        if len(self._pending) >= MAX_PENDING:
            return False
        transaction = self._transaction()
        deadline = now + QUERY_TIMEOUT
        self._pending[transaction] = _Pending(address, node_id, deadline, search)
        heapq.heappush(self._deadlines, (deadline, transaction))
        data = krpc.query(transaction, method, args, sender=self.node_id, read_only=self.read_only)
        self._send(data, address)
        self.queries_sent += 1
        return True

    def _transaction(self) -> bytes:
        """A random id no query in flight has: a forged reply must guess it."""
        while True:
            transaction = self.rng.getrandbits(16).to_bytes(2, "big")
            if transaction not in self._pending:
                return transaction

    def _on_reply(self, message: krpc.Response | krpc.Error, sender: Address, now: float) -> None:
        pending = self._pending.get(message.transaction)
        if pending is None or pending.address != sender:
            return  # not ours, or not from whom we asked: a late or forged reply
        del self._pending[message.transaction]
        self._pinging.discard(pending.node_id or b"")
        search = self._searches.get(pending.search) if pending.search is not None else None
        if isinstance(message, krpc.Error):
            if search is not None and pending.node_id is not None:
                search.lookup.failed(pending.node_id)
                self._advance(search, now)
            return
        if pending.node_id is not None and message.sender != pending.node_id:
            # Another node at that address now (a restart with a new id): the one we asked
            # is gone, whatever answered.
            self._timed_out(pending, now)
            return
        self.queries_answered += 1
        node = NodeInfo(message.sender, sender)
        self._heard_from(node, now, responded=True)
        values = message.values
        nodes = krpc.unpack_nodes(values.get(b"nodes"), ipv6=False, limit=MAX_REPLY_NODES)
        nodes += krpc.unpack_nodes(values.get(b"nodes6"), ipv6=True, limit=MAX_REPLY_NODES)
        nodes = [n for n in nodes if n.id != self.node_id]
        if pending.node_id is None:
            self._join(now, [node, *nodes])  # a router answered
            return
        if search is None:
            return
        token = values.get(b"token")
        if isinstance(token, bytes) and len(token) <= krpc.MAX_TRANSACTION:
            search.tokens[node.id] = token
        if search.method == GET_LISTINGS:
            self._take_listings(search, values.get(b"listings"))
        elif search.method == GET_PEERS:
            peers = [
                peer
                for peer in krpc.unpack_peers(values.get(b"values"), limit=MAX_REPLY_NODES * 4)
                if peer not in search.peers
            ]
            if peers:
                search.peers.update(peers)
                if search.report:
                    self._outputs.append(PeersFound(search.number, search.lookup.target, peers))
        search.lookup.answered(pending.node_id, nodes)
        self._advance(search, now)

    def _take_listings(self, search: _Search, found: object) -> None:
        """Listings from a reply: new ones whose signatures hold go up."""
        if not isinstance(found, list):
            return
        fresh = []
        for value in found[:MAX_REPLY_LISTINGS]:
            try:
                listing = parse_listing(value)
            except ListingError:
                continue  # a node that stores junk is not our problem, its junk is not ours
            slot = (listing.info_hash, listing.public_key)
            if slot not in search.listings and search.lookup.target in listing.keyword_keys():
                search.listings.add(slot)
                fresh.append(listing)
        if fresh and search.report:
            self._outputs.append(ListingsFound(search.number, search.lookup.target, fresh))

    def _timed_out(self, pending: _Pending, now: float) -> None:
        if pending.node_id is None:
            return
        self._pinging.discard(pending.node_id)
        self.table.failed(pending.node_id, now)
        search = self._searches.get(pending.search) if pending.search is not None else None
        if search is not None:
            search.lookup.failed(pending.node_id)
            self._advance(search, now)

    def _heard_from(self, node: NodeInfo, now: float, *, responded: bool) -> None:
        """Tell the table; ping the questionable node it names, to see if it may go."""
        try:
            questionable = self.table.heard_from(node, now, responded=responded)
        except ValueError:
            return
        if questionable is not None and questionable.id not in self._pinging:
            address, node_id = questionable.address, questionable.id
            if self._send_query(address, node_id, PING, {}, now, None):
                self._pinging.add(node_id)  # every newcomer names it until it answers

    def _send(self, data: bytes, address: Address) -> None:
        self._outputs.append(Datagram(data, address))
