"""UDP trackers (BEP 15), sans-IO: one connect-then-announce (or scrape) exchange at a time."""

from __future__ import annotations

import random
import struct
from collections.abc import Hashable, Sequence
from typing import Any, Generic, TypeVar

from shoal import addresses

from .messages import (
    AnnounceParams,
    AnnounceResponse,
    ScrapeResult,
    TrackerError,
    TrackerRefused,
    bounded_peers,
    tracker_text,
)

__all__ = [
    "CONNECTION_ID_LIFETIME",
    "MAX_SCRAPE_HASHES",
    "ConnectionCache",
    "UdpAnnounce",
    "UdpScrape",
    "UdpTrackerExchange",
]

PROTOCOL_ID = 0x41727101980
CONNECT, ANNOUNCE, SCRAPE, ERROR = 0, 1, 2, 3
# BEP 15: a connection id may be used for one minute after it was received.
CONNECTION_ID_LIFETIME = 60.0
# Info-hashes that fit one scrape request (BEP 15).
MAX_SCRAPE_HASHES = 74
# BEP 15 waits 15 * 2^n s; a shorter start finds a lost datagram sooner, the cap bounds a try.
FIRST_TIMEOUT = 3.0
MAX_TIMEOUT = 60.0
# Sends per step before the tracker counts as down (3 + 6 + 12 + 24 s at the defaults).
MAX_TRIES = 4
# Trackers whose connection ids are kept; old ids go first when it is full.
MAX_CACHED_CONNECTIONS = 1000

_HEADER = struct.Struct(">II")  # action, transaction id: the start of every reply
_CONNECT_REQUEST = struct.Struct(">QII")
_REQUEST_HEADER = struct.Struct(">8sII")  # connection id, action, transaction id
_ANNOUNCE_REQUEST = struct.Struct(">8sII20s20sQQQIIIiH")
_ANNOUNCE_REPLY = struct.Struct(">IIIII")
_SCRAPE_ENTRY = struct.Struct(">III")
_MAX_U64 = (1 << 64) - 1

T = TypeVar("T")


class ConnectionCache:
    """Connection ids by tracker address, each usable for CONNECTION_ID_LIFETIME seconds."""

    def __init__(self) -> None:
        self._ids: dict[Hashable, tuple[bytes, float]] = {}

    def get(self, tracker: Hashable, now: float) -> bytes | None:
        """The tracker's connection id if one was received less than a minute ago."""
        entry = self._ids.get(tracker)
        if entry is None or now - entry[1] >= CONNECTION_ID_LIFETIME:
            return None
        return entry[0]

    def put(self, tracker: Hashable, connection_id: bytes, now: float) -> None:
        """Remember a connection id received from the tracker at now."""
        self._ids.pop(tracker, None)
        if len(self._ids) >= MAX_CACHED_CONNECTIONS:
            del self._ids[next(iter(self._ids))]  # dicts keep insertion order: the oldest
        self._ids[tracker] = (connection_id, now)

    def forget(self, tracker: Hashable) -> None:
        """Drop the tracker's connection id, so the next exchange connects afresh."""
        self._ids.pop(tracker, None)


class UdpTrackerExchange(Generic[T]):
    """Connect (unless a fresh connection id is cached), then one request, with retries.

    Once `done`, either `result` or `error` is set."""

    action: int
    what: str

    def __init__(
        self,
        now: float,
        *,
        cache: ConnectionCache,
        tracker: Hashable,
        rng: random.Random | None = None,
        first_timeout: float = FIRST_TIMEOUT,
        max_tries: int = MAX_TRIES,
    ) -> None:
        self._cache = cache
        self._tracker = tracker
        # Transaction ids guard against spoofed replies, so they must not be guessable.
        self._rng = rng if rng is not None else random.SystemRandom()
        self._first_timeout = first_timeout
        self._max_tries = max_tries
        self._connection_id: bytes | None = None
        self._transaction_id = 0
        self._tries = 0
        self._deadline: float | None = None
        self._outgoing: list[bytes] = []
        self.result: T | None = None
        self.error: TrackerError | None = None
        self._start_step(now)

    @property
    def done(self) -> bool:
        """Whether the exchange has ended, with a result or an error."""
        return self.result is not None or self.error is not None

    def take_outputs(self) -> list[bytes]:
        """The datagrams to send to the tracker, in order; each is returned once."""
        outputs, self._outgoing = self._outgoing, []
        return outputs

    def get_timer(self) -> float | None:
        """When handle_timer should next be called; None once done."""
        return None if self.done else self._deadline

    def handle_timer(self, now: float) -> None:
        """Resend the current request if its answer is overdue, or give up after max_tries."""
        if self.done or self._deadline is None or now < self._deadline:
            return
        if self._tries >= self._max_tries:
            self._fail(TrackerError(f"the tracker did not answer after {self._tries} tries"))
            return
        if self._connection_id is not None and self._cache.get(self._tracker, now) is None:
            # The connection id has expired while we waited: connect again.
            self._connection_id = None
            self._transaction_id = self._rng.getrandbits(32)
        self._send(now)

    def receive(self, datagram: bytes, now: float) -> None:
        """Take a datagram from the tracker; those that do not fit this exchange are ignored."""
        if self.done or len(datagram) < _HEADER.size:
            return
        action, transaction_id = _HEADER.unpack_from(datagram)
        if transaction_id != self._transaction_id:
            return
        if action == ERROR:
            # The tracker may have rejected our connection id; get a new one next time.
            self._cache.forget(self._tracker)
            reason = tracker_text(datagram[_HEADER.size :]) or "no reason given"
            self._fail(TrackerRefused(f"the tracker refused the {self.what}: {reason}"))
        elif self._connection_id is None:
            if action == CONNECT and len(datagram) >= 16:
                self._cache.put(self._tracker, datagram[8:16], now)
                self._start_step(now)
        elif action == self.action:
            result = self._parse_reply(datagram)
            if result is not None:
                self.result = result
                self._deadline = None

    def _start_step(self, now: float) -> None:
        """Send the request with a cached connection id, or else a connect request."""
        self._connection_id = self._cache.get(self._tracker, now)
        self._transaction_id = self._rng.getrandbits(32)
        self._tries = 0
        self._send(now)

    def _send(self, now: float) -> None:
        """Queue the current step's datagram and arm its retransmission timer."""
        # Only the current step's datagram is worth sending: it replaces one not yet taken.
        if self._connection_id is None:
            self._outgoing = [_CONNECT_REQUEST.pack(PROTOCOL_ID, CONNECT, self._transaction_id)]
        else:
            self._outgoing = [self._request(self._connection_id, self._transaction_id)]
        self._deadline = now + min(self._first_timeout * 2**self._tries, MAX_TIMEOUT)
        self._tries += 1

    def _fail(self, error: TrackerError) -> None:
        self.error = error
        self._deadline = None
        self._outgoing = []

    def _request(self, connection_id: bytes, transaction_id: int) -> bytes:
        """The request datagram, after its connection id."""
        raise NotImplementedError

    def _parse_reply(self, datagram: bytes) -> T | None:
        """The result carried by a reply whose action and transaction id match; None if short."""
        raise NotImplementedError


class UdpAnnounce(UdpTrackerExchange[AnnounceResponse]):
    """An announce to a UDP tracker; peers are IPv6 when the tracker is reached over IPv6."""

    action = ANNOUNCE
    what = "announce"

    def __init__(
        self, params: AnnounceParams, now: float, *, ipv6: bool = False, **options: Any
    ) -> None:
        self.params = params
        self.ipv6 = ipv6
        super().__init__(now, **options)

    def _request(self, connection_id: bytes, transaction_id: int) -> bytes:
        params = self.params
        return _ANNOUNCE_REQUEST.pack(
            connection_id,
            ANNOUNCE,
            transaction_id,
            params.info_hash,
            params.peer_id,
            min(max(0, params.downloaded), _MAX_U64),
            min(max(0, params.left), _MAX_U64),
            min(max(0, params.uploaded), _MAX_U64),
            int(params.event),
            0,  # IP address: the one the datagram comes from
            params.key & 0xFFFFFFFF,
            min(params.numwant, 0x7FFFFFFF),
            params.port,
        )

    def _parse_reply(self, datagram: bytes) -> AnnounceResponse | None:
        if len(datagram) < _ANNOUNCE_REPLY.size:
            return None
        _action, _transaction, interval, leechers, seeders = _ANNOUNCE_REPLY.unpack_from(datagram)
        peers = addresses.unpack(datagram[_ANNOUNCE_REPLY.size :], ipv6=self.ipv6)
        return AnnounceResponse(
            interval=interval,
            min_interval=None,
            peers=bounded_peers(peers),
            seeders=seeders,
            leechers=leechers,
        )


class UdpScrape(UdpTrackerExchange[dict[bytes, ScrapeResult]]):
    """A scrape of up to MAX_SCRAPE_HASHES torrents from a UDP tracker."""

    action = SCRAPE
    what = "scrape"

    def __init__(self, info_hashes: Sequence[bytes], now: float, **options: Any) -> None:
        if not 0 < len(info_hashes) <= MAX_SCRAPE_HASHES:
            raise ValueError(f"a UDP scrape asks about 1 to {MAX_SCRAPE_HASHES} info-hashes")
        if any(len(info_hash) != 20 for info_hash in info_hashes):
            raise ValueError("an info-hash is 20 bytes long")
        self.info_hashes = list(info_hashes)
        super().__init__(now, **options)

    def _request(self, connection_id: bytes, transaction_id: int) -> bytes:
        header = _REQUEST_HEADER.pack(connection_id, SCRAPE, transaction_id)
        return header + b"".join(self.info_hashes)

    def _parse_reply(self, datagram: bytes) -> dict[bytes, ScrapeResult]:
        # A short reply still carries the counts of the torrents it reaches.
        results = {}
        for index, info_hash in enumerate(self.info_hashes):
            offset = _HEADER.size + index * _SCRAPE_ENTRY.size
            if offset + _SCRAPE_ENTRY.size > len(datagram):
                break
            seeders, completed, leechers = _SCRAPE_ENTRY.unpack_from(datagram, offset)
            results[info_hash] = ScrapeResult(seeders, completed, leechers)
        return results
