"""The two chains a node can run: `local` (for tests and the demo) and `main`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .pow import bits_from_target, target_from_bits
from .primitives import (
    COIN,
    LOCK_BURN,
    ZERO_HASH,
    Block,
    BlockHeader,
    OutPoint,
    Transaction,
    TxOut,
    block_merkle_root,
)

GENESIS_MESSAGE = b"shoal: a peer-to-peer electronic cash system on the same network as its files"


@dataclass(frozen=True)
class ChainParams:
    """What makes a chain: its wire magic, address prefix, genesis and consensus numbers."""

    name: str
    magic: bytes  # 4 bytes opening every message, so chains never mix
    address_prefix: str  # bech32m human-readable part
    genesis_time: int
    genesis_nonce: int  # found once, so the genesis meets its own proof of work
    pow_limit: int  # the easiest target
    target_spacing: int  # seconds between blocks, as the retarget aims
    retarget_interval: int  # blocks between retargets; 0: never (the target stays at the limit)
    initial_subsidy: int
    halving_interval: int
    coinbase_maturity: int  # blocks before a coinbase's outputs may be spent
    max_block_size: int
    max_block_sigops: int
    max_future: int = 2 * 60 * 60  # how far past a node's clock a block's time may be
    median_span: int = 11  # blocks whose median time a new block must be after

    @cached_property
    def pow_limit_bits(self) -> int:
        """The compact form of the easiest target."""
        return bits_from_target(self.pow_limit)

    @cached_property
    def genesis(self) -> Block:
        """The first block, the same on every node of the chain; its coin is unspendable."""
        coinbase = Transaction(
            1,
            (OutPoint(ZERO_HASH, 0),),
            (TxOut(0, bytes((LOCK_BURN,))),),
            0,
            (GENESIS_MESSAGE,),
        )
        header = BlockHeader(
            1,
            ZERO_HASH,
            block_merkle_root([coinbase]),
            self.genesis_time,
            self.pow_limit_bits,
            self.genesis_nonce,
        )
        return Block(header, (coinbase,))

    @property
    def chain_id(self) -> bytes:
        """What signatures commit to, so a payment on one chain is void on another."""
        return self.genesis.hash

    def subsidy(self, height: int) -> int:
        """New coins a block at height may pay itself, halved every halving_interval."""
        halvings = height // self.halving_interval
        return 0 if halvings >= 64 else self.initial_subsidy >> halvings

    @property
    def pow_limit_target(self) -> int:
        """The easiest target as the compact form rounds it."""
        return target_from_bits(self.pow_limit_bits)


# A chain for one machine, as Bitcoin's regtest: the easiest proof of work (16 hashes a block
# on average), no retarget, coinbases spendable after 10 blocks, halving every 150 blocks.
LOCAL = ChainParams(
    name="local",
    magic=b"\xfa\xbf\xb5\xda",
    address_prefix="lshoal",
    genesis_time=1_767_225_600,  # 2026-01-01
    genesis_nonce=2,
    pow_limit=(1 << 252) - 1,
    target_spacing=1,
    retarget_interval=0,
    initial_subsidy=50 * COIN,
    halving_interval=150,
    coinbase_maturity=10,
    max_block_size=1_000_000,
    max_block_sigops=20_000,
)

# The real chain: Bitcoin's numbers (10-minute blocks, retarget every 2,016, halving every
# 210,000, maturity 100), starting at a difficulty a new network of CPU miners can meet
# (2^24 hashes a block, about half a minute of one core in Python).
MAIN = ChainParams(
    name="main",
    magic=b"\xf9\x5e\xa1\x01",
    address_prefix="shoal",
    genesis_time=1_793_491_200,  # 2026-11-01
    genesis_nonce=4_279_289,
    pow_limit=(1 << 232) - 1,
    target_spacing=600,
    retarget_interval=2016,
    initial_subsidy=50 * COIN,
    halving_interval=210_000,
    coinbase_maturity=100,
    max_block_size=1_000_000,
    max_block_sigops=20_000,
)

CHAINS = {params.name: params for params in (LOCAL, MAIN)}
