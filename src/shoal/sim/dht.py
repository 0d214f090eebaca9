"""The DHT scenario: thousands of real DHT cores join, settle, churn and answer random lookups.

Nodes join one after another, each through a random node already in; the network settles;
then, over the lookup phase, a share of the nodes leaves (each replaced by a newcomer joining
through a random live node) while random find_node lookups run. A lookup succeeds when the
closest node it returns is the closest live node to the target there is.
"""

from __future__ import annotations

import functools
import heapq
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..addresses import Address
from ..dht.core import DhtNode, LookupDone
from ..dht.lookup import LOOKUP_DEADLINE
from ..dht.routing import ID_SPACE
from .kernel import quantiles, session_length
from .swarm import SimNetwork, SimNode

# Nodes join at this many per simulated second while the network grows.
JOIN_RATE = 100.0
# After the last join, this long for tables to fill (the first maintenance refreshes the
# buckets nobody touched yet) before the lookup phase.
SETTLE = 60.0
# Lookups and churn are spread over this many simulated seconds.
LOOKUP_PHASE = 600.0
# A node counts as one a lookup should find once it has been in this long: its own join
# lookup, which introduces it to the nodes near its id, has ended by then.
SETTLED_AFTER = LOOKUP_DEADLINE
# One way, any node to any other.
LATENCY = 0.05


@dataclass(frozen=True, slots=True)
class DhtReport:
    """What `run_dht` measured."""

    nodes: int
    churn: float
    session_shape: float
    seed: int
    lookups: int
    completed: int  # lookups that ended (the others' asking node left first)
    success_rate: float  # of the completed, the share that found the closest live node
    timed_out: int  # completed lookups that ended at their deadline, not converged
    hops: dict[str, float]  # median, p90, max
    messages_per_lookup: dict[str, float]  # median, mean, p90 queries sent
    latency_seconds: dict[str, float]  # median, p90, p99 from start to LookupDone
    departed: int  # nodes that left (as many newcomers joined)
    simulated_seconds: float
    wall_seconds: float
    events: int
    datagrams: int  # sent in all, lost or not

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON values."""
        return asdict(self)


@dataclass(slots=True, eq=False)
class _Member:
    """One node of the DHT: its host, its core and when it joined."""

    host: SimNode
    core: DhtNode
    pump: Callable[[], None]
    index: int  # in the order of joining
    joined_at: float
    number: int  # the node id as an int, for XOR distances
    slot: int = -1  # where it is in the live list


@dataclass(frozen=True, slots=True)
class _Asked:
    """A lookup in flight: what it looks for and when it began."""

    target: bytes
    started: float


class _CountingNetwork(SimNetwork):
    """A simulated network that counts the datagrams sent over it."""

    datagrams = 0

    def send_datagram(self, node: SimNode, address: Address, data: bytes) -> None:
        """Count, then send."""
        self.datagrams += 1
        super().send_datagram(node, address, data)


class _DhtRun:
    """The state of one run: the members, the live ones, the lookups and their outcomes."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.network = _CountingNetwork(seed=seed, latency=LATENCY)
        self.live: list[_Member] = []
        self.by_id: dict[bytes, _Member] = {}  # live members only
        self.asked: dict[tuple[int, int], _Asked] = {}  # (member index, lookup) -> the lookup
        self.successes = 0
        self.timed_out = 0
        self.hops: list[int] = []
        self.messages: list[int] = []
        self.latencies: list[float] = []

    def join(self) -> _Member:
        """A new node, bootstrapped through a random live one (the first through nobody)."""
        network = self.network
        now = network.now
        index = len(network.nodes)
        host = network.add_node(f"dht{index}")
        node_id = self.rng.randbytes(20)
        core = DhtNode(node_id, now, rng=random.Random(self.rng.random()))
        if self.live:
            core.bootstrap([self.rng.choice(self.live).host.address], now)
        number = int.from_bytes(node_id, "big")
        member = _Member(host, core, lambda: None, index, now, number)
        member.pump = network.serve(host, core, lambda output: self._heard(member, output))
        member.slot = len(self.live)
        self.live.append(member)
        self.by_id[node_id] = member
        return member

    def leave(self, member: _Member) -> None:
        """The member goes away for good."""
        self.network.leave(member.host)
        last = self.live.pop()
        if last is not member:
            last.slot = member.slot
            self.live[member.slot] = last
        del self.by_id[member.core.node_id]
        # Its lookups in flight will never end.
        for key in [key for key in self.asked if key[0] == member.index]:
            del self.asked[key]

    def look_up(self) -> None:
        """A find_node of a random target from a random settled live node."""
        now = self.network.now
        member = self.rng.choice(self.live)
        while now - member.joined_at < SETTLED_AFTER:
            member = self.rng.choice(self.live)
        target = self.rng.randbytes(20)
        number = member.core.find_node(target, now)
        self.asked[member.index, number] = _Asked(target, now)
        member.pump()

    def _heard(self, member: _Member, output: object) -> None:
        """A core's output for the layer above: the end of one of our lookups."""
        if not isinstance(output, LookupDone):
            return
        asked = self.asked.pop((member.index, output.lookup), None)
        if asked is None:
            return
        now = self.network.now
        if output.closest and self._is_closest(output.closest[0].id, asked.target, member):
            self.successes += 1
        self.timed_out += output.timed_out
        self.hops.append(output.hops)
        self.messages.append(output.queries)
        self.latencies.append(now - asked.started)

    def _is_closest(self, found: bytes, target: bytes, asker: _Member) -> bool:
        """Whether found is live and no settled live node but the asker is closer to target."""
        if found not in self.by_id:
            return False
        goal = int.from_bytes(target, "big")
        settled = self.network.now - SETTLED_AFTER
        best = min(
            (m.number ^ goal for m in self.live if m is not asker and m.joined_at <= settled),
            default=ID_SPACE,
        )
        return int.from_bytes(found, "big") ^ goal <= best


def run_dht(
    nodes: int, churn: float = 0.0, lookups: int = 100, seed: int = 1, session_shape: float = 1.0
) -> DhtReport:
    """Grow a DHT of `nodes` at JOIN_RATE, let it SETTLE, then run `lookups` random lookups
    over LOOKUP_PHASE while churn * nodes nodes leave, each replaced by a newcomer."""
    if nodes < 2:
        raise ValueError(f"a DHT needs at least two nodes, not {nodes}")
    if not 0.0 <= churn <= 1.0:
        raise ValueError(f"churn is a share of the nodes, from 0 to 1, not {churn}")
    run = _DhtRun(seed)
    events = run.network.events
    began = time.perf_counter()
    start = events.now
    seats = [run.join()]
    for number in range(1, nodes):
        events.at(start + number / JOIN_RATE, lambda: seats.append(run.join()))
    phase = start + nodes / JOIN_RATE + SETTLE
    events.run(phase, lambda: False)

    def replace(seat: int) -> None:
        run.leave(seats[seat])
        seats[seat] = run.join()

    departures = _departures(run.rng, nodes, round(churn * nodes), session_shape)
    for when, seat in departures:
        events.at(phase + when * LOOKUP_PHASE, functools.partial(replace, seat))
    for number in range(lookups):
        events.at(phase + (number + 0.5) * LOOKUP_PHASE / lookups, run.look_up)
    events.run(phase + LOOKUP_PHASE, lambda: False)
    # The last lookups end within their deadline, and a query's timeout past it at most.
    events.run(events.now + 2 * LOOKUP_DEADLINE, lambda: not run.asked)
    wall = time.perf_counter() - began
    completed = len(run.hops)
    messages = sorted(run.messages)
    return DhtReport(
        nodes=nodes,
        churn=churn,
        session_shape=session_shape,
        seed=seed,
        lookups=lookups,
        completed=completed,
        success_rate=round(run.successes / completed, 4) if completed else 0.0,
        timed_out=run.timed_out,
        hops=quantiles(sorted(run.hops), p90=0.9, max=1.0),
        messages_per_lookup={
            **quantiles(messages, p90=0.9),
            "mean": round(statistics.fmean(messages), 3) if messages else 0.0,
        },
        latency_seconds=quantiles(sorted(run.latencies), p90=0.9, p99=0.99),
        departed=len(departures),
        simulated_seconds=round(events.now - start, 3),
        wall_seconds=round(wall, 3),
        events=events.processed,
        datagrams=run.network.datagrams,
    )


def _departures(
    rng: random.Random, nodes: int, count: int, shape: float
) -> list[tuple[float, int]]:
    """When (from 0 to 1 of the phase) and from which seat count nodes leave: each seat's
    node stays a Weibull session of the given shape (1: exponential) and its replacement
    starts a fresh one; time is scaled so that the last departure ends the phase."""
    ends = [(session_length(rng, 1.0, shape), seat) for seat in range(nodes)]
    heapq.heapify(ends)
    departures = []
    for _ in range(count):
        when, seat = heapq.heappop(ends)
        departures.append((when, seat))
        heapq.heappush(ends, (when + session_length(rng, 1.0, shape), seat))
    if not departures:
        return []
    last = departures[-1][0]
    return [(when / last, seat) for when, seat in departures]
