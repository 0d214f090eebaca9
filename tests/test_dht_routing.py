"""The DHT routing table: invariants under any sequence of events, splits, eviction, limits,
nodes confirmed before they are handed out, BEP 42 compliant nodes preferred."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal import bencode
from shoal.addresses import pack_ip
from shoal.dht.routing import (
    GOOD_FOR,
    ID_SPACE,
    MAX_LOADED_NODES,
    MAX_UNCONFIRMED,
    REFRESH_AFTER,
    NodeInfo,
    RoutingTable,
    is_compliant,
)
from shoal.dht.secure_id import secure_node_id

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


def compliant_far(index: int) -> NodeInfo:
    """A node in the upper half of the id space whose id BEP 42 accepts for its public IP."""
    rng = random.Random(index)
    host = f"198.51.100.{index + 1}"
    while True:
        node_id = secure_node_id(pack_ip(host), rng)
        if node_id[0] & 0x80:
            return NodeInfo(node_id, (host, 6881))


def non_compliant_far(index: int) -> NodeInfo:
    """A node in the upper half of the id space whose id is not bound to its public IP."""
    found = NodeInfo(ident(HALF + 1000 + index), (f"203.0.113.{index + 1}", 6881))
    assert not is_compliant(found)
    return found


def brute_closest(
    table: RoutingTable, target: bytes, count: int, include_bad: bool
) -> list[NodeInfo]:
    goal = int.from_bytes(target, "big")
    nodes = [e.node for e in table.entries() if include_bad or e.status(0.0) != "bad"]
    if include_bad:
        nodes += table.unconfirmed()
    return sorted(nodes, key=lambda n: n.number ^ goal)[:count]


# A public address, and ids BEP 42 accepts there.
PUBLIC = "198.51.100.200"
secure_ids = st.randoms(use_true_random=False).map(lambda rng: secure_node_id(pack_ip(PUBLIC), rng))

# Addresses shared between ids: two ports of one IP, one IPv6 /64, and loopback ports; public
# ones, where ids are compliant or not, and local ones, where all are.
ADDRESSES = [
    (PUBLIC, 1),
    (PUBLIC, 2),
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
            st.one_of(
                st.binary(min_size=20, max_size=20), ids_near(own_number), st.just(own), secure_ids
            ),
            min_size=4,
            max_size=16,
            unique=True,
        )
    )
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    ["heard", "heard", "heard", "restore", "failed", "failed", "remove"]
                ),
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
@given(scenarios(), st.integers(1, 12), st.binary(min_size=20, max_size=20), st.booleans())
def test_invariants_and_closest_hold_after_every_step(scenario, count, target, enforce):
    own, k, pool, steps = scenario
    table = RoutingTable(own, rng=random.Random(1), k=k, enforce=enforce)
    now = 0.0
    for operation, which, where, responded, elapsed in steps:
        now += elapsed
        node_id = pool[which]
        # An id's own address is local (all ids compliant) or public (few are).
        own_host = f"10.2.{which}.1" if where % 2 else f"198.51.{which}.1"
        heard = NodeInfo(node_id, ADDRESSES[where] if where >= 0 else (own_host, 6881))
        if operation == "restore":
            table.restore(heard, now)
            if enforce and not is_compliant(heard):
                assert heard not in [entry.node for entry in table.entries()]
        elif operation == "heard":
            to_ping = table.heard_from(heard, now, responded=responded)
            if enforce and not is_compliant(heard):
                kept = table.get(node_id)
                assert to_ping is None and (kept is None or kept.node != heard)
            if to_ping == heard and not responded:
                # A newcomer that only queried: to confirm before it is handed out.
                assert to_ping in table.unconfirmed() and table.get(node_id) is None
            elif to_ping is not None:
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
    assert table.heard_from(far(8), now, responded=False) == far(8)  # confirm it first
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
    # A newcomer that only queried names no node of the table: it has yet to be confirmed.
    assert table.heard_from(far(8), now, responded=False) == far(8)
    pinged = table.heard_from(far(8), now, responded=True)
    assert pinged == far(0)
    table.heard_from(pinged, now + 1, responded=True)
    entry = table.get(pinged.id)
    assert entry is not None and entry.status(now + 1) == "good"
    # The next newcomer is told of the next least recently seen node.
    assert table.heard_from(far(9), now + 2, responded=True) == far(1)


def test_a_node_that_only_queried_is_not_handed_out_until_it_answers():
    table = RoutingTable(OWN)
    # The node names itself: the caller pings it to confirm it, every time it queries.
    assert table.heard_from(far(0), 0.0, responded=False) == far(0)
    assert table.heard_from(far(0), 0.5, responded=False) == far(0)
    assert table.get(far(0).id) is None and len(table) == 0
    assert table.closest(far(0).id) == []
    assert far(0).address[0] not in table.dump().decode("latin-1")
    # Only to ask for a way back in (their answers confirm them): a saved table loads this way.
    assert table.closest(far(0).id, include_bad=True) == [far(0)]
    assert table.unconfirmed() == [far(0)]
    table.check()
    assert table.heard_from(far(0), 1.0, responded=True) is None
    entry = table.get(far(0).id)
    assert entry is not None and entry.status(1.0) == "good"
    assert entry.status(1.0 + GOOD_FOR) == "questionable"
    assert table.closest(far(0).id) == [far(0)] and table.unconfirmed() == []
    # Once in the table, its queries name nobody to ping.
    assert table.heard_from(far(0), 2.0, responded=False) is None
    table.check()


def test_an_unconfirmed_node_whose_ping_times_out_is_dropped_and_frees_its_address():
    table = RoutingTable(OWN)
    spoofed = NodeInfo(ident(HALF + 1), ("10.9.0.1", 6881))
    assert table.heard_from(spoofed, 0.0, responded=False) == spoofed
    table.failed(spoofed.id, 3.0)
    assert table.unconfirmed() == [] and table.get(spoofed.id) is None
    other = NodeInfo(ident(HALF + 2), spoofed.address)
    assert table.heard_from(other, 4.0, responded=False) == other
    table.remove(other.id)
    assert table.unconfirmed() == []
    table.check()


def test_unconfirmed_nodes_are_bounded_and_the_oldest_go_first():
    table = RoutingTable(OWN)
    nodes = [NodeInfo(ident(HALF + n), (f"10.8.{n // 250}.{n % 250}", 1)) for n in range(100)]
    for index, found in enumerate(nodes):
        assert table.heard_from(found, float(index), responded=False) == found
    assert table.unconfirmed() == nodes[-MAX_UNCONFIRMED:]
    table.check()
    # One pushed out still comes in when it answers the ping it was sent.
    assert table.heard_from(nodes[0], 200.0, responded=True) is None
    assert table.get(nodes[0].id) is not None
    table.check()


def test_a_spoofed_query_holds_no_address_or_id_against_a_node_that_answers():
    table = RoutingTable(OWN)
    victim = NodeInfo(ident(HALF + 5), ("10.0.0.5", 6881))
    spoofed = NodeInfo(ident(HALF + 6), victim.address)
    assert table.heard_from(spoofed, 0.0, responded=False) == spoofed
    # While it waits, the first claim to the address or the id stands...
    assert table.heard_from(victim, 0.5, responded=False) is None
    impostor = NodeInfo(spoofed.id, ("10.0.0.6", 6881))
    assert table.heard_from(impostor, 0.5, responded=False) is None
    assert table.unconfirmed() == [spoofed]
    # ...but an answer outweighs it.
    assert table.heard_from(victim, 1.0, responded=True) is None
    assert table.get(victim.id) is not None and table.unconfirmed() == []
    assert table.heard_from(spoofed, 2.0, responded=False) is None
    assert table.heard_from(impostor, 2.0, responded=False) == impostor
    assert table.heard_from(impostor, 3.0, responded=True) is None
    entry = table.get(impostor.id)
    assert entry is not None and entry.node == impostor
    table.check()


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
    assert table.heard_from(far(8), 3.0, responded=False) == far(8)
    assert table.get(far(3).id) is not None
    assert table.heard_from(far(8), 3.5, responded=True) is None
    assert table.get(far(3).id) is None and table.get(far(8).id) is not None
    table.check()


def test_a_known_id_at_another_address_or_a_known_address_with_another_id_is_ignored():
    table = RoutingTable(OWN)
    original = node(7, "10.0.0.7")
    table.heard_from(original, 0.0, responded=True)
    table.heard_from(NodeInfo(original.id, ("10.0.0.8", 6881)), 5.0, responded=True)
    entry = table.get(original.id)
    assert entry is not None and entry.node == original and entry.last_response == 0.0
    assert table.heard_from(NodeInfo(ident(99), original.address), 5.0, responded=True) is None
    assert table.heard_from(NodeInfo(ident(99), original.address), 5.0, responded=False) is None
    assert table.get(ident(99)) is None and len(table) == 1 and table.unconfirmed() == []


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
    assert table.heard_from(NodeInfo(OWN, ("10.0.0.1", 1)), 0.0, responded=False) is None
    table.restore(NodeInfo(OWN, ("10.0.0.1", 1)), 0.0)
    assert len(table) == 0 and table.unconfirmed() == []
    with pytest.raises(ValueError):
        table.heard_from(NodeInfo(b"short", ("10.0.0.1", 1)), 0.0, responded=True)
    with pytest.raises(ValueError):
        table.restore(NodeInfo(b"short", ("10.0.0.1", 1)), 0.0)
    with pytest.raises(ValueError):
        RoutingTable(b"\x00" * 21)


def test_a_bucket_untouched_for_the_refresh_interval_gets_a_target_in_its_range():
    table = RoutingTable(OWN, rng=random.Random(2))
    for index in range(9):  # the ninth far node splits the table into two halves
        table.heard_from(far(index), 0.0, responded=True)
    # The near half, where no node has been seen, is looked up at once; the far one is fresh.
    [target] = table.refresh_targets(100.0)
    assert int.from_bytes(target, "big") < HALF
    assert table.refresh_targets(101.0) == []
    table.heard_from(far(0), 600.0, responded=True)  # an answer keeps the far half fresh
    [target] = table.refresh_targets(100.0 + REFRESH_AFTER)
    assert int.from_bytes(target, "big") < HALF
    assert table.refresh_targets(101.0 + REFRESH_AFTER) == []
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


def test_nodes_of_a_saved_table_come_back_confirmed_but_questionable():
    table = RoutingTable(OWN)
    for index in range(8):
        table.heard_from(far(index), 0.0, responded=True)
    own, saved = RoutingTable.load(table.dump(), rng=random.Random(1))
    again = RoutingTable(own)
    for found in saved:
        again.restore(found, 100.0)
    again.restore(NodeInfo(far(0).id, ("10.9.9.9", 1)), 100.0)  # a known id: ignored
    assert len(again) == 8 and again.unconfirmed() == []
    assert set(again.closest(far(0).id)) == {far(index) for index in range(8)}
    entry = again.get(far(3).id)
    assert entry is not None and entry.node == far(3) and entry.status(100.0) == "questionable"
    # When a newcomer waits, one of them is pinged first.
    assert again.heard_from(far(8), 101.0, responded=True) in saved
    again.check()


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


def test_local_addresses_are_compliant_and_host_names_are_not():
    rng = random.Random(6)
    for host in ("127.0.0.1", "::1", "10.1.2.3", "192.168.1.1", "172.16.0.1", "fe80::1"):
        assert is_compliant(NodeInfo(rng.randbytes(20), (host, 1)))
    assert is_compliant(compliant_far(0))
    assert not is_compliant(NodeInfo(compliant_far(0).id, ("198.51.100.99", 1)))
    assert not is_compliant(NodeInfo(rng.randbytes(20), ("router.example", 1)))


def full_far_bucket(table: RoutingTable, nodes: list[NodeInfo]) -> None:
    """Fill the table's upper half (a bucket of its own once split) with nodes, good at 0."""
    for found in nodes:
        assert table.heard_from(found, 0.0, responded=True) is None
    table.heard_from(compliant_far(99), 0.0, responded=True)  # splits; waits or takes a place
    table.check()


def test_a_compliant_newcomer_takes_the_place_of_a_good_non_compliant_node():
    table = RoutingTable(OWN, k=4)
    full_far_bucket(table, [compliant_far(i) for i in range(3)] + [non_compliant_far(0)])
    assert table.get(non_compliant_far(0).id) is None
    assert table.get(compliant_far(99).id) is not None
    # A node that only queried takes no place before it answers.
    assert table.heard_from(non_compliant_far(1), 1.0, responded=True) is None
    assert table.get(non_compliant_far(1).id) is None
    table.check()


def test_a_non_compliant_newcomer_takes_only_a_bad_place_and_non_compliant_ones_go_first():
    table = RoutingTable(OWN, k=4)
    nodes = [compliant_far(0), non_compliant_far(0), compliant_far(1), non_compliant_far(1)]
    for found in nodes:
        table.heard_from(found, 0.0, responded=True)
    table.heard_from(non_compliant_far(2), 0.0, responded=True)  # splits, then waits
    assert table.get(non_compliant_far(2).id) is None and len(table) == 4
    table.remove(non_compliant_far(2).id)  # out of the cache, so that failures leave bad nodes
    for bad in (compliant_far(0), non_compliant_far(1)):
        table.failed(bad.id, 1.0)
        table.failed(bad.id, 2.0)
    table.heard_from(non_compliant_far(3), 3.0, responded=True)
    assert table.get(non_compliant_far(1).id) is None
    assert table.get(compliant_far(0).id) is not None
    # A compliant newcomer: the last bad place, then the non-compliant nodes, oldest first.
    table.heard_from(non_compliant_far(0), 4.0, responded=False)  # seen more recently
    for index, gone in (
        (2, compliant_far(0)),
        (3, non_compliant_far(3)),
        (4, non_compliant_far(0)),
    ):
        table.heard_from(compliant_far(index), 5.0, responded=True)
        assert table.get(gone.id) is None and table.get(compliant_far(index).id) is not None
    assert all(entry.compliant for entry in table.entries())
    table.check()


def cached_behind(waiting: list[NodeInfo]) -> RoutingTable:
    """A table (k=2) whose far bucket holds two compliant nodes, with waiting in its cache."""
    table = RoutingTable(OWN, k=2)
    full_far_bucket(table, [compliant_far(0), compliant_far(1)])
    table.remove(compliant_far(99).id)
    for found in waiting:
        table.heard_from(found, 1.0, responded=True)
    table.check()
    return table


def fail_twice(table: RoutingTable, node_id: bytes) -> None:
    table.failed(node_id, 2.0)
    table.failed(node_id, 3.0)
    table.check()


def test_the_cache_promotes_compliant_nodes_first_and_drops_non_compliant_ones_first():
    # The newest waiting node is not compliant: an older compliant one takes the place.
    table = cached_behind([compliant_far(2), non_compliant_far(0)])
    fail_twice(table, compliant_far(0).id)
    assert {entry.node for entry in table.entries()} == {compliant_far(1), compliant_far(2)}
    # Over k waiting, the non-compliant one goes rather than the oldest.
    table = cached_behind([compliant_far(2), non_compliant_far(0), compliant_far(3)])
    fail_twice(table, compliant_far(0).id)
    fail_twice(table, compliant_far(1).id)
    assert {entry.node for entry in table.entries()} == {compliant_far(2), compliant_far(3)}


def test_enforce_refuses_non_compliant_nodes():
    table = RoutingTable(OWN, enforce=True)
    assert table.heard_from(non_compliant_far(0), 0.0, responded=False) is None
    assert table.heard_from(non_compliant_far(0), 0.0, responded=True) is None
    assert table.unconfirmed() == [] and len(table) == 0
    assert table.heard_from(compliant_far(0), 0.0, responded=False) == compliant_far(0)
    table.heard_from(compliant_far(0), 1.0, responded=True)
    loopback = NodeInfo(ident(HALF + 3), ("127.0.0.1", 7000))
    table.heard_from(loopback, 1.0, responded=True)
    assert {entry.node for entry in table.entries()} == {compliant_far(0), loopback}
    table.check()


def test_the_join_looks_into_each_farther_region_the_table_barely_knows():
    table = RoutingTable(OWN, rng=random.Random(3))
    # The closest node shares 4 leading bits with OWN: regions 0-3 are farther. Region 1
    # holds two nodes already; the others get a random target each, with their sizes.
    table.heard_from(NodeInfo(ident(1 << 155), ("10.2.0.1", 1)), 0.0, responded=True)
    for index in range(2):
        table.heard_from(
            NodeInfo(ident((1 << 158) + index), (f"10.2.1.{index + 1}", 1)), 0.0, responded=True
        )
    regions = []
    for target, size in table.region_targets(2):
        number = int.from_bytes(target, "big")
        shared = 160 - number.bit_length()
        assert size == 1 << (159 - shared)
        regions.append(shared)
    assert regions == [0, 2, 3]


def test_a_new_id_answering_from_the_address_of_a_silent_node_takes_its_place():
    table = RoutingTable(OWN, rng=random.Random(4))
    old = NodeInfo(ident(HALF + 7), ("10.3.0.1", 6881))
    table.heard_from(old, 0.0, responded=True)
    renewed = NodeInfo(ident(HALF + 9), old.address)  # restarted with an id of BEP 42
    table.heard_from(renewed, 1.0, responded=True)
    assert table.closest(renewed.id, 8) == [old]  # the old node still answers for all we know
    table.failed(old.id, 2.0)
    table.heard_from(renewed, 3.0, responded=True)
    assert table.closest(renewed.id, 8) == [renewed]
    table.check()
