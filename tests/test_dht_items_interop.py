"""BEP 44 and BEP 51 with libtorrent on loopback: items put by one are got by the other, and
libtorrent samples the info-hashes a shoal node holds."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import libtorrent as lt
import ltclient
from conftest import LOOPBACK, until
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_dht_interop import core, dht, lt_joined, shoal_dht

from shoal.dht import items
from shoal.identity import Identity

SEED = bytes(range(32))


def wait_alert(session: lt.session, kind: type, match: Any = lambda alert: True, timeout=30.0):
    """The first alert of kind that match accepts, popped from the session within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session.wait_for_alert(100)
        for alert in session.pop_alerts():
            if isinstance(alert, kind) and match(alert):
                return alert
    raise AssertionError(f"libtorrent posted no {kind.__name__} within {timeout}s")


def item_session(router_port: int) -> lt.session:
    """A libtorrent DHT session joined through the shoal node at router_port, posting the
    alerts of its DHT operations (puts, gets, samples)."""
    session = ltclient.make_dht_session(router_port)
    mask = session.get_settings()["alert_mask"]
    session.apply_settings({"alert_mask": mask | int(lt.alert.category_t.dht_notification)})
    return session


def libtorrent_keys(seed: bytes) -> tuple[bytes, bytes]:
    """libtorrent's (public, secret) Ed25519 keys for a seed: its secret key is the seed's
    SHA-512, clamped as RFC 8032 clamps the scalar, which signs as the seed does."""
    digest = bytearray(hashlib.sha512(seed).digest())
    digest[0] &= 248
    digest[31] &= 63
    digest[31] |= 64
    public = Identity(Ed25519PrivateKey.from_private_bytes(seed)).public_key_hex
    return bytes.fromhex(public), bytes(digest)


def test_immutable_items_cross_both_ways(tmp_path):
    async def scenario() -> tuple[object, object]:
        async with shoal_dht(tmp_path) as nodes:
            session = item_session(nodes[0].port)
            await until(lt_joined(session), "libtorrent to join the DHT", 30)
            # libtorrent puts, shoal gets.
            target = session.dht_put_immutable_item(b"from libtorrent")
            await asyncio.to_thread(
                wait_alert, session, lt.dht_put_alert, lambda a: a.num_success > 0
            )
            item = await asyncio.wait_for(dht(nodes[3]).get_item(target.to_bytes()), 30)
            got_by_shoal = item.value if item is not None else None
            # shoal puts (a value larger than any query), libtorrent gets.
            mine = items.immutable(b"from shoal " + b"x" * 600)
            await asyncio.wait_for(dht(nodes[5]).put_item(mine), 30)
            session.dht_get_immutable_item(lt.sha1_hash(mine.target))
            alert = await asyncio.to_thread(wait_alert, session, lt.dht_immutable_item_alert)
            return got_by_shoal, alert.item

    got_by_shoal, got_by_libtorrent = asyncio.run(scenario())
    assert got_by_shoal == b"from libtorrent"
    assert got_by_libtorrent == b"from shoal " + b"x" * 600


def test_mutable_items_cross_both_ways_and_the_newest_wins(tmp_path):
    public, secret = libtorrent_keys(SEED)
    identity = Identity(Ed25519PrivateKey.from_private_bytes(SEED))
    target = items.mutable_target(public, b"salt")

    async def scenario() -> tuple[items.Item | None, items.Item, object]:
        async with shoal_dht(tmp_path) as nodes:
            session = item_session(nodes[0].port)
            await until(lt_joined(session), "libtorrent to join the DHT", 30)
            session.dht_put_mutable_item(secret, public, b"first", b"salt")
            await asyncio.to_thread(
                wait_alert, session, lt.dht_put_alert, lambda a: a.num_success > 0
            )
            from_libtorrent = await asyncio.wait_for(dht(nodes[2]).get_item(target, b"salt"), 30)
            # The same key signs the next version in shoal.
            newer, _sent = await asyncio.wait_for(
                dht(nodes[6]).put_mutable(identity, b"second", b"salt"), 30
            )
            session.dht_get_mutable_item(public, b"salt")
            alert = await asyncio.to_thread(
                wait_alert, session, lt.dht_mutable_item_alert, lambda a: a.seq == newer.seq
            )
            return from_libtorrent, newer, alert.item

    from_libtorrent, newer, seen_by_libtorrent = asyncio.run(scenario())
    assert from_libtorrent is not None and from_libtorrent.value == b"first"
    assert newer.seq == from_libtorrent.seq + 1
    assert seen_by_libtorrent == b"second"


def test_libtorrent_samples_the_info_hashes_a_shoal_node_holds(tmp_path):
    info_hash = bytes(range(20))

    async def scenario() -> tuple[int, list[bytes]]:
        async with shoal_dht(tmp_path) as nodes:
            session = item_session(nodes[0].port)
            await until(lt_joined(session), "libtorrent to join the DHT", 30)
            held = core(nodes[1])
            held.server.peers.announce(
                info_hash, ("127.0.0.9", 6881), asyncio.get_running_loop().time()
            )
            session.dht_sample_infohashes((LOOPBACK, nodes[1].port), lt.sha1_hash(bytes(20)))
            alert = await asyncio.to_thread(wait_alert, session, lt.dht_sample_infohashes_alert)
            return alert.num_infohashes, [sample.to_bytes() for sample in alert.samples]

    count, samples = asyncio.run(scenario())
    assert count == 1 and samples == [info_hash]
