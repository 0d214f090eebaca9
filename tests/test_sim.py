"""The simulator kernel and its swarm scenario: ordering, determinism, churn, bounds held."""

from __future__ import annotations

import random
import statistics

import pytest
from conftest import shoal_json

from shoal.addresses import Address
from shoal.contract import Datagram
from shoal.hub.registry import Registry, TrackerConfig
from shoal.hub.udp import UdpTracker
from shoal.metainfo import create_torrent
from shoal.sim.kernel import EventQueue, Link, session_length
from shoal.sim.scenario import run_swarm
from shoal.sim.swarm import SimNetwork
from shoal.swarm.core import SwarmConfig
from shoal.tracker.messages import AnnounceParams, Event
from shoal.tracker.udp import ConnectionCache, UdpAnnounce

MiB = 1024 * 1024


def test_events_run_in_time_order_and_ties_in_queue_order():
    queue = EventQueue()
    ran: list[str] = []
    queue.at(2.0, lambda: ran.append("late"))
    queue.at(1.0, lambda: ran.append("first"))
    queue.at(1.0, lambda: ran.append("second"))
    queue.at(1.0, lambda: queue.at(0.5, lambda: ran.append("past, so now")))
    queue.run(until=10.0, done=lambda: False)
    assert ran == ["first", "second", "past, so now", "late"]
    assert queue.processed == 5 and queue.now == 10.0


def test_an_uplink_sends_in_order_at_its_bandwidth():
    link = Link(latency=0.1, bandwidth=1000.0)
    assert link.send(500, now=0.0) == pytest.approx(0.6)
    assert link.send(500, now=0.0) == pytest.approx(1.1)  # waits for the first
    assert link.send(100, now=5.0) == pytest.approx(5.2)  # idle link: leaves at once


def test_a_swarm_run_is_the_same_for_the_same_seed():
    first = run_swarm(12, MiB, seed=7).as_dict()
    second = run_swarm(12, MiB, seed=7).as_dict()
    for report in (first, second):
        del report["wall_seconds"]
    assert first == second
    assert first["completed"] == 11 and first["unfinished"] == 0


def test_every_leecher_completes_and_no_node_exceeds_its_peer_limit():
    report = run_swarm(161, MiB, seed=3)
    assert report.completed == 160
    # Peer exchange once connected every node to every other, limit or not.
    assert report.peak_connections <= SwarmConfig().max_peers


def test_with_churn_leechers_leave_and_the_run_still_ends():
    report = run_swarm(30, 2 * MiB, churn=0.2, seed=5)
    assert report.departed > 0
    assert report.unfinished == 0
    assert report.completed + report.departed >= 29


def test_sim_swarm_prints_one_json_object():
    report = shoal_json("sim", "swarm", "--nodes", "8", "--size-mib", "1", "--json")
    assert {
        "nodes",
        "simulated_seconds",
        "wall_seconds",
        "events",
        "bytes_moved",
        "completion_seconds",
    } <= set(report)
    assert report["completed"] == 7


@pytest.mark.parametrize("shape", [0.4, 1.0, 2.0])
def test_session_lengths_have_the_mean_asked_for_whatever_the_shape(shape):
    rng = random.Random(4)
    lengths = [session_length(rng, 600.0, shape) for _ in range(40_000)]
    assert statistics.fmean(lengths) == pytest.approx(600.0, rel=0.05)
    # A small shape means many short sessions and a few long ones: the median falls.
    median = statistics.median(lengths)
    assert (median < 400) if shape < 1 else (median > 400)


def test_a_node_holds_several_torrents_and_they_share_its_uplink(tmp_path):
    torrents = []
    for number in range(2):
        content = random.Random(number).randbytes(MiB)
        path = tmp_path / f"payload{number}.bin"
        path.write_bytes(content)
        torrents.append((create_torrent(path, piece_length=64 * 1024), content))
    network = SimNetwork(upload=MiB)
    seeder = network.add_node("seeder")
    for torrent, content in torrents:
        network.add("seeder", complete=True, node=seeder, torrent=torrent, content=content)
    leechers = [
        network.add(f"leecher{n}", complete=False, torrent=torrent, content=content)
        for n, (torrent, content) in enumerate(torrents)
    ]
    for leecher in leechers:
        leecher.swarm.add_sources([seeder.address], given=True, now=network.now)
        leecher.settle()
    # A node that does not run a torrent refuses its connections.
    stranger = network.add("stranger", complete=False, torrent=torrents[1][0])
    stranger.connect_to(leechers[0].address, encrypted=False)
    assert not stranger.links
    start = network.now
    network.events.run(start + 60, lambda: all(leecher.completed_at for leecher in leechers))
    assert all(
        bytes(leecher.data or b"") == content
        for leecher, (_t, content) in zip(leechers, torrents, strict=True)
    )
    # Both torrents' bytes left through the seeder's one uplink of 1 MiB/s.
    assert max(leecher.completed_at or 0 for leecher in leechers) - start >= 2.0


class SimAnnouncer:
    """A UDP announce as a datagram core on a simulated node (the tracker client runs the
    exchange the same way: datagrams to the tracker, replies in, its retransmission timer)."""

    def __init__(self, network: SimNetwork, number: int, tracker: Address) -> None:
        self.network = network
        self.tracker = tracker
        params = AnnounceParams(
            b"\x07" * 20, f"-SIM000-{number:012d}".encode(), 7000, 0, 0, 1, Event.STARTED
        )
        self.exchange = UdpAnnounce(params, network.now, cache=ConnectionCache(), tracker="t")
        self.sent = 0
        network.serve(network.add_node(f"client{number}"), self)

    def receive(self, data: bytes, _sender: Address, now: float) -> None:
        self.exchange.receive(data, now)

    def handle_timer(self, now: float) -> None:
        self.exchange.handle_timer(now)

    def get_timer(self) -> float | None:
        return self.exchange.get_timer()

    def take_outputs(self) -> list[Datagram]:
        outputs = [Datagram(data, self.tracker) for data in self.exchange.take_outputs()]
        self.sent += len(outputs)
        return outputs


def test_udp_announces_cross_a_lossy_network_by_retrying():
    network = SimNetwork(loss=0.05, seed=9)
    tracker = network.add_node("tracker")
    network.serve(tracker, UdpTracker(Registry(TrackerConfig(announce_rate=None)), b"k" * 32))
    clients = [SimAnnouncer(network, number, tracker.address) for number in range(40)]
    network.events.run(network.now + 600, lambda: all(c.exchange.done for c in clients))
    assert network.datagrams_lost > 0
    answered = [c for c in clients if c.exchange.result is not None]
    assert len(answered) >= 0.9 * len(clients)
    # Lost datagrams were sent again when the exchanges' timers fired; without loss, a
    # connect and an announce each.
    assert sum(c.sent for c in clients) > 2 * len(clients)
    # Later clients hear of the earlier ones.
    assert max(len(c.exchange.result.peers) for c in answered if c.exchange.result) >= 30


def test_a_connection_is_accepted_when_the_handshake_has_crossed_the_link(tmp_path):
    content = random.Random(2).randbytes(MiB)
    path = tmp_path / "payload.bin"
    path.write_bytes(content)
    network = SimNetwork(create_torrent(path, piece_length=64 * 1024), content, latency=0.5)
    seeder = network.add("seeder", complete=True)
    leecher = network.add("leecher", complete=False)
    network.connect(leecher, seeder)
    start = network.now
    network.events.run(start + 0.49, lambda: False)
    assert len(leecher.links) == 1 and not seeder.links  # still on its way
    network.events.run(start + 0.51, lambda: False)
    assert len(seeder.links) == 1
    network.run(until=30)
    assert leecher.data == content


def test_each_node_has_its_own_link():
    network = SimNetwork(latency=0.1)
    near = network.add_node("near")
    far = network.add_node("far", latency=0.5)
    arrived: dict[str, float] = {}
    network.listen(near, lambda _data, _sender: arrived.setdefault("near", network.now))
    network.listen(far, lambda _data, _sender: arrived.setdefault("far", network.now))
    start = network.now
    network.send_datagram(far, near.address, b"x")
    network.send_datagram(near, far.address, b"x")
    network.events.run(start + 5, lambda: len(arrived) == 2)
    # Half of each end's one-way latency: 0.25 + 0.05 both ways.
    assert arrived["near"] - start == pytest.approx(0.3)
    assert arrived["far"] - start == pytest.approx(0.3)
