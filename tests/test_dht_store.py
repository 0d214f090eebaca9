"""Announce tokens and the peer store: validity windows, expiry, bounds."""

from __future__ import annotations

import random

from shoal.dht import store as store_module
from shoal.dht.store import PEER_LIFETIME, PeerStore
from shoal.dht.tokens import ROTATE_EVERY, Tokens

IP = bytes([10, 0, 0, 1])
OTHER_IP = bytes([10, 0, 0, 2])


def test_a_token_is_good_for_its_ip_for_one_to_two_rotations():
    tokens = Tokens(random.Random(1), now=0.0)
    token = tokens.issue(IP)
    assert tokens.valid(token, IP) and not tokens.valid(token, OTHER_IP)
    assert not tokens.valid(b"forged!!", IP) and not tokens.valid(None, IP)
    tokens.rotate(ROTATE_EVERY)
    assert tokens.valid(token, IP)  # the previous secret still counts
    tokens.rotate(2 * ROTATE_EVERY)
    assert not tokens.valid(token, IP)


def test_peers_expire_unless_announced_again():
    peers = PeerStore(random.Random(1))
    info_hash = b"\x01" * 20
    peers.announce(info_hash, ("10.0.0.1", 6881), now=0.0)
    peers.announce(info_hash, ("10.0.0.1", 7000), now=10.0)  # two clients behind one IP
    assert sorted(peers.peers(info_hash, 20.0)) == [("10.0.0.1", 6881), ("10.0.0.1", 7000)]
    assert peers.peers(info_hash, PEER_LIFETIME) == [("10.0.0.1", 7000)]
    assert peers.peers(info_hash, 10.0 + PEER_LIFETIME) == []
    peers.expire(10.0 + PEER_LIFETIME)
    assert len(peers) == 0


def test_the_store_is_bounded(monkeypatch):
    monkeypatch.setattr(store_module, "MAX_TORRENTS", 3)
    monkeypatch.setattr(store_module, "MAX_PEERS_PER_TORRENT", 5)
    peers = PeerStore(random.Random(1))
    for n in range(100):
        peers.announce(bytes([n]) * 20, ("10.0.0.1", 1), now=0.0)
        peers.announce(b"\xff" * 20, (f"10.0.1.{n}", 1), now=0.0)
    assert len(peers) == 3
    assert len(peers.peers(b"\xff" * 20, 1.0)) == 5


def test_one_ip_cannot_fill_a_torrents_list():
    peers = PeerStore(random.Random(1))
    for port in range(1, 100):
        peers.announce(b"\xee" * 20, ("10.0.0.9", port), now=0.0)
    peers.announce(b"\xee" * 20, ("10.0.0.10", 1), now=0.0)
    assert len(peers.peers(b"\xee" * 20, 1.0)) == store_module.MAX_PORTS_PER_IP + 1
