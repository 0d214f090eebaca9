"""Keeping in step with peers, the policy half: which blocks to ask which peer for (headers
first, bodies from several peers in parallel, a few at a time each), who is stalling the
download, and the bounded sets of what each peer is known to have.

Plain classes without a socket or a clock, so they are tested alone (as libtorrent's piece
picker is); `core.LedgerNode` feeds them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .blockindex import BlockIndex

# Blocks one peer is asked for at a time (Bitcoin's MAX_BLOCKS_IN_TRANSIT_PER_PEER).
BLOCKS_PER_PEER = 16
REFILL_AT = BLOCKS_PER_PEER // 2  # free slots a peer has before it is asked for more
# A peer that holds the block the chain waits for next (the first of the download window)
# this long is disconnected: it stalls every other peer's blocks behind it. Any block asked
# for and not come after BLOCK_TIMEOUT drops its peer too.
STALL_TIMEOUT = 10.0
BLOCK_TIMEOUT = 60.0


class BoundedSet:
    """A set of hashes that forgets the oldest past capacity (what a peer is known to have,
    transactions recently refused)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[bytes, None] = OrderedDict()

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: bytes) -> None:
        """Remember item (as the newest)."""
        items = self._items
        items[item] = None
        items.move_to_end(item)
        if len(items) > self.capacity:
            items.popitem(last=False)

    def discard(self, item: bytes) -> None:
        """Forget item."""
        self._items.pop(item, None)


@dataclass(slots=True)
class Request:
    """A block asked of a peer, and when."""

    peer: int
    asked_at: float


@dataclass(frozen=True, slots=True)
class Supplier:
    """A peer that may be asked for blocks: the best block it is known to have, and the
    blocks it said it does not have."""

    peer: int
    best: BlockIndex | None
    lacks: BoundedSet

    def has(self, index: BlockIndex) -> bool:
        """Whether this peer should have index: an ancestor of its best known block."""
        best = self.best
        return (
            best is not None
            and index.height <= best.height
            and best.ancestor(index.height) is index
            and index.hash not in self.lacks
        )


class BlockDownload:
    """Blocks in flight, by hash and by peer, BLOCKS_PER_PEER at most each."""

    def __init__(self, per_peer: int = BLOCKS_PER_PEER) -> None:
        self.per_peer = per_peer
        self.requests: dict[bytes, Request] = {}
        self._by_peer: dict[int, dict[bytes, None]] = {}

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self.requests

    def in_flight(self, peer: int) -> int:
        """Blocks asked of peer and not come."""
        return len(self._by_peer.get(peer, ()))

    def free(self, peer: int) -> int:
        """Blocks peer may still be asked for."""
        return self.per_peer - self.in_flight(peer)

    def plan(
        self, suppliers: Sequence[Supplier], wanted: Iterable[BlockIndex]
    ) -> dict[int, list[BlockIndex]]:
        """Which supplier to ask for which of wanted (oldest first, none in flight): each
        block to the first supplier with room that has it, suppliers taken in turn so that
        neighbouring blocks go to different peers and all download at once."""
        room = {supplier.peer: self.free(supplier.peer) for supplier in suppliers}
        plan: dict[int, list[BlockIndex]] = {}
        turn = 0
        for index in wanted:
            if index.hash in self.requests:
                continue
            for step in range(len(suppliers)):
                supplier = suppliers[(turn + step) % len(suppliers)]
                if room[supplier.peer] > 0 and supplier.has(index):
                    room[supplier.peer] -= 1
                    plan.setdefault(supplier.peer, []).append(index)
                    turn = (turn + step + 1) % len(suppliers)
                    break
        return plan

    def asked(self, peer: int, hashes: Iterable[bytes], now: float) -> None:
        """peer was asked for hashes at now."""
        mine = self._by_peer.setdefault(peer, {})
        for block_hash in hashes:
            self.requests[block_hash] = Request(peer, now)
            mine[block_hash] = None

    def received(self, block_hash: bytes) -> int | None:
        """A block came: the peer it was asked of (None if it was not asked for)."""
        request = self.requests.pop(block_hash, None)
        if request is None:
            return None
        mine = self._by_peer[request.peer]
        del mine[block_hash]
        if not mine:
            del self._by_peer[request.peer]
        return request.peer

    def release(self, peer: int) -> None:
        """peer is gone: its blocks may be asked of others."""
        for block_hash in self._by_peer.pop(peer, {}):
            del self.requests[block_hash]

    def stalling(self, first: bytes | None, now: float) -> int | None:
        """The peer that holds first (the block the chain waits for) past STALL_TIMEOUT."""
        request = None if first is None else self.requests.get(first)
        if request is not None and now - request.asked_at > STALL_TIMEOUT:
            return request.peer
        return None

    def timed_out(self, now: float) -> set[int]:
        """Peers with a block asked BLOCK_TIMEOUT ago or more and not come."""
        return {
            request.peer
            for request in self.requests.values()
            if now - request.asked_at >= BLOCK_TIMEOUT
        }
