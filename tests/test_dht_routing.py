"""The DHT routing table: invariants under any sequence of events, splits, eviction, limits."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal import bencode
from shoal.dht.routing import (
    GOOD_FOR,
    ID_SPACE,
    MAX_LOADED_NODES,
    REFRESH_AFTER,
    NodeInfo,
    RoutingTable,
)

OWN = bytes(20)
HALF = ID_SPACE // 2


def ident(number: int) -> bytes:
    return number.to_bytes(20, "big")


def node(number: int, host: str | None = None, port: int = 6881) -> NodeInfo:
    """A node with its own IPv4 address unless given one."""
    return NodeInfo(
        ident(number), (host or f"10.{number % 251}.{number % 241}.{number % 239}", port)
    )


def far(index: int) -> NodeInfo:
    """A node in the upper half of the id space, far from OWN."""
    return NodeInfo(ident(HALF + index), (f"10.1.0.{index + 1}", 6881))


def brute_closest(
    table: RoutingTable, target: bytes, count: int, include_bad: bool
) -> list[NodeInfo]:
    goal = int.from_bytes(target, "big")
    nodes = [e.node for e in table.entries() if include_bad or e.status(0.0) != "bad"]
    return sorted(nodes, key=lambda n: n.number ^ goal)[:count]


# Addresses shared between ids: two ports of one IP, one IPv6 /64, and loopback ports.
ADDRESSES = [
    ("10.0.0.1", 1),
    ("10.0.0.1", 2),
    ("10.0.0.2", 1),
    ("2001:db8::1", 1),
    ("2001:db8::2", 1),
    ("2001:db8:1::1", 1),
    ("127.0.0.1", 1),
    ("127.0.0.1", 2),
    ("127.0.0.1", 3),
    ("::1", 1),
] + [(f"10.0.1.{i}", 6881) for i in range(30)]


@st.composite
def ids_near(draw: st.DrawFn, own: int) -> bytes:
    """An id sharing a prefix of some length with own, to drive the own bucket to split."""
    shared = draw(st.integers(0, 159))
    low = draw(st.integers(0, (1 << (159 - shared)) - 1))
    flipped = own ^ (1 << (159 - shared))
    return ident((flipped >> (160 - shared - 1) << (160 - shared - 1)) | low)


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[bytes, int, list[bytes], list[tuple[str, int, int, bool, float]]]:
    own = draw(st.binary(min_size=20, max_size=20))
    own_number = int.from_bytes(own, "big")
    pool = draw(
        st.lists(
            st.one_of(st.binary(min_size=20, max_size=20), ids_near(own_number), st.just(own)),
            min_size=4,
            max_size=16,
            unique=True,
        )
    )
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["heard", "heard", "heard", "failed", "remove"]),
                st.integers(0, len(pool) - 1),
                # Mostly the id's own address (negative), else one that others may hold.
                st.integers(-len(ADDRESSES), len(ADDRESSES) - 1),
                st.booleans(),
                st.sampled_from([0.0, 1.0, 60.0, GOOD_FOR]),
            ),
            min_size=20,
            max_size=120,
        )
    )
    return own, draw(st.sampled_from([1, 2, 3, 8])), pool, steps


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.integers(1, 12), st.binary(min_size=20, max_size=20))
def test_invariants_and_closest_hold_after_every_step(scenario, count, target):
    own, k, pool, steps = scenario
    table = RoutingTable(own, rng=random.Random(1), k=k)
    now = 0.0
    for operation, which, where, responded, elapsed in steps:
        now += elapsed
        node_id = pool[which]
        if operation == "heard":
            address = ADDRESSES[where] if where >= 0 else (f"10.2.{which}.1", 6881)
            to_ping = table.heard_from(NodeInfo(node_id, address), now, responded=responded)
            if to_ping is not None:
                pinged = table.get(to_ping.id)
                assert pinged is not None and pinged.status(now) == "questionable"
        elif operation == "failed":
            table.failed(node_id, now)
        else:
            table.remove(node_id)
            assert table.get(node_id) is None
        table.check()
        assert table.get(own) is None
        for goal in (target, own, node_id):
            for include_bad in (False, True):
                expected = brute_closest(table, goal, count, include_bad)
                assert table.closest(goal, count, include_bad=include_bad) == expected


def test_a_full_far_bucket_does_not_split_and_the_own_bucket_does():
    table = RoutingTable(OWN)
    for index in range(30):
        table.heard_from(far(index), 0.0, responded=True)
    assert len(table) == 8
    assert [table.get(far(i).id) is not None for i in range(9)] == [True] * 8 + [False]
    # Ids 1..9 share 156 bits with OWN: only splitting over and over makes room for them.
    for number in range(1, 10):
        assert table.heard_from(node(number), 0.0, responded=True) is None
    assert len(table) == 17
    table.check()


def test_many_random_nodes_fill_about_k_log2_n_entries():
    rng = random.Random(5)
    table = RoutingTable(rng.randbytes(20), rng=rng)
    for index in range(2000):
        address = (f"10.{index // 250}.{index % 250}.1", 6881)
        table.heard_from(NodeInfo(rng.randbytes(20), address), 0.0, responded=True)
    assert 8 * 8 <= len(table) <= 8 * 14
    table.check()
    target = rng.randbytes(20)
    assert table.closest(target, 20) == brute_closest(table, target, 20, include_bad=False)


def test_a_full_bucket_of_good_nodes_keeps_them_and_caches_the_newcomer():
    table = RoutingTable(OWN)
    for index in range(8):
        table.heard_from(far(index), float(index), responded=True)
    assert table.heard_from(far(8), 10 * 60.0, responded=True) is None
    assert table.get(far(8).id) is None and len(table) == 8


def test_the_least_recently_seen_questionable_node_is_pinged_and_replaced_when_silent():
    table = RoutingTable(OWN)
    for index in range(8):
        table.heard_from(far(index), float(index), responded=True)
    now = 16 * 60.0
    assert table.heard_from(far(8), now, responded=True) == far(0)
    assert table.get(far(8).id) is None
    table.failed(far(0).id, now + 5)
    assert table.get(far(0).id) is not None and table.get(far(8).id) is None
    table.failed(far(0).id, now + 10)
    assert table.get(far(0).id) is None
    replacement = table.get(far(8).id)
    assert replacement is not None and replacement.status(now + 10) == "good"
    table.check()


def test_a_node_that_answers_the_ping_stays_and_becomes_good():
    table = RoutingTable(OWN)
    for index in range(8):
        table.heard_from(far(index), float(index), responded=True)
    now = 16 * 60.0
    pinged = table.heard_from(far(8), now, responded=False)
    assert pinged == far(0)
    table.heard_from(pinged, now + 1, responded=True)
    entry = table.get(pinged.id)
    assert entry is not None and entry.status(now + 1) == "good"
    # The next newcomer is told of the next least recently seen node.
    assert table.heard_from(far(9), now + 2, responded=False) == far(1)


def test_a_node_that_only_queried_is_questionable():
    table = RoutingTable(OWN)
    table.heard_from(far(0), 0.0, responded=False)
    entry = table.get(far(0).id)
    assert entry is not None and entry.status(0.0) == "questionable"
    table.heard_from(far(0), 1.0, responded=True)
    assert entry.status(1.0) == "good"
    assert entry.status(1.0 + GOOD_FOR) == "questionable"


def test_a_silent_node_with_no_replacement_stays_as_bad_until_a_newcomer_takes_its_place():
    table = RoutingTable(OWN)
    for index in range(8):
        table.heard_from(far(index), 0.0, responded=True)
    table.failed(far(3).id, 1.0)
    table.failed(far(3).id, 2.0)
    entry = table.get(far(3).id)
    assert entry is not None and entry.status(2.0) == "bad"
    assert far(3) not in table.closest(far(3).id, 8)
    assert table.closest(far(3).id, 1, include_bad=True) == [far(3)]
    assert far(3).address[0] not in table.dump().decode("latin-1")
    assert table.heard_from(far(8), 3.0, responded=False) is None
    assert table.get(far(3).id) is None and table.get(far(8).id) is not None
    table.check()


def test_a_known_id_at_another_address_or_a_known_address_with_another_id_is_ignored():
    table = RoutingTable(OWN)
    original = node(7, "10.0.0.7")
    table.heard_from(original, 0.0, responded=False)
    table.heard_from(NodeInfo(original.id, ("10.0.0.8", 6881)), 5.0, responded=True)
    entry = table.get(original.id)
    assert entry is not None and entry.node == original and entry.last_response is None
    table.heard_from(NodeInfo(ident(99), original.address), 5.0, responded=True)
    assert table.get(ident(99)) is None and len(table) == 1


def test_one_entry_per_ip_except_on_loopback():
    table = RoutingTable(OWN, k=32)
    table.heard_from(node(1, "10.0.0.1", 1), 0.0, responded=True)
    table.heard_from(node(2, "10.0.0.1", 2), 0.0, responded=True)
    table.heard_from(node(3, "2001:db8::1"), 0.0, responded=True)
    table.heard_from(node(4, "2001:db8::2"), 0.0, responded=True)
    assert [table.get(ident(n)) is not None for n in range(1, 5)] == [True, False, True, False]
    table.remove(ident(1))
    table.heard_from(node(2, "10.0.0.1", 2), 1.0, responded=True)
    assert table.get(ident(2)) is not None
    rng = random.Random(3)
    for port in range(1, 21):
        table.heard_from(NodeInfo(rng.randbytes(20), ("127.0.0.1", port)), 0.0, responded=True)
    assert len(table) == 22
    table.check()


def test_own_id_is_never_added_and_ids_must_be_20_bytes():
    table = RoutingTable(OWN)
    assert table.heard_from(NodeInfo(OWN, ("10.0.0.1", 1)), 0.0, responded=True) is None
    assert len(table) == 0
    with pytest.raises(ValueError):
        table.heard_from(NodeInfo(b"short", ("10.0.0.1", 1)), 0.0, responded=True)
    with pytest.raises(ValueError):
        RoutingTable(b"\x00" * 21)


def test_a_bucket_untouched_for_the_refresh_interval_gets_a_target_in_its_range():
    table = RoutingTable(OWN, rng=random.Random(2))
    for index in range(9):  # the ninth far node splits the table into two halves
        table.heard_from(far(index), 0.0, responded=True)
    assert table.refresh_targets(100.0) == []
    table.heard_from(far(0), 600.0, responded=True)  # an answer keeps the far half fresh
    [target] = table.refresh_targets(REFRESH_AFTER)
    assert int.from_bytes(target, "big") < HALF
    assert table.refresh_targets(REFRESH_AFTER + 1) == []
    [target] = table.refresh_targets(600.0 + REFRESH_AFTER)
    assert int.from_bytes(target, "big") >= HALF


def test_dump_then_load_gives_the_own_id_and_the_usable_nodes():
    table = RoutingTable(OWN)
    nodes = [node(n) for n in range(1, 6)]
    nodes += [NodeInfo(ident(HALF + n), (f"2001:db8:{n + 1}::1", 7000 + n)) for n in range(3)]
    for found in nodes:
        table.heard_from(found, 0.0, responded=True)
    bad = node(HALF + 100)
    table.heard_from(bad, 0.0, responded=True)
    table.failed(bad.id, 1.0)
    table.failed(bad.id, 2.0)
    own, loaded = RoutingTable.load(table.dump(), rng=random.Random(4))
    assert own == OWN and sorted(loaded, key=lambda n: n.id) == sorted(nodes, key=lambda n: n.id)


def test_load_reads_at_most_the_bound():
    many = b"".join(ident(n) + bytes([10, 0, n % 256, 1, 0, 1]) for n in range(1, 1500))
    own, loaded = RoutingTable.load(bencode.encode({"id": OWN, "nodes": many}))
    assert own == OWN and len(loaded) == MAX_LOADED_NODES


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"le",
        bencode.encode({"nodes": b""}),
        bencode.encode({"id": b"short"}),
        bencode.encode({"id": OWN, "nodes": b"x" * 25}),
        bencode.encode({"id": OWN, "nodes6": [b"x"]}),
    ],
)
def test_load_rejects_junk(data):
    with pytest.raises(ValueError):
        RoutingTable.load(data)


saved_values = st.one_of(
    st.binary(max_size=120), st.integers(), st.lists(st.binary(max_size=4), max_size=3)
)


@settings(max_examples=300)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.dictionaries(st.sampled_from([b"id", b"nodes", b"nodes6", b"x"]), saved_values).map(
            bencode.encode
        ),
    )
)
def test_load_takes_any_bytes(data):
    try:
        own, loaded = RoutingTable.load(data)
    except ValueError:
        return
    assert len(own) == 20
    assert all(len(found.id) == 20 and found.address[1] > 0 for found in loaded)
