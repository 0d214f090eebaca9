"""Block templates (coinbase, fees, time, bits, size bound) and the nonce search, which also
runs in a worker process."""

from __future__ import annotations

import dataclasses
import multiprocessing
import sqlite3
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_ledger_mempool import LOCK, FakeChain, pay

from shoal.ledger.bech32m import lock_from_address
from shoal.ledger.chain import Chain, ChainUpdate
from shoal.ledger.mempool import Mempool
from shoal.ledger.mining import NONCES, block_template, solve
from shoal.ledger.params import LOCAL, ChainParams
from shoal.ledger.pow import bits_from_target, meets_target, target_from_bits
from shoal.ledger.primitives import COIN, ZERO_HASH, Block, BlockHeader, OutPoint, block_merkle_root
from shoal.ledger.store import MemoryStore
from shoal.ledger.validation import check_block, check_block_at, check_coinbase_amount
from shoal.ledger.wallet import Balance, HistoryEntry, Wallet, WalletHistory

MINER = bytes([1]) + bytes(range(100, 132))


@dataclass
class MiningChain(FakeChain):
    """A fake chain with what a template needs besides coins."""

    params: ChainParams = LOCAL
    past_median: int = 1_800_000_000

    def median_time_past(self, index: object) -> int:
        return self.past_median

    def next_bits(self, parent: object) -> int:
        return self.params.pow_limit_bits


def solved(header: BlockHeader) -> BlockHeader:
    nonce = solve(header, 0, NONCES)
    assert nonce is not None
    return dataclasses.replace(header, nonce=nonce)


def test_template_pays_subsidy_and_fees_and_passes_the_block_rules() -> None:
    chain = MiningChain()
    pool = Mempool(LOCAL)
    paid = [pay(chain, chain.fund(COIN), fee) for fee in (1000, 3000, 2000)]
    for tx in paid:
        pool.add(tx, chain, 0.0)
    template = block_template(chain, pool, MINER, now=1_900_000_000.7, extra_nonce=5)
    coinbase, *chosen = template.transactions
    height = chain.tip.height + 1
    assert chosen == [paid[1], paid[2], paid[0]]
    assert coinbase.inputs == (OutPoint(ZERO_HASH, height),)
    assert [(o.amount, o.lock) for o in coinbase.outputs] == [(LOCAL.subsidy(height) + 6000, MINER)]
    header = template.header
    assert (header.previous, header.time, header.bits, header.nonce) == (
        chain.tip.hash,
        1_900_000_000,
        LOCAL.pow_limit_bits,
        0,
    )
    assert header.merkle_root == block_merkle_root(template.transactions)
    block = dataclasses.replace(template, header=solved(header))
    check_block(block, LOCAL)
    check_block_at(block, height)
    check_coinbase_amount(block, height, 6000, LOCAL)


def test_template_time_is_after_the_median_and_extra_nonce_changes_the_root() -> None:
    chain = MiningChain()
    pool = Mempool(LOCAL)
    early = block_template(chain, pool, MINER, now=chain.past_median - 500.0)
    assert early.header.time == chain.past_median + 1
    other = block_template(chain, pool, MINER, now=chain.past_median - 500.0, extra_nonce=1)
    assert other.header.merkle_root != early.header.merkle_root


def test_template_stays_within_the_block_size() -> None:
    small = dataclasses.replace(LOCAL, max_block_size=1_000)
    chain = MiningChain(params=small)
    pool = Mempool(small)
    for n in range(12):
        pool.add(pay(chain, chain.fund(COIN), 1000 + n), chain, 0.0)
    template = block_template(chain, pool, LOCK, now=0.0)
    assert template.size <= 1_000
    assert 1 < len(template.transactions) < 13


def test_solve_returns_the_first_nonce_that_meets_the_target() -> None:
    header = BlockHeader(1, ZERO_HASH, ZERO_HASH, 0, LOCAL.pow_limit_bits, 0)
    target = target_from_bits(header.bits)
    nonce = solve(header, 0, 10_000)
    assert nonce is not None
    assert meets_target(dataclasses.replace(header, nonce=nonce).hash, target)
    assert not any(
        meets_target(dataclasses.replace(header, nonce=n).hash, target) for n in range(nonce)
    )
    assert solve(header, nonce, 0) is None


def test_solve_gives_up_within_its_range_and_the_32_bits() -> None:
    hard = BlockHeader(1, ZERO_HASH, ZERO_HASH, 0, bits_from_target(1), 0)
    assert solve(hard, 0, 2_000) is None
    assert solve(hard, NONCES - 3, 1_000_000) is None  # three nonces tried, not a million


def test_solve_runs_in_a_worker_process() -> None:
    header = BlockHeader(1, ZERO_HASH, ZERO_HASH, 7, LOCAL.pow_limit_bits, 0)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        assert pool.submit(solve, header, 0, 10_000).result(timeout=60) == solve(header, 0, 10_000)


@pytest.mark.parametrize("count", [1, 50])
def test_solve_with_a_slice_agrees_with_a_whole_search(count: int) -> None:
    header = BlockHeader(1, b"\x02" * 32, ZERO_HASH, 9, LOCAL.pow_limit_bits, 0)
    first = solve(header, 0, NONCES)
    assert first is not None
    found = next(
        result
        for start in range(0, first + count, count)
        if (result := solve(header, start, count)) is not None
    )
    assert found == first


def test_wallet_mempool_miner_and_chain_together(tmp_path: Path) -> None:
    """Mine to the wallet, pay from it, mine the payment, lose it to a longer fork: it
    returns to the mempool and the history shows it unconfirmed again."""
    chain = Chain(LOCAL, MemoryStore())
    wallet = Wallet.create(tmp_path / "wallet.json", LOCAL)
    history = WalletHistory(sqlite3.connect(":memory:"), wallet)
    pool = Mempool(LOCAL)
    ours = lock_from_address(wallet.new_address(), LOCAL)
    now = float(LOCAL.genesis_time)

    def mine(view: object, lock: bytes, extra_nonce: int = 0) -> tuple[Block, ChainUpdate]:
        nonlocal now
        now += 1
        template = block_template(view, pool, lock, now, extra_nonce)  # type: ignore[arg-type]
        block = dataclasses.replace(template, header=solved(template.header))
        update = chain.accept_block(block, now)
        pool.blocks_changed(update, chain, now)
        history.blocks_changed(update)
        return block, update

    for _ in range(LOCAL.coinbase_maturity + 1):
        mine(chain, ours)
    payment = wallet.pay(chain.coins_for(wallet.locks()), MINER, 10 * COIN, 2, chain.tip.height)
    assert pool.add(payment, chain, now) == [payment]
    fee = pool.fee(payment.txid)
    assert fee == 2 * payment.size
    latest = history.entries(unconfirmed=pool.transactions())[0]
    assert (latest.txid, latest.amount, latest.height) == (payment.txid, -10 * COIN - fee, None)

    fork_parent = chain.tip
    mined, _ = mine(chain, ours)
    assert payment in mined.transactions and len(pool) == 0
    assert history.entries()[0] == HistoryEntry(
        payment.txid, -10 * COIN - fee, fork_parent.height + 1, mined.hash
    )

    fork = SimpleNamespace(
        tip=fork_parent,
        params=LOCAL,
        median_time_past=chain.median_time_past,
        next_bits=chain.next_bits,
    )
    first, update = mine(fork, MINER, extra_nonce=1)  # equal work: the first seen stays
    assert not update.connected and not update.disconnected
    fork.tip = chain.get(first.hash)
    _, reorg = mine(fork, MINER, extra_nonce=2)
    assert reorg.disconnected == [mined]
    assert payment.txid in pool
    latest = history.entries(unconfirmed=pool.transactions())[0]
    assert (latest.txid, latest.amount, latest.height) == (payment.txid, -10 * COIN - fee, None)
    # At tip 13 a spend goes in block 14: the coinbases of blocks 1 to 4 are mature, those of
    # 5 to 11 are not (12 was ours on the losing branch); the payment's coin is unspent again.
    balance = wallet.balance(chain.coins_for(wallet.locks()), chain.tip.height)
    assert balance == Balance(4 * LOCAL.subsidy(1), 7 * LOCAL.subsidy(1))
