"""Every protocol core has the one shape of shoal/contract.py."""

from __future__ import annotations

import random

from shoal.contract import Core, Datagram, DatagramCore
from shoal.dht.core import DhtNode
from shoal.hub.registry import Registry, TrackerConfig
from shoal.hub.udp import UdpTracker
from shoal.ledger.chain import Chain
from shoal.ledger.core import LedgerNode
from shoal.ledger.mempool import Mempool
from shoal.ledger.params import LOCAL
from shoal.ledger.store import MemoryStore
from shoal.overlay.core import OverlayNode
from shoal.overlay.messages import Role
from shoal.swarm.core import Swarm
from shoal.swarm.runner import run_outputs
from shoal.tracker.messages import AnnounceParams, Event
from shoal.tracker.schedule import AnnounceSchedule
from shoal.tracker.udp import ConnectionCache, UdpAnnounce, UdpScrape

INFO_HASH = b"\x01" * 20
PEER_ID = b"-SH0000-000000000000"


def test_every_protocol_core_has_the_one_shape():
    params = AnnounceParams(INFO_HASH, PEER_ID, 6881, 0, 0, 1, Event.STARTED)
    cores = [
        Swarm(INFO_HASH, PEER_ID, None, None, rng=random.Random(1)),
        UdpAnnounce(params, 0.0, cache=ConnectionCache(), tracker="t"),
        UdpScrape([INFO_HASH], 0.0, cache=ConnectionCache(), tracker="t"),
        AnnounceSchedule([["udp://tracker.invalid:1"]]),
        OverlayNode(bytes(20), 6881, Role.ULTRAPEER, random.Random(1)),
        LedgerNode(
            LOCAL, Chain(LOCAL, MemoryStore()), Mempool(LOCAL), random.Random(1), listen_port=1
        ),
        DhtNode(bytes(20), 0.0, rng=random.Random(1)),
        UdpTracker(Registry(TrackerConfig()), b"k" * 32),
    ]
    for core in cores:
        assert isinstance(core, Core), type(core).__name__
    assert all(isinstance(core, DatagramCore) for core in cores[-2:])


def test_a_core_hands_each_output_out_once():
    tracker = UdpTracker(Registry(TrackerConfig()), b"k" * 32)
    connect = bytes.fromhex("0000041727101980") + bytes(4) + b"\x00\x00\x00\x07"
    tracker.receive(connect, ("127.0.0.1", 6881), 0.0)
    [reply] = tracker.take_outputs()
    assert isinstance(reply, Datagram) and reply.address == ("127.0.0.1", 6881)
    assert tracker.take_outputs() == []


def test_the_shared_runner_leaves_nothing_queued():
    swarm = Swarm(INFO_HASH, PEER_ID, None, None, rng=random.Random(1))
    swarm.add_sources([("10.0.0.1", 6881), ("10.0.0.2", 6881)], given=True, now=0.0)

    class Recorder:
        def __init__(self) -> None:
            self.dials: list[tuple[str, int]] = []

        def connect_to(self, address: tuple[str, int], encrypted: bool) -> None:
            self.dials.append(address)

    recorder = Recorder()
    run_outputs(swarm, recorder, 0.0)  # type: ignore[arg-type]
    assert sorted(recorder.dials) == [("10.0.0.1", 6881), ("10.0.0.2", 6881)]
    assert swarm.take_outputs() == []
