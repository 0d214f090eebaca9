"""The overlay's real cores in the simulator: an overlay grows, every strategy finds what a
few nodes hold, hits come back by the reverse path, and it heals after losing a third."""

from __future__ import annotations

import random

import pytest

from shoal.overlay.links import TARGET_DEGREE
from shoal.overlay.messages import Result, Role
from shoal.overlay.search import Strategy
from shoal.sim.overlay import OverlayHost, OverlayNetwork

NODES = 120
HOLDERS = 6


def listing(number: int) -> Result:
    return Result(number.to_bytes(20, "big"), 1 << 20, f"Field recordings vol {number}.flac")


def grow(
    nodes: int = NODES, seed: int = 1, leaves: float = 0.0, holders: int = HOLDERS
) -> tuple[OverlayNetwork, list[OverlayHost], list[OverlayHost]]:
    """An overlay of nodes joining one by one through three random earlier ones; every
    nodes // holders-th holds the listing; a share of leaves."""
    network = OverlayNetwork(seed=seed)
    rng = random.Random(seed)
    hosts: list[OverlayHost] = []
    holding: list[OverlayHost] = []
    for number in range(nodes):
        boot = [h.address for h in rng.sample(hosts, min(3, len(hosts)))]
        holds = number % (nodes // holders) == nodes // holders - 1
        role = Role.LEAF if number > 10 and rng.random() < leaves else Role.ULTRAPEER
        host = network.add(role, [listing(7)] if holds else [], boot)
        hosts.append(host)
        if holds:
            holding.append(host)
        network.run(network.now + 0.1)
    network.run(network.now + 30.0)
    return network, hosts, holding


def ultrapeers(hosts: list[OverlayHost]) -> list[OverlayHost]:
    return [h for h in hosts if h.core.role == Role.ULTRAPEER and h.alive]


def test_the_overlay_grows_to_its_degree_as_a_connected_graph():
    network, hosts, _ = grow()
    degrees = sorted(len(h.core.links()) for h in hosts)
    assert degrees[0] >= 3 and degrees[len(degrees) // 2] >= TARGET_DEGREE
    # Connected: a flood from anyone with a large TTL reaches every node.
    reached = {hosts[0].address}
    frontier = [hosts[0]]
    by_address = network.hosts
    while frontier:
        host = frontier.pop()
        for far, _link in host.pipes.values():
            if far.address not in reached and far.address in by_address:
                reached.add(far.address)
                frontier.append(far)
    assert len(reached) == NODES


@pytest.mark.parametrize("strategy", list(Strategy))
def test_each_strategy_finds_what_a_few_nodes_hold(strategy):
    network, hosts, holding = grow()
    rng = random.Random(5)
    records = [
        network.search(rng.choice(hosts), "field recordings", strategy, wanted=3) for _ in range(10)
    ]
    network.run(network.now + 40.0)
    assert all(record.found for record in records)
    holders = {h.core.node_id for h in holding}
    assert all(record.holders <= holders for record in records)
    # Hits came back by the reverse path, with each holder's address filled in on the way.
    addresses = {h.address for h in holding}
    assert {holder for record in records for _, holder, _ in record.hits} <= addresses


def test_a_flood_is_answered_once_per_holder_and_each_node_handles_it_once():
    network, hosts, _ = grow()
    before = {h.address: h.core.counters.hits_sent for h in hosts}
    record = network.search(hosts[3], "field recordings", Strategy.FLOOD, ttl=6, wanted=99)
    network.run(network.now + 20.0)
    answers = [record_id for _, _, record_id in record.hits]
    assert len(answers) == len(set(answers)) == HOLDERS
    assert all(h.core.counters.hits_sent - before[h.address] <= 1 for h in hosts)
    assert sum(h.core.counters.duplicates for h in hosts) > 0  # the dropped copies


def test_walks_and_dynamic_queries_cost_less_than_a_flood_on_replicated_content():
    network, hosts, _ = grow(holders=20)

    def cost(strategy: Strategy) -> int:
        def traffic() -> int:
            c = [h.core.counters for h in hosts]
            return sum(x.queries_sent + x.hits_sent + x.statuses_sent for x in c)

        before = traffic()
        rng = random.Random(9)
        for _ in range(10):
            record = network.search(rng.choice(hosts), "recordings", strategy, wanted=2)
            network.run(network.now + 40.0)
            assert record.found
        return traffic() - before

    flood = cost(Strategy.FLOOD)
    assert cost(Strategy.WALK) < flood / 2
    assert cost(Strategy.DYNAMIC) < flood / 2


def test_a_holder_leaving_mid_search_does_not_break_it():
    network, hosts, holding = grow()
    origin = hosts[0]
    near = {far.address for far, _ in origin.pipes.values()}
    gone = next(h for h in holding if h.address not in near)
    record = network.search(origin, "field recordings", Strategy.FLOOD, wanted=99)
    network.run(network.now + 0.06)  # the query is one hop out
    network.remove(gone)
    for relay in some_of(hosts, near, 5):
        network.remove(relay)
    network.run(network.now + 20.0)
    assert record.found and record.ended_at is not None
    # Hits whose way back ran through a node that left are lost (as in Gnutella); the
    # holders reached by other ways still answer.
    assert gone.core.node_id not in record.holders


def some_of(hosts: list[OverlayHost], near: set, count: int) -> list[OverlayHost]:
    """count random nodes among hosts whose address is in near."""
    return random.Random(4).sample([h for h in hosts if h.address in near], count)


def test_after_a_third_of_the_nodes_go_the_overlay_heals_and_searches_succeed():
    network, hosts, holding = grow()
    rng = random.Random(3)
    keep = set(map(id, holding)) | {id(hosts[0])}
    doomed = rng.sample([h for h in hosts if id(h) not in keep], NODES // 3)
    for host in doomed:
        network.remove(host)
    network.run(network.now + 60.0)
    live = network.live()
    degrees = sorted(len(h.core.links()) for h in live)
    assert degrees[len(degrees) // 2] >= TARGET_DEGREE - 1
    records = [
        network.search(rng.choice(live), "field recordings", strategy, wanted=2)
        for strategy in Strategy
        for _ in range(5)
    ]
    network.run(network.now + 40.0)
    assert all(record.found for record in records)


def test_a_leaf_behind_an_ultrapeer_is_found_through_its_routing_table():
    network, hosts, _ = grow(leaves=0.5, holders=1)
    leaf = network.add(Role.LEAF, [listing(99)], [h.address for h in ultrapeers(hosts)[:3]])
    network.run(network.now + 10.0)
    assert leaf.core.links() and all(link.is_ultrapeer() for link in leaf.core.links())
    origin = ultrapeers(hosts)[-1]
    record = network.search(origin, "field recordings vol 99", Strategy.FLOOD, wanted=1)
    network.run(network.now + 10.0)
    assert record.holders == {leaf.core.node_id}
    # Leaves are asked only what their tables may hold.
    assert all(
        h.core.counters.queries_received == 0
        for h in hosts
        if h.core.role == Role.LEAF and not h.core.listings
    )
