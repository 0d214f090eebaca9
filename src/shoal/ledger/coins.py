"""Unspent outputs as the chain state holds them."""

from __future__ import annotations

from dataclasses import dataclass

from .primitives import TxOut


@dataclass(frozen=True, slots=True)
class Coin:
    """An unspent output, the height of the block that made it, and whether a coinbase did
    (its coin matures before it may be spent)."""

    output: TxOut
    height: int
    coinbase: bool
