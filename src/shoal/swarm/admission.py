"""Who gets a connection slot: per-address limits and eviction of idle peers."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

# Connections from one IP address per torrent. Peers on loopback are many local nodes
# sharing one address, so they get more, but not every slot.
MAX_PER_ADDRESS = 4
MAX_PER_LOOPBACK_ADDRESS = 20
# A new connection is safe from eviction this long, so it can show what it is worth.
EVICTION_GRACE = 10.0
# A peer that sent or got a block this recently is trading, and is not evicted.
TRADING_WINDOW = 60.0


@functools.lru_cache(maxsize=4096)
def is_loopback(host: str) -> bool:
    """Whether host is a loopback address (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=4096)  # asked for every peer at every admission
def address_group(host: str) -> str:
    """What per-address limits count: an IPv4 address, or an IPv6 /64 (one subscriber's)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if not ip.is_loopback:
            return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def per_address_limit(host: str) -> int:
    """How many connections one IP address (or IPv6 /64) may hold in a torrent."""
    return MAX_PER_LOOPBACK_ADDRESS if is_loopback(host) else MAX_PER_ADDRESS


@dataclass(frozen=True, slots=True)
class Standing:
    """What eviction needs to know of one connected peer."""

    key: int
    connected_at: float
    last_payload: float  # when a block last went either way (-inf if never)
    interested: bool  # either side wants what the other has


def eviction_candidate(peers: Iterable[Standing], now: float) -> int | None:
    """The peer to drop for a newcomer, if any may go.

    Peers that moved a block within the trading window, or are still in their grace period,
    stay. Of the rest, one with no interest either way goes first (idle longest); else the
    interested peer that joined last, so those who have waited longest keep their turn.
    """
    idle = [
        peer
        for peer in peers
        if now - peer.last_payload >= TRADING_WINDOW and now - peer.connected_at >= EVICTION_GRACE
    ]
    if not idle:
        return None
    indifferent = [peer for peer in idle if not peer.interested]
    if indifferent:
        return min(indifferent, key=lambda peer: max(peer.last_payload, peer.connected_at)).key
    return max(idle, key=lambda peer: peer.connected_at).key


def earliest_eviction(peers: Iterable[Standing]) -> float:
    """The soonest any of these peers could be evicted: activity only pushes it later."""
    return min(
        (
            max(peer.last_payload + TRADING_WINDOW, peer.connected_at + EVICTION_GRACE)
            for peer in peers
        ),
        default=float("inf"),
    )


# Incoming connections that have not yet named their torrent, in all and per IP address.
MAX_HANDSHAKING = 100
MAX_HANDSHAKING_PER_ADDRESS = 8
MAX_HANDSHAKING_PER_LOOPBACK_ADDRESS = 32


class HandshakeGate:
    """Bounds incoming connections before their handshake; the oldest make way for new ones.

    A newcomer is never refused: one host re-opening silent connections as fast as they are
    closed then only pushes out its own, and an honest peer's handshake, which arrives at
    once, gets through.
    """

    def __init__(self, limit: int = MAX_HANDSHAKING) -> None:
        self.limit = limit
        self.waiting: dict[int, str] = {}  # connection id -> address group, oldest first

    def admit(self, connection: int, host: str) -> list[int]:
        """Register a new connection; returns the connections to close to make room."""
        group = address_group(host)
        per_address = (
            MAX_HANDSHAKING_PER_LOOPBACK_ADDRESS
            if is_loopback(host)
            else MAX_HANDSHAKING_PER_ADDRESS
        )
        same_group = [key for key, other in self.waiting.items() if other == group]
        evicted: list[int] = []
        if len(same_group) >= per_address:
            evicted.append(same_group[0])
        elif len(self.waiting) >= self.limit:
            evicted.append(next(iter(self.waiting)))
        for key in evicted:
            del self.waiting[key]
        self.waiting[connection] = group
        return evicted

    def done(self, connection: int) -> None:
        """The connection named its torrent, or closed."""
        self.waiting.pop(connection, None)
