"""The simulator's clock: one queue of events at virtual times, and links that carry bytes."""

from __future__ import annotations

import heapq
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass


class EventQueue:
    """Runs callbacks in order of their virtual time; ties run in the order they were queued."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.processed = 0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = 0

    def at(self, when: float, callback: Callable[[], None]) -> None:
        """Run callback at virtual time when (at once, in order, if when has passed)."""
        self._sequence += 1
        heapq.heappush(self._heap, (max(when, self.now), self._sequence, callback))

    def run(self, until: float, done: Callable[[], bool]) -> None:
        """Run events up to time until, or until done() says so (asked after each event)."""
        heap = self._heap
        while heap and heap[0][0] <= until:
            when, _sequence, callback = heapq.heappop(heap)
            self.now = when
            callback()
            self.processed += 1
            if done():
                return
        self.now = max(self.now, until)


@dataclass(slots=True)
class Link:
    """A node's access link: bytes leave in order at a bandwidth, then travel for a latency."""

    latency: float
    bandwidth: float | None  # bytes per second; None is as fast as can be
    loss: float = 0.0  # the share of datagrams lost on the way (streams are retransmitted)
    free_at: float = 0.0  # when the last queued byte has left

    def send(self, size: int, now: float) -> float:
        """Queue size bytes; returns when they arrive."""
        start = max(now, self.free_at)
        self.free_at = start + (size / self.bandwidth if self.bandwidth else 0.0)
        return self.free_at + self.latency


def session_length(rng: random.Random, mean: float, shape: float = 1.0) -> float:
    """How long a node stays: Weibull with this mean and shape (1 is exponential; measured
    P2P sessions have shapes near 0.3-0.6, many short stays and a few very long ones)."""
    scale = mean / math.gamma(1 + 1 / shape)
    return rng.weibullvariate(scale, shape)


def quantiles(values: list[float] | list[int], **fractions: float) -> dict[str, float]:
    """The median and the given quantiles (name=fraction) of sorted values, rounded."""
    if not values:
        return {}
    found = {"median": float(statistics.median(values))}
    for name, fraction in fractions.items():
        found[name] = float(values[min(len(values) - 1, math.floor(fraction * len(values)))])
    return {name: round(value, 3) for name, value in found.items()}
