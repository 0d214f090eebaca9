"""Peers announced to this node, per info-hash, each expiring unless announced again."""

from __future__ import annotations

import random

from ..addresses import Address

PEER_LIFETIME = 30 * 60.0
# Like libtorrent's defaults: enough for the swarms this node is close to, bounded in memory.
MAX_TORRENTS = 2000
MAX_PEERS_PER_TORRENT = 500
# Peers returned in one get_peers reply (it must fit a datagram).
MAX_VALUES = 50


class PeerStore:
    """Announced peers, keyed by info-hash then by IP (one port per IP and torrent)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._torrents: dict[bytes, dict[str, tuple[int, float]]] = {}  # ip -> (port, expiry)

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
        host, port = address
        if host not in peers and len(peers) >= MAX_PEERS_PER_TORRENT:
            return False
        peers[host] = (port, now + PEER_LIFETIME)
        return True

    def peers(self, info_hash: bytes, now: float) -> list[Address]:
        """Up to MAX_VALUES live peers of a torrent, a random sample if there are more."""
        peers = self._torrents.get(info_hash)
        if not peers:
            return []
        live = [(host, port) for host, (port, expiry) in peers.items() if expiry > now]
        if len(live) > MAX_VALUES:
            live = self._rng.sample(live, MAX_VALUES)
        return live

    def expire(self, now: float) -> None:
        """Forget peers that were not announced again in time."""
        for info_hash in list(self._torrents):
            peers = self._torrents[info_hash]
            for host in [h for h, (_port, expiry) in peers.items() if expiry <= now]:
                del peers[host]
            if not peers:
                del self._torrents[info_hash]
