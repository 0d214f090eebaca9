"""The chain: growth, reorganisations with undo data, invalid blocks, the stores, restarts,
retargets and what it serves to peers."""

from __future__ import annotations

import dataclasses
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ledger_blocks import MINER, NOW, grow, lock_of, mine, next_block, private_key, spend

from shoal.ledger import chain as chain_module
from shoal.ledger.chain import Chain, ChainUpdate, RejectedBlock
from shoal.ledger.coins import Coin
from shoal.ledger.connect import disconnect_change
from shoal.ledger.params import LOCAL, ChainParams
from shoal.ledger.pow import bits_from_target, retarget, work_of
from shoal.ledger.primitives import (
    COIN,
    LOCK_BURN,
    ZERO_HASH,
    Block,
    OutPoint,
    Transaction,
    TxOut,
)
from shoal.ledger.store import MemoryStore, SqliteStore
from shoal.ledger.validation import Invalid

ALICE = private_key(1)
BOB = private_key(2)
CAROL = private_key(3)


def fresh(params: ChainParams = LOCAL) -> Chain:
    """A chain in memory holding only its genesis."""
    return Chain(params, MemoryStore())


def fed(blocks: list[Block], params: ChainParams = LOCAL) -> Chain:
    """A fresh chain given blocks in order."""
    chain = fresh(params)
    for block in blocks:
        chain.accept_block(block, NOW)
    return chain


def coinbase_coin(block: Block) -> tuple[OutPoint, Coin]:
    """The first output of block's coinbase, as a spendable coin."""
    tx = block.transactions[0]
    height = tx.inputs[0].index
    return OutPoint(tx.txid, 0), Coin(tx.outputs[0], height, True)


def rejects(chain: Chain, block: Block, code: str) -> Invalid:
    """Assert that accepting block raises Invalid with code, and return it."""
    with pytest.raises(Invalid) as error:
        chain.accept_block(block, NOW)
    assert error.value.reason == code, error.value
    return error.value


def test_a_new_chain_holds_its_genesis() -> None:
    chain = fresh()
    genesis = LOCAL.genesis
    assert chain.tip.hash == genesis.hash and chain.tip.height == 0
    assert chain.best_header is chain.tip and chain.at_height(0) is chain.tip
    assert chain.block(genesis.hash) == genesis
    assert chain.transaction(genesis.transactions[0].txid) == (
        genesis.transactions[0],
        genesis.hash,
    )
    # the genesis coinbase pays a burn: never in the UTXO set
    assert chain.store.utxo() == []
    assert chain.coins_for([bytes((LOCK_BURN,))]) == []
    assert chain.locator() == [genesis.hash]


def test_linear_growth() -> None:
    chain = fresh()
    blocks = grow(chain, 5)
    assert chain.tip.height == 5 and chain.tip.hash == blocks[-1].hash
    assert [chain.at_height(h).hash for h in range(1, 6)] == [b.hash for b in blocks]  # type: ignore[union-attr]
    assert chain.at_height(6) is None and chain.at_height(-1) is None
    mined = chain.coins_for([lock_of(MINER)])
    assert [entry for entry in mined] == [coinbase_coin(block) for block in blocks]
    assert chain.tip.work == 6 * work_of(LOCAL.pow_limit_target)
    assert chain.accept_block(blocks[2], NOW) == ChainUpdate()  # known: nothing moves


def test_a_payment_moves_coins_and_is_indexed() -> None:
    chain = fresh()
    blocks = grow(chain, LOCAL.coinbase_maturity + 1, lock=lock_of(ALICE))
    spent_outpoint, spent_coin = coinbase_coin(blocks[0])
    pay = spend(
        [(spent_outpoint, spent_coin)],
        [TxOut(30 * COIN, lock_of(BOB)), TxOut(19 * COIN, lock_of(ALICE))],
        ALICE,
        LOCAL,
    )
    block = next_block(chain, [pay], amount=LOCAL.subsidy(12) + COIN)  # claims the fee
    assert chain.accept_block(block, NOW).connected == [block]
    assert chain.coin(spent_outpoint) is None
    assert chain.coin(OutPoint(pay.txid, 0)) == Coin(pay.outputs[0], 12, False)
    assert chain.coins_for([lock_of(BOB)]) == [
        (OutPoint(pay.txid, 0), Coin(pay.outputs[0], 12, False))
    ]
    assert chain.transaction(pay.txid) == (pay, block.hash)


def test_a_reorganisation_to_more_work() -> None:
    chain = fresh()
    losing = grow(chain, 3, lock=lock_of(ALICE))
    winning = grow(fresh(), 4, lock=lock_of(BOB))
    updates = [chain.accept_block(block, NOW) for block in winning]
    assert updates[:3] == [ChainUpdate()] * 3  # equal or less work: the first chain stays
    assert updates[3] == ChainUpdate(connected=winning, disconnected=losing[::-1])
    assert chain.tip.hash == winning[-1].hash
    assert chain.store.utxo() == fed(winning).store.utxo()
    assert chain.transaction(losing[0].transactions[0].txid) is None
    assert chain.transaction(winning[0].transactions[0].txid) is not None
    assert chain.block(losing[1].hash) == losing[1]  # bodies of the losing branch are kept


def test_a_double_spend_across_a_reorganisation_leaves_one_spend() -> None:
    chain = fresh()
    shared = grow(chain, LOCAL.coinbase_maturity + 1, lock=lock_of(ALICE))
    coin = coinbase_coin(shared[0])
    to_bob = spend([coin], [TxOut(50 * COIN, lock_of(BOB))], ALICE, LOCAL)
    to_carol = spend([coin], [TxOut(50 * COIN, lock_of(CAROL))], ALICE, LOCAL)
    losing = next_block(chain, [to_bob])
    chain.accept_block(losing, NOW)
    other = fed(shared)
    winning = [next_block(other, [to_carol], extra=b"b")]
    other.accept_block(winning[0], NOW)
    winning += grow(other, 1, extra=b"b")
    chain.accept_block(winning[0], NOW)
    update = chain.accept_block(winning[1], NOW)
    assert update == ChainUpdate(connected=winning, disconnected=[losing])
    assert chain.coin(coin[0]) is None
    assert chain.coin(OutPoint(to_bob.txid, 0)) is None
    assert chain.coin(OutPoint(to_carol.txid, 0)) is not None
    assert chain.transaction(to_bob.txid) is None
    assert chain.transaction(to_carol.txid) == (to_carol, winning[0].hash)
    assert chain.store.utxo() == other.store.utxo()


def test_a_block_invalid_at_activation_keeps_the_chain_and_marks_descendants() -> None:
    chain = fresh()
    kept = grow(chain, LOCAL.coinbase_maturity + 3, lock=lock_of(ALICE))
    builder = fed(kept[: LOCAL.coinbase_maturity + 1])
    coin = coinbase_coin(kept[0])
    forged = dataclasses.replace(
        spend([coin], [TxOut(50 * COIN, lock_of(BOB))], ALICE, LOCAL), witnesses=(bytes(64),)
    )
    branch = grow(builder, 1, extra=b"b")
    bad = next_block(builder, [forged], extra=b"b")
    builder.accept_header(bad.header, NOW)
    after = [next_block(builder, parent=builder.get(bad.hash), extra=b"b")]
    builder.accept_header(after[0].header, NOW)
    after.append(next_block(builder, parent=builder.get(after[0].hash), extra=b"b"))
    builder.accept_header(after[1].header, NOW)
    # The branch would be longer: its headers and later bodies first, the bad body last.
    for header in [branch[0].header, bad.header, after[0].header, after[1].header]:
        chain.accept_header(header, NOW)
    assert chain.best_header.hash == after[1].hash
    assert chain.accept_block(after[1], NOW) == ChainUpdate()
    assert chain.accept_block(after[0], NOW) == ChainUpdate()
    assert chain.accept_block(branch[0], NOW) == ChainUpdate()
    with pytest.raises(RejectedBlock) as error:
        chain.accept_block(bad, NOW)
    assert error.value.reason == "bad-signature" and error.value.ban
    assert error.value.update.connected == [] and error.value.update.disconnected == []
    assert [h for h, _ in error.value.update.invalid] == [bad.hash]
    assert chain.tip.hash == kept[-1].hash
    assert chain.store.utxo() == fed(kept).store.utxo()
    for block in [bad, *after]:
        assert chain.get(block.hash).invalid  # type: ignore[union-attr]
    assert not chain.get(branch[0].hash).invalid  # type: ignore[union-attr]
    assert chain.best_header is chain.tip
    rejects(chain, after[1], "duplicate-invalid")
    child = next_block(builder, parent=builder.get(after[1].hash), extra=b"b")
    rejects(chain, child, "bad-prevblk")


def test_another_block_found_invalid_is_reported_in_the_update() -> None:
    chain = fresh()
    builder = fed(grow(chain, 3))
    valid = grow(builder, 1, extra=b"x")[0]
    wrong_amount = next_block(builder, amount=LOCAL.subsidy(5) + 1, extra=b"x")
    builder.accept_header(wrong_amount.header, NOW)
    child = next_block(builder, parent=builder.get(wrong_amount.hash), extra=b"x")
    for block in [valid, wrong_amount, child]:
        chain.accept_header(block.header, NOW)
    # their parents' bodies missing, these two wait
    assert chain.accept_block(child, NOW) == ChainUpdate()
    assert chain.accept_block(wrong_amount, NOW) == ChainUpdate()
    update = chain.accept_block(valid, NOW)
    assert update.connected == [valid] and update.disconnected == []
    assert [(h, e.reason) for h, e in update.invalid] == [(wrong_amount.hash, "bad-cb-amount")]
    assert chain.get(child.hash).invalid and chain.tip.hash == valid.hash  # type: ignore[union-attr]


def settle(chain: Chain, block: Block, max_connects: int | None) -> list[ChainUpdate]:
    """Accept block, then carry on until the best chain is active: every step's update."""
    updates = [chain.accept_block(block, NOW, max_connects=max_connects)]
    return updates + finish(chain, max_connects)


def finish(chain: Chain, max_connects: int | None) -> list[ChainUpdate]:
    """Carry on until the best chain is active: every step's update."""
    updates = []
    while chain.activation_pending:
        assert max_connects is not None
        updates.append(chain.continue_activation(max_connects))
    return updates


def follow(active: list[bytes], update: ChainUpdate) -> None:
    """Move a list of active hashes as update says, checking that it can."""
    for block in update.disconnected:
        assert active.pop() == block.hash
    for block in update.connected:
        assert block.header.previous == active[-1]
        active.append(block.hash)


def test_a_reorganisation_in_steps_ends_as_one_done_at_once() -> None:
    losing, winning = paying_branch(12, 1), paying_branch(20, 2)
    at_once, stepped = fed(losing), fed(losing)
    updates: dict[Chain, list[ChainUpdate]] = {}
    for chain, max_connects in ((at_once, None), (stepped, 3)):
        for block in winning:
            chain.accept_header(block.header, NOW)
        for block in winning[:0:-1]:  # every body but the first: nothing to connect yet
            assert chain.accept_block(block, NOW) == ChainUpdate()
        updates[chain] = settle(chain, winning[0], max_connects)
    assert updates[at_once] == [ChainUpdate(connected=winning, disconnected=losing[::-1])]
    steps = updates[stepped]
    assert len(steps) == 7 and steps[0].disconnected == losing[::-1]
    assert [len(step.connected) for step in steps] == [3] * 6 + [2]
    assert all(step.disconnected == [] == step.invalid for step in steps[1:])
    assert [block for step in steps for block in step.connected] == winning
    assert stepped.tip.hash == at_once.tip.hash == winning[-1].hash
    assert stepped.store.utxo() == at_once.store.utxo() == fed(winning).store.utxo()
    assert not stepped.activation_pending and stepped.store.reorg_start() is None


def test_a_reorganisation_in_steps_records_the_tip_it_leaves_until_done() -> None:
    losing, winning = paying_branch(3, 1), paying_branch(6, 2)
    chain = fed(losing)
    for block in winning[:3]:
        chain.accept_block(block, NOW, max_connects=1)
    assert chain.store.reorg_start() is None and not chain.activation_pending
    first = chain.accept_block(winning[3], NOW, max_connects=1)
    assert first == ChainUpdate(connected=winning[:1], disconnected=losing[::-1])
    assert chain.activation_pending and chain.store.reorg_start() == losing[-1].hash
    assert chain.continue_activation(2).connected == winning[1:3]
    assert chain.store.reorg_start() == losing[-1].hash
    assert chain.continue_activation(2).connected == winning[3:4]
    assert not chain.activation_pending and chain.store.reorg_start() is None
    assert chain.continue_activation(2) == ChainUpdate()


@pytest.mark.parametrize("seed", [7, 8, 9])
@pytest.mark.parametrize("max_connects", [None, 2])
@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
def test_random_reorganisations_keep_the_utxo_of_the_active_chain(
    store_kind: str, max_connects: int | None, seed: int, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    path = tmp_path / "chain.sqlite"
    store = SqliteStore(path) if store_kind == "sqlite" else MemoryStore()
    chain = Chain(LOCAL, store)
    mature_after = LOCAL.coinbase_maturity
    # A model of each valid block: its utxo as a dict, built from its parent's.
    utxo: dict[bytes, dict[OutPoint, Coin]] = {LOCAL.genesis.hash: {}}
    builder = fresh()
    reorganised = reopened = 0
    height_of = {LOCAL.genesis.hash: 0}
    active = [LOCAL.genesis.hash]  # as the updates tell it
    for step in range(200):
        # forks near the top, some deep: they overtake each other often
        top = max(height_of[h] for h in utxo)
        near = [h for h in utxo if height_of[h] >= top - rng.choice((1, 2, 6))]
        parent = builder.get(rng.choice(near))
        assert parent is not None
        height = parent.height + 1
        coins = utxo[parent.hash]
        spendable = [e for e in coins.items() if height - e[1].height >= mature_after]
        txs: list[Transaction] = []
        if spendable and rng.random() < 0.7:
            chosen = rng.sample(spendable, min(len(spendable), rng.randint(1, 2)))
            total = sum(c.output.amount for _, c in chosen)
            txs.append(spend(chosen, [TxOut(total, lock_of(MINER))], MINER, LOCAL))
        forge = bool(txs) and rng.random() < 0.15
        if forge:
            txs[0] = dataclasses.replace(txs[0], witnesses=(bytes(64),) * len(txs[0].inputs))
        block = next_block(builder, txs, parent=parent, extra=step.to_bytes(2, "little"))
        builder.accept_header(block.header, NOW)
        try:
            updates = settle(chain, block, max_connects)
        except RejectedBlock as error:
            updates = [error.update, *finish(chain, max_connects)]
            assert forge and error.reason == "bad-signature"
        except Invalid as error:
            updates = []
            assert forge and error.reason == "bad-signature"
        for update in updates:
            follow(active, update)
            reorganised += bool(update.disconnected)
            assert all(forge and h == block.hash for h, _ in update.invalid)
        assert active == [chain.at_height(h).hash for h in range(chain.tip.height + 1)]  # type: ignore[union-attr]
        assert not forge or not chain.contains(chain.get(block.hash))  # type: ignore[arg-type]
        assert chain.store.reorg_start() is None
        if not forge:
            after = dict(coins)
            for tx in block.transactions:
                for outpoint in tx.inputs:
                    after.pop(outpoint, None)
                for index, output in enumerate(tx.outputs):
                    after[OutPoint(tx.txid, index)] = Coin(output, height, tx.is_coinbase)
            utxo[block.hash] = after
            height_of[block.hash] = height
        assert chain.store.utxo() == sorted(
            utxo[chain.tip.hash].items(), key=lambda e: (e[1].height, e[0].txid, e[0].index)
        )
        assert chain.tip.height == max(height_of.values())
        if store_kind == "sqlite" and rng.random() < 0.1:
            tip = chain.tip.hash
            chain.close()
            chain = Chain(LOCAL, SqliteStore(path))
            assert chain.tip.hash == tip and chain.resumed == ChainUpdate()
            reopened += 1
    assert reorganised >= 5 and (reopened >= 3 or store_kind == "memory")
    chain.close()


def test_sqlite_store_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    chain = Chain(LOCAL, SqliteStore(path))
    blocks = grow(chain, LOCAL.coinbase_maturity + 1, lock=lock_of(ALICE))
    pay = spend([coinbase_coin(blocks[0])], [TxOut(50 * COIN, lock_of(BOB))], ALICE, LOCAL)
    last = next_block(chain, [pay])
    chain.accept_block(last, NOW)
    side = next_block(chain, parent=chain.get(blocks[-1].hash), extra=b"side")
    chain.accept_block(side, NOW)
    utxo, tip = chain.store.utxo(), chain.tip
    chain.close()
    again = Chain(LOCAL, SqliteStore(path))
    assert again.tip.hash == tip.hash and again.tip.height == tip.height
    assert again.tip.work == tip.work
    assert again.store.utxo() == utxo
    assert again.transaction(pay.txid) == (pay, last.hash)
    assert again.coins_for([lock_of(BOB)]) == [
        (OutPoint(pay.txid, 0), Coin(pay.outputs[0], 12, False))
    ]
    assert again.get(side.hash) is not None and not again.contains(again.get(side.hash))  # type: ignore[arg-type]
    assert again.block(side.hash) == side
    assert again.raw_block(side.hash) == side.serialized and again.raw_block(ZERO_HASH) is None
    many = [b"\x01" + n.to_bytes(32, "little") for n in range(1200)] + [lock_of(BOB)]
    assert again.coins_for(many) == again.coins_for([lock_of(BOB)])  # asked in chunks
    grow(again, 2)
    again.close()


def test_a_restart_mid_reorganisation_carries_on_to_the_best_chain(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    chain = Chain(LOCAL, SqliteStore(path))
    losing = grow(chain, 2, lock=lock_of(ALICE))
    winning = grow(fresh(), 3, lock=lock_of(BOB))
    for block in winning[:2]:
        chain.accept_block(block, NOW)
    # As if killed after disconnecting the losing branch: the store's tip is the genesis.
    for height in (2, 1):
        block = losing[height - 1]
        chain.store.apply(disconnect_change(block, height, chain.store.undo(block.hash)))
        chain.store.commit()
    chain.close()
    again = Chain(LOCAL, SqliteStore(path))
    assert again.tip.height == 2  # either chain of 2: their work is equal
    assert len(again.resumed.connected) == 2 and again.resumed.disconnected == []
    assert again.store.utxo() == fed(again.resumed.connected).store.utxo()
    again.accept_block(winning[2], NOW)
    assert again.tip.hash == winning[2].hash
    assert again.store.utxo() == fed(winning).store.utxo()
    again.close()


def test_a_restart_between_steps_tells_the_whole_reorganisation(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    losing, winning = paying_branch(3, 1), paying_branch(6, 2)
    chain = Chain(LOCAL, SqliteStore(path))
    for block in losing:
        chain.accept_block(block, NOW)
    for block in winning:
        chain.accept_header(block.header, NOW)
    for block in winning[:0:-1]:
        chain.accept_block(block, NOW)
    chain.accept_block(winning[0], NOW, max_connects=2)
    assert chain.tip.hash == winning[1].hash and chain.activation_pending
    chain.store.close()  # as if killed between steps: every step is committed
    again = Chain(LOCAL, SqliteStore(path))
    assert again.resumed == ChainUpdate(connected=winning, disconnected=losing[::-1])
    assert again.store.reorg_start() is None and again.tip.hash == winning[-1].hash
    again.close()
    assert Chain(LOCAL, SqliteStore(path)).resumed == ChainUpdate()


def test_a_store_of_another_chain_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    Chain(LOCAL, SqliteStore(path)).close()
    with pytest.raises(ValueError, match="not the other chain"):
        Chain(dataclasses.replace(LOCAL, name="other", genesis_time=5), SqliteStore(path))


def test_header_rules() -> None:
    chain = fresh()
    grow(chain, 12)
    orphan = next_block(chain)
    orphan = dataclasses.replace(
        orphan, header=dataclasses.replace(orphan.header, previous=b"\x42" * 32)
    )
    error = rejects(chain, orphan, "prev-blk-not-found")
    assert not error.ban
    mtp = chain.median_time_past(chain.tip)
    assert mtp == chain.tip.header.time - 5
    rejects(chain, next_block(chain, time=mtp), "time-too-old")
    chain.accept_header(next_block(chain, time=mtp + 1, extra=b"ok").header, NOW)
    rejects(chain, next_block(chain, time=int(NOW) + LOCAL.max_future + 1), "time-too-new")
    chain.accept_header(
        next_block(chain, time=int(NOW) + LOCAL.max_future, extra=b"ok2").header, NOW
    )
    harder = bits_from_target(LOCAL.pow_limit >> 1)
    rejects(chain, next_block(chain, bits=harder), "bad-diffbits")
    # a header refused for its time is not marked: it may be taken later
    late = next_block(chain, time=int(NOW) + LOCAL.max_future + 1, extra=b"late")
    rejects(chain, late, "time-too-new")
    chain.accept_block(late, NOW + 1)
    assert chain.tip.hash == late.hash


def test_a_block_from_a_clock_hours_ahead_is_refused_without_a_ban_and_taken_later() -> None:
    chain = fresh()
    grow(chain, 2)
    ahead = next_block(chain, time=int(NOW) + 3 * 60 * 60)
    error = rejects(chain, ahead, "time-too-new")
    assert not error.ban and not chain.get(ahead.hash)
    assert chain.accept_block(ahead, NOW + 60 * 60).connected == [ahead]
    absurd = next_block(chain, time=int(NOW) + 2 * 24 * 60 * 60)
    assert rejects(chain, absurd, "time-too-new").ban


def test_block_rules_in_context() -> None:
    chain = fresh()
    blocks = grow(chain, LOCAL.coinbase_maturity - 1, lock=lock_of(ALICE))
    first = coinbase_coin(blocks[0])
    rejects(chain, next_block(chain, amount=LOCAL.subsidy(10) + 1), "bad-cb-amount")
    coinbase = dataclasses.replace(
        next_block(chain).transactions[0], inputs=(OutPoint(ZERO_HASH, 3),)
    )
    time = chain.tip.header.time + 1
    rejects(chain, mine(chain.tip.hash, [coinbase], time, LOCAL.pow_limit_bits), "bad-cb-height")
    young = spend([first], [TxOut(50 * COIN, lock_of(BOB))], ALICE, LOCAL)
    rejects(chain, next_block(chain, [young]), "immature-coinbase")
    grow(chain, 1)
    unknown = spend([(OutPoint(b"\x55" * 32, 0), first[1])], [TxOut(1, lock_of(BOB))], ALICE, LOCAL)
    rejects(chain, next_block(chain, [unknown]), "bad-txns-inputs-missingorspent")
    twice = spend([first], [TxOut(20 * COIN, lock_of(BOB))], ALICE, LOCAL)
    again = spend([first], [TxOut(10 * COIN, lock_of(CAROL))], ALICE, LOCAL)
    rejects(chain, next_block(chain, [twice, again]), "bad-txns-inputs-missingorspent")
    locked = spend([first], [TxOut(20 * COIN, lock_of(BOB))], ALICE, LOCAL, lock_time=99)
    rejects(chain, next_block(chain, [locked]), "bad-txns-nonfinal")
    over = spend([first], [TxOut(51 * COIN, lock_of(BOB))], ALICE, LOCAL)
    rejects(chain, next_block(chain, [over]), "bad-txns-overspend")
    # a chain within one block: an output spent by a later transaction of the same block
    to_bob = spend([first], [TxOut(50 * COIN, lock_of(BOB))], ALICE, LOCAL)
    bob_coin = (OutPoint(to_bob.txid, 0), Coin(to_bob.outputs[0], 11, False))
    to_carol = spend([bob_coin], [TxOut(50 * COIN, lock_of(CAROL))], BOB, LOCAL)
    block = next_block(chain, [to_bob, to_carol])
    assert chain.accept_block(block, NOW).connected == [block]
    assert chain.coin(bob_coin[0]) is None and chain.coin(OutPoint(to_carol.txid, 0)) is not None


def test_a_body_not_matching_its_header_does_not_spoil_the_block() -> None:
    chain = fresh()
    block = next_block(chain)
    mutated = Block(
        block.header, (dataclasses.replace(block.transactions[0], witnesses=(b"other",)),)
    )
    rejects(chain, mutated, "bad-merkle")
    oversized = Block(
        block.header,
        (dataclasses.replace(block.transactions[0], witnesses=(bytes(LOCAL.max_block_size),)),),
    )
    rejects(chain, oversized, "bad-blk-length")  # refused before its merkle root is known
    assert chain.accept_block(block, NOW).connected == [block]


def test_a_retarget() -> None:
    params = dataclasses.replace(LOCAL, retarget_interval=10, target_spacing=60)
    chain = fresh(params)
    for _ in range(9):  # too fast: a block every 20 s where 60 s are wanted
        chain.accept_block(next_block(chain, time=chain.tip.header.time + 20), NOW)
    wanted = retarget(params.pow_limit_target, 9 * 20, 10 * 60, params.pow_limit)
    assert wanted == params.pow_limit_target * 180 // 600
    assert chain.next_bits(chain.tip) == bits_from_target(wanted)
    rejects(chain, next_block(chain, bits=params.pow_limit_bits), "bad-diffbits")
    chain.accept_block(next_block(chain, time=chain.tip.header.time + 20), NOW)
    assert chain.tip.header.bits == bits_from_target(wanted)
    # within the interval the bits stay
    assert chain.next_bits(chain.tip) == chain.tip.header.bits


def test_a_retarget_is_clamped() -> None:
    params = dataclasses.replace(LOCAL, retarget_interval=10, target_spacing=60)
    fast = fresh(params)
    grow(fast, 9)  # a second apart: far too fast, the target falls by 4 at most
    assert fast.next_bits(fast.tip) == bits_from_target(params.pow_limit_target // 4)
    slow = fresh(params)
    for _ in range(9):  # far too slow: the target would rise past the limit
        slow.accept_block(next_block(slow, time=slow.tip.header.time + 600), NOW)
    assert slow.next_bits(slow.tip) == params.pow_limit_bits


def test_locator_and_headers_after() -> None:
    chain = fresh()
    blocks = grow(chain, 30)
    locator = chain.locator()
    heights = [chain.get(h).height for h in locator]  # type: ignore[union-attr]
    assert heights == [30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 19, 15, 7, 0]
    assert chain.headers_after([blocks[4].hash], ZERO_HASH) == [b.header for b in blocks[5:]]
    assert chain.headers_after([blocks[4].hash], blocks[9].hash) == [b.header for b in blocks[5:10]]
    assert chain.headers_after([b"\x13" * 32], ZERO_HASH, limit=3) == [b.header for b in blocks[:3]]
    side = next_block(chain, parent=chain.get(blocks[20].hash), extra=b"side")
    chain.accept_block(side, NOW)
    assert chain.headers_after([side.hash, blocks[25].hash], ZERO_HASH) == [
        b.header for b in blocks[26:]
    ]


def test_blocks_to_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    source = fresh()
    blocks = grow(source, 6)
    chain = fresh()
    assert chain.blocks_to_fetch(10, set()) == []
    for block in blocks:
        chain.accept_header(block.header, NOW)
    assert chain.best_header.hash == blocks[-1].hash and chain.tip.height == 0
    assert [i.hash for i in chain.blocks_to_fetch(10, set())] == [b.hash for b in blocks]
    assert [i.hash for i in chain.blocks_to_fetch(2, {blocks[0].hash})] == [
        b.hash for b in blocks[1:3]
    ]
    chain.accept_block(blocks[2], NOW)  # out of order: kept, not connected
    assert chain.tip.height == 0
    assert [i.hash for i in chain.blocks_to_fetch(10, set())] == [
        blocks[i].hash for i in (0, 1, 3, 4, 5)
    ]
    monkeypatch.setattr(chain_module, "DOWNLOAD_WINDOW", 2)
    assert [i.hash for i in chain.blocks_to_fetch(10, set())] == [b.hash for b in blocks[:2]]
    chain.accept_block(blocks[0], NOW)
    update = chain.accept_block(blocks[1], NOW)
    assert update.connected == blocks[1:3] and chain.tip.height == 3
    assert [i.hash for i in chain.blocks_to_fetch(10, set())] == [b.hash for b in blocks[3:5]]


def paying_branch(count: int, key_seed: int) -> list[Block]:
    """count blocks from the genesis paying key_seed's key, each after the maturity also
    spending an earlier coinbase, so connecting and disconnecting them moves coins."""
    key = private_key(key_seed)
    builder = fresh()
    blocks: list[Block] = []
    for height in range(1, count + 1):
        txs = []
        if height > LOCAL.coinbase_maturity:
            coin = coinbase_coin(blocks[height - LOCAL.coinbase_maturity - 1])
            txs.append(spend([coin], [TxOut(coin[1].output.amount, lock_of(BOB))], key, LOCAL))
        blocks.append(next_block(builder, txs, lock=lock_of(key)))
        builder.accept_block(blocks[-1], NOW)
    return blocks


CHILD = """
import sys
from shoal.ledger.chain import Chain
from shoal.ledger.params import LOCAL
from shoal.ledger.primitives import decode_block
from shoal.ledger.store import SqliteStore

chain = Chain(LOCAL, SqliteStore(sys.argv[1]))
for line in open(sys.argv[2]):
    chain.accept_block(decode_block(bytes.fromhex(line)), float(sys.argv[3]))
    print(chain.tip.height, flush=True)
"""


@pytest.mark.parametrize("kill_after", [25, 45, 60, 62])
def test_a_kill_at_any_moment_leaves_a_consistent_state(tmp_path: Path, kill_after: int) -> None:
    losing, winning = paying_branch(30, 1), paying_branch(45, 2)
    feed = tmp_path / "blocks.hex"
    feed.write_text("".join(block.serialized.hex() + "\n" for block in losing + winning))
    path = tmp_path / "chain.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(feed), str(NOW)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    # One line a block: the kill lands in a later one; after 60 lines (the losing branch
    # and 30 of the winning) the next block sets off a reorganisation of 61 commits.
    for _ in range(kill_after):
        assert child.stdout.readline()
    if kill_after == 60:  # wait for the reorganisation to begin: the first block disconnected
        watcher = sqlite3.connect(path)
        deadline = time.monotonic() + 20
        while (
            watcher.execute("SELECT value FROM meta WHERE key = 'tip'").fetchone()[0]
            == losing[-1].hash
        ):
            assert time.monotonic() < deadline
        watcher.close()
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    chain = Chain(LOCAL, SqliteStore(path))
    if kill_after == 60:  # what left the active chain is told, for the mempool to take back
        assert chain.resumed.disconnected == losing[::-1]
        assert chain.resumed.connected == winning[:31]
    else:
        assert chain.resumed == ChainUpdate()
    active = [chain.block(chain.at_height(h).hash) for h in range(1, chain.tip.height + 1)]  # type: ignore[union-attr]
    assert chain.tip.height >= min(kill_after, 30) and None not in active
    assert chain.store.utxo() == fed(active).store.utxo()  # type: ignore[arg-type]
    assert chain.tip.hash in {block.hash for block in losing + winning}
    if kill_after == 60:  # the block that set off the reorganisation was kept with its first step
        assert chain.tip.hash == winning[30].hash
    chain.close()
