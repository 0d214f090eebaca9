"""Transactions waiting for a block: checked against the chain's coins and each other, kept
within a size, and handed to the miner best fee rate first.

Policy, as Bitcoin Core's where it has one:
- First seen wins: a transaction spending an output that a mempool transaction already
  spends is refused ("txn-mempool-conflict"); replacement by fee is not offered, so a payment
  once in the mempool can only leave it by being mined, conflicted by a block, or evicted.
- A transaction pays at least MIN_RELAY_FEE_RATE base units a byte ("min-fee-not-met").
- At most max_bytes of transactions: when full, the transaction with the lowest descendant
  score (the better of its own fee rate and that of it with its descendants) leaves with its
  descendants until the rest fits; a newcomer that would be the first to go is refused
  ("mempool-full").
- Chains of unconfirmed transactions are at most 25 long either way ("too-long-mempool-chain"),
  which bounds the work of every update.
- Transactions with unknown inputs wait as orphans (at most 100 and 100 KB, the oldest leaving
  first, each for 20 minutes) until their parents arrive.
- The miner's selection is by ancestor package: a transaction with its unconfirmed ancestors,
  at the fee rate of the whole, so a child may pay for its parent; parents come first.
- After a reorganisation the transactions of disconnected blocks come back and everything is
  checked again against the new chain; what no longer fits (a conflict, a spent or immature
  input) is dropped.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from .chain import Chain, ChainUpdate
from .coins import Coin
from .params import ChainParams
from .primitives import Block, OutPoint, Transaction
from .validation import Invalid, check_inputs, check_transaction, tx_sigops

MIN_RELAY_FEE_RATE = 1  # base units a byte
MAX_STANDARD_TX_SIZE = 100_000  # larger ones are valid in a block but not relayed
MAX_CHAIN = 25  # unconfirmed ancestors (or descendants) a transaction may have, itself counted
MAX_ORPHANS = 100
MAX_ORPHAN_BYTES = 100_000
MAX_ORPHAN_SIZE = 25_000  # one orphan fills at most a quarter of the orphan pool
ORPHAN_LIFETIME = 20 * 60.0  # seconds


@dataclass(eq=False)
class Entry:
    """A mempool transaction, its fee, its links to unconfirmed parents and children, and the
    totals of its ancestor and descendant packages (itself included)."""

    tx: Transaction
    fee: int
    parents: set[bytes] = field(default_factory=set)
    children: set[bytes] = field(default_factory=set)
    ancestor_fee: int = 0
    ancestor_size: int = 0
    descendant_fee: int = 0
    descendant_size: int = 0

    @property
    def size(self) -> int:
        """The transaction's size in bytes."""
        return self.tx.size

    def descendant_score(self) -> float:
        """What eviction ranks by: the better of its own rate and its descendants' with it."""
        return max(self.fee / self.size, self.descendant_fee / self.descendant_size)


@dataclass(eq=False)
class Orphan:
    """A transaction waiting for a parent we have not seen."""

    tx: Transaction
    expires: float


class Mempool:
    """Valid unconfirmed transactions against one chain's tip; see the module docstring."""

    def __init__(self, params: ChainParams, *, max_bytes: int = 5_000_000) -> None:
        self.params = params
        self.max_bytes = max_bytes
        self.bytes = 0  # total size of the transactions held
        self._entries: dict[bytes, Entry] = {}
        self._spenders: dict[OutPoint, bytes] = {}  # outpoint -> txid of the mempool tx spending it
        self._orphans: dict[bytes, Orphan] = {}  # oldest first
        self._orphan_bytes = 0
        self._waiting: dict[bytes, set[bytes]] = {}  # missing parent txid -> orphan txids

    # Queries.

    def __contains__(self, txid: object) -> bool:
        return txid in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, txid: bytes) -> Transaction | None:
        """The mempool transaction with this txid."""
        entry = self._entries.get(txid)
        return None if entry is None else entry.tx

    def fee(self, txid: bytes) -> int | None:
        """The fee a mempool transaction pays."""
        entry = self._entries.get(txid)
        return None if entry is None else entry.fee

    def transactions(self) -> Iterator[Transaction]:
        """Every mempool transaction, parents before their children."""
        for entry in sorted(self._entries.values(), key=lambda e: len(self._ancestors(e))):
            yield entry.tx

    def spends(self, outpoint: OutPoint) -> bool:
        """Whether a mempool transaction spends outpoint."""
        return outpoint in self._spenders

    def has_orphan(self, txid: bytes) -> bool:
        """Whether txid waits among the orphans."""
        return txid in self._orphans

    @property
    def orphan_count(self) -> int:
        """Orphans waiting."""
        return len(self._orphans)

    # Adding.

    def add(self, tx: Transaction, chain: Chain, now: float) -> list[Transaction]:
        """Accept tx if it is valid on chain's tip with our other transactions: then it and
        every orphan it made valid, for relay. [] if it waits as an orphan. Raises Invalid."""
        if tx.txid in self._entries or tx.txid in self._orphans:
            raise Invalid("txn-already-known", "The transaction is known already.", ban=False)
        accepted = [tx] if self._accept(tx, chain, now, orphan=True) else []
        if accepted:
            accepted += self._adopt_orphans([tx.txid], chain, now)
        return accepted

    def _accept(self, tx: Transaction, chain: Chain, now: float, *, orphan: bool) -> bool:
        """Add tx if valid (True), keep it as an orphan if inputs are missing and orphan
        (False), or raise Invalid."""
        check_transaction(tx)
        if tx.is_coinbase:
            raise Invalid("coinbase", "A coinbase is valid only in a block.")
        if tx.size > MAX_STANDARD_TX_SIZE:
            raise Invalid("tx-size", f"The transaction has {tx.size} bytes.", ban=False)
        for outpoint in tx.inputs:
            if outpoint in self._spenders:
                raise Invalid(
                    "txn-mempool-conflict",
                    "The transaction spends an output a mempool transaction spends.",
                    ban=False,
                )
        height = chain.tip.height + 1
        coins, parents = self._coins_for(tx, chain, height)
        if coins is None:
            if any(chain.coin(OutPoint(tx.txid, i)) for i in range(len(tx.outputs))):
                raise Invalid("txn-already-known", "The transaction is in the chain.", ban=False)
            if not orphan:
                raise Invalid("missing-inputs", "An input is unknown or spent.", ban=False)
            self._keep_orphan(tx, now + ORPHAN_LIFETIME)
            return False
        try:
            fee = check_inputs(tx, coins, height, self.params)
        except Invalid as invalid:
            if invalid.reason in ("immature-coinbase", "bad-txns-nonfinal"):
                # Valid at a later height, and one an honest peer may send during a reorg.
                raise Invalid(invalid.reason, invalid.detail, ban=False) from None
            raise
        if fee < MIN_RELAY_FEE_RATE * tx.size:
            raise Invalid(
                "min-fee-not-met",
                f"The fee of {fee} is under {MIN_RELAY_FEE_RATE} a byte for {tx.size} bytes.",
                ban=False,
            )
        entry = Entry(tx, fee, parents)
        self._check_chain_limits(entry)
        self._insert(entry)
        self._trim()
        if tx.txid not in self._entries:
            raise Invalid("mempool-full", "The mempool is full of better-paying ones.", ban=False)
        return True

    def _coins_for(
        self, tx: Transaction, chain: Chain, height: int
    ) -> tuple[list[Coin] | None, set[bytes]]:
        """The coins tx's inputs spend, from mempool parents or the chain (None if one is
        missing), and the txids of its mempool parents."""
        coins: list[Coin] = []
        parents: set[bytes] = set()
        for outpoint in tx.inputs:
            parent = self._entries.get(outpoint.txid)
            if parent is not None:
                if outpoint.index >= len(parent.tx.outputs):
                    raise Invalid(
                        "bad-txns-inputs-missingorspent", "An input names no output of its parent."
                    )
                coins.append(Coin(parent.tx.outputs[outpoint.index], height, False))
                parents.add(outpoint.txid)
                continue
            coin = chain.coin(outpoint)
            if coin is None:
                return None, parents
            coins.append(coin)
        return coins, parents

    def _ancestors(self, entry: Entry) -> set[bytes]:
        """The txids of entry's unconfirmed ancestors (not itself)."""
        return self._reach(entry.parents, lambda other: other.parents)

    def _descendants(self, entry: Entry) -> set[bytes]:
        """The txids of entry's descendants in the mempool (not itself)."""
        return self._reach(entry.children, lambda other: other.children)

    def _reach(self, start: set[bytes], links: Callable[[Entry], set[bytes]]) -> set[bytes]:
        """The txids reached from start by following links, each once."""
        found: set[bytes] = set()
        stack = list(start)
        while stack:
            txid = stack.pop()
            if txid not in found:
                found.add(txid)
                stack.extend(links(self._entries[txid]))
        return found

    def _check_chain_limits(self, entry: Entry) -> None:
        """Refuse entry if it, or one of its ancestors, would be in too long a chain."""
        ancestors = self._ancestors(entry)
        too_long = len(ancestors) + 1 > MAX_CHAIN or any(
            len(self._descendants(self._entries[txid])) + 2 > MAX_CHAIN for txid in ancestors
        )
        if too_long:
            raise Invalid(
                "too-long-mempool-chain",
                f"The transaction is in a chain of over {MAX_CHAIN} unconfirmed ones.",
                ban=False,
            )

    def _insert(self, entry: Entry) -> None:
        """Add a checked entry: links, spent outputs, and its ancestors' totals."""
        txid = entry.tx.txid
        ancestors = self._ancestors(entry)
        entry.ancestor_fee = entry.fee + sum(self._entries[a].fee for a in ancestors)
        entry.ancestor_size = entry.size + sum(self._entries[a].size for a in ancestors)
        entry.descendant_fee, entry.descendant_size = entry.fee, entry.size
        for ancestor in ancestors:
            self._entries[ancestor].descendant_fee += entry.fee
            self._entries[ancestor].descendant_size += entry.size
        for parent in entry.parents:
            self._entries[parent].children.add(txid)
        for outpoint in entry.tx.inputs:
            self._spenders[outpoint] = txid
        self._entries[txid] = entry
        self.bytes += entry.size

    # Removing.

    def _remove(self, txids: set[bytes]) -> None:
        """Take out txids, which must hold every descendant of each unless it was mined (a
        mined one has no unconfirmed ancestors left), fixing the totals of those that stay."""
        for txid in txids:
            entry = self._entries[txid]
            for ancestor in self._ancestors(entry) - txids:
                self._entries[ancestor].descendant_fee -= entry.fee
                self._entries[ancestor].descendant_size -= entry.size
            for descendant in self._descendants(entry) - txids:
                self._entries[descendant].ancestor_fee -= entry.fee
                self._entries[descendant].ancestor_size -= entry.size
        for txid in txids:
            entry = self._entries.pop(txid)
            self.bytes -= entry.size
            for outpoint in entry.tx.inputs:
                self._spenders.pop(outpoint, None)
            for parent in entry.parents:
                if parent in self._entries:
                    self._entries[parent].children.discard(txid)
            for child in entry.children:
                if child in self._entries:
                    self._entries[child].parents.discard(txid)

    def _remove_with_descendants(self, txid: bytes) -> None:
        """Take out txid and everything that spends it."""
        self._remove({txid} | self._descendants(self._entries[txid]))

    def _trim(self) -> None:
        """Evict by lowest descendant score, with descendants, until within max_bytes."""
        while self.bytes > self.max_bytes:
            worst = min(self._entries.values(), key=Entry.descendant_score)
            self._remove_with_descendants(worst.tx.txid)

    # Orphans.

    def _keep_orphan(self, tx: Transaction, expires: float) -> None:
        """Hold tx until a parent arrives or expires, within the orphan bounds (the oldest
        leave first)."""
        if tx.size > MAX_ORPHAN_SIZE:
            raise Invalid("orphan-too-large", f"An orphan of {tx.size} bytes.", ban=False)
        while self._orphans and (
            len(self._orphans) >= MAX_ORPHANS or self._orphan_bytes + tx.size > MAX_ORPHAN_BYTES
        ):
            self._drop_orphan(next(iter(self._orphans)))
        self._orphans[tx.txid] = Orphan(tx, expires)
        self._orphan_bytes += tx.size
        for outpoint in tx.inputs:
            self._waiting.setdefault(outpoint.txid, set()).add(tx.txid)

    def _drop_orphan(self, txid: bytes) -> Transaction:
        """Forget an orphan."""
        orphan = self._orphans.pop(txid)
        self._orphan_bytes -= orphan.tx.size
        for outpoint in orphan.tx.inputs:
            waiting = self._waiting.get(outpoint.txid)
            if waiting is not None:
                waiting.discard(txid)
                if not waiting:
                    del self._waiting[outpoint.txid]
        return orphan.tx

    def _adopt_orphans(self, parents: list[bytes], chain: Chain, now: float) -> list[Transaction]:
        """Try again the orphans waiting on parents (and on those they bring in)."""
        accepted = []
        queue = list(parents)
        while queue:
            for txid in sorted(self._waiting.get(queue.pop(), ())):
                if txid not in self._orphans:
                    continue
                expires = self._orphans[txid].expires
                tx = self._drop_orphan(txid)
                try:
                    if self._accept(tx, chain, now, orphan=False):
                        accepted.append(tx)
                        queue.append(txid)
                except Invalid as invalid:
                    if invalid.reason == "missing-inputs":  # another parent is still missing
                        self._keep_orphan(tx, expires)
        return accepted

    def get_timer(self) -> float | None:
        """When the oldest orphan expires."""
        return min((orphan.expires for orphan in self._orphans.values()), default=None)

    def handle_timer(self, now: float) -> None:
        """Forget orphans that waited too long."""
        for txid in [txid for txid, orphan in self._orphans.items() if orphan.expires <= now]:
            self._drop_orphan(txid)

    # Following the chain.

    def blocks_changed(self, update: ChainUpdate, chain: Chain, now: float) -> list[Transaction]:
        """Follow the chain (at its new tip): drop mined transactions and those conflicting
        with them; after a reorganisation, bring back the disconnected blocks' transactions
        and check everything again. Returns orphans that became valid, for relay."""
        mined = {tx.txid for block in update.connected for tx in block.transactions}
        if update.disconnected:
            self._rebuild(update.disconnected, mined, chain, now)
        else:
            for block in update.connected:
                self._remove_for_block(block)
        for txid in mined:
            if txid in self._orphans:
                self._drop_orphan(txid)
        return self._adopt_orphans(sorted(mined), chain, now)

    def _remove_for_block(self, block: Block) -> None:
        """Drop block's transactions, and whatever spends an output one of them spends."""
        for tx in block.transactions:
            if tx.txid in self._entries:
                self._remove({tx.txid})
            for outpoint in tx.inputs:
                spender = self._spenders.get(outpoint)
                if spender is not None:
                    self._remove_with_descendants(spender)

    def _rebuild(
        self, disconnected: Sequence[Block], mined: set[bytes], chain: Chain, now: float
    ) -> None:
        """Check again, against chain's new tip, the disconnected blocks' transactions (oldest
        first) and then ours (parents first); keep what is valid."""
        returning = [
            tx
            for block in reversed(disconnected)
            for tx in block.transactions
            if not tx.is_coinbase and tx.txid not in mined
        ]
        held = list(self.transactions())
        self._entries.clear()
        self._spenders.clear()
        self.bytes = 0
        for tx in [*returning, *held]:
            if tx.txid in self._entries or tx.txid in mined:
                continue
            try:
                self._accept(tx, chain, now, orphan=False)
            except Invalid:
                continue  # spent, conflicting or immature on the new chain: it is gone

    # Mining.

    def select(self, max_size: int, max_sigops: int | None = None) -> list[Transaction]:
        """Transactions for a block of at most max_size bytes of them (and max_sigops
        signature checks): best ancestor-package fee rate first, parents before children."""
        chosen: set[bytes] = set()
        result: list[Transaction] = []
        used = sigops = 0
        heap = [(-e.ancestor_fee / e.ancestor_size, txid) for txid, e in self._entries.items()]
        heapq.heapify(heap)
        while heap:
            negative_rate, txid = heapq.heappop(heap)
            if txid in chosen:
                continue
            package = [t for t in self._ancestors(self._entries[txid]) if t not in chosen]
            package.append(txid)
            entries = [self._entries[t] for t in package]
            fee = sum(e.fee for e in entries)
            size = sum(e.size for e in entries)
            if fee / size < -negative_rate:  # its rate fell as ancestors were taken
                heapq.heappush(heap, (-fee / size, txid))
                continue
            package_sigops = sum(tx_sigops(e.tx) for e in entries)
            if used + size > max_size or (
                max_sigops is not None and sigops + package_sigops > max_sigops
            ):
                continue
            entries.sort(key=lambda e: len(self._ancestors(e)))
            for entry in entries:
                result.append(entry.tx)
                chosen.add(entry.tx.txid)
            used += size
            sigops += package_sigops
            for entry in entries:  # descendants may now be worth more without these
                for descendant in self._descendants(entry) - chosen:
                    other = self._entries[descendant]
                    left = [a for a in self._ancestors(other) if a not in chosen]
                    rate = (other.fee + sum(self._entries[a].fee for a in left)) / (
                        other.size + sum(self._entries[a].size for a in left)
                    )
                    heapq.heappush(heap, (-rate, descendant))
        return result
