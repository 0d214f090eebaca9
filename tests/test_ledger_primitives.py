"""Properties of the ledger's binary forms, merkle roots and compact targets: every object
round-trips, any bytes decode to one canonical object or raise DecodeError, and the retarget
stays in its clamps."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.ledger.encoding import DecodeError, Reader, compact_size, u32
from shoal.ledger.pow import bits_from_target, retarget, target_from_bits
from shoal.ledger.primitives import (
    MAX_LOCK,
    MAX_WITNESS,
    ZERO_HASH,
    Block,
    BlockHeader,
    OutPoint,
    Transaction,
    TxOut,
    decode_block,
    decode_header,
    decode_transaction,
    merkle_root,
    sha256d,
    signature_messages,
)

u32s = st.integers(0, 2**32 - 1)
hashes = st.binary(min_size=32, max_size=32)
outpoints = st.builds(OutPoint, hashes, u32s)
outputs = st.builds(TxOut, st.integers(0, 2**64 - 1), st.binary(max_size=MAX_LOCK))
witness = st.one_of(st.binary(max_size=80), st.binary(min_size=MAX_WITNESS, max_size=MAX_WITNESS))


@st.composite
def transactions(draw: st.DrawFn) -> Transaction:
    """Any transaction the decoder should accept."""
    inputs = tuple(draw(st.lists(outpoints, min_size=1, max_size=4)))
    return Transaction(
        draw(u32s),
        inputs,
        tuple(draw(st.lists(outputs, max_size=4))),
        draw(u32s),
        tuple(draw(witness) for _ in inputs),
    )


headers = st.builds(BlockHeader, u32s, hashes, hashes, u32s, u32s, u32s)
blocks = st.builds(Block, headers, st.lists(transactions(), min_size=1, max_size=3).map(tuple))
decoders = [decode_transaction, decode_header, decode_block]


@given(transactions())
def test_a_transaction_round_trips(tx: Transaction) -> None:
    again = decode_transaction(tx.serialized)
    assert again == tx and again.txid == tx.txid and again.wtxid == tx.wtxid


@given(headers)
def test_a_header_round_trips(header: BlockHeader) -> None:
    assert len(header.serialize()) == 80
    assert decode_header(header.serialize()) == header


@given(blocks)
def test_a_block_round_trips(block: Block) -> None:
    assert decode_block(block.serialized) == block


@pytest.mark.parametrize("decode", decoders)
@given(data=st.binary(max_size=400))
def test_any_bytes_decode_canonically_or_raise_decode_error(decode: object, data: bytes) -> None:
    assert callable(decode)
    try:
        value = decode(data)
    except DecodeError:
        return
    encoded = value.serialize() if isinstance(value, BlockHeader) else value.serialized
    assert encoded == data  # one object, one encoding


@given(blocks, st.data())
def test_a_damaged_block_decodes_canonically_or_raises(block: Block, data: st.DataObject) -> None:
    raw = bytearray(block.serialized)
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for damaged in (bytes(raw), bytes(raw[:cut])):
        try:
            again = decode_block(damaged)
        except DecodeError:
            continue
        assert again.serialized == damaged


@given(st.integers(0, 2**64 - 1))
def test_counts_round_trip(number: int) -> None:
    reader = Reader(compact_size(number))
    assert reader.count(2**64) == number
    reader.end()


@pytest.mark.parametrize(
    "encoded",
    [
        b"\xfd\x10\x00",
        b"\xfd\xfc\x00",
        b"\xfe\xff\xff\x00\x00",
        b"\xff" + (2**32 - 1).to_bytes(8, "little"),
    ],
)
def test_counts_not_in_their_shortest_form_are_refused(encoded: bytes) -> None:
    with pytest.raises(DecodeError, match="shortest form"):
        Reader(encoded).count(2**64)


@given(transactions())
def test_a_transaction_with_a_long_form_count_is_refused(tx: Transaction) -> None:
    raw = tx.serialized
    count = len(tx.inputs)  # one byte after the 4-byte version
    longer = raw[:4] + b"\xfd" + count.to_bytes(2, "little") + raw[5:]
    with pytest.raises(DecodeError):
        decode_transaction(longer)


def test_counts_over_their_limit_are_refused_before_reading() -> None:
    huge = (1).to_bytes(4, "little") + compact_size(10**9)
    with pytest.raises(DecodeError, match="over the limit"):
        decode_transaction(huge)


def _pair(left: bytes, right: bytes) -> bytes:
    return sha256d(b"\x01" + left + right)


@given(st.lists(hashes, min_size=1, max_size=40, unique=True))
def test_merkle_root_properties(leaves: list[bytes]) -> None:
    root = merkle_root(leaves)
    assert len(root) == 32
    if len(leaves) == 1:
        assert root == leaves[0]
    else:
        # another leaf, another order or a repeated last leaf all change the root
        changed = [*leaves[:-1], sha256d(leaves[-1])]
        assert merkle_root(changed) != root
        assert merkle_root(leaves[::-1]) != root
        assert merkle_root([*leaves, leaves[-1]]) != root
        assert merkle_root(leaves[:-1]) != root


def test_merkle_root_shape() -> None:
    a, b, c = (bytes([n]) * 32 for n in (1, 2, 3))
    assert merkle_root([]) == ZERO_HASH
    assert merkle_root([a, b]) == _pair(a, b)
    assert merkle_root([a, b, c]) == _pair(_pair(a, b), c)  # c carried up unpaired


@given(st.integers(1, 2**256 - 1))
def test_a_target_survives_its_compact_form_rounded_down(target: int) -> None:
    bits = bits_from_target(target)
    rounded = target_from_bits(bits)
    assert rounded <= target
    assert target - rounded < 1 << max(0, target.bit_length() - 15)  # 15+ bits kept
    assert bits_from_target(rounded) == bits  # and the compact form is its own fixed point


@given(u32s)
def test_any_compact_form_decodes_or_raises_value_error(bits: int) -> None:
    try:
        target = target_from_bits(bits)
    except ValueError:
        return
    assert 0 <= target < 2**256


LIMIT = (1 << 252) - 1


@given(st.integers(1, LIMIT), st.integers(-(10**6), 10**7), st.integers(4, 10**6))
def test_retarget_clamps(old: int, actual: int, wanted: int) -> None:
    new = retarget(old, actual, wanted, LIMIT)
    assert 0 <= new <= LIMIT
    assert new <= old * 4
    assert new >= min(old * (wanted // 4) // wanted, LIMIT)
    assert new == retarget(old, min(max(actual, wanted // 4), wanted * 4), wanted, LIMIT)
    assert retarget(old, actual + 1, wanted, LIMIT) >= new  # slower blocks never make it harder


@given(transactions(), st.binary(min_size=32, max_size=32))
def test_each_signature_message_hashes_the_chain_the_body_the_spent_outputs_and_its_index(
    tx: Transaction, chain_id: bytes
) -> None:
    spent = list(tx.outputs[:1]) * len(tx.inputs)
    shared = b"shoal/sighash/1" + chain_id + tx.body + b"".join(o.serialize() for o in spent)
    expected = [hashlib.sha256(shared + u32(i)).digest() for i in range(len(tx.inputs))]
    assert signature_messages(tx, spent, chain_id) == expected
