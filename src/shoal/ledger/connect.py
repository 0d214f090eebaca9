"""What connecting a block does to the unspent outputs (checked against them), and what
disconnecting it undoes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .coins import Coin
from .params import ChainParams
from .primitives import LOCK_BURN, Block, OutPoint, Transaction
from .store import StateChange, Undo
from .validation import Invalid, check_coinbase_amount, check_inputs


def new_coins(tx: Transaction, height: int) -> Iterator[tuple[OutPoint, Coin]]:
    """The coins tx makes: every output but burns, which no one can spend and so are never
    kept (the genesis coinbase pays only a burn, so the genesis adds no coin)."""
    coinbase = tx.is_coinbase
    for index, output in enumerate(tx.outputs):
        if output.lock[0] != LOCK_BURN:
            yield OutPoint(tx.txid, index), Coin(output, height, coinbase)


def connect_change(
    block: Block, height: int, lookup: Callable[[OutPoint], Coin | None], params: ChainParams
) -> StateChange:
    """Check block's spends against the coins lookup finds at its parent (each spent once,
    every input valid, the coinbase claiming no more than subsidy and fees) and return what
    connecting it writes. The block passed check_block and check_block_at already."""
    made: dict[OutPoint, Coin] = {}  # by this block, not yet spent in it
    spent: set[OutPoint] = set()
    undo: Undo = []
    fees = 0
    for position, tx in enumerate(block.transactions):
        if position:
            coins = []
            for outpoint in tx.inputs:
                if outpoint in spent:
                    raise Invalid(
                        "bad-txns-inputs-missingorspent", "The block spends one output twice."
                    )
                spent.add(outpoint)
                coin = made.pop(outpoint, None)
                if coin is None:
                    coin = lookup(outpoint)
                    if coin is None:
                        raise Invalid(
                            "bad-txns-inputs-missingorspent",
                            "The block spends an output that is spent or never was.",
                        )
                    undo.append((outpoint, coin))
                coins.append(coin)
            fees += check_inputs(tx, coins, height, params)
        made.update(new_coins(tx, height))
    check_coinbase_amount(block, height, fees, params)
    return StateChange(
        block_hash=block.hash,
        connect=True,
        tip=block.hash,
        removed=[outpoint for outpoint, _ in undo],
        added=list(made.items()),
        undo=undo,
        txids=[tx.txid for tx in block.transactions],
    )


def disconnect_change(block: Block, height: int, undo: Undo) -> StateChange:
    """What disconnecting block (connected at height, with its undo data) writes: its coins
    removed, the coins it spent restored, its parent the tip."""
    return StateChange(
        block_hash=block.hash,
        connect=False,
        tip=block.header.previous,
        removed=[outpoint for tx in block.transactions for outpoint, _ in new_coins(tx, height)],
        added=undo,
        undo=[],
        txids=[tx.txid for tx in block.transactions],
    )
