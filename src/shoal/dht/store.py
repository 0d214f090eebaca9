"""Peers announced to this node, per info-hash, each expiring unless announced again."""

from __future__ import annotations

import random

from ..addresses import Address

PEER_LIFETIME = 30 * 60.0
# Like libtorrent's defaults: enough for the swarms this node is close to, bounded in memory.
MAX_TORRENTS = 2000
MAX_PEERS_PER_TORRENT = 500
# Peers behind one IP (a NAT, a machine running several clients) that one torrent keeps; more
# from one IP would let it fill the torrent's list.
MAX_PORTS_PER_IP = 8
# Peers returned in one get_peers reply (it must fit a datagram).
MAX_VALUES = 50


class PeerStore:
    """Announced peers, keyed by info-hash then by address (as libtorrent keeps them)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._torrents: dict[bytes, dict[Address, float]] = {}  # address -> expiry

    def __len__(self) -> int:
        return len(self._torrents)

    def announce(self, info_hash: bytes, address: Address, now: float) -> bool:
        """Store a peer; False when the store is full (the announce is not kept)."""
        peers = self._torrents.get(info_hash)
        if peers is None:
            if len(self._torrents) >= MAX_TORRENTS:
                self.expire(now)
                if len(self._torrents) >= MAX_TORRENTS:
                    return False
            peers = self._torrents[info_hash] = {}
        if address not in peers:
            if len(peers) >= MAX_PEERS_PER_TORRENT:
                return False
            if sum(1 for host, _port in peers if host == address[0]) >= MAX_PORTS_PER_IP:
                return False
        peers[address] = now + PEER_LIFETIME
        return True

    def peers(self, info_hash: bytes, now: float) -> list[Address]:
        """Up to MAX_VALUES live peers of a torrent, a random sample if there are more."""
        peers = self._torrents.get(info_hash)
        if not peers:
            return []
        live = [address for address, expiry in peers.items() if expiry > now]
        if len(live) > MAX_VALUES:
            live = self._rng.sample(live, MAX_VALUES)
        return live

    def sample(self, count: int) -> list[bytes]:
        """Up to count of the info-hashes held, at random."""
        held = list(self._torrents)
        return held if len(held) <= count else self._rng.sample(held, count)

    def expire(self, now: float) -> None:
        """Forget peers that were not announced again in time."""
        for info_hash in list(self._torrents):
            peers = self._torrents[info_hash]
            for address in [a for a, expiry in peers.items() if expiry <= now]:
                del peers[address]
            if not peers:
                del self._torrents[info_hash]
