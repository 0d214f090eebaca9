"""The block chain a node follows: every known header in a tree (in memory), the active chain
of most cumulative work among the blocks it holds and found valid, and its unspent outputs
(in the store).

Headers are accepted when their proof of work, difficulty and time are right and their
parent is known; a block's body when it passes the context-free checks; the active chain then
moves to the most-work chain whose bodies are all here, disconnecting blocks with their undo
data and connecting the new ones (in steps of a few connects if the caller asks: a long
reorganisation would hold its event loop for seconds). A chain in step with the best header
commits each block at once; one catching up (more than COMMIT_BATCH blocks behind it) once per
COMMIT_BATCH blocks, as Bitcoin Core flushes its coins cache now and then in its initial sync:
each commit writes out every page its blocks touched, and a kill loses only blocks that are
downloaded again. Every commit falls between two blocks. A block found invalid is marked
so, with every descendant, and never tried again. Of two chains of equal work the one whose
tip arrived first stays active, as in Bitcoin. The store keeps the tip a reorganisation
leaves until it is done: reopened, Chain.resumed tells which blocks left.

The genesis is taken as the chain's parameters give it (it meets its proof of work, but as
a parameter it is not checked) and connected like any block: its coinbase pays only a burn
output, which no one can spend and so is never in the UTXO set, as Bitcoin leaves its
genesis coinbase out.
"""

from __future__ import annotations

from collections.abc import Collection, Container
from dataclasses import dataclass, field

from .blockindex import BlockIndex
from .coins import Coin
from .connect import connect_change, disconnect_change
from .params import ChainParams
from .pow import bits_from_target, retarget, target_from_bits, work_of
from .primitives import Block, BlockHeader, OutPoint, Transaction, decode_block
from .store import ChainStore
from .validation import Invalid, check_block, check_block_at, check_header_pow

__all__ = ["BlockIndex", "Chain", "ChainUpdate", "RejectedBlock"]

DOWNLOAD_WINDOW = 1024  # blocks past the tip worth fetching before the tip moves
MAX_LOCATOR = 101  # hashes of a peer's locator we look at
BLOCK_CACHE_BYTES = 64_000_000  # recent block bodies kept decoded in memory
BAN_FUTURE = 24 * 60 * 60  # a block time further ahead than this is no honest clock's error
COMMIT_BATCH = 64  # blocks a chain catching up connects (or disconnects) per store commit


@dataclass
class ChainUpdate:
    """How the active chain moved: blocks disconnected (newest first), blocks connected
    (oldest first), and stored blocks found invalid on the way (hash and why)."""

    connected: list[Block] = field(default_factory=list)
    disconnected: list[Block] = field(default_factory=list)
    invalid: list[tuple[bytes, Invalid]] = field(default_factory=list)


class RejectedBlock(Invalid):
    """The block given to accept_block was found invalid when the chain tried to connect it;
    update says how the active chain moved all the same (blocks before it may have connected)."""

    def __init__(self, error: Invalid, update: ChainUpdate) -> None:
        super().__init__(error.reason, error.detail, ban=error.ban)
        self.update = update


class Chain:
    """The headers tree, the active chain and its state; sans-IO (time is an argument)."""

    def __init__(self, params: ChainParams, store: ChainStore) -> None:
        self.params = params
        self.store = store
        self._index: dict[bytes, BlockIndex] = {}
        self._active: list[BlockIndex] = []
        self._candidates: set[BlockIndex] = set()  # complete, valid, more work than the tip
        self._blocks: dict[bytes, Block] = {}  # recent bodies, oldest first
        self._block_bytes = 0
        self._sequence = 0
        self._reorg_start: BlockIndex | None = None  # the tip an unfinished reorganisation left
        self._uncommitted = 0  # blocks connected or disconnected since the last commit
        stored = store.headers()
        if not stored:
            self._store_genesis()
            stored = store.headers()
        if stored[0].header.hash != params.genesis.hash:
            raise ValueError(f"The stored chain is not the {params.name} chain.")
        for entry in stored:
            self._load(entry.header, entry.height, entry.has_data, entry.invalid)
        tip_hash = store.tip()
        genesis = self._index[params.genesis.hash]
        self.tip = self._index.get(tip_hash, genesis) if tip_hash else genesis
        self._set_active(self.tip)
        self.best_header = self.tip
        self._find_best_header()
        self._find_candidates()
        # A node killed in a reorganisation carries on to the best chain; resumed tells the
        # whole move from the tip it was leaving (if one is recorded, else from the tip).
        recorded = store.reorg_start()
        self._reorg_start = self._index.get(recorded) if recorded else None
        self.resumed = self._activate(None, since=self._reorg_start)

    def _store_genesis(self) -> None:
        """Write the genesis header, body and state into a new store."""
        genesis = self.params.genesis
        self.store.add_header(genesis.header, 0)
        self.store.put_block(genesis.hash, genesis.serialized)
        self.store.apply(connect_change(genesis, 0, self.store.coin, self.params))
        self.store.commit()

    def _load(self, header: BlockHeader, height: int, has_data: bool, invalid: bool) -> None:
        """Rebuild the index entry of a stored header (its parent loaded before it)."""
        parent = self._index.get(header.previous) if height else None
        if height and parent is None:
            return  # cannot happen in a store this code wrote; such a header is unusable
        work = work_of(target_from_bits(header.bits)) + (parent.work if parent else 0)
        index = BlockIndex(header.hash, header, height, work, parent, has_data, invalid)
        index.complete = has_data and (parent is None or parent.complete)
        if has_data:
            index.sequence = self._next_sequence()
        index.link()
        self._index[index.hash] = index

    def _next_sequence(self) -> int:
        """The next arrival number."""
        self._sequence += 1
        return self._sequence

    def _set_active(self, tip: BlockIndex) -> None:
        """Make the active list the chain ending at tip."""
        chain = []
        walk: BlockIndex | None = tip
        while walk is not None:
            chain.append(walk)
            walk = walk.parent
        chain.reverse()
        self._active = chain

    def _find_best_header(self) -> None:
        """The most-work valid header (the tip when none has more)."""
        for index in self._index.values():
            if not index.invalid and index.work > self.best_header.work:
                self.best_header = index

    def _find_candidates(self) -> None:
        """Every connectable valid block with more work than the tip."""
        self._candidates = {
            index
            for index in self._index.values()
            if index.complete and not index.invalid and index.work > self.tip.work
        }

    # Lookups.

    def get(self, block_hash: bytes) -> BlockIndex | None:
        """The index of a known header."""
        return self._index.get(block_hash)

    def at_height(self, height: int) -> BlockIndex | None:
        """The active chain's block at height."""
        return self._active[height] if 0 <= height < len(self._active) else None

    def contains(self, index: BlockIndex) -> bool:
        """Whether index is on the active chain."""
        return index.height < len(self._active) and self._active[index.height] is index

    def block(self, block_hash: bytes) -> Block | None:
        """A stored block."""
        block = self._blocks.get(block_hash)
        if block is not None:
            return block
        data = self.store.block(block_hash)
        return None if data is None else decode_block(data)

    def raw_block(self, block_hash: bytes) -> bytes | None:
        """A stored block as sent on the wire, without decoding it (for serving peers)."""
        block = self._blocks.get(block_hash)
        return block.serialized if block is not None else self.store.block(block_hash)

    def coin(self, outpoint: OutPoint) -> Coin | None:
        """An unspent output at the tip."""
        return self.store.coin(outpoint)

    def coins_for(self, locks: Collection[bytes]) -> list[tuple[OutPoint, Coin]]:
        """The unspent outputs at the tip locked by any of locks, oldest first."""
        return self.store.coins_for(locks)

    def transaction(self, txid: bytes) -> tuple[Transaction, bytes] | None:
        """A transaction of the active chain and the hash of its block."""
        location = self.store.tx_location(txid)
        if location is None:
            return None
        block = self.block(location[0])
        return None if block is None else (block.transactions[location[1]], location[0])

    def median_time_past(self, index: BlockIndex) -> int:
        """The median time of index and the blocks before it (median_span in all)."""
        times = sorted(index.times(self.params.median_span))
        return times[len(times) // 2]

    def next_bits(self, parent: BlockIndex) -> int:
        """The compact target a child of parent must carry: the limit when the chain never
        retargets; else the parent's, but at every retarget_interval-th height scaled by the
        time from the interval's first block to its last (interval - 1 spacings, as Bitcoin
        measures, against the time interval spacings should take; the timewarp this allows
        is left open, as in Bitcoin)."""
        params = self.params
        interval = params.retarget_interval
        if not interval:
            return params.pow_limit_bits
        height = parent.height + 1
        if height % interval:
            return parent.header.bits
        first = parent.ancestor(height - interval)
        target = retarget(
            target_from_bits(parent.header.bits),
            parent.header.time - first.header.time,
            interval * params.target_spacing,
            params.pow_limit,
        )
        return bits_from_target(target)

    # Serving peers.

    def locator(self) -> list[bytes]:
        """Hashes of the active chain for a peer to find our fork: the tip and the 9 before it
        one by one, then steps doubling, then the genesis."""
        hashes = []
        height = self.tip.height
        step = 1
        while height > 0:
            hashes.append(self._active[height].hash)
            if len(hashes) >= 10:
                step *= 2
            height -= step
        hashes.append(self._active[0].hash)
        return hashes

    def headers_after(
        self, locator: list[bytes], stop: bytes, limit: int = 2000
    ) -> list[BlockHeader]:
        """Active headers after the first locator hash on our active chain (the genesis if
        none is), up to stop or limit."""
        start = 0
        for block_hash in locator[:MAX_LOCATOR]:
            index = self._index.get(block_hash)
            if index is not None and self.contains(index):
                start = index.height
                break
        headers = []
        for index in self._active[start + 1 : start + 1 + max(0, limit)]:
            headers.append(index.header)
            if index.hash == stop:
                break
        return headers

    def blocks_to_fetch(self, limit: int, skip: Container[bytes]) -> list[BlockIndex]:
        """Blocks to download, oldest first: those lacking data on the best header's chain
        after its fork from the active chain, not in skip, no further than DOWNLOAD_WINDOW
        past the tip."""
        best = self.best_header
        fork = self._fork(best)
        end = min(best.height, self.tip.height + DOWNLOAD_WINDOW)
        if end <= fork.height or limit <= 0:
            return []
        wanted = []
        walk = best.ancestor(end)
        while walk is not fork:
            if not walk.has_data and walk.hash not in skip:
                wanted.append(walk)
            assert walk.parent is not None  # the fork is an ancestor
            walk = walk.parent
        wanted.reverse()
        return wanted[:limit]

    def _fork(self, index: BlockIndex) -> BlockIndex:
        """The last block that index's chain shares with the active chain."""
        walk = index.ancestor(min(index.height, self.tip.height))
        while not self.contains(walk):
            assert walk.parent is not None  # the genesis is on every chain
            walk = walk.parent
        return walk

    # Accepting headers and blocks.

    def accept_header(self, header: BlockHeader, now: float) -> BlockIndex:
        """Add a header whose parent is known, checking its proof of work, bits and time;
        return its index (the known one if it was known)."""
        try:
            return self._add_header(header, now)
        finally:
            self._commit()

    def _add_header(self, header: BlockHeader, now: float) -> BlockIndex:
        """accept_header without the commit (accept_block commits header and body at once)."""
        known = self._index.get(header.hash)
        if known is not None:
            if known.invalid:
                raise Invalid("duplicate-invalid", "The block is known to be invalid.")
            return known
        parent = self._index.get(header.previous)
        if parent is None:
            raise Invalid("prev-blk-not-found", "The block's parent is unknown.", ban=False)
        if parent.invalid:
            raise Invalid("bad-prevblk", "The block's parent is invalid.")
        check_header_pow(header, self.params)
        expected = self.next_bits(parent)
        if header.bits != expected:
            raise Invalid(
                "bad-diffbits", f"The block's bits are {header.bits:#010x}, not {expected:#010x}."
            )
        if header.time <= self.median_time_past(parent):
            raise Invalid("time-too-old", "The block's time is not after the median time past.")
        if header.time > now + self.params.max_future:
            # An honest peer's clock may be off: refuse without banning, and without marking
            # the header, which becomes valid in time; only an absurd time is banned.
            raise Invalid(
                "time-too-new",
                "The block's time is too far in the future.",
                ban=header.time > now + max(self.params.max_future, BAN_FUTURE),
            )
        index = BlockIndex(
            header.hash,
            header,
            parent.height + 1,
            parent.work + work_of(target_from_bits(header.bits)),
            parent,
            has_data=False,
            invalid=False,
        )
        index.link()
        self._index[index.hash] = index
        self.store.add_header(header, index.height)
        if index.work > self.best_header.work:
            self.best_header = index
        return index

    def accept_block(
        self, block: Block, now: float, *, max_connects: int | None = None
    ) -> ChainUpdate:
        """Add a block (its header as accept_header does), store it if it passes the checks
        that need no coins, and move the active chain towards the most-work valid chain, at
        most max_connects blocks connected (None: all the way). Raises Invalid if this block
        breaks a rule (RejectedBlock if it was found so on connecting)."""
        try:
            index = self._add_header(block.header, now)
            if index.has_data:
                return ChainUpdate()
            try:
                check_block(block, self.params)
                check_block_at(block, index.height)
            except Invalid as error:
                # A body that does not match its merkle root is not this header's block:
                # another peer may yet send the right one. An oversized body is refused
                # before its merkle root is computed, so it may not be this header's either.
                if error.reason not in ("bad-merkle", "bad-blk-length"):
                    self._mark_invalid(index)
                raise
            self._store_body(index, block)
            update = self._activate(max_connects)
        finally:
            self._settle()
        for block_hash, failure in update.invalid:
            if block_hash == index.hash:
                raise RejectedBlock(failure, update)
        return update

    def _store_body(self, index: BlockIndex, block: Block) -> None:
        """Keep a checked body, and make candidates of the blocks it makes connectable."""
        self.store.put_block(index.hash, block.serialized)
        index.has_data = True
        index.sequence = self._next_sequence()
        self._remember(block)
        parent = index.parent
        if parent is not None and not parent.complete:
            return
        pending = [index]
        while pending:
            done = pending.pop()
            done.complete = True
            if not done.invalid and done.work > self.tip.work:
                self._candidates.add(done)
            pending += [child for child in done.children if child.has_data]

    def _remember(self, block: Block) -> None:
        """Keep a decoded body for connecting it soon; forget the oldest past the budget."""
        if block.hash in self._blocks:
            return
        self._blocks[block.hash] = block
        self._block_bytes += block.size
        while self._block_bytes > BLOCK_CACHE_BYTES and len(self._blocks) > 1:
            oldest = next(iter(self._blocks))
            self._block_bytes -= self._blocks.pop(oldest).size

    def _mark_invalid(self, index: BlockIndex) -> None:
        """Mark a block and all its descendants invalid, for good."""
        pending = [index]
        while pending:
            bad = pending.pop()
            if not bad.invalid:
                bad.invalid = True
                self.store.mark_invalid(bad.hash)
            self._candidates.discard(bad)
            pending += bad.children
        if self.best_header.invalid:
            self.best_header = self.tip
            self._find_best_header()

    # Moving the active chain.

    @property
    def activation_pending(self) -> bool:
        """Whether a stored chain has more work than the active one: continue_activation has
        more to do."""
        return any(candidate.work > self.tip.work for candidate in self._candidates)

    def continue_activation(self, max_connects: int) -> ChainUpdate:
        """The next step towards the most-work chain: at most max_connects blocks connected
        (after disconnecting back to the fork, all at once). Blocks found invalid are marked
        so and reported in the update, never raised."""
        return self._activate(max_connects)

    def _activate(self, max_connects: int | None, since: BlockIndex | None = None) -> ChainUpdate:
        """Move the active chain to the best candidate until none has more work than the tip
        or max_connects blocks were tried; a block that fails to connect is marked invalid and
        the next best is tried. The update is the move from since (by default the tip)."""
        old_tip = since or self.tip
        seen: dict[bytes, Block] = {}
        invalid: list[tuple[bytes, Invalid]] = []
        budget = max_connects
        while budget is None or budget > 0:
            best = max(
                self._candidates, key=lambda index: (index.work, -index.sequence), default=None
            )
            if best is None or best.work <= self.tip.work:
                break
            fork = self._fork(best)
            while self.tip is not fork:
                self._disconnect_tip(seen)
            end = best.height if budget is None else min(best.height, fork.height + budget)
            for height in range(fork.height + 1, end + 1):
                index = best.ancestor(height)
                if budget is not None:
                    budget -= 1
                try:
                    self._connect(index, seen)
                except Invalid as error:
                    invalid.append((index.hash, error))
                    self._mark_invalid(index)
                    self._find_candidates()  # the tip may have gone back
                    break
        self._candidates = {c for c in self._candidates if c.work > self.tip.work}
        if self._reorg_start is not None and not self._candidates:
            # The best chain is active: a restart has no reorganisation left to tell of.
            self.store.set_reorg_start(None)
            self._reorg_start = None
        self._settle()
        return self._net_update(old_tip, seen, invalid)

    def _net_update(
        self, old_tip: BlockIndex, seen: dict[bytes, Block], invalid: list[tuple[bytes, Invalid]]
    ) -> ChainUpdate:
        """The change from old_tip's chain to the active one, whatever steps it took."""
        update = ChainUpdate(invalid=invalid)
        walk = old_tip
        while not self.contains(walk):
            update.disconnected.append(seen.get(walk.hash) or self._body(walk))
            assert walk.parent is not None
            walk = walk.parent
        for index in self._active[walk.height + 1 :]:
            update.connected.append(seen.get(index.hash) or self._body(index))
        return update

    def _body(self, index: BlockIndex) -> Block:
        """The stored body of a block with data."""
        block = self.block(index.hash)
        if block is None:
            raise LookupError(f"the store lost the body of block {index.hash.hex()}")
        return block

    def _connect(self, index: BlockIndex, seen: dict[bytes, Block]) -> None:
        """Connect the tip's child index: check its spends, write the change."""
        block = self._blocks.get(index.hash) or self._body(index)
        change = connect_change(block, index.height, self.store.coin, self.params)
        self.store.apply(change)
        self._active.append(index)
        self.tip = index
        seen[index.hash] = block
        self._block_written()

    def _disconnect_tip(self, seen: dict[bytes, Block]) -> None:
        """Disconnect the tip with its undo data (the first disconnect of a reorganisation
        records, in the same transaction, the tip it leaves)."""
        index = self.tip
        parent = index.parent
        if parent is None:
            raise ValueError("the genesis cannot be disconnected")
        block = seen.get(index.hash) or self._body(index)
        if self._reorg_start is None:
            self._reorg_start = index
            self.store.set_reorg_start(index.hash)
        self.store.apply(disconnect_change(block, index.height, self.store.undo(index.hash)))
        self._active.pop()
        self.tip = parent
        seen[index.hash] = block
        self._block_written()

    # Committing.

    @property
    def catching_up(self) -> bool:
        """Whether the tip is more than COMMIT_BATCH blocks behind the best header: blocks
        are then committed in batches."""
        return self.best_header.height - self.tip.height > COMMIT_BATCH

    def _block_written(self) -> None:
        """Count a block connected or disconnected, and commit unless a batch gathers."""
        self._uncommitted += 1
        if self._uncommitted >= COMMIT_BATCH or not self.catching_up:
            self._commit()

    def _settle(self) -> None:
        """At the end of a call: commit what is pending unless a batch is gathering (so
        that a chain in step has stored every tip it tells of)."""
        if not (self._uncommitted and self.catching_up):
            self._commit()

    def _commit(self) -> None:
        """Make every write so far durable (the open batch with it)."""
        self.store.commit()
        self._uncommitted = 0

    def close(self) -> None:
        """Commit what is pending and close the store."""
        self._commit()
        self.store.close()
