"""BEP 44 items: the spec's vectors, the store's rules, and get/put across a simulated DHT."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_dht_core import DhtNet, answers

from shoal.dht import items, krpc
from shoal.dht.core import DhtNode, ItemFound, LookupDone
from shoal.dht.items import ItemError, ItemStore
from shoal.dht.routing import NodeInfo
from shoal.identity import Identity

# BEP 44's test vectors: a key pair of its own, "Hello World!" at sequence 1.
VECTOR_KEY = bytes.fromhex("77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548")
VECTOR_SIGNATURE = bytes.fromhex(
    "305ac8aeb6c9c151fa120f120ea2cfb923564e11552d06a5d856091e5e853cff"
    "1260d3f39e4999684aa92eb73ffd136e6f4f3ecbfda0ce53a1608ecd7ae21f01"
)
VECTOR_SALTED_SIGNATURE = bytes.fromhex(
    "6834284b6b24c3204eb2fea824d82f88883a3d95e8b4a21b8c0ded553d17d17d"
    "df9a8a7104b1258f30bed3787e6cb896fca78c58f8e03b5f18f14951a87d9a08"
)


def test_the_specs_vectors_give_its_targets_and_signatures_check():
    assert items.immutable(b"Hello World!").target.hex() == (
        "e5f96f6f38320f0f33959cb4d3d656452117aadb"
    )
    plain = {b"v": b"Hello World!", b"k": VECTOR_KEY, b"seq": 1, b"sig": VECTOR_SIGNATURE}
    item = items.parse_item(plain)
    assert item is not None and item.target.hex() == "4a533d47ec9c7d95b1ad75f576cffc641853b750"
    salted = {**plain, b"sig": VECTOR_SALTED_SIGNATURE}
    item = items.parse_item(salted, salt=b"foobar")
    assert item is not None and item.target.hex() == "411eba73b6f087ca51a3795d9c8c938d365e32c1"
    with pytest.raises(ItemError) as refused:
        items.parse_item(salted)  # without its salt the signature covers other bytes
    assert refused.value.code == items.INVALID_SIGNATURE


def test_what_we_sign_parses_back_and_any_change_breaks_it():
    item = items.mutable(Identity.generate(), [b"a", 1], 7, b"salt")
    assert items.parse_item(item.put_args()) == item
    for field, other in ((b"v", [b"b", 1]), (b"seq", 8), (b"salt", b"pepper")):
        with pytest.raises(ItemError):
            items.parse_item({**item.put_args(), field: other})


def test_values_and_salts_are_bounded():
    with pytest.raises(ItemError) as refused:
        items.immutable(b"x" * 1000)
    assert refused.value.code == items.VALUE_TOO_BIG
    with pytest.raises(ItemError) as refused:
        items.mutable(Identity.generate(), b"v", 1, b"s" * 65)
    assert refused.value.code == items.SALT_TOO_BIG


def test_the_store_keeps_the_newest_and_honours_cas():
    identity = Identity.generate()
    store = ItemStore()
    first = items.mutable(identity, b"one", 1)
    store.put(first, b"ip", 0.0)
    with pytest.raises(ItemError) as refused:
        store.put(items.mutable(identity, b"zero", 0), b"ip", 1.0)
    assert refused.value.code == items.SEQUENCE_TOO_LOW
    with pytest.raises(ItemError) as refused:
        store.put(items.mutable(identity, b"two", 2), b"ip", 1.0, cas=5)
    assert refused.value.code == items.CAS_MISMATCH
    second = items.mutable(identity, b"two", 2)
    store.put(second, b"ip", 1.0, cas=1)
    assert store.get(first.target, 2.0) == second
    assert store.get(first.target, 1.0 + items.ITEM_LIFETIME) is None


def test_one_source_cannot_fill_the_store(monkeypatch):
    monkeypatch.setattr(items, "MAX_PER_SOURCE", 3)
    store = ItemStore()
    for number in range(5):
        store.put(items.immutable(number), b"greedy", 0.0)
    store.put(items.immutable(b"other"), b"modest", 0.0)
    assert len(store) == 4


@given(
    st.dictionaries(
        st.sampled_from([b"v", b"k", b"seq", b"sig", b"salt"]),
        st.one_of(
            st.binary(max_size=80), st.integers(), st.lists(st.binary(max_size=5), max_size=3)
        ),
    )
)
def test_any_put_arguments_parse_or_are_refused(args):
    try:
        item = items.parse_item(args)
    except ItemError:
        return
    # What was accepted is a checked item: it parses back the same from what it would send.
    assert item is None or items.parse_item(item.put_args()) == item


@pytest.fixture(scope="module")
def net() -> DhtNet:
    return DhtNet(40, seed=5)


def found(net: DhtNet, asker: int, done: LookupDone) -> list[items.Item]:
    return [
        event.item
        for source, event in net.events
        if source == asker and isinstance(event, ItemFound) and event.lookup == done.lookup
    ]


def test_an_immutable_item_put_by_one_node_is_got_by_another(net):
    item = items.immutable({b"note": b"x" * 900})  # far more than a stranger's query
    net.run_lookup(3, lambda core, now: core.put_item(item, now))
    net.settle(5)
    done = net.run_lookup(17, lambda core, now: core.get_item(item.target, now))
    assert found(net, 17, done) == [item]


def test_a_mutable_item_is_got_at_its_newest_sequence_number(net):
    identity = Identity.generate()
    for seq in (1, 2):
        item = items.mutable(identity, b"version %d" % seq, seq, b"blog")
        net.run_lookup(5, lambda core, now, item=item: core.put_item(item, now))
        net.settle(5)
    target = items.mutable_target(bytes.fromhex(identity.public_key_hex), b"blog")
    done = net.run_lookup(22, lambda core, now: core.get_item(target, now, salt=b"blog"))
    assert found(net, 22, done)[-1].value == b"version 2"


def test_a_stranger_gets_a_big_value_only_with_a_token():
    core = DhtNode(b"\x01" * 20, 0.0, rng=random.Random(1))
    stranger = ("10.0.0.9", 6881)
    item = items.immutable(b"x" * 900)
    core.server.items.put(item, b"someone", 0.0)
    ask = krpc.query(b"aa", b"get", {b"target": item.target}, sender=b"\x02" * 20)
    core.receive(ask, stranger, 1.0)
    [reply] = answers(core)
    values = krpc.parse(reply.data).values
    assert b"v" not in values and len(reply.data) <= 4 * len(ask)
    args = {b"target": item.target, b"token": values[b"token"]}
    core.receive(krpc.query(b"ab", b"get", args, sender=b"\x02" * 20), stranger, 2.0)
    [reply] = answers(core)
    assert krpc.parse(reply.data).values[b"v"] == b"x" * 900


def test_a_put_needs_a_token_and_a_good_signature():
    core = DhtNode(b"\x01" * 20, 0.0, rng=random.Random(1))
    sender = ("10.0.0.9", 6881)
    item = items.mutable(Identity.generate(), b"v", 1)
    ask = krpc.query(b"aa", b"get", {b"target": item.target}, sender=b"\x02" * 20)
    core.receive(ask, sender, 1.0)
    [reply] = answers(core)
    token = krpc.parse(reply.data).values[b"token"]
    codes = []
    for args in (
        {**item.put_args(), b"token": b"forged"},
        {**item.put_args(), b"token": token, b"sig": bytes(64)},
        {**item.put_args(), b"token": token},
    ):
        core.receive(krpc.query(b"ab", b"put", args, sender=b"\x02" * 20), sender, 2.0)
        [answer] = answers(core)
        reply = krpc.parse(answer.data)
        codes.append(reply.code if isinstance(reply, krpc.Error) else 0)
    assert codes == [krpc.PROTOCOL_ERROR, items.INVALID_SIGNATURE, 0]
    assert core.server.items.get(item.target, 3.0) == item


def test_a_proven_asker_gets_a_full_size_item_within_a_datagram_even_with_both_families():
    core = DhtNode(b"\x01" * 20, 0.0, rng=random.Random(1))
    for number in range(8):  # 8 nodes of each family, all close to the target
        core.table.heard_from(
            NodeInfo(bytes([2, number]) + bytes(18), (f"10.4.0.{number + 1}", 1)),
            0.0,
            responded=True,
        )
        core.table.heard_from(
            NodeInfo(bytes([3, number]) + bytes(18), (f"2001:db8::{number + 1}", 1)),
            0.0,
            responded=True,
        )
    item = items.mutable(Identity.generate(), b"x" * 990, 1)
    core.server.items.put(item, b"someone", 0.0)
    asker = ("10.0.0.9", 6881)
    args = {b"target": item.target, b"want": [b"n4", b"n6"]}
    core.receive(krpc.query(b"aa", b"get", args, sender=b"\x09" * 20), asker, 1.0)
    [reply] = answers(core)
    args[b"token"] = krpc.parse(reply.data).values[b"token"]
    core.receive(krpc.query(b"ab", b"get", args, sender=b"\x09" * 20), asker, 2.0)
    [reply] = answers(core)
    assert len(reply.data) <= 1500
    assert items.parse_item(krpc.parse(reply.data).values) == item


def test_a_put_says_how_many_nodes_took_it_and_an_older_version_is_refused(net):
    identity = Identity.generate()
    newer = items.mutable(identity, b"v2", 2)
    done = net.run_lookup(7, lambda core, now: core.put_item(newer, now))
    assert done.stored >= 6
    holders = [c for c in net.cores if c.server.items.get(newer.target, net.network.now) == newer]
    assert len(holders) == done.stored
    older = items.mutable(identity, b"v1", 1)
    done = net.run_lookup(9, lambda core, now: core.put_item(older, now))
    # Error 302 from every node that holds the newer one: only others can take it.
    held_by = {c.node_id for c in holders}
    assert done.stored <= sum(node.id not in held_by for node in done.closest)
    assert all(c.server.items.get(newer.target, net.network.now) == newer for c in holders)
