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
from ..contract import Datagram
from . import krpc
from .external_ip import ExternalIpVote
from .items import Item, ItemError, parse_item
from .krpc import (
    ANNOUNCE_PEER,
    FIND_NODE,
    GET,
    GET_LISTINGS,
    GET_PEERS,
    PING,
    PUT,
    PUT_LISTING,
    SAMPLE_INFOHASHES,
)
from .listings import MAX_REPLY_LISTINGS, DhtListing, ListingError, parse_listing
from .lookup import ALPHA, Lookup
from .routing import K, NodeInfo, RoutingTable
from .secure_id import secure_node_id
from .server import TARGET, Server

QUERY_TIMEOUT = 3.0
MAINTENANCE_INTERVAL = 60.0
# With an empty table, the routers are asked again this often.
BOOTSTRAP_RETRY = 15.0
# Queries of ours in flight at once, whatever asks for them.
MAX_PENDING = 1000
# Nodes read from one reply.
MAX_REPLY_NODES = 2 * K
# Nodes a refresh (and the join, in each far region of the id space) wants to have heard
# from: enough to reach the range; answers and queries from there fill its bucket later.
REFRESH_REACH = 2
# Info-hashes read from one sample_infohashes reply (a datagram holds about 70).
MAX_SAMPLES = 100
# BEP 51's longest interval between two samples.
MAX_SAMPLE_INTERVAL = 21600


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
    stored: int = 0  # for a lookup that stores: the nodes that took it


@dataclass(frozen=True, slots=True)
class ItemFound:
    """A BEP 44 item under the target a get asked for, checked (a mutable one may be followed
    by one with a higher sequence number)."""

    lookup: int
    item: Item


@dataclass(frozen=True, slots=True)
class SamplesFound:
    """A node's answer to sample_infohashes (BEP 51), or its silence (answered False)."""

    request: int
    address: Address
    answered: bool
    count: int = 0  # info-hashes it holds
    interval: int = 0  # seconds before its sample changes
    samples: tuple[bytes, ...] = ()


Output = Datagram | PeersFound | ListingsFound | ItemFound | SamplesFound | LookupDone


@dataclass(slots=True)
class _Pending:
    """One query of ours awaiting its answer."""

    address: Address
    node_id: bytes | None  # None for a bootstrap address, whose id we do not know yet
    deadline: float
    search: int | None
    again: bool = False  # a search's second ask, with a token (see _ask_again)
    sampling: int | None = None  # the request, for a sample_infohashes query


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
    # A BEP 44 get: the salt of the mutable item asked for, and the best item found.
    salt: bytes = b""
    item: Item | None = None
    # Nodes whose reply held nothing: with a token, as proof of our address, they are asked
    # again at the end, in case they held back for want of it (see server.py).
    empty: set[bytes] = field(default_factory=set)
    asking_again: int = 0  # second-round queries awaited: asked again, or stores
    stored: int = 0  # stores taken


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
        both_families: bool = False,
    ) -> None:
        self.node_id = node_id
        self.rng = rng or random.Random()
        self.read_only = read_only
        # BEP 32: a node with sockets of both families asks for nodes of both in each query;
        # otherwise it is told of the family it asks over only.
        self._want = {b"want": [b"n4", b"n6"]} if both_families else {}
        self.table = table or RoutingTable(node_id, rng=self.rng)
        self.server = Server(node_id, self.table, self.rng, now)
        self.external_ip = ExternalIpVote()
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

    def _short(self) -> bool:
        """Whether the table holds fewer nodes than a bucket: the join is not done."""
        return len(self.table) < K

    def _ask_routers(self, now: float) -> None:
        """Ask the routers, and the nodes that stopped answering, for a way back in."""
        args = {b"target": self.node_id, **self._want}
        for address in self._routers:
            self._send_query(address, None, FIND_NODE, args, now, None)
        for node in self.table.closest(self.node_id, K, include_bad=True):
            self._send_query(node.address, None, FIND_NODE, args, now, None)
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

    def publish_listing(
        self, listing: DhtListing, now: float, *, report: bool = False
    ) -> list[int]:
        """Store a signed listing on the nodes closest to each of its keyword keys (with
        report, a LookupDone for each says how many nodes took it)."""
        return [
            self._start(
                key,
                GET_LISTINGS,
                now,
                store=(PUT_LISTING, {b"key": key, b"listing": listing.to_value()}),
                report=report,
            )
            for key in listing.keyword_keys()
        ]

    def get_item(self, target: bytes, now: float, *, salt: bytes = b"") -> int:
        """Look up the BEP 44 item under target (for a mutable one, the salt it was made
        with): ItemFound as checked items come, then LookupDone."""
        return self._start(target, GET, now, salt=salt)

    def put_item(self, item: Item, now: float) -> int:
        """Store a BEP 44 item on the nodes closest to its target; LookupDone when it is
        sent to them."""
        return self._start(item.target, GET, now, store=(PUT, item.put_args()), salt=item.salt)

    def sample_infohashes(self, address: Address, now: float) -> int:
        """Ask the node at address for a sample of the info-hashes it holds (BEP 51): a
        SamplesFound follows."""
        number = self._next_search
        self._next_search += 1
        args = {b"target": self.rng.randbytes(20), **self._want}
        if not self._send_query(address, None, SAMPLE_INFOHASHES, args, now, None, sampling=number):
            self._outputs.append(SamplesFound(number, address, answered=False))
        return number

    # -- the core contract -----------------------------------------------------------------------

    def take_outputs(self) -> list[Output]:
        """Datagrams to send and results, in order."""
        outputs, self._outputs = self._outputs, []
        return outputs

    def get_timer(self) -> float | None:
        """The next query deadline, lookup deadline or maintenance, whichever is first."""
        wake = self._next_maintenance
        if self._short():
            wake = min(wake, self._next_bootstrap)
        if self._deadlines:
            wake = min(wake, self._deadlines[0][0])
        for search in self._searches.values():
            if not search.asking_again:  # its queries have their own deadlines
                wake = min(wake, search.lookup.wake())
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
        if now >= self._next_bootstrap and self._short():
            self._ask_routers(now)  # few answered, or most left: try again
        if now >= self._next_maintenance:
            self._next_maintenance = now + MAINTENANCE_INTERVAL
            self.server.maintain(now)
            for target in self.table.refresh_targets(now):
                self._refresh(target, self.table.span(target), now)

    def receive(self, data: bytes, sender: Address, now: float) -> None:
        """A datagram from sender; malformed ones are dropped without a reply."""
        try:
            message = krpc.parse(data)
        except krpc.KrpcError:
            return
        if isinstance(message, krpc.Query):
            self._on_query(message, sender, len(data), now)
        else:
            self._on_reply(message, sender, now)

    # -- answering queries -----------------------------------------------------------------------

    def _on_query(self, query: krpc.Query, sender: Address, size: int, now: float) -> None:
        if self.read_only:
            return  # BEP 43: a read-only node asks but never answers
        ip = self.server.admit(sender, now)
        if ip is None:
            return
        if not query.read_only:
            self._heard_from(NodeInfo(query.sender, sender), now, responded=False)
        self._send(self.server.reply(query, sender, ip, size, now), sender)

    # -- our queries and their answers -----------------------------------------------------------

    def _join(self, now: float, nodes: list[NodeInfo]) -> None:
        """Look up our own id (once at a time), with these nodes to start from too."""
        joining = self._searches.get(self._joining) if self._joining is not None else None
        if joining is None:
            self._joining = self._start(self.node_id, FIND_NODE, now, report=False, seeds=nodes)
        else:
            joining.lookup.add(nodes)
            self._advance(joining, now)

    def _refresh(self, target: bytes, size: int, now: float) -> None:
        """Look into the range of ids of this size around target until a few nodes there
        have answered (they join the table)."""
        self._start(
            target,
            FIND_NODE,
            now,
            report=False,
            near_enough=size,
            near_count=REFRESH_REACH,
            alpha=1,  # no hurry: one query at a time, as few as it takes
        )

    def _start(
        self,
        target: bytes,
        method: bytes,
        now: float,
        *,
        store: tuple[bytes, dict[bytes, Any]] | None = None,
        report: bool = True,
        seeds: list[NodeInfo] | None = None,
        salt: bytes = b"",
        near_enough: int | None = None,
        near_count: int = K,
        alpha: int = ALPHA,
    ) -> int:
        number = self._next_search
        self._next_search += 1
        seeds = self.table.closest(target, K) + (seeds or [])
        lookup = Lookup(
            target, seeds, now, alpha=alpha, near_enough=near_enough, near_count=near_count
        )
        search = _Search(number, lookup, method, store, report, salt=salt)
        self._searches[number] = search
        self._advance(search, now)
        return number

    def _advance(self, search: _Search, now: float) -> None:
        """Send the queries the lookup wants next, or finish it."""
        lookup = search.lookup
        if search.asking_again:
            return  # the lookup is over: its last answers are awaited
        if lookup.done(now):
            if search.store is not None:
                self._store(search, now)
            else:
                self._ask_again(search, now)
            if not search.asking_again:
                self._finish(search, now)
            return
        args = {TARGET[search.method]: lookup.target, **self._want}
        for node in lookup.next_queries(now):
            if not self._send_query(node.address, node.id, search.method, args, now, search.number):
                lookup.failed(node.id)

    def _store(self, search: _Search, now: float) -> None:
        """Send the search's store (announce_peer, put, put_listing) to the closest nodes that
        gave a token; their answers say how many took it."""
        assert search.store is not None
        method, args = search.store
        for node in search.lookup.closest():
            token = search.tokens.get(node.id)
            if token is not None:
                self._second_ask(search, node, method, {**args, b"token": token}, now)

    def _ask_again(self, search: _Search, now: float) -> None:
        """Ask again, with their tokens, the closest nodes whose answer held nothing: a node
        answers a stranger's get with only as many bytes as it sent, until the token proves
        the stranger's address."""
        if search.method not in (GET, GET_LISTINGS):
            return
        if search.method == GET and search.item is not None and search.item.key is None:
            return  # an immutable item is the same everywhere
        for node in search.lookup.closest():
            token = search.tokens.get(node.id)
            if node.id in search.empty and token is not None:
                args = {TARGET[search.method]: search.lookup.target, b"token": token}
                self._second_ask(search, node, search.method, {**args, **self._want}, now)

    def _second_ask(
        self, search: _Search, node: NodeInfo, method: bytes, args: dict[bytes, Any], now: float
    ) -> None:
        """A query of the search's second round, once its lookup is over."""
        if self._send_query(node.address, node.id, method, args, now, search.number, again=True):
            search.asking_again += 1

    def _answered_again(self, search: _Search, now: float) -> None:
        """One of the second asks was answered or given up on; the last ends the search."""
        search.asking_again -= 1
        if not search.asking_again:
            self._finish(search, now)

    def _finish(self, search: _Search, now: float) -> None:
        del self._searches[search.number]
        if search.number == self._joining:
            # Kademlia's join: with our neighbours known, look into every region of the id
            # space farther than they are.
            self._joining = None
            for target, size in self.table.region_targets(REFRESH_REACH):
                self._refresh(target, size, now)
        lookup = search.lookup
        if search.report:
            self._outputs.append(
                LookupDone(
                    search.number,
                    lookup.target,
                    lookup.closest(),
                    lookup.hops(),
                    lookup.queries,
                    lookup.timed_out,
                    search.stored,
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
        *,
        again: bool = False,
        sampling: int | None = None,
    ) -> bool:
        """Send a query and wait for its answer; False if too many are in flight already."""
        if len(self._pending) >= MAX_PENDING:
            return False
        transaction = self._transaction()
        deadline = now + QUERY_TIMEOUT
        self._pending[transaction] = _Pending(address, node_id, deadline, search, again, sampling)
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
        if pending.sampling is not None:
            self._outputs.append(_samples(pending.sampling, sender, message))
            return
        if isinstance(message, krpc.Error):
            if search is not None and pending.again:
                self._answered_again(search, now)
            elif search is not None and pending.node_id is not None:
                search.lookup.failed(pending.node_id)
                self._advance(search, now)
            return
        if pending.node_id is not None and message.sender != pending.node_id:
            # Another node at that address now (a restart with a new id): the one we asked
            # is gone, whatever answered.
            self._timed_out(pending, now)
            return
        self.queries_answered += 1
        if message.seen_as is not None:
            self._vote(sender, message.seen_as, now)
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
        if pending.again and search.store is not None:
            search.stored += 1  # the node took what we stored
            self._answered_again(search, now)
            return
        token = values.get(b"token")
        if isinstance(token, bytes) and len(token) <= krpc.MAX_TRANSACTION:
            search.tokens[node.id] = token
        if search.method == GET_LISTINGS:
            self._take_listings(search, values.get(b"listings"))
            if b"listings" not in values:
                search.empty.add(node.id)
        elif search.method == GET:
            self._take_item(search, values)
            if b"v" not in values:
                search.empty.add(node.id)
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
        if pending.again:
            self._answered_again(search, now)
            return
        search.lookup.answered(pending.node_id, nodes)
        self._advance(search, now)

    def _vote(self, voter: Address, seen_as: Address, now: float) -> None:
        """Count what a node says our address is (BEP 42); once most say an IP our id is not
        secure for, take an id that is, as libtorrent restarts its DHT."""
        try:
            self.external_ip.vote(addresses.pack_ip(voter[0]), addresses.pack_ip(seen_as[0]), now)
        except ValueError:
            return
        if not self.external_ip.needs_new_id(self.node_id):
            return
        ip = self.external_ip.external_ip()
        assert ip is not None  # needs_new_id says so only for an IP the vote settled on
        self.node_id = secure_node_id(ip, self.rng)
        table = RoutingTable(self.node_id, rng=self.rng, enforce=self.table.enforce)
        for entry in list(self.table.entries()):
            table.restore(entry.node, now)
        self.table = self.server.table = table
        self.server.node_id = self.node_id
        self._joining = None
        self._join(now, [])  # the new id has other neighbours: look them up

    def _take_item(self, search: _Search, values: dict[bytes, Any]) -> None:
        """A BEP 44 item from a reply: one that is for the target, checked, and newer than
        what we have goes up."""
        try:
            item = parse_item(values, salt=search.salt)
        except ItemError:
            return  # junk from one node; the others may hold the real item
        if item is None or item.target != search.lookup.target:
            return
        if search.item is not None and item.seq <= search.item.seq:
            return
        search.item = item
        if search.report:
            self._outputs.append(ItemFound(search.number, item))

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
        if pending.sampling is not None:
            self._outputs.append(SamplesFound(pending.sampling, pending.address, answered=False))
        if pending.node_id is None:
            return
        self._pinging.discard(pending.node_id)
        self.table.failed(pending.node_id, now)
        search = self._searches.get(pending.search) if pending.search is not None else None
        if search is not None and pending.again:
            self._answered_again(search, now)
        elif search is not None:
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


def _samples(request: int, sender: Address, message: krpc.Response | krpc.Error) -> SamplesFound:
    """What a sample_infohashes reply says, bounded; an error or a malformed reply says
    nothing."""
    if isinstance(message, krpc.Error):
        return SamplesFound(request, sender, answered=False)
    values = message.values
    samples, count, interval = values.get(b"samples"), values.get(b"num"), values.get(b"interval")
    if not isinstance(samples, bytes) or len(samples) % 20:
        return SamplesFound(request, sender, answered=False)
    hashes = tuple(samples[i : i + 20] for i in range(0, min(len(samples), 20 * MAX_SAMPLES), 20))
    return SamplesFound(
        request,
        sender,
        answered=True,
        count=max(len(hashes), count) if isinstance(count, int) and count < 2**63 else len(hashes),
        interval=min(max(interval, 0), MAX_SAMPLE_INTERVAL) if isinstance(interval, int) else 0,
        samples=hashes,
    )
