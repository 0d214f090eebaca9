"""Builders for ledger tests: deterministic keys, coinbases, signed spends and blocks mined
under a chain's (easy) proof of work."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shoal.ledger.blockindex import BlockIndex
from shoal.ledger.chain import Chain
from shoal.ledger.coins import Coin
from shoal.ledger.params import LOCAL, ChainParams
from shoal.ledger.pow import meets_target, target_from_bits
from shoal.ledger.primitives import (
    ZERO_HASH,
    Block,
    BlockHeader,
    OutPoint,
    Transaction,
    TxOut,
    block_merkle_root,
    key_lock,
    signature_messages,
)


def private_key(seed: int) -> Ed25519PrivateKey:
    """The same key for the same seed."""
    return Ed25519PrivateKey.from_private_bytes(seed.to_bytes(32, "little"))


def lock_of(key: Ed25519PrivateKey) -> bytes:
    """The key lock its holder may spend."""
    return key_lock(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def coinbase(height: int, outputs: Sequence[TxOut], extra: bytes = b"") -> Transaction:
    """A coinbase for height paying outputs."""
    return Transaction(
        1,
        (OutPoint(ZERO_HASH, height),),
        tuple(outputs),
        0,
        (height.to_bytes(4, "little") + extra,),
    )


def sign(
    tx: Transaction, spent: Sequence[TxOut], keys: Sequence[Ed25519PrivateKey], params: ChainParams
) -> Transaction:
    """tx with one signature per input by the matching key."""
    messages = signature_messages(tx, list(spent), params.chain_id)
    witnesses = tuple(key.sign(message) for key, message in zip(keys, messages, strict=True))
    return Transaction(tx.version, tx.inputs, tx.outputs, tx.lock_time, witnesses)


def spend(
    coins: Sequence[tuple[OutPoint, Coin]],
    outputs: Sequence[TxOut],
    key: Ed25519PrivateKey,
    params: ChainParams,
    lock_time: int = 0,
) -> Transaction:
    """A transaction spending coins (all locked to key) to outputs, signed."""
    unsigned = Transaction(
        1,
        tuple(outpoint for outpoint, _ in coins),
        tuple(outputs),
        lock_time,
        tuple(b"" for _ in coins),
    )
    return sign(unsigned, [coin.output for _, coin in coins], [key] * len(coins), params)


def solve(header: BlockHeader) -> BlockHeader:
    """header with the first nonce whose hash meets its bits."""
    target = target_from_bits(header.bits)
    nonce = 0
    while True:
        candidate = BlockHeader(
            header.version, header.previous, header.merkle_root, header.time, header.bits, nonce
        )
        if meets_target(candidate.hash, target):
            return candidate
        nonce += 1


def mine(
    previous: bytes,
    transactions: Sequence[Transaction],
    time: int,
    bits: int,
    *,
    merkle_root: bytes | None = None,
) -> Block:
    """A block on previous with transactions and a nonce that meets bits."""
    root = block_merkle_root(list(transactions)) if merkle_root is None else merkle_root
    header = solve(BlockHeader(1, previous, root, time, bits, 0))
    return Block(header, tuple(transactions))


def unsolved(block: Block) -> Block:
    """block with a nonce whose hash misses its target."""
    target = target_from_bits(block.header.bits)
    header = block.header
    nonce = 0
    while True:
        header = BlockHeader(
            header.version, header.previous, header.merkle_root, header.time, header.bits, nonce
        )
        if not meets_target(header.hash, target):
            return Block(header, block.transactions)
        nonce += 1


MINER = private_key(99)
NOW = LOCAL.genesis_time + 10_000_000  # the clock of chain tests: well after every block


def next_block(
    chain: Chain,
    transactions: Sequence[Transaction] = (),
    *,
    parent: BlockIndex | None = None,
    lock: bytes | None = None,
    amount: int | None = None,
    time: int | None = None,
    bits: int | None = None,
    extra: bytes = b"",
) -> Block:
    """A block on parent (the tip by default) that the chain should take: the coinbase pays
    the subsidy to lock, time is a second after the parent's."""
    parent = chain.tip if parent is None else parent
    height = parent.height + 1
    paid = chain.params.subsidy(height) if amount is None else amount
    first = coinbase(height, [TxOut(paid, lock_of(MINER) if lock is None else lock)], extra)
    return mine(
        parent.hash,
        [first, *transactions],
        parent.header.time + 1 if time is None else time,
        chain.next_bits(parent) if bits is None else bits,
    )


def grow(chain: Chain, count: int, *, lock: bytes | None = None, extra: bytes = b"") -> list[Block]:
    """Mine count blocks on the chain's tip and connect them."""
    blocks = []
    for _ in range(count):
        block = next_block(chain, lock=lock, extra=extra)
        update = chain.accept_block(block, NOW)
        assert update.connected == [block]
        blocks.append(block)
    return blocks
