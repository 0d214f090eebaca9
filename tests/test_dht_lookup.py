"""The iterative lookup against a model network: it converges on the true closest nodes."""

from __future__ import annotations

import random

from hypothesis import example, given, settings
from hypothesis import strategies as st

from shoal.dht.lookup import SLOW_AFTER, Lookup
from shoal.dht.routing import NodeInfo


def network(size: int, seed: int) -> list[NodeInfo]:
    rng = random.Random(seed)
    return [
        NodeInfo(rng.randbytes(20), (f"10.0.{i // 250}.{i % 250 + 1}", 6881)) for i in range(size)
    ]


def closest(nodes: list[NodeInfo], target: bytes, count: int) -> list[NodeInfo]:
    key = int.from_bytes(target, "big")
    return sorted(nodes, key=lambda n: int.from_bytes(n.id, "big") ^ key)[:count]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0, 0.3))
@example(seed=701, loss=0.275390625)  # sparse random views alone missed half the closest
def test_a_lookup_finds_the_true_closest_nodes_even_when_some_never_answer(seed, loss):
    nodes = network(300, seed)
    rng = random.Random(seed)
    dead = {n.id for n in nodes if rng.random() < loss}
    live = [n for n in nodes if n.id not in dead]
    target = rng.randbytes(20)
    # Each node knows its own 8 closest neighbours, as a Kademlia table does, and a random
    # fifth of the network; it answers with the 8 it knows closest to the target.
    views = {
        n.id: rng.sample(nodes, 60) + closest([m for m in nodes if m is not n], n.id, 8)
        for n in nodes
    }
    lookup = Lookup(target, rng.sample(live, 8), now=0.0)
    now = 0.0
    while not lookup.done(now):
        asked = lookup.next_queries(now)
        if not asked and lookup.in_flight == 0:
            break
        for node in asked:
            if node.id in dead:
                lookup.failed(node.id)
            else:
                lookup.answered(node.id, closest(views[node.id] + [node], target, 8))
        now += 0.1
    assert lookup.in_flight == 0
    found = lookup.closest()
    assert found and all(n.id not in dead for n in found)
    # The closest live node is found, and most of the 8 closest, dead nodes and all.
    truth = closest(live, target, 8)
    assert found[0] == truth[0]
    assert len({n.id for n in found} & {n.id for n in truth}) >= 5


def test_a_lookup_keeps_alpha_in_flight_and_ends_at_its_deadline():
    nodes = network(20, 1)
    lookup = Lookup(b"\x00" * 20, nodes, now=0.0, alpha=3, deadline=5.0)
    assert len(lookup.next_queries(0.0)) == 3
    assert lookup.next_queries(0.0) == []  # nobody answered yet
    assert not lookup.done(0.9)
    assert lookup.done(5.0) and lookup.timed_out
    assert lookup.next_queries(5.0) == []


def test_a_slow_query_gives_its_place_to_another_and_still_counts_when_answered():
    nodes = network(20, 1)
    lookup = Lookup(b"\x00" * 20, nodes, now=0.0, alpha=3, deadline=30.0)
    first = lookup.next_queries(0.0)
    assert lookup.wake() == SLOW_AFTER
    # A second on, the three are slow: three more go out, the first three still awaited.
    second = lookup.next_queries(SLOW_AFTER)
    assert len(second) == 3 and not set(second) & set(first)
    near = NodeInfo(b"\x00" * 19 + b"\x01", ("10.0.9.9", 1))
    lookup.answered(first[0].id, [near])
    assert lookup.next_queries(SLOW_AFTER + 0.1) == []  # three are in flight still
    lookup.answered(second[0].id, [])
    assert lookup.next_queries(SLOW_AFTER + 0.2) == [near]


def test_hops_count_steps_from_our_table():
    near = NodeInfo(b"\x00" * 19 + b"\x01", ("10.0.0.1", 1))
    far = NodeInfo(b"\xff" * 20, ("10.0.0.2", 1))
    lookup = Lookup(b"\x00" * 20, [far], now=0.0)
    [asked] = lookup.next_queries(0.0)
    lookup.answered(asked.id, [near])
    [asked] = lookup.next_queries(0.0)
    lookup.answered(asked.id, [])
    assert lookup.done(0.0) and lookup.closest()[0] == near and lookup.hops() == 2


def test_slow_nodes_among_the_nearest_do_not_stop_the_lookup_asking_farther_ones():
    nodes = network(20, 1)
    lookup = Lookup(b"\x00" * 20, nodes, now=0.0, alpha=3, deadline=30.0)
    lookup.next_queries(0.0)
    later = lookup.next_queries(SLOW_AFTER)  # the first three are slow
    for node in later:
        lookup.answered(node.id, [])
    # Three more: the nearest eight that are not slow reach past the slow three.
    assert len(lookup.next_queries(SLOW_AFTER + 0.1)) == 3
