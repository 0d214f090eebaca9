"""An iterative Kademlia lookup: ask the closest nodes known, learn closer ones, converge.

Sans-IO and sans-network: the DHT core sends the queries this names and reports each answer
or timeout. At most `alpha` queries are in flight; one unanswered after SLOW_AFTER no longer
counts (its answer is still taken), so a dead node costs a second, not a whole timeout, as
libtorrent's short timeout does. The lookup ends when the `k` closest nodes seen have all
answered or failed and nobody closer is left to ask, or at its deadline.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from .routing import NodeInfo

ALPHA = 3
K = 8
# However far from converging, a lookup gives its answer after this long.
LOOKUP_DEADLINE = 30.0
# Nodes remembered per lookup: enough to converge, bounded against peers that send junk.
MAX_CANDIDATES = 200
# A query unanswered this long lets another take its place in flight.
SLOW_AFTER = 1.0

WAITING, ASKED, SLOW, ANSWERED, FAILED = range(5)


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
        near_enough: int | None = None,
        near_count: int = K,
    ) -> None:
        self.target = target
        self._target = int.from_bytes(target, "big")
        self.k = k
        self.alpha = alpha
        self.deadline = now + deadline
        # With near_enough, the lookup may also end once near_count nodes that near the
        # target have answered: a refresh wants nodes in a range, not the very closest.
        self.near_enough = near_enough
        self.near_count = near_count
        self._near_answered = 0
        self.candidates: dict[bytes, Candidate] = {}
        self.in_flight = 0  # asked, not yet slow
        self.slow = 0  # asked, slow, still awaited
        self._asked: deque[tuple[float, Candidate]] = deque()  # in the order asked
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
                if farthest.distance <= distance or farthest.state in (ASKED, SLOW):
                    continue
                del self.candidates[farthest.node.id]
            self.candidates[node.id] = Candidate(node, distance, hop)

    def _nearest(self, count: int, *, slow: bool = True) -> list[Candidate]:
        """The count closest candidates that have not failed (nor, unless slow, been slow)."""
        live = (
            c for c in self.candidates.values() if c.state != FAILED and (slow or c.state != SLOW)
        )
        return heapq.nsmallest(count, live, key=lambda c: c.distance)

    def next_queries(self, now: float) -> list[NodeInfo]:
        """Nodes to ask now (marked as asked), keeping at most alpha in flight."""
        self._mark_slow(now)
        if self.done(now):
            return []
        chosen: list[NodeInfo] = []
        # Past the slow ones: a node that does not answer must not stop the lookup.
        for candidate in self._nearest(self.k, slow=False):
            if self.in_flight >= self.alpha:
                break
            if candidate.state == WAITING:
                candidate.state = ASKED
                self.in_flight += 1
                self.queries += 1
                self._asked.append((now, candidate))
                chosen.append(candidate.node)
        return chosen

    def wake(self) -> float:
        """When next_queries next has something to do unasked: a query turns slow, or the
        deadline."""
        asked = self._asked
        while asked and asked[0][1].state != ASKED:
            asked.popleft()
        return min(asked[0][0] + SLOW_AFTER, self.deadline) if asked else self.deadline

    def _mark_slow(self, now: float) -> None:
        asked = self._asked
        while asked and (asked[0][1].state != ASKED or asked[0][0] + SLOW_AFTER <= now):
            _when, candidate = asked.popleft()
            if candidate.state == ASKED:
                candidate.state = SLOW
                self.in_flight -= 1
                self.slow += 1

    def _settle(self, candidate: Candidate, state: int) -> None:
        if candidate.state == ASKED:
            self.in_flight -= 1
        else:
            self.slow -= 1
        candidate.state = state

    def answered(self, node_id: bytes, nodes: list[NodeInfo]) -> None:
        """The node answered, naming nodes closer to the target."""
        candidate = self.candidates.get(node_id)
        if candidate is None or candidate.state not in (ASKED, SLOW):
            return
        self._settle(candidate, ANSWERED)
        if self.near_enough is not None and candidate.distance < self.near_enough:
            self._near_answered += 1
        self.add(nodes, hop=candidate.hop + 1)

    def failed(self, node_id: bytes) -> None:
        """The query to the node timed out or was refused."""
        candidate = self.candidates.get(node_id)
        if candidate is not None and candidate.state in (ASKED, SLOW):
            self._settle(candidate, FAILED)

    def done(self, now: float) -> bool:
        """Whether the lookup has converged, or run out of time."""
        if now >= self.deadline:
            self.timed_out = True
            return True
        if self._near_answered >= self.near_count:
            return True
        # A slow node does not hold the end back: its answer counts if it comes in time.
        nearest = self._nearest(self.k, slow=False)
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
