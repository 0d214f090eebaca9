"""Who we upload to: tit-for-tat with an optimistic unchoke, round robin when seeding."""

from __future__ import annotations

import random
from dataclasses import dataclass

CHOKE_INTERVAL = 10.0
OPTIMISTIC_INTERVAL = 30.0
# When seeding, a peer keeps its slot this long before others waiting get a turn.
SEED_TURN = 30.0


@dataclass(slots=True)
class Candidate:
    """What the choker needs to know about one interested peer."""

    key: int
    download_rate: float  # bytes/s we receive from it
    unchoked_since: float | None  # None while choked
    waiting_since: float  # when it last became choked or interested
    connected_at: float


class Choker:
    """Decides the unchoked set every CHOKE_INTERVAL seconds."""

    def __init__(self, slots: int, rng: random.Random) -> None:
        self.slots = max(1, slots)
        self.rng = rng
        self.optimistic: int | None = None
        self._optimistic_at = float("-inf")

    def choose(self, candidates: list[Candidate], seeding: bool, now: float) -> set[int]:
        """The keys of the peers to unchoke now, among interested candidates."""
        if seeding:
            return self._round_robin(candidates, now)
        return self._tit_for_tat(candidates, now)

    def _round_robin(self, candidates: list[Candidate], now: float) -> set[int]:
        def turn_order(c: Candidate) -> tuple[int, float]:
            # Peers in their turn first, then those who have waited longest.
            in_turn = c.unchoked_since is not None and now - c.unchoked_since < SEED_TURN
            return (0 if in_turn else 1, c.waiting_since if c.unchoked_since is None else now)

        return {c.key for c in sorted(candidates, key=turn_order)[: self.slots]}

    def _tit_for_tat(self, candidates: list[Candidate], now: float) -> set[int]:
        regular_slots = self.slots - 1 if len(candidates) > self.slots else self.slots
        by_rate = sorted(candidates, key=lambda c: c.download_rate, reverse=True)
        chosen = {c.key for c in by_rate[:regular_slots]}
        rest = [c for c in candidates if c.key not in chosen]
        if not rest:
            return chosen
        still_there = any(c.key == self.optimistic for c in rest)
        if not still_there or now - self._optimistic_at >= OPTIMISTIC_INTERVAL:
            # New peers are three times as likely to be picked: they have nothing to trade yet.
            weights = [3 if now - c.connected_at < 60 else 1 for c in rest]
            self.optimistic = self.rng.choices(rest, weights=weights)[0].key
            self._optimistic_at = now
        chosen.add(self.optimistic)  # type: ignore[arg-type]
        return chosen
