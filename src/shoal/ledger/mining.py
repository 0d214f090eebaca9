"""Making blocks: a template from the mempool paying the miner, and the search for a nonce
(a pure function, so a worker process can run it on a slice of the nonces)."""

from __future__ import annotations

import hashlib

from .chain import Chain
from .encoding import u32, u64
from .mempool import Mempool
from .pow import target_from_bits
from .primitives import (
    HEADER_SIZE,
    ZERO_HASH,
    Block,
    BlockHeader,
    OutPoint,
    Transaction,
    TxOut,
    block_merkle_root,
)

BLOCK_VERSION = 1
NONCES = 1 << 32  # a header's nonce is 32 bits
MAX_COUNT_SIZE = 5  # bytes of a block's transaction count (CompactSize)


def coinbase(height: int, amount: int, lock: bytes, extra_nonce: int) -> Transaction:
    """The transaction that pays a block's subsidy and fees to lock: its input names the
    height (so every coinbase has its own txid), its witness the height and extra nonce (so a
    miner whose nonces ran out can change the merkle root)."""
    return Transaction(
        1,
        (OutPoint(ZERO_HASH, height),),
        (TxOut(amount, lock),),
        0,
        (u32(height) + u64(extra_nonce),),
    )


def block_template(
    chain: Chain, mempool: Mempool, lock: bytes, now: float, extra_nonce: int = 0
) -> Block:
    """A block on chain's tip paying lock, with the mempool's best transactions, nonce 0."""
    tip = chain.tip
    height = tip.height + 1
    params = chain.params
    reserved = HEADER_SIZE + MAX_COUNT_SIZE + coinbase(height, 0, lock, extra_nonce).size
    chosen = mempool.select(params.max_block_size - reserved, params.max_block_sigops)
    fees = sum(mempool.fee(tx.txid) or 0 for tx in chosen)
    transactions = (coinbase(height, params.subsidy(height) + fees, lock, extra_nonce), *chosen)
    header = BlockHeader(
        BLOCK_VERSION,
        tip.hash,
        block_merkle_root(transactions),
        max(int(now), chain.median_time_past(tip) + 1),
        chain.next_bits(tip),
        0,
    )
    return Block(header, transactions)


def solve(header: BlockHeader, start: int, count: int) -> int | None:
    """The first nonce in [start, start + count) (within 32 bits) whose header meets its
    target, or None. Pure, for a worker process."""
    target = target_from_bits(header.bits)
    prefix = header.serialize()[: HEADER_SIZE - 4]
    # The first 64 bytes are one SHA-256 block: hash them once, copy that state per nonce.
    midstate = hashlib.sha256(prefix[:64])
    tail = prefix[64:]
    for nonce in range(max(start, 0), min(start + count, NONCES)):
        inner = midstate.copy()
        inner.update(tail + nonce.to_bytes(4, "little"))
        if int.from_bytes(hashlib.sha256(inner.digest()).digest(), "little") <= target:
            return nonce
    return None
