"""The consensus rules that need no chain state: a transaction or block checked alone, and a
transaction's inputs checked against the coins they spend.

Every refusal is an Invalid with a short stable reason (Bitcoin Core's codes where it has one)
and whether the peer that sent the object should be banned for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .coins import Coin
from .params import ChainParams
from .pow import meets_target, target_from_bits
from .primitives import (
    LOCK_BURN,
    LOCK_KEY,
    MAX_MONEY,
    ZERO_HASH,
    Block,
    BlockHeader,
    Transaction,
    block_merkle_root,
    signature_messages,
)

MAX_TX_SIZE = 1_000_000  # no transaction larger than a block could ever be mined
MAX_COINBASE_WITNESS = 100  # a coinbase's witness carries the height and an extra nonce
KEY_LOCK_SIZE = 33  # LOCK_KEY and a 32-byte Ed25519 public key
SIGNATURE_SIZE = 64


class Invalid(Exception):
    """An object that breaks a rule: reason is a short stable code, detail one plain sentence,
    ban whether its sender must be disconnected and banned (False for what an honest peer may
    send: missing inputs, a conflict with our mempool, a block on an unknown parent)."""

    def __init__(self, reason: str, detail: str, *, ban: bool = True) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.ban = ban


def check_lock(lock: bytes) -> None:
    """Refuse a lock of a kind we do not know, or a key lock of the wrong length."""
    if not lock:
        raise Invalid("bad-txns-lock", "An output has an empty lock.")
    if lock[0] == LOCK_KEY:
        if len(lock) != KEY_LOCK_SIZE:
            raise Invalid("bad-txns-lock", f"A key lock has {len(lock)} bytes, not 33.")
    elif lock[0] != LOCK_BURN:
        raise Invalid("bad-txns-lock", f"An output's lock is of unknown kind {lock[0]}.")


def check_transaction(tx: Transaction) -> None:
    """The rules a transaction must meet whatever the chain: shape, amounts, size, locks."""
    if not tx.inputs:
        raise Invalid("bad-txns-vin-empty", "The transaction has no inputs.")
    if not tx.outputs:
        raise Invalid("bad-txns-vout-empty", "The transaction has no outputs.")
    if len(tx.witnesses) != len(tx.inputs):
        raise Invalid("bad-txns-witness-count", "The transaction needs one witness per input.")
    if tx.size > MAX_TX_SIZE:
        raise Invalid("bad-txns-oversize", f"The transaction has {tx.size} bytes.")
    total = 0
    for output in tx.outputs:
        if not 0 <= output.amount <= MAX_MONEY:
            raise Invalid("bad-txns-vout-toolarge", f"An output pays {output.amount} units.")
        total += output.amount
        if total > MAX_MONEY:
            raise Invalid("bad-txns-txouttotal-toolarge", "The outputs pay more than all money.")
        check_lock(output.lock)
    if len(set(tx.inputs)) != len(tx.inputs):
        raise Invalid("bad-txns-inputs-duplicate", "The transaction spends one output twice.")
    if tx.is_coinbase:
        if len(tx.witnesses[0]) > MAX_COINBASE_WITNESS:
            raise Invalid("bad-cb-length", "The coinbase witness is over 100 bytes.")
    elif any(outpoint.txid == ZERO_HASH for outpoint in tx.inputs):
        raise Invalid("bad-txns-prevout-null", "An input spends the null outpoint.")


def tx_sigops(tx: Transaction) -> int:
    """Signature checks the transaction costs: one per input, none for a coinbase."""
    return 0 if tx.is_coinbase else len(tx.inputs)


@lru_cache(maxsize=4096)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    """The key object of 32 bytes, kept since one key often signs many inputs."""
    return Ed25519PublicKey.from_public_bytes(raw)


def check_inputs(tx: Transaction, coins: Sequence[Coin], height: int, params: ChainParams) -> int:
    """Check a non-coinbase tx mined at height against the coins its inputs spend (aligned
    with tx.inputs): maturity, amounts, finality and every signature. Returns the fee."""
    if len(coins) != len(tx.inputs):
        raise ValueError("check_inputs needs one coin per input")
    if tx.lock_time > height:
        raise Invalid(
            "bad-txns-nonfinal", f"The transaction is locked until height {tx.lock_time}."
        )
    total_in = 0
    for coin in coins:
        if coin.coinbase and height - coin.height < params.coinbase_maturity:
            raise Invalid(
                "immature-coinbase",
                f"A coinbase output of height {coin.height} is spent at height {height}.",
            )
        total_in += coin.output.amount
        if not 0 <= coin.output.amount <= MAX_MONEY or total_in > MAX_MONEY:
            raise Invalid("bad-txns-inputvalues-outofrange", "The inputs hold more than all money.")
    total_out = sum(output.amount for output in tx.outputs)
    if total_out > total_in:
        raise Invalid(
            "bad-txns-overspend", f"The outputs pay {total_out} units, the inputs hold {total_in}."
        )
    messages = signature_messages(tx, [coin.output for coin in coins], params.chain_id)
    for index, (coin, witness) in enumerate(zip(coins, tx.witnesses, strict=True)):
        lock = coin.output.lock
        if lock[:1] != bytes((LOCK_KEY,)) or len(lock) != KEY_LOCK_SIZE:
            raise Invalid("bad-txns-unspendable", f"Input {index} spends an unspendable output.")
        if len(witness) != SIGNATURE_SIZE:
            raise Invalid("bad-signature", f"Input {index}'s witness is not a 64-byte signature.")
        try:
            _public_key(lock[1:]).verify(witness, messages[index])
        except (InvalidSignature, ValueError):
            raise Invalid("bad-signature", f"Input {index}'s signature does not verify.") from None
    return total_in - total_out


def check_header_pow(header: BlockHeader, params: ChainParams) -> None:
    """The header's target is valid and no easier than the chain's limit, and its hash meets it."""
    try:
        target = target_from_bits(header.bits)
    except ValueError:
        raise Invalid("bad-pow", f"The compact target {header.bits:#010x} is invalid.") from None
    if target == 0 or target > params.pow_limit:
        raise Invalid("bad-pow", f"The target {header.bits:#010x} is outside the chain's range.")
    if not meets_target(header.hash, target):
        raise Invalid("bad-pow", "The block hash does not meet its target.")


def check_block(block: Block, params: ChainParams) -> None:
    """The rules a block must meet whatever its place in the chain: proof of work, size,
    merkle root, one coinbase first, every transaction well formed, no duplicates, sigops."""
    check_header_pow(block.header, params)
    transactions = block.transactions
    # The size first: it is known at once, the merkle root costs a hash of every byte.
    if not transactions or block.size > params.max_block_size:
        raise Invalid("bad-blk-length", f"The block has {block.size} bytes.")
    if block_merkle_root(transactions) != block.header.merkle_root:
        raise Invalid("bad-merkle", "The merkle root does not match the transactions.")
    if not transactions[0].is_coinbase:
        raise Invalid("bad-cb-missing", "The first transaction is not a coinbase.")
    if any(tx.is_coinbase for tx in transactions[1:]):
        raise Invalid("bad-cb-multiple", "The block has more than one coinbase.")
    for tx in transactions:
        check_transaction(tx)
    if len({tx.txid for tx in transactions}) != len(transactions):
        raise Invalid("bad-txns-duplicate", "The block holds one transaction twice.")
    sigops = sum(tx_sigops(tx) for tx in transactions)
    if sigops > params.max_block_sigops:
        raise Invalid("bad-blk-sigops", f"The block needs {sigops} signature checks.")


def check_block_at(block: Block, height: int) -> None:
    """The rules that need only the block's height: the coinbase names it (so each coinbase has
    its own txid) and every transaction is final at it."""
    coinbase_input = block.transactions[0].inputs[0]
    if coinbase_input.index != height:
        raise Invalid(
            "bad-cb-height", f"The coinbase names height {coinbase_input.index}, not {height}."
        )
    for tx in block.transactions:
        if tx.lock_time > height:
            raise Invalid("bad-txns-nonfinal", f"A transaction is locked until {tx.lock_time}.")


def check_coinbase_amount(block: Block, height: int, fees: int, params: ChainParams) -> None:
    """The coinbase claims no more than the subsidy at height and the block's fees."""
    claimed = sum(output.amount for output in block.transactions[0].outputs)
    allowed = params.subsidy(height) + fees
    if claimed > allowed:
        raise Invalid("bad-cb-amount", f"The coinbase pays {claimed} units, {allowed} allowed.")
