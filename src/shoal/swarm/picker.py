"""Which block to ask for next: rarest first, random first pieces, and an end game."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..wire.messages import BLOCK_SIZE

# Until this many pieces are complete, pick at random: a new peer needs something to trade
# soon, and the rarest piece is often slow to get.
RANDOM_FIRST_PIECES = 4
# In the end game, at most this many peers are asked for the same block.
END_GAME_DUPLICATES = 2
# A block is asked of a second peer only near the end (this many blocks left to arrive) or
# once its first request has waited this long: with dozens of peers every block is in flight
# from the start, and doubling them all would waste half the swarm's bandwidth.
END_GAME_BLOCKS = 32
END_GAME_AFTER = 2.0


@dataclass(slots=True)
class PartialPiece:
    """A piece being downloaded: its buffer and which blocks are in flight or received."""

    index: int
    size: int
    num_blocks: int
    buffer: bytearray
    free: list[int]  # block numbers nobody has been asked for, next to ask for last
    in_flight: dict[int, int] = field(default_factory=dict)  # block -> number of requests
    asked_at: dict[int, float] = field(default_factory=dict)  # block -> its first request
    received: set[int] = field(default_factory=set)
    senders: dict[int, int] = field(default_factory=dict)  # block -> peer key

    @property
    def complete(self) -> bool:
        """Whether every block has arrived."""
        return len(self.received) == self.num_blocks

    def block_length(self, block: int) -> int:
        """Length of one block; the last is shorter."""
        return min(BLOCK_SIZE, self.size - block * BLOCK_SIZE)


class PiecePicker:
    """Tracks availability and partial pieces, and hands out blocks to request."""

    def __init__(self, piece_sizes: list[int], have: bytearray, rng: random.Random) -> None:
        self.piece_sizes = piece_sizes
        self.have = have
        self.have_count = sum(have)
        self._piece_blocks = [(size + BLOCK_SIZE - 1) // BLOCK_SIZE for size in piece_sizes]
        # Blocks of the pieces not yet verified, whether started or not.
        self._missing_blocks = sum(
            b for b, h in zip(self._piece_blocks, have, strict=True) if not h
        )
        self.availability = [0] * len(piece_sizes)
        self.partials: dict[int, PartialPiece] = {}
        self.verifying: set[int] = set()
        self.rng = rng

    # -- availability ---------------------------------------------------------------------------

    def add_peer_pieces(self, pieces: bytearray) -> None:
        """Count a new peer's pieces."""
        availability = self.availability
        for index, has in enumerate(pieces):
            if has:
                availability[index] += 1

    def remove_peer_pieces(self, pieces: bytearray) -> None:
        """Forget a departed peer's pieces."""
        availability = self.availability
        for index, has in enumerate(pieces):
            if has:
                availability[index] -= 1

    def add_have(self, index: int) -> None:
        """Count one piece a peer announced."""
        self.availability[index] += 1

    # -- picking ------------------------------------------------------------------------------

    def wanted(self, index: int) -> bool:
        """Whether we still need a piece and nobody is fetching or checking it."""
        return not self.have[index] and index not in self.partials and index not in self.verifying

    def needs_any(self, pieces: bytearray) -> bool:
        """Whether a peer with these pieces has something we lack."""
        have = self.have
        return any(p and not h for p, h in zip(pieces, have, strict=True))

    def next_blocks(
        self,
        pieces: bytearray,
        exclude: dict[tuple[int, int], float],
        want: int,
        *,
        now: float,
    ) -> list[tuple[int, int]]:
        """Up to `want` blocks to request from a peer that has `pieces`, as (piece, block)."""
        chosen: list[tuple[int, int]] = []
        # Finish what is started before starting more: whole pieces reach verification sooner.
        for partial in self.partials.values():
            if partial.free and pieces[partial.index]:
                self._take(partial, want - len(chosen), chosen, now)
                if len(chosen) >= want:
                    return chosen
        while len(chosen) < want:
            index = self._pick_new(pieces)
            if index is None:
                break
            self._take(self._start(index), want - len(chosen), chosen, now)
        if not chosen and not exclude:
            # End game, for a peer with nothing else in flight: one with requests of its own
            # is busy already, and doubling every block that is in flight wastes half the
            # bandwidth of a swarm where a node talks to dozens of seeds.
            self._end_game_blocks(pieces, exclude, want, chosen, now)
        return chosen

    @staticmethod
    def _take(partial: PartialPiece, count: int, chosen: list[tuple[int, int]], now: float) -> None:
        free = partial.free
        in_flight = partial.in_flight
        asked_at = partial.asked_at
        index = partial.index
        for _ in range(min(count, len(free))):
            block = free.pop()
            in_flight[block] = in_flight.get(block, 0) + 1
            asked_at[block] = now
            chosen.append((index, block))

    def _pick_new(self, pieces: bytearray) -> int | None:
        have = self.have
        partials = self.partials
        verifying = self.verifying
        candidates = [
            index
            for index, has in enumerate(pieces)
            if has and not have[index] and index not in partials and index not in verifying
        ]
        if not candidates:
            return None
        if self.have_count < RANDOM_FIRST_PIECES:
            return self.rng.choice(candidates)
        availability = self.availability
        rarest = min(availability[index] for index in candidates)
        return self.rng.choice([index for index in candidates if availability[index] == rarest])

    def _start(self, index: int) -> PartialPiece:
        size = self.piece_sizes[index]
        num_blocks = (size + BLOCK_SIZE - 1) // BLOCK_SIZE
        partial = PartialPiece(
            index=index,
            size=size,
            num_blocks=num_blocks,
            buffer=bytearray(size),
            free=list(range(num_blocks - 1, -1, -1)),
        )
        self.partials[index] = partial
        return partial

    def _end_game_blocks(
        self,
        pieces: bytearray,
        exclude: dict[tuple[int, int], float],
        want: int,
        chosen: list[tuple[int, int]],
        now: float,
    ) -> None:
        near_the_end = self._blocks_left() <= END_GAME_BLOCKS
        for partial in self.partials.values():
            if not pieces[partial.index]:
                continue
            for block, count in partial.in_flight.items():
                if (
                    count < END_GAME_DUPLICATES
                    and (partial.index, block) not in exclude
                    and (near_the_end or now - partial.asked_at[block] >= END_GAME_AFTER)
                ):
                    partial.in_flight[block] = count + 1
                    chosen.append((partial.index, block))
                    if len(chosen) >= want:
                        return

    # -- outcomes -----------------------------------------------------------------------------

    def _blocks_left(self) -> int:
        """Blocks of the whole download still to arrive (pieces not started count whole)."""
        received = sum(len(partial.received) for partial in self.partials.values())
        checking = sum(self._piece_blocks[index] for index in self.verifying)
        return self._missing_blocks - received - checking

    def release(self, index: int, block: int) -> None:
        """A request ended without data (choke, reject, timeout, disconnect)."""
        partial = self.partials.get(index)
        if partial is None or block in partial.received:
            return
        count = partial.in_flight.get(block, 0) - 1
        if count > 0:
            partial.in_flight[block] = count
        else:
            partial.in_flight.pop(block, None)
            partial.free.append(block)

    def expected_block_length(self, index: int, begin: int) -> int | None:
        """The length a block at (index, begin) must have, or None if no block starts there."""
        if not 0 <= index < len(self.piece_sizes) or begin % BLOCK_SIZE:
            return None
        size = self.piece_sizes[index]
        return min(BLOCK_SIZE, size - begin) if begin < size else None

    def receive(
        self, index: int, begin: int, data: bytes | memoryview, peer: int
    ) -> PartialPiece | None:
        """Store a block; returns its piece (check `complete`), or None if it was not wanted."""
        partial = self.partials.get(index)
        if partial is None:
            return None
        block = begin // BLOCK_SIZE  # the caller checked alignment and length
        received = partial.received
        if block in received:
            return None
        partial.buffer[begin : begin + len(data)] = data
        received.add(block)
        partial.in_flight.pop(block, None)
        if partial.free and block in partial.free:
            # Arrived without being asked for in this round (a late reply after a choke).
            partial.free.remove(block)
        partial.senders[block] = peer
        if len(received) == partial.num_blocks:
            del self.partials[index]
            self.verifying.add(index)
        return partial

    def verified(self, index: int, ok: bool) -> None:
        """The outcome of a piece's hash check."""
        self.verifying.discard(index)
        if ok and not self.have[index]:
            self.have[index] = 1
            self.have_count += 1
            self._missing_blocks -= self._piece_blocks[index]

    @property
    def done(self) -> bool:
        """Whether every piece is verified."""
        return self.have_count == len(self.have)

    def check(self) -> None:
        """Raise AssertionError if the picker's bookkeeping contradicts itself (for tests)."""
        assert all(count >= 0 for count in self.availability), "negative availability"
        assert self.have_count == sum(self.have), "pieces had miscounted"
        missing = sum(b for b, h in zip(self._piece_blocks, self.have, strict=True) if not h)
        assert self._missing_blocks == missing, "blocks missing miscounted"
        for index, partial in self.partials.items():
            assert not self.have[index] and index not in self.verifying, f"piece {index} twice"
            free = set(partial.free)
            in_flight = set(partial.in_flight)
            assert len(free) == len(partial.free), f"piece {index}: a free block listed twice"
            assert not free & partial.received, f"piece {index}: a received block is free"
            assert not in_flight & partial.received, f"piece {index}: a received block in flight"
            assert not free & in_flight, f"piece {index}: a block both free and in flight"
            assert all(count > 0 for count in partial.in_flight.values())
            assert free | in_flight | partial.received == set(range(partial.num_blocks)), (
                f"piece {index}: a block is lost"
            )
        for index in self.verifying:
            assert not self.have[index], f"piece {index} verified and being verified"
