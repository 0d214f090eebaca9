"""Scenarios run on the simulator: a swarm of many nodes, with arrivals and churn."""

from __future__ import annotations

import functools
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..addresses import Address
from ..metainfo import create_torrent
from .kernel import session_length
from .swarm import SimNetwork, SimPeer

PIECE_LENGTH = 256 * 1024
# Leechers join over this many simulated seconds after the seeder.
ARRIVAL_WINDOW = 10.0
# Every node sends this many bytes per second in all (a modest home uplink), and bytes take
# this long to arrive.
UPLOAD = 1024 * 1024
LATENCY = 0.05
# Addresses a new node gets from the swarm's tracker, as a tracker would hand them out.
TRACKER_PEERS = 50
CONTENT_SLICE = 1 << 20
# A run stops after this much simulated time even if leechers are missing pieces.
TIME_LIMIT = 3600.0


@dataclass(frozen=True, slots=True)
class SwarmReport:
    """What `shoal sim swarm` measured; its --json keys."""

    nodes: int
    size_bytes: int
    churn: float
    session_shape: float
    seed: int
    simulated_seconds: float
    wall_seconds: float
    events: int
    bytes_moved: int
    peak_connections: int
    completed: int
    departed: int
    unfinished: int
    completion_seconds: dict[str, float]  # min, median, p90, max of join-to-complete times

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON values."""
        return asdict(self)


def run_swarm(
    nodes: int, size: int, churn: float = 0.0, seed: int = 1, session_shape: float = 1.0
) -> SwarmReport:
    """One seeder and nodes - 1 leechers joining over ARRIVAL_WINDOW; with churn > 0 each
    leecher leaves after a session of mean 1/churn seconds, done or not, drawn from a Weibull
    distribution of the given shape (1: exponential)."""
    if nodes < 2:
        raise ValueError("a swarm needs a seeder and at least one leecher")
    rng = random.Random(seed)
    # In slices: randbytes takes at most 2**31 bits at a time.
    content = b"".join(
        rng.randbytes(min(CONTENT_SLICE, size - at)) for at in range(0, size, CONTENT_SLICE)
    )
    with tempfile.TemporaryDirectory(prefix="shoal-sim-") as scratch:
        path = Path(scratch) / "content.bin"
        path.write_bytes(content)
        torrent = create_torrent(path, piece_length=PIECE_LENGTH, workers=1)
    network = SimNetwork(torrent, content, seed=seed, latency=LATENCY, upload=UPLOAD)
    network.add("seeder", complete=True, keep_data=False)
    leechers: list[SimPeer] = []
    start = network.now

    def tracker(peer: SimPeer) -> list[Address]:
        """A random sample of the nodes there now, as a tracker hands them out."""
        live = [address for address in network.by_address if address != peer.address]
        return rng.sample(live, min(TRACKER_PEERS, len(live)))

    network.tracker = tracker

    def join(number: int) -> None:
        peer = network.add(f"leecher{number}", complete=False, keep_data=False)
        leechers.append(peer)
        peer.swarm.add_sources(tracker(peer), given=False, now=network.now)
        peer.settle()
        if churn > 0:
            stay = session_length(rng, 1 / churn, session_shape)
            network.events.at(network.now + stay, lambda: network.leave(peer.node))

    for number in range(1, nodes):
        when = start + rng.uniform(0, ARRIVAL_WINDOW)
        network.arrive_at(when, functools.partial(join, number))
    began = time.perf_counter()
    elapsed = network.run(until=TIME_LIMIT)
    wall = time.perf_counter() - began
    times = sorted(
        p.completed_at - p.node.joined_at for p in leechers if p.completed_at is not None
    )
    departed = sum(1 for peer in leechers if not peer.node.alive and peer.completed_at is None)
    unfinished = sum(1 for peer in leechers if peer.node.alive and peer.completed_at is None)
    return SwarmReport(
        nodes=nodes,
        size_bytes=size,
        churn=churn,
        session_shape=session_shape,
        seed=seed,
        simulated_seconds=round(elapsed, 3),
        wall_seconds=round(wall, 3),
        events=network.events.processed,
        bytes_moved=network.bytes_moved,
        peak_connections=network.peak_connections,
        completed=len(times),
        departed=departed,
        unfinished=unfinished,
        completion_seconds=_distribution(times),
    )


def _distribution(times: list[float]) -> dict[str, float]:
    if not times:
        return {}
    p90 = times[min(len(times) - 1, int(0.9 * len(times)))]
    return {
        "min": round(times[0], 3),
        "median": round(statistics.median(times), 3),
        "p90": round(p90, 3),
        "max": round(times[-1], 3),
    }
