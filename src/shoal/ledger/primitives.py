"""Transactions and blocks: their fields, their one canonical serialisation, their hashes.

A transaction's id (txid) hashes it without its witnesses, so a signature never changes the
id that outputs are spent by; blocks commit to whole transactions (wtxid) in their merkle root.
Hashes are shown as Bitcoin shows them: the bytes reversed, in hex.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from .encoding import DecodeError, Reader, compact_size, u32, u64, var_bytes

HASH_SIZE = 32
HEADER_SIZE = 80
ZERO_HASH = bytes(HASH_SIZE)
COIN = 100_000_000  # base units in one coin
MAX_MONEY = 21_000_000 * COIN
# Bounds on what a parser accepts; consensus limits (block size, sigops) are tighter.
MAX_LOCK = 128
MAX_WITNESS = 1_000
MAX_TX_INPUTS = 20_000
MAX_TX_OUTPUTS = 20_000
MAX_BLOCK_TXS = 100_000
# Sent as: version, inputs (outpoint), outputs (amount, lock), lock time, then one witness per
# input; the first byte of a lock names its kind.
LOCK_KEY = 0x01  # then a 32-byte Ed25519 public key; the witness is a 64-byte signature
LOCK_BURN = 0x00  # spendable by no one (the genesis coinbase pays to one)


def sha256d(data: bytes) -> bytes:
    """SHA-256 twice, as Bitcoin hashes headers and transactions."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash_hex(digest: bytes) -> str:
    """A block hash or txid as users see it: reversed, in hex."""
    return digest[::-1].hex()


def parse_hash(text: str) -> bytes:
    """The digest a user wrote as hash_hex shows it; ValueError if it is not 64 hex digits."""
    if len(text) != 2 * HASH_SIZE:
        raise ValueError(f"{text!r} is not a 64-digit hash")
    return bytes.fromhex(text)[::-1]


def key_lock(public_key: bytes) -> bytes:
    """The lock that the holder of this Ed25519 public key may spend."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key has 32 bytes")
    return bytes((LOCK_KEY,)) + public_key


@dataclass(frozen=True, slots=True)
class OutPoint:
    """An output of an earlier transaction: its txid and index. A coinbase's one input
    names ZERO_HASH and the block's height (so every coinbase has its own txid)."""

    txid: bytes
    index: int

    def serialize(self) -> bytes:
        """36 bytes."""
        return self.txid + u32(self.index)


@dataclass(frozen=True, slots=True)
class TxOut:
    """An amount in base units, and the lock that says who may spend it."""

    amount: int
    lock: bytes

    def serialize(self) -> bytes:
        """Amount and length-prefixed lock."""
        return u64(self.amount) + var_bytes(self.lock)


@dataclass(frozen=True)
class Transaction:
    """Inputs spend outputs by outpoint and prove it with a witness each; outputs lock
    amounts; lock_time is the earliest height it may be mined at (0: any)."""

    version: int
    inputs: tuple[OutPoint, ...]
    outputs: tuple[TxOut, ...]
    lock_time: int
    witnesses: tuple[bytes, ...]

    @cached_property
    def body(self) -> bytes:
        """Everything but the witnesses: what the txid hashes and signatures commit to."""
        parts = [u32(self.version), compact_size(len(self.inputs))]
        parts += [outpoint.serialize() for outpoint in self.inputs]
        parts.append(compact_size(len(self.outputs)))
        parts += [output.serialize() for output in self.outputs]
        parts.append(u32(self.lock_time))
        return b"".join(parts)

    @cached_property
    def serialized(self) -> bytes:
        """The whole transaction, witnesses last (one per input)."""
        return self.body + b"".join(var_bytes(w) for w in self.witnesses)

    @cached_property
    def txid(self) -> bytes:
        """The id outputs are spent by: the hash of the body, signatures left out."""
        return sha256d(self.body)

    @cached_property
    def wtxid(self) -> bytes:
        """The hash of the whole transaction, as a block's merkle root commits to it."""
        return sha256d(self.serialized)

    @property
    def is_coinbase(self) -> bool:
        """Whether this is a block's first transaction, which makes new coins."""
        return len(self.inputs) == 1 and self.inputs[0].txid == ZERO_HASH

    @property
    def size(self) -> int:
        """Its serialised size in bytes."""
        return len(self.serialized)


@dataclass(frozen=True)
class BlockHeader:
    """80 bytes, as Bitcoin's: version, previous hash, merkle root, time, compact target,
    nonce."""

    version: int
    previous: bytes
    merkle_root: bytes
    time: int
    bits: int
    nonce: int

    def serialize(self) -> bytes:
        """The 80 bytes that proof of work hashes."""
        return (
            u32(self.version)
            + self.previous
            + self.merkle_root
            + u32(self.time)
            + u32(self.bits)
            + u32(self.nonce)
        )

    @cached_property
    def hash(self) -> bytes:
        """SHA-256d of the 80 bytes: the block's id, and its proof of work."""
        return sha256d(self.serialize())


@dataclass(frozen=True)
class Block:
    """A header and its transactions, the coinbase first."""

    header: BlockHeader
    transactions: tuple[Transaction, ...]

    @cached_property
    def serialized(self) -> bytes:
        """Header, count, transactions."""
        return (
            self.header.serialize()
            + compact_size(len(self.transactions))
            + b"".join(tx.serialized for tx in self.transactions)
        )

    @property
    def hash(self) -> bytes:
        """The header's hash."""
        return self.header.hash

    @property
    def size(self) -> int:
        """Its serialised size in bytes."""
        return len(self.serialized)


def merkle_root(leaves: list[bytes]) -> bytes:
    """The root of a binary hash tree over leaves. An inner node hashes a tag byte and its
    two children, and an odd node is carried up unpaired: Bitcoin instead doubles it, so two
    transaction lists could share a root (CVE-2012-2459), and a 64-byte transaction could pass
    for an inner node."""
    if not leaves:
        return ZERO_HASH
    level = leaves
    while len(level) > 1:
        paired = [sha256d(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def block_merkle_root(transactions: tuple[Transaction, ...] | list[Transaction]) -> bytes:
    """The merkle root a block's header must carry: over every wtxid."""
    return merkle_root([tx.wtxid for tx in transactions])


def read_transaction(reader: Reader) -> Transaction:
    """One transaction from reader (bounded counts and lengths)."""
    version = reader.u32()
    inputs = tuple(
        OutPoint(reader.take(HASH_SIZE), reader.u32()) for _ in range(reader.count(MAX_TX_INPUTS))
    )
    if not inputs:
        raise DecodeError("a transaction with no inputs")
    outputs = tuple(
        TxOut(reader.u64(), reader.var_bytes(MAX_LOCK)) for _ in range(reader.count(MAX_TX_OUTPUTS))
    )
    lock_time = reader.u32()
    witnesses = tuple(reader.var_bytes(MAX_WITNESS) for _ in inputs)
    return Transaction(version, inputs, outputs, lock_time, witnesses)


def read_header(reader: Reader) -> BlockHeader:
    """One 80-byte header from reader."""
    return BlockHeader(
        reader.u32(),
        reader.take(HASH_SIZE),
        reader.take(HASH_SIZE),
        reader.u32(),
        reader.u32(),
        reader.u32(),
    )


def read_block(reader: Reader) -> Block:
    """One block from reader."""
    header = read_header(reader)
    count = reader.count(MAX_BLOCK_TXS)
    if not count:
        raise DecodeError("a block with no transactions")
    return Block(header, tuple(read_transaction(reader) for _ in range(count)))


def decode_transaction(data: bytes) -> Transaction:
    """A transaction that is the whole of data; DecodeError if it is not."""
    reader = Reader(data)
    tx = read_transaction(reader)
    reader.end()
    return tx


def decode_header(data: bytes) -> BlockHeader:
    """A header that is the whole of data."""
    reader = Reader(data)
    header = read_header(reader)
    reader.end()
    return header


def decode_block(data: bytes) -> Block:
    """A block that is the whole of data."""
    reader = Reader(data)
    block = read_block(reader)
    reader.end()
    return block


def signature_messages(
    tx: Transaction, spent: list[TxOut] | tuple[TxOut, ...], chain_id: bytes
) -> list[bytes]:
    """What each input's signature signs, in input order: SHA-256 of the chain (so a payment
    is not replayed on another), the transaction without witnesses, every output it spends
    (amount and lock, so no signer can be misled about the fee) and the input's index. The
    part all inputs share is hashed once: input by input, a transaction of n inputs would
    cost n^2 (minutes for a block-sized one)."""
    common = hashlib.sha256(
        b"shoal/sighash/1" + chain_id + tx.body + b"".join(output.serialize() for output in spent)
    )
    messages = []
    for index in range(len(tx.inputs)):
        message = common.copy()
        message.update(u32(index))
        messages.append(message.digest())
    return messages
