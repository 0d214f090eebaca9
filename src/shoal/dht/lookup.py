"""An iterative Kademlia lookup: ask the closest nodes known, learn closer ones, converge.

Sans-IO and sans-network: the DHT core sends the queries this names and reports each answer
or timeout. At most `alpha` queries are in flight; the lookup ends when the `k` closest nodes
seen have all answered or failed and nobody closer is left to ask, or at its deadline.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from .routing import NodeInfo

ALPHA = 3
K = 8
# However far from converging, a lookup gives its answer after this long.
LOOKUP_DEADLINE = 30.0
# Nodes remembered per lookup: enough to converge, bounded against peers that send junk.
MAX_CANDIDATES = 200

WAITING, ASKED, ANSWERED, FAILED = range(4)


@dataclass(slots=True)
class Candidate:
    """A node the lookup knows of, and how far it got with it."""

    node: NodeInfo
    distance: int
    hop: int  # 1 for nodes from our own table; one more than the node that named it
    state: int = WAITING


class Lookup:
    """One lookup of a 20-byte target."""

    def __init__(
        self,
        target: bytes,
        seeds: list[NodeInfo],
        now: float,
        *,
        k: int = K,
        alpha: int = ALPHA,
        deadline: float = LOOKUP_DEADLINE,
    ) -> None:
        self.target = target
        self._target = int.from_bytes(target, "big")
        self.k = k
        self.alpha = alpha
        self.deadline = now + deadline
        self.candidates: dict[bytes, Candidate] = {}
        self.in_flight = 0
        self.queries = 0  # sent in all
        self.timed_out = False
        self.add(seeds)

    def add(self, nodes: list[NodeInfo], hop: int = 1) -> None:
        """More nodes to consider (hop: how many steps from our own table they were found)."""
        for node in nodes:
            if node.id in self.candidates:
                continue
            distance = node.number ^ self._target
            if len(self.candidates) >= MAX_CANDIDATES:
                farthest = max(self.candidates.values(), key=lambda c: c.distance)
                if farthest.distance <= distance or farthest.state == ASKED:
                    continue
                del self.candidates[farthest.node.id]
            self.candidates[node.id] = Candidate(node, distance, hop)

    def _nearest(self, count: int) -> list[Candidate]:
        """The count closest candidates that have not failed."""
        live = (c for c in self.candidates.values() if c.state != FAILED)
        return heapq.nsmallest(count, live, key=lambda c: c.distance)

    def next_queries(self, now: float) -> list[NodeInfo]:
        """Nodes to ask now (marked as asked), keeping at most alpha in flight."""
        if self.done(now):
            return []
        chosen: list[NodeInfo] = []
        for candidate in self._nearest(self.k):
            if self.in_flight >= self.alpha:
                break
            if candidate.state == WAITING:
                candidate.state = ASKED
                self.in_flight += 1
                self.queries += 1
                chosen.append(candidate.node)
        return chosen

    def answered(self, node_id: bytes, nodes: list[NodeInfo]) -> None:
        """The node answered, naming nodes closer to the target."""
        candidate = self.candidates.get(node_id)
        if candidate is None or candidate.state != ASKED:
            return
        candidate.state = ANSWERED
        self.in_flight -= 1
        self.add(nodes, hop=candidate.hop + 1)

    def failed(self, node_id: bytes) -> None:
        """The query to the node timed out or was refused."""
        candidate = self.candidates.get(node_id)
        if candidate is not None and candidate.state == ASKED:
            candidate.state = FAILED
            self.in_flight -= 1

    def done(self, now: float) -> bool:
        """Whether the lookup has converged, or run out of time."""
        if now >= self.deadline:
            self.timed_out = True
            return True
        nearest = self._nearest(self.k)
        return all(c.state == ANSWERED for c in nearest) or (
            self.in_flight == 0 and not any(c.state == WAITING for c in nearest)
        )

    def closest(self) -> list[NodeInfo]:
        """The k closest nodes that answered, closest first."""
        answered = (c for c in self.candidates.values() if c.state == ANSWERED)
        return [c.node for c in heapq.nsmallest(self.k, answered, key=lambda c: c.distance)]

    def hops(self) -> int:
        """How many steps away from our own table the closest answering node was found."""
        answered = [c for c in self.candidates.values() if c.state == ANSWERED]
        return min(answered, key=lambda c: c.distance).hop if answered else 0
