"""The wallet: its keys file, coin selection, signed payments with change, and a history
that follows the chain through reorganisations."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.ledger.bech32m import lock_from_address
from shoal.ledger.coins import Coin
from shoal.ledger.params import LOCAL, MAIN
from shoal.ledger.primitives import (
    COIN,
    ZERO_HASH,
    Block,
    BlockHeader,
    OutPoint,
    Transaction,
    TxOut,
    block_merkle_root,
    key_lock,
)
from shoal.ledger.validation import check_inputs, check_transaction
from shoal.ledger.wallet import (
    DUST_FLOOR,
    InsufficientFunds,
    Wallet,
    WalletError,
    WalletHistory,
    format_amount,
    signed_size,
)

STRANGER = key_lock(bytes(range(32)))


@pytest.fixture
def wallet(tmp_path: Path) -> Wallet:
    return Wallet.create(tmp_path / "wallet.json", LOCAL)


def coins_of(wallet: Wallet, amounts: list[int], *, height: int = 1) -> list[tuple[OutPoint, Coin]]:
    """One mined coin of ours per amount, each to a new address."""
    return [
        (
            OutPoint(bytes([n + 1]) * 32, n),
            Coin(TxOut(amount, lock_from_address(wallet.new_address(), LOCAL)), height, False),
        )
        for n, amount in enumerate(amounts)
    ]


def assert_signed(tx: Transaction, coins: dict[OutPoint, Coin]) -> None:
    """tx passes consensus checks, its fee as the coins say."""
    check_transaction(tx)
    spent = [coins[outpoint] for outpoint in tx.inputs]
    fee = check_inputs(tx, spent, 20, LOCAL)
    assert fee == sum(c.output.amount for c in spent) - sum(o.amount for o in tx.outputs)


def test_keys_file_is_private_and_reopens(wallet: Wallet, tmp_path: Path) -> None:
    first, second = wallet.new_address(), wallet.new_address()
    path = tmp_path / "wallet.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["wallet.json"]  # no temporary left
    again = Wallet.open(path, LOCAL)
    assert again.addresses() == [first, second]
    assert again.locks() == {lock_from_address(first, LOCAL), lock_from_address(second, LOCAL)}


def test_open_refuses_what_is_not_our_wallet(wallet: Wallet, tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    with pytest.raises(WalletError, match="already exists"):
        Wallet.create(path, LOCAL)
    with pytest.raises(WalletError, match="for the local chain"):
        Wallet.open(path, MAIN)
    with pytest.raises(WalletError, match="Cannot read"):
        Wallet.open(tmp_path / "missing.json", LOCAL)
    for damaged in (b"{", b"[]", json.dumps({"chain": "local", "keys": ["00"]}).encode()):
        path.write_bytes(damaged)
        with pytest.raises(WalletError, match="damaged"):
            Wallet.open(path, LOCAL)
    made = Wallet.open(tmp_path / "new.json", LOCAL, create=True)
    assert made.addresses() == []


def test_selection_is_largest_first_and_skips_immature_and_foreign_coins(wallet: Wallet) -> None:
    coins = coins_of(wallet, [1 * COIN, 5 * COIN, 2 * COIN])
    immature = (OutPoint(b"\x09" * 32, 0), Coin(coins[0][1].output, 95, True))
    foreign = (OutPoint(b"\x0a" * 32, 0), Coin(TxOut(100 * COIN, STRANGER), 1, False))
    selection = wallet.select_coins([*coins, immature, foreign], 6 * COIN, 1, tip_height=100)
    assert [coin.output.amount for _, coin in selection.coins] == [5 * COIN, 2 * COIN]
    assert selection.fee == signed_size(2, [TxOut(0, STRANGER)] * 2)
    assert selection.change == 7 * COIN - 6 * COIN - selection.fee
    # at tip 104 the coinbase of height 95 is spendable in the next block (maturity 10)
    mature = wallet.select_coins([immature], COIN // 2, 1, tip_height=104)
    assert mature.coins == (immature,)
    with pytest.raises(InsufficientFunds):
        wallet.select_coins([immature], COIN // 2, 1, tip_height=103)


def test_insufficient_funds_names_have_and_need(wallet: Wallet) -> None:
    coins = coins_of(wallet, [COIN])
    with pytest.raises(InsufficientFunds) as info:
        wallet.select_coins(coins, COIN, 10, tip_height=5)
    assert info.value.have == COIN
    assert info.value.need == COIN + 10 * signed_size(1, [TxOut(0, STRANGER)])
    assert str(info.value) == (
        f"Insufficient funds: the wallet has 1 coins spendable and needs "
        f"{format_amount(info.value.need)} (amount and fee)."
    )
    with pytest.raises(WalletError, match="more than 0"):
        wallet.select_coins(coins, 0, 1, tip_height=5)


def test_change_below_dust_goes_to_the_fee(wallet: Wallet) -> None:
    coins = coins_of(wallet, [COIN])
    fee_alone = signed_size(1, [TxOut(0, STRANGER)])
    selection = wallet.select_coins(coins, COIN - fee_alone - DUST_FLOOR, 1, tip_height=5)
    assert selection.change == 0
    assert selection.fee == fee_alone + DUST_FLOOR


def test_pay_signs_every_input_and_returns_change_to_a_new_address(wallet: Wallet) -> None:
    coins = coins_of(wallet, [3 * COIN, 2 * COIN, COIN])
    before = wallet.locks()
    tx = wallet.pay(coins, STRANGER, 4 * COIN, 5, tip_height=5)
    assert_signed(tx, dict(coins))
    assert len(tx.inputs) == 2
    (change,) = [o for o in tx.outputs if o.lock != STRANGER]
    assert change.lock in wallet.locks() - before
    assert [o.amount for o in tx.outputs if o.lock == STRANGER] == [4 * COIN]
    fee = 5 * COIN - 4 * COIN - change.amount
    assert fee == 5 * tx.size == 5 * signed_size(2, tx.outputs)
    assert Wallet.open(wallet.path, LOCAL).owns(change.lock)  # saved before it was used


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(1, 10 * COIN), min_size=1, max_size=8),
    st.integers(1, 20 * COIN),
    st.integers(0, 50),
)
def test_payments_pay_their_fee_rate_or_raise(amounts: list[int], amount: int, rate: int) -> None:
    wallet = Wallet(Path("/nonexistent/wallet.json"), LOCAL, [])
    wallet._save = lambda: None  # type: ignore[method-assign]
    coins = coins_of(wallet, amounts)
    try:
        tx = wallet.pay(coins, STRANGER, amount, rate, tip_height=5)
    except InsufficientFunds as error:
        assert error.have == sum(amounts)
        assert error.have < error.need
        return
    spent = sum(dict(coins)[outpoint].output.amount for outpoint in tx.inputs)
    fee = spent - sum(o.amount for o in tx.outputs)
    assert rate * tx.size <= fee <= rate * tx.size + max(DUST_FLOOR, 101 * rate) + 34 * rate
    assert_signed(tx, dict(coins))


def make_block(
    previous: bytes, height: int, txs: list[Transaction], to: bytes, reward: int = 50 * COIN
) -> Block:
    coinbase = Transaction(1, (OutPoint(ZERO_HASH, height),), (TxOut(reward, to),), 0, (b"",))
    body = (coinbase, *txs)
    header = BlockHeader(1, previous, block_merkle_root(body), height, LOCAL.pow_limit_bits, 0)
    return Block(header, body)


class Update:
    def __init__(self, connected: list[Block], disconnected: list[Block]) -> None:
        self.connected = connected
        self.disconnected = disconnected


def test_history_follows_blocks_and_reorganisations(wallet: Wallet, tmp_path: Path) -> None:
    history = WalletHistory.open(tmp_path / "history.sqlite", wallet)
    ours = lock_from_address(wallet.new_address(), LOCAL)
    genesis = LOCAL.genesis
    one = make_block(genesis.hash, 1, [], ours)
    mined = (OutPoint(one.transactions[0].txid, 0), Coin(one.transactions[0].outputs[0], 1, True))
    payment = wallet.pay([mined], STRANGER, 20 * COIN, 1, tip_height=20)
    two = make_block(one.hash, 2, [payment], STRANGER)
    history.blocks_changed(Update([genesis, one, two], []))
    assert history.tip == two.hash
    fee = 50 * COIN - sum(o.amount for o in payment.outputs)
    entries = history.entries()
    assert [(e.txid, e.amount, e.height) for e in entries] == [
        (payment.txid, -20 * COIN - fee, 2),
        (one.transactions[0].txid, 50 * COIN, 1),
    ]
    # A fork from one replaces two: the payment is unconfirmed again (the mempool has it).
    two_b = make_block(one.hash, 2, [], STRANGER)
    three_b = make_block(two_b.hash, 3, [], STRANGER)
    history.blocks_changed(Update([two_b, three_b], [two]))
    assert history.tip == three_b.hash
    entries = history.entries(unconfirmed=[payment])
    assert [(e.txid, e.amount, e.height) for e in entries] == [
        (payment.txid, -20 * COIN - fee, None),
        (one.transactions[0].txid, 50 * COIN, 1),
    ]
    # ... and the fork back to genesis takes the coinbase away too, kept across a reopen.
    one_c = make_block(genesis.hash, 1, [], STRANGER)
    history.blocks_changed(Update([one_c], [three_b, two_b, one]))
    history_tip = history.tip
    assert history_tip == one_c.hash
    history.close()
    reopened = WalletHistory.open(tmp_path / "history.sqlite", wallet)
    assert reopened.entries() == []
    assert reopened.tip == history_tip


def test_unconfirmed_spend_of_an_unconfirmed_parent(wallet: Wallet) -> None:
    history = WalletHistory(sqlite3.connect(":memory:"), wallet)
    coins = coins_of(wallet, [COIN])
    parent = Transaction(
        1, (OutPoint(b"\x07" * 32, 0),), (TxOut(COIN, coins[0][1].output.lock),), 0, (b"",)
    )
    child = wallet.pay(
        [(OutPoint(parent.txid, 0), Coin(parent.outputs[0], 0, False))], STRANGER, COIN // 2, 1, 0
    )
    amounts = {e.txid: e.amount for e in history.entries(unconfirmed=[parent, child])}
    fee = COIN - sum(o.amount for o in child.outputs)
    assert amounts == {parent.txid: COIN, child.txid: -(COIN // 2) - fee}


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2**32)), min_size=1, max_size=25))
def test_history_after_any_reorganisations_is_the_active_chains(
    steps: list[tuple[int, int]],
) -> None:
    """Blocks connect and whole branches are swapped; the history always equals one built
    from the active chain alone."""
    wallet = Wallet(Path("/nonexistent/wallet.json"), LOCAL, [])
    wallet._save = lambda: None  # type: ignore[method-assign]
    ours = [lock_from_address(wallet.new_address(), LOCAL) for _ in range(2)]
    history = WalletHistory(sqlite3.connect(":memory:"), wallet)
    active = [LOCAL.genesis]
    history.blocks_changed(Update([LOCAL.genesis], []))

    def next_block(seed: int) -> Block:
        unspent = {
            OutPoint(tx.txid, i): out
            for block in active
            for tx in block.transactions
            for i, out in enumerate(tx.outputs)
            if out.amount
        }
        for block in active:
            for tx in block.transactions:
                for outpoint in tx.inputs:
                    unspent.pop(outpoint, None)
        spendable = sorted(unspent.items(), key=lambda item: item[0].txid)
        txs = []
        if spendable:
            outpoint, output = spendable[seed % len(spendable)]
            to = [ours[0], ours[1], STRANGER][seed % 3]
            txs.append(Transaction(1, (outpoint,), (TxOut(output.amount - 7, to),), 0, (b"",)))
        to = [ours[0], STRANGER][seed % 2]
        return make_block(active[-1].hash, len(active), txs, to, COIN + seed % 1000)

    for back, seed in steps:
        back = min(back, len(active) - 1)
        disconnected = active[len(active) - back :][::-1]
        del active[len(active) - back :]
        connected = []
        for n in range(back + 1):
            connected.append(next_block(seed + n))
            active.append(connected[-1])
        history.blocks_changed(Update(connected, disconnected))
        fresh = WalletHistory(sqlite3.connect(":memory:"), wallet)
        fresh.blocks_changed(Update(list(active), []))
        assert history.entries() == fresh.entries()
        for table in ("wallet_tx", "wallet_output"):
            query = f"SELECT * FROM {table} ORDER BY 1, 2"
            assert list(history.connection.execute(query)) == list(fresh.connection.execute(query))
        assert history.tip == fresh.tip == active[-1].hash
