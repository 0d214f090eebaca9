"""The answering half of a DHT node: what it keeps for others (announced peers, keyword
listings, BEP 44 items), the tokens that guard every store, per-source rate limits, and reply
budgets so that nobody can use the node to flood a third party.

A reply to a sender that has not proven its address (by a token of ours in the query, or by
answering one of our queries from it) carries the closest nodes and a token, as every reply
must, and of what we hold only as much as AMPLIFICATION times the query's size; a proven
sender gets up to a datagram's worth.
"""

from __future__ import annotations

import random
from typing import Any

from .. import addresses
from ..addresses import Address
from ..bencode import encode
from ..ratelimit import RateLimiter
from . import krpc
from .items import ItemError, ItemStore, parse_item
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
from .listings import MAX_REPLY_LISTINGS, ListingError, ListingStore, parse_listing
from .routing import K, RoutingTable
from .store import PeerStore
from .tokens import Tokens

# Queries we answer per source: a DHT node asks a few a second at most.
QUERY_RATE = 20.0
QUERY_BURST = 50.0
MAX_RATE_LIMITED_SOURCES = 10_000
# An unproven sender gets at most this many times the bytes it sent, beyond nodes and token.
AMPLIFICATION = 4
# A reply to a proven sender stays within one datagram on any path.
MAX_REPLY = 1400
# What a reply adds around its values at most: t (up to 32 bytes), y, the version and the
# requester's address (18 bytes for IPv6).
ENVELOPE = 110
# BEP 51: how often the sample of info-hashes is drawn anew, and how many it holds.
SAMPLE_INTERVAL = 300
MAX_SAMPLES = 20
# The argument that names the target of each method that has one.
TARGET = {
    FIND_NODE: b"target",
    GET_PEERS: b"info_hash",
    GET_LISTINGS: b"key",
    GET: b"target",
    SAMPLE_INFOHASHES: b"target",
}


class Server:
    """Answers the queries of other nodes from the table and the stores."""

    def __init__(self, node_id: bytes, table: RoutingTable, rng: random.Random, now: float) -> None:
        self.node_id = node_id
        self.table = table
        self.rng = rng
        self.peers = PeerStore(rng)
        self.listings = ListingStore(rng)
        self.items = ItemStore()
        self.tokens = Tokens(rng, now)
        self._limiter = RateLimiter(QUERY_RATE, QUERY_BURST, MAX_RATE_LIMITED_SOURCES)
        self._samples: list[bytes] = []
        self._sampled_at = float("-inf")

    def admit(self, sender: Address, now: float) -> bytes | None:
        """The sender's packed IP if its query may be answered; None if it asks too fast or
        its host is not an IP."""
        try:
            ip = addresses.pack_ip(sender[0])
        except ValueError:
            return None
        if not self._limiter.allow(addresses.source_key(ip, sender[1]), now):
            return None
        return ip

    def reply(self, query: krpc.Query, sender: Address, ip: bytes, size: int, now: float) -> bytes:
        """The reply datagram to a query of size bytes: a response, or an error."""
        try:
            values = self._answer(query, sender, ip, size, now)
        except krpc.KrpcError as exc:
            return krpc.error(query.transaction, exc.code, str(exc))
        if values is None:
            return krpc.error(query.transaction, krpc.METHOD_UNKNOWN, "method unknown")
        return krpc.response(query.transaction, values, sender=self.node_id, requester=sender)

    def maintain(self, now: float) -> None:
        """Rotate the token secret and forget what was not stored again in time."""
        self.tokens.rotate(now)
        self.peers.expire(now)
        self.listings.expire(now)
        self.items.expire(now)

    def _answer(
        self, query: krpc.Query, sender: Address, ip: bytes, size: int, now: float
    ) -> dict[bytes, Any] | None:
        """The values of the response to a query; None for a method we do not know."""
        args = query.args
        method = query.method
        if method == PING:
            return {}
        if method == FIND_NODE:
            return self._nodes(krpc.node_id(args, b"target"), sender, args)
        if method in (GET_PEERS, GET_LISTINGS, GET, SAMPLE_INFOHASHES):
            return self._held(query, sender, ip, size, now)
        if method == ANNOUNCE_PEER:
            info_hash = krpc.node_id(args, b"info_hash")
            self._check_token(args, ip)
            port = sender[1] if args.get(b"implied_port") == 1 else krpc.port(args, b"port")
            self.peers.announce(info_hash, (sender[0], port), now)
            return {}
        if method == PUT_LISTING:
            key = krpc.node_id(args, b"key")
            self._check_token(args, ip)
            try:
                self.listings.put(key, parse_listing(args.get(b"listing")), now)
            except ListingError as exc:
                raise krpc.KrpcError(str(exc)) from None
            return {}
        if method == PUT:
            self._check_token(args, ip)
            item = parse_item(args)
            if item is None:
                raise ItemError("a put needs a value")
            cas = args.get(b"cas")
            if cas is not None and not isinstance(cas, int):
                raise ItemError("cas is not a number")
            self.items.put(item, addresses.source_key(ip, sender[1]), now, cas=cas)
            return {}
        return None

    def _held(
        self, query: krpc.Query, sender: Address, ip: bytes, size: int, now: float
    ) -> dict[bytes, Any]:
        """The closest nodes to the target, a token to store there later, and what we hold
        under it, as much as the sender's budget allows."""
        args = query.args
        method = query.method
        target = krpc.node_id(args, TARGET[method])
        values = self._nodes(target, sender, args)
        values[b"token"] = self.tokens.issue(ip)
        proven = self._proven(query, sender, ip)
        # The nodes and the token are what any node answers anyone; beyond them a stranger
        # gets at most AMPLIFICATION times its query, a proven sender a datagram's worth.
        if proven:
            room = MAX_REPLY - ENVELOPE - len(encode(values))
        else:
            room = AMPLIFICATION * size - ENVELOPE
        if method == GET_PEERS:
            peers = [addresses.pack(peer) for peer in self.peers.peers(target, now)]
            _fill(values, b"values", peers, room)
        elif method == GET_LISTINGS:
            listings = [listing.to_value() for listing in self.listings.get(target, now)]
            _fill(values, b"listings", listings[:MAX_REPLY_LISTINGS], room)
        elif method == GET:
            item = self.items.get(target, now)
            seq = args.get(b"seq")
            if item is None:
                pass
            elif item.key is not None and isinstance(seq, int) and item.seq <= seq:
                values[b"seq"] = item.seq  # the asker has it already
            else:
                need = len(encode(item.fields())) - 2
                if proven and need > room:
                    # The item first: a 1,000-byte value and 16 nodes do not fit a datagram.
                    room += _shed_nodes(values, need - room)
                if need <= room:
                    values.update(item.fields())
        else:
            values[b"interval"] = SAMPLE_INTERVAL
            values[b"num"] = len(self.peers)
            samples = self._sample(now)
            fit = max(0, min(len(samples), (room - 16) // 20))
            values[b"samples"] = b"".join(samples[:fit])
        return values

    def _proven(self, query: krpc.Query, sender: Address, ip: bytes) -> bool:
        """Whether the sender showed it receives at its address: it holds a token of ours, or
        it answered one of our queries from there."""
        if self.tokens.valid(query.args.get(b"token"), ip):
            return True
        entry = self.table.get(query.sender)
        return (
            entry is not None and entry.node.address == sender and entry.last_response is not None
        )

    def _sample(self, now: float) -> list[bytes]:
        """BEP 51: a random sample of the info-hashes stored here, drawn anew each interval,
        or sooner while it holds them all and their number changes."""
        held = len(self.peers)
        partial = len(self._samples) < MAX_SAMPLES and len(self._samples) != held
        if partial or now - self._sampled_at >= SAMPLE_INTERVAL:
            self._samples = self.peers.sample(MAX_SAMPLES)
            self._sampled_at = now
        return self._samples

    def _check_token(self, args: dict[bytes, Any], ip: bytes) -> None:
        if not self.tokens.valid(args.get(b"token"), ip):
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


def _fill(values: dict[bytes, Any], field: bytes, entries: list[Any], room: int) -> None:
    """Put as many entries under field as room bytes of bencode hold."""
    room -= len(encode(field)) + 2  # the key, and the list's "l" and "e"
    chosen = []
    for entry in entries:
        room -= len(encode(entry))
        if room < 0:
            break
        chosen.append(entry)
    if chosen:
        values[field] = chosen


def _shed_nodes(values: dict[bytes, Any], short: int) -> int:
    """Drop nodes from a reply, IPv6 ones first, until short bytes are free; the bytes freed."""
    freed = 0
    for field, size in ((b"nodes6", krpc.IPV6_NODE), (b"nodes", krpc.IPV4_NODE)):
        compact = values.get(field)
        if not isinstance(compact, bytes):
            continue
        while compact and freed < short:
            compact = compact[:-size]
            freed += size
        values[field] = compact
    return freed
