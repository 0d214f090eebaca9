"""The context-free consensus rules: each refusal gives its reason code, and what is valid
passes."""

from __future__ import annotations

import dataclasses

import pytest
from ledger_blocks import coinbase, lock_of, mine, private_key, spend, unsolved

from shoal.ledger.coins import Coin
from shoal.ledger.params import LOCAL, MAIN
from shoal.ledger.pow import bits_from_target
from shoal.ledger.primitives import (
    COIN,
    LOCK_BURN,
    MAX_MONEY,
    ZERO_HASH,
    Block,
    OutPoint,
    Transaction,
    TxOut,
)
from shoal.ledger.validation import (
    Invalid,
    check_block,
    check_block_at,
    check_coinbase_amount,
    check_inputs,
    check_transaction,
    tx_sigops,
)

ALICE = private_key(1)
BOB = private_key(2)
TIME = LOCAL.genesis_time + 60
FUNDING = OutPoint(b"\x11" * 32, 0)
FUNDED = Coin(TxOut(10 * COIN, lock_of(ALICE)), 1, False)


def payment(amount: int = 9 * COIN, lock_time: int = 0) -> Transaction:
    """Alice pays Bob from FUNDED."""
    return spend([(FUNDING, FUNDED)], [TxOut(amount, lock_of(BOB))], ALICE, LOCAL, lock_time)


def block_of(*transactions: Transaction, height: int = 1) -> Block:
    """A mined block at height: a coinbase paying the subsidy, then transactions."""
    first = coinbase(height, [TxOut(LOCAL.subsidy(height), lock_of(ALICE))])
    return mine(LOCAL.genesis.hash, [first, *transactions], TIME, LOCAL.pow_limit_bits)


def reason(error: pytest.ExceptionInfo[Invalid]) -> str:
    """The reason code of a caught Invalid."""
    return error.value.reason


def test_a_valid_block_and_payment_pass() -> None:
    tx = payment()
    block = block_of(tx)
    check_block(block, LOCAL)
    check_block_at(block, 1)
    assert check_inputs(tx, [FUNDED], 5, LOCAL) == COIN
    check_coinbase_amount(block, 1, COIN, LOCAL)
    assert tx_sigops(tx) == 1 and tx_sigops(block.transactions[0]) == 0


@pytest.mark.parametrize("params", [LOCAL, MAIN])
def test_the_genesis_block_is_well_formed_and_meets_its_proof_of_work(params) -> None:
    check_block(params.genesis, params)
    check_block_at(params.genesis, 0)


@pytest.mark.parametrize(
    ("tx", "code"),
    [
        (Transaction(1, (), (TxOut(1, lock_of(BOB)),), 0, ()), "bad-txns-vin-empty"),
        (Transaction(1, (FUNDING,), (), 0, (b"",)), "bad-txns-vout-empty"),
        (Transaction(1, (FUNDING,), (TxOut(1, lock_of(BOB)),), 0, ()), "bad-txns-witness-count"),
        (
            Transaction(1, (FUNDING,), (TxOut(1, lock_of(BOB)),), 0, (bytes(1_000_001),)),
            "bad-txns-oversize",
        ),
        (
            Transaction(1, (FUNDING,), (TxOut(MAX_MONEY + 1, lock_of(BOB)),), 0, (b"",)),
            "bad-txns-vout-toolarge",
        ),
        (
            Transaction(1, (FUNDING,), (TxOut(MAX_MONEY, lock_of(BOB)),) * 2, 0, (b"",)),
            "bad-txns-txouttotal-toolarge",
        ),
        (
            Transaction(1, (FUNDING, FUNDING), (TxOut(1, lock_of(BOB)),), 0, (b"", b"")),
            "bad-txns-inputs-duplicate",
        ),
        (coinbase(1, [TxOut(1, lock_of(BOB))], bytes(100)), "bad-cb-length"),
        (
            Transaction(
                1, (FUNDING, OutPoint(ZERO_HASH, 7)), (TxOut(1, lock_of(BOB)),), 0, (b"", b"")
            ),
            "bad-txns-prevout-null",
        ),
        (Transaction(1, (FUNDING,), (TxOut(1, b""),), 0, (b"",)), "bad-txns-lock"),
        (Transaction(1, (FUNDING,), (TxOut(1, b"\x07" + bytes(32)),), 0, (b"",)), "bad-txns-lock"),
        (Transaction(1, (FUNDING,), (TxOut(1, b"\x01" + bytes(31)),), 0, (b"",)), "bad-txns-lock"),
    ],
)
def test_check_transaction_refuses(tx: Transaction, code: str) -> None:
    with pytest.raises(Invalid) as error:
        check_transaction(tx)
    assert reason(error) == code and error.value.ban


def test_a_burn_output_and_a_short_coinbase_witness_are_fine() -> None:
    check_transaction(
        Transaction(1, (FUNDING,), (TxOut(0, bytes((LOCK_BURN,)) + b"memo"),), 0, (b"",))
    )
    check_transaction(coinbase(1, [TxOut(1, lock_of(BOB))], bytes(96)))


def test_immature_coinbase() -> None:
    young = Coin(FUNDED.output, 3, True)
    with pytest.raises(Invalid) as error:
        check_inputs(payment(), [young], 3 + LOCAL.coinbase_maturity - 1, LOCAL)
    assert reason(error) == "immature-coinbase"
    assert check_inputs(payment(), [young], 3 + LOCAL.coinbase_maturity, LOCAL) == COIN


def test_overspend() -> None:
    with pytest.raises(Invalid) as error:
        check_inputs(payment(10 * COIN + 1), [FUNDED], 5, LOCAL)
    assert reason(error) == "bad-txns-overspend"


def test_inputs_holding_more_than_all_money() -> None:
    rich = Coin(TxOut(MAX_MONEY + 1, lock_of(ALICE)), 1, False)
    with pytest.raises(Invalid) as error:
        check_inputs(payment(), [rich], 5, LOCAL)
    assert reason(error) == "bad-txns-inputvalues-outofrange"


def test_nonfinal_in_inputs_and_in_a_block() -> None:
    locked = payment(lock_time=6)
    with pytest.raises(Invalid) as error:
        check_inputs(locked, [FUNDED], 5, LOCAL)
    assert reason(error) == "bad-txns-nonfinal"
    assert check_inputs(locked, [FUNDED], 6, LOCAL) == COIN
    with pytest.raises(Invalid) as error:
        check_block_at(block_of(locked, height=5), 5)
    assert reason(error) == "bad-txns-nonfinal"


def test_bad_signatures() -> None:
    tx = payment()
    forged = dataclasses.replace(tx, witnesses=(bytes(64),))
    short = dataclasses.replace(tx, witnesses=(tx.witnesses[0][:63],))
    by_bob = spend([(FUNDING, FUNDED)], tx.outputs, BOB, LOCAL)
    other_amount = Coin(TxOut(11 * COIN, lock_of(ALICE)), 1, False)  # the signer saw 10 coins
    other_chain = spend(
        [(FUNDING, FUNDED)], tx.outputs, ALICE, dataclasses.replace(LOCAL, genesis_time=1)
    )
    for bad, coin in [
        (forged, FUNDED),
        (short, FUNDED),
        (by_bob, FUNDED),
        (tx, other_amount),
        (other_chain, FUNDED),
    ]:
        with pytest.raises(Invalid) as error:
            check_inputs(bad, [coin], 5, LOCAL)
        assert reason(error) == "bad-signature"


def test_a_burn_output_cannot_be_spent() -> None:
    burnt = Coin(TxOut(10 * COIN, bytes((LOCK_BURN,))), 1, False)
    with pytest.raises(Invalid) as error:
        check_inputs(payment(), [burnt], 5, LOCAL)
    assert reason(error) == "bad-txns-unspendable"


def test_bad_pow() -> None:
    block = block_of()
    for bad in [
        unsolved(block),
        mine(ZERO_HASH, block.transactions, TIME, bits_from_target(LOCAL.pow_limit << 1)),
        *(
            Block(dataclasses.replace(block.header, bits=bits), block.transactions)
            for bits in (0x04800001, 0xFF123456, 0)  # negative, overflowing, zero
        ),
    ]:
        with pytest.raises(Invalid) as error:
            check_block(bad, LOCAL)
        assert reason(error) == "bad-pow"


def test_bad_merkle() -> None:
    good = block_of(payment())
    swapped = mine(
        ZERO_HASH,
        good.transactions[:1],
        TIME,
        LOCAL.pow_limit_bits,
        merkle_root=good.header.merkle_root,
    )
    with pytest.raises(Invalid) as error:
        check_block(swapped, LOCAL)
    assert reason(error) == "bad-merkle"


def test_bad_block_length() -> None:
    small = dataclasses.replace(LOCAL, max_block_size=200)
    with pytest.raises(Invalid) as error:
        check_block(block_of(payment()), small)
    assert reason(error) == "bad-blk-length"
    with pytest.raises(Invalid) as error:
        check_block(mine(ZERO_HASH, [], TIME, LOCAL.pow_limit_bits), LOCAL)
    assert reason(error) == "bad-blk-length"
    # A junk body is refused for its size before its merkle root is computed.
    good = block_of()
    junk = dataclasses.replace(good, transactions=(*good.transactions, payment(), payment(1)))
    with pytest.raises(Invalid) as error:
        check_block(junk, small)
    assert reason(error) == "bad-blk-length"


def test_coinbase_missing_and_multiple() -> None:
    with pytest.raises(Invalid) as error:
        check_block(mine(ZERO_HASH, [payment()], TIME, LOCAL.pow_limit_bits), LOCAL)
    assert reason(error) == "bad-cb-missing"
    second = coinbase(1, [TxOut(1, lock_of(BOB))], b"again")
    with pytest.raises(Invalid) as error:
        check_block(block_of(second), LOCAL)
    assert reason(error) == "bad-cb-multiple"


def test_a_bad_transaction_fails_its_block() -> None:
    empty_outputs = Transaction(1, (FUNDING,), (), 0, (b"",))
    with pytest.raises(Invalid) as error:
        check_block(block_of(empty_outputs), LOCAL)
    assert reason(error) == "bad-txns-vout-empty"


def test_duplicate_transactions() -> None:
    tx = payment()
    with pytest.raises(Invalid) as error:
        check_block(block_of(tx, tx), LOCAL)
    assert reason(error) == "bad-txns-duplicate"
    resigned = dataclasses.replace(tx, witnesses=(bytes(64),))  # same txid, other wtxid
    with pytest.raises(Invalid) as error:
        check_block(block_of(tx, resigned), LOCAL)
    assert reason(error) == "bad-txns-duplicate"


def test_sigops() -> None:
    two_inputs = spend(
        [(FUNDING, FUNDED), (OutPoint(b"\x22" * 32, 1), FUNDED)],
        [TxOut(1, lock_of(BOB))],
        ALICE,
        LOCAL,
    )
    assert tx_sigops(two_inputs) == 2
    check_block(block_of(two_inputs), dataclasses.replace(LOCAL, max_block_sigops=2))
    with pytest.raises(Invalid) as error:
        check_block(block_of(two_inputs), dataclasses.replace(LOCAL, max_block_sigops=1))
    assert reason(error) == "bad-blk-sigops"


def test_coinbase_height() -> None:
    with pytest.raises(Invalid) as error:
        check_block_at(block_of(height=2), 3)
    assert reason(error) == "bad-cb-height"


def test_coinbase_amount() -> None:
    block = block_of(payment())
    check_coinbase_amount(block, 1, 0, LOCAL)
    with pytest.raises(Invalid) as error:
        check_coinbase_amount(block, LOCAL.halving_interval, 0, LOCAL)
    assert reason(error) == "bad-cb-amount"
    check_coinbase_amount(block, LOCAL.halving_interval, LOCAL.subsidy(1) // 2, LOCAL)
