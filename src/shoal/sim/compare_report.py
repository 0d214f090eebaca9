"""What `shoal sim compare` measures: each search as it went, and the figures of each
architecture drawn from them."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from .kernel import quantiles
from .overlay import SearchRecord

# The hub, the DHT, and the overlay's three strategies.
ARCHITECTURES = ("hub", "dht", "flood", "walk", "dynamic")


@dataclass(slots=True, eq=False)
class Asked:
    """One search by one architecture, as it went."""

    architecture: str
    origin: int  # the asking member's number
    info_hash: bytes
    started: float
    holders: int  # holders alive (the churn replaces a node at once, holdings and all)
    found: set[int] = field(default_factory=set)  # live holders found
    stale: set[int] = field(default_factory=set)  # results naming holders that had left
    first_at: float | None = None
    last_at: float | None = None  # when the last new live holder was found
    ended_at: float | None = None  # None: its origin left first
    messages: int = 0
    hops: int | None = None  # a DHT lookup's
    record: SearchRecord | None = None  # an overlay search's


@dataclass(frozen=True, slots=True)
class ArchitectureReport:
    """One architecture's figures over the run."""

    searches: int
    completed: int  # searches whose origin stayed until they ended
    success_rate: float  # of the completed, the share that found a live holder
    holders_alive: float  # mean, per search
    holders_found: float  # mean live holders found, per completed search
    stale_results: float  # mean results naming departed holders, per completed search
    messages_per_query: dict[str, float]  # mean, median, p90
    busiest_node_messages: int  # the most messages one node (or the hub) sent or received
    busiest_node_share: float  # of all this architecture's search messages
    first_result_seconds: dict[str, float]  # median, p90 (simulated, of successful searches)
    last_result_seconds: dict[str, float]  # median, p90
    hops: dict[str, float]  # the DHT's lookups: median, p90, max (empty for the others)


@dataclass(frozen=True, slots=True)
class CompareReport:
    """What `run_compare` measured."""

    nodes: int
    churn: float  # share of the nodes replaced per hour
    replication: float
    queries: int
    listings: int
    wanted: int  # results an overlay search stops at
    leaves: float  # share of the overlay's nodes that are leaves (the rest are ultrapeers)
    holders: int  # of each listing
    session_shape: float
    seed: int
    departed: int  # nodes that left (as many newcomers joined)
    hub_publishes: int  # listings sent to the hub, one message each
    dht_datagrams: int  # every datagram of the DHT: joins, upkeep, publishing and searches
    overlay_messages: int  # every overlay write: hellos, keep-alives, pongs and searches
    simulated_seconds: float
    wall_seconds: float
    events: int
    architectures: dict[str, ArchitectureReport]

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON values."""
        return asdict(self)


def summarize(searches: list[Asked], load: Counter[object]) -> ArchitectureReport:
    """One architecture's figures from its searches and the messages each node handled."""
    done = [asked for asked in searches if asked.ended_at is not None]
    found = [asked for asked in done if asked.found]
    messages = sorted(asked.messages for asked in done)
    total = sum(asked.messages for asked in searches)
    busiest = max(load.values(), default=0)
    return ArchitectureReport(
        searches=len(searches),
        completed=len(done),
        success_rate=_share(len(found), len(done)),
        holders_alive=_mean([asked.holders for asked in searches]),
        holders_found=_mean([len(asked.found) for asked in done]),
        stale_results=_mean([len(asked.stale) for asked in done]),
        messages_per_query={"mean": _mean(messages), **quantiles(messages, p90=0.9)},
        busiest_node_messages=busiest,
        busiest_node_share=_share(busiest, total),
        first_result_seconds=_spread(
            [a.first_at - a.started for a in found if a.first_at is not None]
        ),
        last_result_seconds=_spread(
            [a.last_at - a.started for a in found if a.last_at is not None]
        ),
        hops=quantiles(sorted(a.hops for a in done if a.hops is not None), p90=0.9, max=1.0),
    )


def _spread(seconds: list[float]) -> dict[str, float]:
    return quantiles(sorted(seconds), p90=0.9)


def _mean(values: list[int]) -> float:
    return round(statistics.fmean(values), 3) if values else 0.0


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0
