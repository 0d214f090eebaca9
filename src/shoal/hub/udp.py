"""The UDP tracker (BEP 15), sans-IO: a datagram, its sender and the time in; a reply out."""

from __future__ import annotations

import hashlib
import hmac
import struct

from shoal import addresses
from shoal.addresses import Address
from shoal.contract import Datagram
from shoal.hub.registry import AnnounceRequest, Event, MalformedRequest, Registry, TrackerRefusal

__all__ = ["PROTOCOL_ID", "UdpTracker"]

PROTOCOL_ID = 0x41727101980
CONNECT, ANNOUNCE, SCRAPE, ERROR = 0, 1, 2, 3
# BEP 15 caps a scrape at what fits a 512-byte reply: 74 torrents of 12 bytes.
MAX_SCRAPE_HASHES = 74
# A connection id is good in the window it was issued and the next: one to two minutes.
CONNECTION_WINDOW = 60.0

_PROTOCOL_ID_BYTES = PROTOCOL_ID.to_bytes(8, "big")
# A request starts with the connection id (8 bytes), then these; a reply starts with these.
_HEADER = struct.Struct(">II")
_REQUEST_HEADER_SIZE = 16
_ANNOUNCE = struct.Struct(">QII20s20sQQQIIIiH")
_ANNOUNCE_REPLY = struct.Struct(">IIIII")
_SCRAPE_ENTRY = struct.Struct(">III")
_HASH_LENGTH = 20
# Indexed by BEP 15's event number; faster than calling Event(number).
_EVENTS = tuple(Event)


class UdpTracker:
    """Answers BEP 15 datagrams from the registry; keeps no state per client.

    Connection ids are a keyed hash of the client's IP address and a time window, so checking
    one needs nothing remembered and a spoofed source cannot guess one. The port is left out:
    libtorrent shares one connection id among all the sockets of a process.
    """

    def __init__(self, registry: Registry, secret: bytes) -> None:
        self.registry = registry
        self._secret = secret
        self._outputs: list[Datagram] = []

    def receive(self, data: bytes, sender: Address, now: float) -> None:
        """A datagram from sender; its reply, if it deserves one, is queued."""
        reply = self._answer(data, addresses.pack_ip(sender[0]), now)
        if reply is not None:
            self._outputs.append(Datagram(reply, sender))

    def take_outputs(self) -> list[Datagram]:
        """The replies to send, in order."""
        outputs, self._outputs = self._outputs, []
        return outputs

    def get_timer(self) -> float | None:
        """Never: connection ids are checked by their time window, nothing else expires here."""
        return None

    def handle_timer(self, now: float) -> None:
        """Nothing is ever due (see get_timer)."""

    def connection_id(self, ip: bytes, now: float, windows_ago: int = 0) -> bytes:
        """The 8-byte connection id of ip for the window holding now (or an earlier one)."""
        window = int(now // CONNECTION_WINDOW) - windows_ago
        message = ip + window.to_bytes(8, "big", signed=True)
        return hashlib.blake2b(message, key=self._secret, digest_size=8).digest()

    def _connection_ok(self, connection_id: bytes, ip: bytes, now: float) -> bool:
        """Whether connection_id was issued to ip in this window or the one before."""
        return hmac.compare_digest(connection_id, self.connection_id(ip, now)) or (
            hmac.compare_digest(connection_id, self.connection_id(ip, now, 1))
        )

    def _answer(self, data: bytes, ip: bytes, now: float) -> bytes | None:
        """The reply to one datagram from ip, or None to stay silent."""
        if len(data) < _REQUEST_HEADER_SIZE:
            # Without a transaction id there is nothing a client could match an error to.
            return None
        action, transaction_id = _HEADER.unpack_from(data, 8)
        if action == CONNECT:
            if data[:8] != _PROTOCOL_ID_BYTES:
                return None
            return _HEADER.pack(CONNECT, transaction_id) + self.connection_id(ip, now)
        if not self._connection_ok(data[:8], ip, now):
            return _unverified_error(data, transaction_id, "connect again")
        try:
            if action == ANNOUNCE:
                return self._announce(data, ip, transaction_id, now)
            if action == SCRAPE:
                return self._scrape(data, ip, transaction_id, now)
            raise MalformedRequest("unknown action")
        except MalformedRequest as problem:
            # The sender is proven by its connection id, so its rate may be charged.
            return _error(transaction_id, self.registry.refuse_malformed(problem, ip, now))
        except TrackerRefusal as refusal:
            return _error(transaction_id, str(refusal))

    def _announce(self, data: bytes, ip: bytes, transaction_id: int, now: float) -> bytes:
        """Record an announce; reply with peers of the sender's own address family."""
        if len(data) < _ANNOUNCE.size:
            raise MalformedRequest("the announce is too short")
        # Bytes past the fixed part are BEP 41 options, which the tracker does not need.
        (_, _, _, info_hash, peer_id, downloaded, left, uploaded, event, _, _, numwant, port) = (
            _ANNOUNCE.unpack_from(data)
        )
        if event >= len(_EVENTS):
            raise MalformedRequest("the event is not one BEP 15 defines")
        if port == 0:
            raise MalformedRequest("the port is 0")
        # Positional, as this is the hot path. The ip field is ignored: a peer's address is
        # the one its datagram came from.
        request = AnnounceRequest(
            info_hash, peer_id, ip, port, uploaded, downloaded, left, _EVENTS[event], numwant
        )
        result = self.registry.announce(request, now, mixed_families=False)
        return _ANNOUNCE_REPLY.pack(
            ANNOUNCE, transaction_id, result.interval, result.leechers, result.seeders
        ) + b"".join(result.peers)

    def _scrape(self, data: bytes, ip: bytes, transaction_id: int, now: float) -> bytes:
        """Counts for up to MAX_SCRAPE_HASHES info-hashes."""
        body = data[_REQUEST_HEADER_SIZE:]
        count = min(len(body) // _HASH_LENGTH, MAX_SCRAPE_HASHES)
        if count == 0:
            raise MalformedRequest("the scrape names no info-hash")
        info_hashes = [body[i * _HASH_LENGTH : (i + 1) * _HASH_LENGTH] for i in range(count)]
        stats = self.registry.scrape(info_hashes, ip, now)
        entries = b"".join(
            _SCRAPE_ENTRY.pack(swarm.seeders, swarm.completed, swarm.leechers) for swarm in stats
        )
        return _HEADER.pack(SCRAPE, transaction_id) + entries


def _unverified_error(request: bytes, transaction_id: int, message: str) -> bytes | None:
    """An error for a sender not yet proven to own its address: never larger than its request,
    so a spoofed source cannot use the tracker to amplify traffic at someone else."""
    reply = _error(transaction_id, message)
    return reply if len(reply) <= len(request) else None


def _error(transaction_id: int, message: str) -> bytes:
    """An error reply (action 3)."""
    return _HEADER.pack(ERROR, transaction_id) + message.encode()
