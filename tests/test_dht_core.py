"""The DHT core on the simulated network: joining, lookups, peers, abuse."""

from __future__ import annotations

import random

import pytest

from shoal import addresses
from shoal.contract import Datagram
from shoal.dht import krpc
from shoal.dht.core import MAINTENANCE_INTERVAL, DhtNode, LookupDone, PeersFound, SamplesFound
from shoal.dht.listings import keyword_key, sign_listing
from shoal.dht.routing import NodeInfo
from shoal.dht.secure_id import is_secure
from shoal.identity import Identity
from shoal.sim.swarm import SimNetwork, SimNode


class DhtNet:
    """N DHT nodes on a simulated network, each joined through the first."""

    def __init__(self, size: int, seed: int, loss: float = 0.0) -> None:
        self.network = SimNetwork(seed=seed, latency=0.05, loss=loss)
        self.rng = random.Random(seed)
        self.cores: list[DhtNode] = []
        self.hosts: list[SimNode] = []
        self.pumps = []
        self.events: list[tuple[int, object]] = []  # (which node, what it said)
        first = self.add()
        for number in range(1, size):
            self.network.events.at(
                self.network.now + number * 0.05, lambda: self.add(first.address)
            )
        self.settle(60.0)

    def add(self, router=None) -> SimNode:
        host = self.network.add_node(f"dht{len(self.hosts)}")
        core = DhtNode(
            self.rng.randbytes(20), self.network.now, rng=random.Random(self.rng.random())
        )
        if router is not None:
            core.bootstrap([router], self.network.now)
        number = len(self.cores)
        self.pumps.append(
            self.network.serve(host, core, lambda event: self.events.append((number, event)))
        )
        self.cores.append(core)
        self.hosts.append(host)
        return host

    def settle(self, seconds: float) -> None:
        self.network.events.run(self.network.now + seconds, lambda: False)

    def live(self) -> list[int]:
        return [i for i, host in enumerate(self.hosts) if host.alive]

    def run_lookup(self, index: int, start) -> LookupDone:
        """Start a lookup on one node and run until its LookupDone."""
        number = start(self.cores[index], self.network.now)
        self.pumps[index]()

        def finished() -> LookupDone | None:
            for source, event in self.events:
                if source == index and isinstance(event, LookupDone) and event.lookup == number:
                    return event
            return None

        self.network.events.run(self.network.now + 60, lambda: finished() is not None)
        done = finished()
        assert done is not None
        return done


def true_closest(net: DhtNet, target: bytes, count: int = 8, asker: int = -1) -> list[bytes]:
    """The ids of the live nodes closest to target, the asking node left out."""
    key = int.from_bytes(target, "big")
    ids = [net.cores[i].node_id for i in net.live() if i != asker]
    return sorted(ids, key=lambda i: int.from_bytes(i, "big") ^ key)[:count]


def answers(core: DhtNode) -> list[Datagram]:
    """The core's replies among its outputs (it also pings strangers, to confirm them)."""
    return [
        o
        for o in core.take_outputs()
        if isinstance(o, Datagram) and not isinstance(krpc.parse(o.data), krpc.Query)
    ]


@pytest.fixture(scope="module")
def net() -> DhtNet:
    return DhtNet(60, seed=3)


def test_every_node_joins_and_fills_its_table(net):
    sizes = [len(core.table) for core in net.cores]
    assert min(sizes) >= 8
    for core in net.cores:
        core.table.check()


def test_lookups_reach_the_true_closest_nodes(net):
    rng = random.Random(5)
    for _ in range(10):
        target = rng.randbytes(20)
        asker = rng.randrange(len(net.cores))
        done = net.run_lookup(asker, lambda c, now, t=target: c.find_node(t, now))
        assert [n.id for n in done.closest][:1] == true_closest(net, target, 1, asker)
        assert not done.timed_out and done.queries < 60


def test_get_peers_finds_an_announced_peer(net):
    info_hash = random.Random(7).randbytes(20)
    net.run_lookup(4, lambda c, now: c.get_peers(info_hash, now, announce_port=51413))
    net.settle(5)
    net.events.clear()
    net.run_lookup(30, lambda c, now: c.get_peers(info_hash, now))
    found = [e for _, e in net.events if isinstance(e, PeersFound) and e.info_hash == info_hash]
    assert any((net.hosts[4].address[0], 51413) in e.peers for e in found)


def test_lookups_survive_a_fifth_of_the_nodes_leaving(tmp_path):
    net = DhtNet(50, seed=11)
    rng = random.Random(2)
    for index in rng.sample(range(1, 50), 10):
        net.network.leave(net.hosts[index])
    for _ in range(8):
        target = rng.randbytes(20)
        asker = rng.choice(net.live())
        done = net.run_lookup(asker, lambda c, now, t=target: c.find_node(t, now))
        assert [n.id for n in done.closest][:1] == true_closest(net, target, 1, asker)


def test_malformed_queries_get_no_reply_and_unknown_methods_get_204():
    core = DhtNode(b"\x01" * 20, 0.0, rng=random.Random(1))
    core.receive(b"garbage", ("10.0.0.9", 6881), 0.0)
    assert core.take_outputs() == []
    core.receive(krpc.query(b"aa", b"frobnicate", {}, sender=b"\x02" * 20), ("10.0.0.9", 6881), 0.0)
    [reply] = answers(core)
    assert isinstance(reply, Datagram)
    assert krpc.parse(reply.data) == krpc.Error(b"aa", 204, "method unknown")


def test_announces_need_a_token_from_the_same_ip():
    core = DhtNode(b"\x01" * 20, 0.0, rng=random.Random(1))
    info_hash = b"\x03" * 20
    asker = ("10.0.0.9", 6881)
    core.receive(
        krpc.query(b"a1", b"get_peers", {b"info_hash": info_hash}, sender=b"\x02" * 20), asker, 0.0
    )
    [reply] = answers(core)
    response = krpc.parse(reply.data)
    assert isinstance(response, krpc.Response)
    token = response.values[b"token"]
    announce = {b"info_hash": info_hash, b"port": 7000, b"token": token}
    # The same token from another IP is refused.
    core.receive(
        krpc.query(b"a2", b"announce_peer", announce, sender=b"\x04" * 20), ("10.0.0.10", 1), 1.0
    )
    [refused] = answers(core)
    assert isinstance(krpc.parse(refused.data), krpc.Error)
    core.receive(krpc.query(b"a3", b"announce_peer", announce, sender=b"\x02" * 20), asker, 1.0)
    core.take_outputs()
    assert core.server.peers.peers(info_hash, 2.0) == [("10.0.0.9", 7000)]


def test_a_flood_from_one_ip_is_rate_limited():
    core = DhtNode(b"\x01" * 20, 0.0, rng=random.Random(1))
    replies = 0
    for n in range(1000):
        ping = krpc.query(n.to_bytes(2, "big"), b"ping", {}, sender=b"\x02" * 20)
        core.receive(ping, ("10.0.0.9", 6881), 0.0)
        replies += len(answers(core))
    assert replies <= 60


def test_routers_that_do_not_answer_are_asked_again():
    core = DhtNode(b"\x01" * 20, 0.0, rng=random.Random(1))
    core.bootstrap([("10.0.0.1", 6881)], 0.0)
    [first] = core.take_outputs()
    assert first.address == ("10.0.0.1", 6881)
    wake = core.get_timer()
    assert wake is not None and wake <= 15.0
    core.handle_timer(15.0)
    asked = [o for o in core.take_outputs() if isinstance(o, Datagram)]
    assert [o.address for o in asked] == [("10.0.0.1", 6881)]
    query = krpc.parse(asked[0].data)
    assert isinstance(query, krpc.Query) and query.method == b"find_node"


def test_loopback_nodes_are_rate_limited_each_on_its_own():
    core = DhtNode(b"\x01" * 20, 0.0, rng=random.Random(1))
    answered = 0
    for port in range(1000, 1200):
        ping = krpc.query(b"pp", b"ping", {}, sender=port.to_bytes(20, "big"))
        core.receive(ping, ("127.0.0.1", port), 0.0)
        answered += len(answers(core))
    assert answered >= 200  # 200 nodes on one machine, one ping each


def test_a_node_answering_with_another_id_counts_as_gone():
    core = DhtNode(b"\x01" * 20, 0.0, rng=random.Random(1))
    asked = b"\x02" * 20
    core.table.heard_from(NodeInfo(asked, ("10.0.0.2", 6881)), 0.0, responded=True)
    number = core.find_node(b"\x03" * 20, 0.0)
    [query] = [o for o in core.take_outputs() if isinstance(o, Datagram)]
    transaction = krpc.parse(query.data).transaction
    impostor = krpc.response(transaction, {b"nodes": b""}, sender=b"\x09" * 20, requester=None)
    core.receive(impostor, ("10.0.0.2", 6881), 1.0)
    entry = core.table.get(asked)
    assert entry is not None and entry.failures == 1
    [done] = [o for o in core.take_outputs() if isinstance(o, LookupDone)]
    assert done.lookup == number and done.closest == []


def test_a_listings_reply_fits_a_datagram_whatever_was_published():
    core = DhtNode(b"\x01" * 20, 0.0, rng=random.Random(1))
    for number in range(20):
        big = sign_listing(
            Identity.generate(),
            bytes([number]) * 20,
            "Trail " + "x" * 190,
            1,
            ["y" * 40] * 4,
            1000,
        )
        core.server.listings.put(keyword_key("trail"), big, 0.0)
    stranger = ("10.0.0.9", 6881)
    ask = krpc.query(
        b"aa", b"shoal_get_listings", {b"key": keyword_key("trail")}, sender=b"\x02" * 20
    )
    core.receive(ask, stranger, 1.0)
    [reply] = answers(core)
    # A stranger gets its nodes and a token, but no more listings than its query's size allows.
    response = krpc.parse(reply.data)
    assert isinstance(response, krpc.Response) and b"listings" not in response.values
    assert len(reply.data) <= 4 * len(ask)
    # With the token, which proves its address, it gets what a datagram holds.
    args = {b"key": keyword_key("trail"), b"token": response.values[b"token"]}
    core.receive(krpc.query(b"ab", b"shoal_get_listings", args, sender=b"\x02" * 20), stranger, 2.0)
    [reply] = [o for o in answers(core) if o.address == stranger]
    assert len(reply.data) <= 1500
    response = krpc.parse(reply.data)
    assert isinstance(response, krpc.Response) and response.values[b"listings"]


def test_a_node_cut_off_asks_its_routers_and_its_silent_nodes_again():
    core = DhtNode(b"\x01" * 20, 0.0, rng=random.Random(1))
    core.bootstrap([("10.0.0.1", 6881)], 0.0)
    node = NodeInfo(b"\x02" * 20, ("10.0.0.2", 6881))
    core.table.heard_from(node, 0.0, responded=True)
    core.table.failed(node.id, 1.0)
    core.table.failed(node.id, 2.0)
    assert not core.usable()
    core.take_outputs()
    core.handle_timer(100.0)
    asked = {o.address for o in core.take_outputs() if isinstance(o, Datagram)}
    assert asked == {("10.0.0.1", 6881), ("10.0.0.2", 6881)}


def test_each_family_gets_its_own_closest_nodes():
    core = DhtNode(b"\x00" * 20, 0.0, rng=random.Random(1))
    target = b"\x00" * 20
    # IPv6 nodes closest to the target, IPv4 ones farther (each in a bucket of its own):
    # an asker still gets 8 of each family.
    for number in range(12):
        near = (1 << number).to_bytes(20, "big")
        core.table.heard_from(NodeInfo(near, (f"2001:db8:{number + 1}::1", 1)), 0.0, responded=True)
        far = (1 << (number + 40)).to_bytes(20, "big")
        core.table.heard_from(NodeInfo(far, (f"10.3.0.{number + 1}", 1)), 0.0, responded=True)
    args = {b"target": target, b"want": [b"n4", b"n6"]}
    core.receive(krpc.query(b"aa", b"find_node", args, sender=b"\x42" * 20), ("10.0.0.9", 1), 0.0)
    [reply] = answers(core)
    values = krpc.parse(reply.data).values
    assert len(krpc.unpack_nodes(values[b"nodes"], ipv6=False, limit=20)) == 8
    assert len(krpc.unpack_nodes(values[b"nodes6"], ipv6=True, limit=20)) == 8


def test_a_node_takes_an_id_secure_for_the_ip_most_nodes_see():
    core = DhtNode(b"\x01" * 20, 0.0, rng=random.Random(1))
    routers = [(f"8.8.{n}.1", 6881) for n in range(12)]
    core.bootstrap(routers, 0.0)
    queries = {o.address: krpc.parse(o.data).transaction for o in core.take_outputs()}
    for number, router in enumerate(routers):
        answer = krpc.response(
            queries[router],
            {b"nodes": b""},
            sender=bytes([number + 2]) * 20,
            requester=("203.0.113.7", 6881),
        )
        core.receive(answer, router, 1.0)
    assert is_secure(core.node_id, addresses.pack_ip("203.0.113.7"))
    assert core.table.own_id == core.node_id == core.server.node_id
    # The nodes it knew stay, for the lookup of its new neighbourhood.
    assert {e.node.address for e in core.table.entries()} >= set(routers[:8])


def test_a_stranger_is_pinged_and_handed_out_only_once_it_answers():
    core = DhtNode(b"\x01" * 20, 0.0, rng=random.Random(1))
    stranger = NodeInfo(b"\x02" * 20, ("10.0.0.9", 6881))
    core.receive(krpc.query(b"aa", b"ping", {}, sender=stranger.id), stranger.address, 0.0)
    outputs = [krpc.parse(o.data) for o in core.take_outputs()]
    [ping] = [m for m in outputs if isinstance(m, krpc.Query)]
    assert ping.method == b"ping" and core.table.closest(stranger.id, 8) == []
    answer = krpc.response(ping.transaction, {}, sender=stranger.id, requester=None)
    core.receive(answer, stranger.address, 0.5)
    assert core.table.closest(stranger.id, 8) == [stranger]


def test_a_node_samples_the_info_hashes_another_holds_and_hears_silence_as_such():
    asker = DhtNode(b"\x01" * 20, 0.0, rng=random.Random(1))
    holder = DhtNode(b"\x02" * 20, 0.0, rng=random.Random(2))
    held = [bytes([n]) * 20 for n in range(3)]
    for info_hash in held:
        holder.server.peers.announce(info_hash, ("10.0.0.7", 6881), 0.0)
    number = asker.sample_infohashes(("10.0.0.2", 6881), 0.0)
    [query] = asker.take_outputs()
    holder.receive(query.data, ("10.0.0.1", 6881), 0.0)
    [reply] = answers(holder)
    asker.receive(reply.data, ("10.0.0.2", 6881), 0.1)
    [found] = asker.take_outputs()
    assert isinstance(found, SamplesFound) and found.request == number and found.answered
    assert found.count == 3 and sorted(found.samples) == held and found.interval > 0
    silent = asker.sample_infohashes(("10.0.0.3", 6881), 1.0)
    asker.take_outputs()
    asker.handle_timer(10.0)
    assert SamplesFound(silent, ("10.0.0.3", 6881), answered=False) in asker.take_outputs()


def test_every_node_knows_a_node_in_each_far_region_that_has_one(net):
    # Kademlia's join looks up each bucket it split off: the halves, quarters and eighths of
    # the id space away from a node's own hold a contact of it wherever a node lives.
    def shared_bits(a: bytes, b: bytes) -> int:
        return 160 - (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_length()

    net.settle(MAINTENANCE_INTERVAL + 5)  # a bucket split off after a join waits for this
    ids = [core.node_id for core in net.cores]
    for core in net.cores:
        known = {shared_bits(core.node_id, e.node.id) for e in core.table.entries()}
        exist = {shared_bits(core.node_id, other) for other in ids if other != core.node_id}
        assert {d for d in exist if d < 3} <= known
