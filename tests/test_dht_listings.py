"""The keyword index in the DHT: signed listings, their keys, the store's bounds, and a search
over simulated nodes, some of which do not know shoal's methods."""

from __future__ import annotations

import random

import pytest
from test_dht_core import DhtNet

from shoal.dht import core as dht_core
from shoal.dht import listings as listings_module
from shoal.dht.core import DhtNode, ListingsFound
from shoal.dht.listings import (
    ListingError,
    ListingStore,
    keyword_key,
    keywords,
    matches,
    parse_listing,
    sign_listing,
)
from shoal.identity import Identity

INFO_HASH = b"\x05" * 20


def listing(name: str = "Holiday Photos - Beach.2024", identity: Identity | None = None):
    return sign_listing(
        identity or Identity.generate(), INFO_HASH, name, 123456, ["beach.jpg", "notes.txt"], 1000
    )


def test_keywords_are_the_longer_uncommon_words_once():
    assert keywords("The Holiday_Photos - holiday.mp3 of 2024") == ["holiday", "photos", "2024"]
    assert keyword_key("Holiday") == keyword_key("holiday") != keyword_key("photos")


def test_a_listing_round_trips_and_any_change_breaks_its_signature():
    signed = listing()
    assert parse_listing(signed.to_value()) == signed
    tampered = {**signed.to_value(), b"n": b"Something Else Entirely"}
    with pytest.raises(ListingError):
        parse_listing(tampered)
    with pytest.raises(ListingError):
        parse_listing({**signed.to_value(), b"sig": bytes(64)})
    with pytest.raises(ListingError):
        parse_listing(b"junk")


def test_matching_wants_every_word_and_the_last_as_a_prefix():
    signed = listing()
    assert matches(signed, ["holiday", "bea"])
    assert not matches(signed, ["holiday", "mountain"])


def test_the_store_files_a_listing_only_under_its_own_words_and_stays_bounded(monkeypatch):
    store = ListingStore(random.Random(1))
    signed = listing()
    with pytest.raises(ListingError):
        store.put(keyword_key("unrelated"), signed, 0.0)
    store.put(keyword_key("beach"), signed, 0.0)
    assert store.get(keyword_key("beach"), 1.0) == [signed]
    assert store.get(keyword_key("beach"), listings_module.LISTING_LIFETIME) == []
    monkeypatch.setattr(listings_module, "MAX_PER_PUBLISHER", 3)
    spammer = Identity.generate()
    for number in range(10):
        spam = sign_listing(spammer, bytes([number]) * 20, "beach spam", 1, [], 1000)
        store.put(keyword_key("beach"), spam, 0.0)
    assert len(store) == 1 + 3


class OldClient(DhtNode):
    """A node that knows BEP 5 only, as libtorrent or Transmission do."""

    def _answer(self, query, sender, ip, now):
        if query.method in (dht_core.GET_LISTINGS, dht_core.PUT_LISTING):
            return None  # error 204, method unknown
        return super()._answer(query, sender, ip, now)


def test_a_listing_published_by_one_node_is_found_by_another_despite_old_clients(monkeypatch):
    real = dht_core.DhtNode
    made = []

    def mixed(*args, **kwargs):
        made.append(None)
        return (OldClient if len(made) % 4 == 0 else real)(*args, **kwargs)

    monkeypatch.setattr("test_dht_core.DhtNode", mixed)
    net = DhtNet(40, seed=21)
    signed = listing("Mountain Trail Video", Identity.generate())
    publisher = net.cores[3]
    publisher.publish_listing(signed, net.network.now)
    net.pumps[3]()
    net.settle(10)
    net.events.clear()
    searcher = 17
    done = net.run_lookup(searcher, lambda c, now: c.search_listings(keyword_key("trail"), now))
    found = [
        listing
        for source, event in net.events
        if source == searcher and isinstance(event, ListingsFound)
        for listing in event.listings
    ]
    assert found == [signed] and done.closest
