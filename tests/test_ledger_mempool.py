"""The mempool's policy: validity against the chain and each other, first seen wins, the fee
floor, the size bound, orphans, chain limits, following blocks and reorganisations, and the
miner's selection; an invariant check after random sequences of all of these."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.ledger import mempool as mp
from shoal.ledger.coins import Coin
from shoal.ledger.mempool import Mempool
from shoal.ledger.params import LOCAL
from shoal.ledger.primitives import (
    COIN,
    ZERO_HASH,
    Block,
    BlockHeader,
    OutPoint,
    Transaction,
    TxOut,
    key_lock,
    sha256d,
    signature_messages,
)
from shoal.ledger.validation import Invalid

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
LOCK = key_lock(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


@dataclass
class Tip:
    height: int
    hash: bytes


@dataclass
class FakeChain:
    """The UTXO set at a tip, changed by hand as blocks connect."""

    tip: Tip = field(default_factory=lambda: Tip(100, b"\x01" * 32))
    coins: dict[OutPoint, Coin] = field(default_factory=dict)

    def coin(self, outpoint: OutPoint) -> Coin | None:
        return self.coins.get(outpoint)

    def fund(self, amount: int, *, height: int = 1, coinbase: bool = False) -> OutPoint:
        outpoint = OutPoint(sha256d(len(self.coins).to_bytes(4, "little")), 0)
        self.coins[outpoint] = Coin(TxOut(amount, LOCK), height, coinbase)
        return outpoint

    def connect(self, block: Block) -> None:
        self.tip = Tip(self.tip.height + 1, block.hash)
        for tx in block.transactions:
            for outpoint in tx.inputs:
                self.coins.pop(outpoint, None)
            for index, output in enumerate(tx.outputs):
                self.coins[OutPoint(tx.txid, index)] = Coin(output, self.tip.height, False)


def spend(
    spent: list[tuple[OutPoint, TxOut]], amounts: list[int], *, lock_time: int = 0
) -> Transaction:
    """A transaction signed by KEY spending spent into outputs of amounts, all to LOCK."""
    inputs = tuple(outpoint for outpoint, _ in spent)
    outputs = tuple(TxOut(amount, LOCK) for amount in amounts)
    unsigned = Transaction(1, inputs, outputs, lock_time, tuple(b"" for _ in inputs))
    previous = [output for _, output in spent]
    witnesses = tuple(
        KEY.sign(message) for message in signature_messages(unsigned, previous, LOCAL.chain_id)
    )
    return Transaction(1, inputs, outputs, lock_time, witnesses)


def pay(chain: FakeChain, outpoint: OutPoint, fee: int, outputs: int = 1) -> Transaction:
    """Spend a chain coin into equal outputs, paying fee."""
    coin = chain.coins[outpoint]
    amount = (coin.output.amount - fee) // outputs
    extra = coin.output.amount - fee - amount * outputs
    return spend([(outpoint, coin.output)], [amount + extra] + [amount] * (outputs - 1))


def child_of(parent: Transaction, index: int, fee: int) -> Transaction:
    output = parent.outputs[index]
    return spend([(OutPoint(parent.txid, index), output)], [output.amount - fee])


def block_of(chain: FakeChain, txs: list[Transaction]) -> Block:
    height = chain.tip.height + 1
    base = Transaction(1, (OutPoint(ZERO_HASH, height),), (TxOut(0, LOCK),), 0, (b"",))
    header = BlockHeader(1, chain.tip.hash, ZERO_HASH, height, 0, 0)
    return Block(header, (base, *txs))


@dataclass
class Update:
    connected: list[Block] = field(default_factory=list)
    disconnected: list[Block] = field(default_factory=list)


def check_invariants(pool: Mempool) -> None:
    """What must hold after every step: sizes add up, each spent outpoint has one spender,
    links are mutual, package totals match a walk."""
    entries = pool._entries
    assert pool.bytes == sum(e.size for e in entries.values())
    assert pool.bytes <= pool.max_bytes
    spenders = {o: txid for txid, e in entries.items() for o in e.tx.inputs}
    assert spenders == pool._spenders
    for txid, entry in entries.items():
        assert entry.parents == {o.txid for o in entry.tx.inputs if o.txid in entries}
        for parent in entry.parents:
            assert txid in entries[parent].children
        ancestors = pool._ancestors(entry)
        descendants = pool._descendants(entry)
        assert entry.ancestor_fee == entry.fee + sum(entries[a].fee for a in ancestors)
        assert entry.ancestor_size == entry.size + sum(entries[a].size for a in ancestors)
        assert entry.descendant_fee == entry.fee + sum(entries[d].fee for d in descendants)
        assert entry.descendant_size == entry.size + sum(entries[d].size for d in descendants)
    assert len(pool._orphans) <= mp.MAX_ORPHANS
    assert pool._orphan_bytes == sum(o.tx.size for o in pool._orphans.values())
    assert pool._orphan_bytes <= mp.MAX_ORPHAN_BYTES


@pytest.fixture
def chain() -> FakeChain:
    return FakeChain()


def test_accepts_a_valid_payment_once(chain: FakeChain) -> None:
    pool = Mempool(LOCAL)
    tx = pay(chain, chain.fund(COIN), 1000)
    assert pool.add(tx, chain, 0.0) == [tx]
    assert tx.txid in pool and len(pool) == 1 and pool.bytes == tx.size
    assert pool.get(tx.txid) == tx and pool.fee(tx.txid) == 1000
    assert pool.spends(tx.inputs[0])
    with pytest.raises(Invalid) as info:
        pool.add(tx, chain, 1.0)
    assert (info.value.reason, info.value.ban) == ("txn-already-known", False)
    check_invariants(pool)


@pytest.mark.parametrize(
    ("make", "reason", "ban"),
    [
        (lambda c: pay(c, c.fund(COIN), 10), "min-fee-not-met", False),
        (
            lambda c: pay(c, c.fund(COIN, height=95, coinbase=True), 1000),
            "immature-coinbase",
            False,
        ),
        (
            lambda c: spend([(c.fund(COIN), TxOut(COIN, LOCK))], [COIN + 1]),
            "bad-txns-overspend",
            True,
        ),
        (
            lambda c: spend([(c.fund(COIN), TxOut(COIN, LOCK))], [COIN - 500], lock_time=102),
            "bad-txns-nonfinal",
            False,
        ),
        (lambda c: block_of(c, []).transactions[0], "coinbase", True),
    ],
)
def test_refusals_say_why_and_whether_to_ban(
    chain: FakeChain, make: Callable[[FakeChain], Transaction], reason: str, ban: bool
) -> None:
    pool = Mempool(LOCAL)
    with pytest.raises(Invalid) as info:
        pool.add(make(chain), chain, 0.0)
    assert (info.value.reason, info.value.ban) == (reason, ban)
    assert len(pool) == 0


def test_a_bad_signature_is_refused_and_banned(chain: FakeChain) -> None:
    tx = pay(chain, chain.fund(COIN), 1000)
    forged = Transaction(tx.version, tx.inputs, tx.outputs, 0, (bytes(64),))
    with pytest.raises(Invalid) as info:
        Mempool(LOCAL).add(forged, chain, 0.0)
    assert (info.value.reason, info.value.ban) == ("bad-signature", True)


def test_first_seen_wins_and_replacement_is_refused(chain: FakeChain) -> None:
    pool = Mempool(LOCAL)
    coin = chain.fund(COIN)
    first = pay(chain, coin, 1000)
    richer = pay(chain, coin, 100_000)
    pool.add(first, chain, 0.0)
    with pytest.raises(Invalid) as info:
        pool.add(richer, chain, 1.0)
    assert (info.value.reason, info.value.ban) == ("txn-mempool-conflict", False)
    assert first.txid in pool and richer.txid not in pool


def test_an_orphan_waits_for_its_parent_then_both_are_accepted(chain: FakeChain) -> None:
    pool = Mempool(LOCAL)
    parent = pay(chain, chain.fund(COIN), 1000)
    child = child_of(parent, 0, 1000)
    grandchild = child_of(child, 0, 1000)
    assert pool.add(grandchild, chain, 0.0) == []
    assert pool.add(child, chain, 1.0) == []
    assert pool.has_orphan(child.txid) and pool.orphan_count == 2
    assert pool.add(parent, chain, 2.0) == [parent, child, grandchild]
    assert pool.orphan_count == 0 and len(pool) == 3
    check_invariants(pool)


def test_orphans_expire_and_are_bounded(chain: FakeChain) -> None:
    pool = Mempool(LOCAL)
    missing = [
        spend([(OutPoint(sha256d(bytes([n, 1])), 0), TxOut(COIN, LOCK))], [COIN - 500])
        for n in range(101)
    ]
    for n, tx in enumerate(missing):
        assert pool.add(tx, chain, float(n)) == []
    assert pool.orphan_count == mp.MAX_ORPHANS
    assert not pool.has_orphan(missing[0].txid)  # the oldest left first
    assert pool.get_timer() == 1.0 + mp.ORPHAN_LIFETIME
    pool.handle_timer(50.0 + mp.ORPHAN_LIFETIME)
    assert pool.orphan_count == 50
    check_invariants(pool)


def test_a_full_mempool_evicts_the_lowest_fee_rate_with_its_descendants(chain: FakeChain) -> None:
    low = pay(chain, chain.fund(COIN), 200)
    low_child = child_of(low, 0, 200)
    middle = pay(chain, chain.fund(COIN), 400)
    pool = Mempool(LOCAL, max_bytes=low.size + low_child.size + middle.size)
    for tx in (low, low_child, middle):
        pool.add(tx, chain, 0.0)
    high = pay(chain, chain.fund(COIN), 1000)
    assert pool.add(high, chain, 1.0) == [high]
    assert set(pool._entries) == {middle.txid, high.txid}
    filler = pay(chain, chain.fund(COIN), 500)
    assert pool.add(filler, chain, 1.5) == [filler]  # room was left: no eviction
    cheap = pay(chain, chain.fund(COIN), 300)
    with pytest.raises(Invalid) as info:
        pool.add(cheap, chain, 2.0)
    assert (info.value.reason, info.value.ban) == ("mempool-full", False)
    assert set(pool._entries) == {middle.txid, high.txid, filler.txid}
    check_invariants(pool)


def test_chains_of_unconfirmed_transactions_are_bounded(chain: FakeChain) -> None:
    pool = Mempool(LOCAL)
    tx = pay(chain, chain.fund(COIN), 1000)
    pool.add(tx, chain, 0.0)
    for _ in range(mp.MAX_CHAIN - 1):
        tx = child_of(tx, 0, 1000)
        pool.add(tx, chain, 0.0)
    with pytest.raises(Invalid) as info:
        pool.add(child_of(tx, 0, 1000), chain, 0.0)
    assert (info.value.reason, info.value.ban) == ("too-long-mempool-chain", False)
    check_invariants(pool)


def test_selection_is_by_package_fee_rate_parents_first(chain: FakeChain) -> None:
    pool = Mempool(LOCAL)
    poor_parent = pay(chain, chain.fund(COIN), 200)
    rich_child = child_of(poor_parent, 0, 8000)  # the two pay more a byte than best
    middle = pay(chain, chain.fund(COIN), 1000)
    best = pay(chain, chain.fund(COIN), 3000)
    for tx in (poor_parent, rich_child, middle, best):
        pool.add(tx, chain, 0.0)
    assert pool.select(1_000_000) == [poor_parent, rich_child, best, middle]
    listed = list(pool.transactions())
    assert listed.index(poor_parent) < listed.index(rich_child)
    room = poor_parent.size + rich_child.size
    assert pool.select(room) == [poor_parent, rich_child]
    assert pool.select(best.size) == [best]
    assert pool.select(10**6, max_sigops=1) == [best]


def test_a_block_removes_what_it_mines_and_what_conflicts_with_it(chain: FakeChain) -> None:
    pool = Mempool(LOCAL)
    coin = chain.fund(COIN)
    ours = pay(chain, coin, 1000)
    ours_child = child_of(ours, 0, 1000)
    mined = pay(chain, chain.fund(COIN), 1000)
    mined_child = child_of(mined, 0, 1000)
    for tx in (ours, ours_child, mined, mined_child):
        pool.add(tx, chain, 0.0)
    rival = pay(chain, coin, 5000)
    block = block_of(chain, [rival, mined])
    chain.connect(block)
    assert pool.blocks_changed(Update([block]), chain, 1.0) == []
    assert set(pool._entries) == {mined_child.txid}
    assert not pool.spends(coin)
    check_invariants(pool)


def test_a_block_mining_an_orphans_parent_adopts_it(chain: FakeChain) -> None:
    pool = Mempool(LOCAL)
    parent = pay(chain, chain.fund(COIN), 1000)
    child = child_of(parent, 0, 1000)
    assert pool.add(child, chain, 0.0) == []
    block = block_of(chain, [parent])
    chain.connect(block)
    assert pool.blocks_changed(Update([block]), chain, 1.0) == [child]
    assert child.txid in pool and pool.orphan_count == 0
    check_invariants(pool)


def test_a_reorganisation_returns_transactions_and_drops_conflicts(chain: FakeChain) -> None:
    pool = Mempool(LOCAL)
    coin_a, coin_b = chain.fund(COIN), chain.fund(COIN)
    fork_point = dict(chain.coins), chain.tip
    paid_a = pay(chain, coin_a, 1000)
    paid_b = pay(chain, coin_b, 1000)
    old = block_of(chain, [paid_a, paid_b])
    chain.connect(old)
    waiting = child_of(paid_a, 0, 1000)  # spends a mined output, in the mempool
    pool.add(waiting, chain, 0.0)
    # The other branch spends coin_b otherwise and is longer.
    chain.coins, chain.tip = dict(fork_point[0]), fork_point[1]
    double_spend = pay(chain, coin_b, 7000)
    new = block_of(chain, [double_spend])
    chain.connect(new)
    new_2 = block_of(chain, [])
    chain.connect(new_2)
    pool.blocks_changed(Update([new, new_2], [old]), chain, 5.0)
    assert set(pool._entries) == {paid_a.txid, waiting.txid}
    assert pool.select(10**6) == [paid_a, waiting]
    check_invariants(pool)


operations = st.lists(
    st.tuples(
        st.sampled_from(["fund_pay", "child", "orphan", "mine", "reorg", "timer"]),
        st.integers(0, 1000),
    ),
    max_size=30,
)


@settings(max_examples=40, deadline=None)
@given(operations)
def test_invariants_hold_through_any_sequence(steps: list[tuple[str, int]]) -> None:
    chain = FakeChain()
    pool = Mempool(LOCAL, max_bytes=2_000)
    made: list[Transaction] = []
    history: list[tuple[dict[OutPoint, Coin], Tip, Block]] = []
    now = 0.0
    for action, number in steps:
        now += 60.0
        try:
            if action == "fund_pay":
                made.append(pay(chain, chain.fund(COIN), 200 + number, outputs=1 + number % 3))
                pool.add(made[-1], chain, now)
            elif action == "child" and made:
                parent = made[number % len(made)]
                made.append(child_of(parent, number % len(parent.outputs), 200 + number))
                pool.add(made[-1], chain, now)
            elif action == "orphan":
                unseen = pay(chain, chain.fund(COIN), 700)
                pool.add(child_of(unseen, 0, 300), chain, now)
            elif action == "mine":
                block = block_of(chain, pool.select(1_000 + number))
                history.append((dict(chain.coins), chain.tip, block))
                chain.connect(block)
                pool.blocks_changed(Update([block]), chain, now)
            elif action == "reorg" and history:
                coins, tip, block = history.pop()
                chain.coins, chain.tip = coins, tip
                replacement = block_of(chain, [])
                chain.connect(replacement)
                pool.blocks_changed(Update([replacement], [block]), chain, now)
            elif action == "timer":
                pool.handle_timer(now + number * 10)
        except Invalid:
            pass
        check_invariants(pool)
        for tx in pool.select(10**6):
            assert all(pool.get(o.txid) is not None or chain.coin(o) for o in tx.inputs)
