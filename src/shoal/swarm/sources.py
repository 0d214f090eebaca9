"""Whom a torrent dials, and when: peer sources with back-off, as a sans-IO policy."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

from ..addresses import Address

# Dials in progress at once per torrent: each costs a socket and a timer.
MAX_DIALS = 20
# New dials per torrent per second (libtorrent's connection_speed is alike): a swarm full of
# busy nodes is not worth hammering, and PEX hands out addresses by the hundred.
DIALS_PER_SECOND = 10
# Addresses learned from trackers and peer exchange kept at most.
MAX_LEARNED = 500
# Addresses of this node kept (a node has a few; a peer echoing our peer id could make many).
MAX_OWN_ADDRESSES = 64
# Back-off after a failure: 1, 2, 4 ... seconds, capped.
FIRST_RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 60.0
# How connections are opened (--encryption): plaintext first and MSE if that fails, MSE only,
# or plaintext only.
ENCRYPTION_POLICIES = ("prefer", "require", "off")


@dataclass(slots=True)
class Source:
    """An address we may dial."""

    given: bool  # named by the user (--peer, x.pe): dialled again for as long as we run
    failures: int = 0
    encrypt: bool = False  # dial with the MSE handshake
    dialling: bool = False
    connected: bool = False
    retry_at: float = 0.0


class PeerSources:
    """Addresses of one torrent with their back-off; decides which to dial now."""

    def __init__(self, own: set[Address] | None = None, encryption: str = "prefer") -> None:
        if encryption not in ENCRYPTION_POLICIES:
            raise ValueError(f"unknown encryption policy {encryption!r}")
        self.encryption = encryption
        self._second = float("-inf")  # start of the second the dial rate counts in
        self._dialled_this_second = 0
        # Kept as counts: asked on every tick and every PEX message.
        self._learned = 0
        self._dialling = 0
        self.sources: dict[Address, Source] = {}
        # Addresses that turned out to be this node itself, never dialled again; the node
        # shares one set among its torrents.
        self.own: set[Address] = own if own is not None else set()

    def add(self, address: Address, *, given: bool, now: float) -> None:
        """Remember an address; a given one outranks the same address learned."""
        if address in self.own:
            return
        source = self.sources.get(address)
        if source is not None:
            if given and not source.given:
                source.given = True
                self._learned -= 1
            return
        if not given:
            if self._learned >= MAX_LEARNED:
                return
            self._learned += 1
        self.sources[address] = Source(
            given=given, retry_at=now, encrypt=self.encryption == "require"
        )

    def learned_count(self) -> int:
        """How many learned (not given) addresses are kept."""
        return self._learned

    def dialling(self) -> int:
        """How many dials are in progress."""
        return self._dialling

    def _settle(self, source: Source) -> None:
        """The source is neither being dialled nor connected any more."""
        if source.dialling:
            self._dialling -= 1
        source.dialling = source.connected = False

    def _forget(self, address: Address) -> None:
        source = self.sources.pop(address, None)
        if source is not None:
            self._settle(source)
            if not source.given:
                self._learned -= 1

    def __contains__(self, address: object) -> bool:
        return address in self.sources

    def due(
        self, now: float, *, room: int, seeding: bool, skip: Container[object] = ()
    ) -> list[Address]:
        """Addresses to dial now (marked as dialling), at most `room` connections in all
        counting dials in progress, MAX_DIALS in progress and DIALS_PER_SECOND new ones a
        second; a seed dials only given addresses; `skip` holds addresses already connected
        by other means."""
        if now - self._second >= 1.0:
            self._second = now
            self._dialled_this_second = 0
        if room <= 0:
            return []
        dialling = self.dialling()
        room = min(
            room - dialling, MAX_DIALS - dialling, DIALS_PER_SECOND - self._dialled_this_second
        )
        chosen: list[Address] = []
        if room <= 0:
            return chosen
        for address, source in self.sources.items():
            if source.dialling or source.connected or source.retry_at > now or address in skip:
                continue
            if seeding and not source.given:
                continue  # leechers come to a seed; it keeps dialling only whom it was told to
            source.dialling = True
            self._dialling += 1
            self._dialled_this_second += 1
            chosen.append(address)
            if len(chosen) >= room:
                break
        return chosen

    def connected(self, address: Address) -> None:
        """The dial reached the peer."""
        source = self.sources.get(address)
        if source is not None:
            self._settle(source)
            source.connected = True

    def encrypted(self, address: Address) -> bool:
        """Whether to dial address with the MSE handshake."""
        source = self.sources.get(address)
        return source is not None and source.encrypt

    def failed(self, address: Address, now: float) -> None:
        """The dial failed, or the connection ended without being of use: back off."""
        source = self.sources.get(address)
        if source is None:
            return
        self._settle(source)
        if not source.given:
            self._forget(address)  # plenty more where it came from
            return
        source.failures += 1
        source.retry_at = now + min(MAX_RETRY_DELAY, FIRST_RETRY_DELAY * 2 ** (source.failures - 1))

    def closed(self, address: Address, now: float, *, useful: bool, handshaken: bool) -> None:
        """A connection we dialled ended; one that traded resets the back-off."""
        source = self.sources.get(address)
        if source is not None and self.encryption == "prefer" and not handshaken:
            # The peer hung up before any BitTorrent handshake: it may insist on the other
            # kind of handshake, so the next try uses it, and a first switch to MSE goes at once.
            source.encrypt = not source.encrypt
            if source.encrypt:
                self._settle(source)
                source.retry_at = now
                return
        if not useful:
            self.failed(address, now)
            return
        source = self.sources.get(address)
        if source is not None:
            self._settle(source)
            source.failures = 0
            source.retry_at = now + FIRST_RETRY_DELAY

    def mark_self(self, address: Address) -> None:
        """The address reached this very node: forget it for good."""
        if len(self.own) >= MAX_OWN_ADDRESSES:
            self.own.pop()  # any one: a real address of ours is found again on its next dial
        self.own.add(address)
        self._forget(address)

    def remove(self, address: Address) -> None:
        """Forget an address (banned)."""
        self._forget(address)
