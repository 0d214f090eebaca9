"""Bech32m as BIP-350 specifies it (its test vectors), and the ledger's addresses built on it:
every key round-trips, and any text either decodes or raises ValueError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.ledger import bech32m
from shoal.ledger.bech32m import (
    address_from_key,
    convertbits,
    decode,
    encode,
    key_from_address,
    lock_from_address,
)
from shoal.ledger.params import LOCAL, MAIN
from shoal.ledger.primitives import key_lock

# BIP-350: strings with a valid Bech32m checksum.
VALID = [
    "A1LQFN3A",
    "a1lqfn3a",
    "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11sg7hg6",
    "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
    "11llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllludsr8",
    "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
    "?1v759aa",
]

# BIP-350: strings that are not valid Bech32m, and why.
INVALID = [
    "\x201xj0phk",  # HRP character out of range
    "\x7f1g6xzxy",
    "\x801vctc34",
    "an84characterslonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11d6pts4",
    "qyrz8wqd2c9m",  # no separator
    "1qyrz8wqd2c9m",  # empty HRP
    "y1b0jsk6g",  # invalid data character
    "lt1igcx5c0",
    "in1muywd",  # checksum too short
    "mm1crxm3i",  # invalid character in checksum
    "au1s5cgom",
    "M1VUXWEZ",  # checksum calculated with the upper-case HRP
    "16plkw9",  # empty HRP
    "1p2gdwpf",
    # BIP-173's valid Bech32 strings: no string is valid as both.
    "A12UEL5L",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
]


@pytest.mark.parametrize("text", VALID)
def test_bip350_valid_strings_decode_and_encode_back(text: str) -> None:
    hrp, data = decode(text)
    assert encode(hrp, data) == text.lower()


@pytest.mark.parametrize("text", INVALID)
def test_bip350_invalid_strings_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        decode(text)


# BIP-350's segwit vectors of version 1 and above, as (address, witness program).
SEGWIT = [
    (
        "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
        "751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6",
    ),
    ("BC1SW50QGDZ25J", "751e"),
    ("bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "751e76e8199196d454941c45d1b3a323"),
    (
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
        "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
    ),
]


@pytest.mark.parametrize(("address", "program"), SEGWIT)
def test_bip350_segwit_programs(address: str, program: str) -> None:
    _, data = decode(address)
    assert bytes(convertbits(data[1:], 5, 8, pad=False)).hex() == program


@pytest.mark.parametrize(
    "address",
    [
        # more than 4 bits of zero padding, and non-zero padding, in the 8-to-5 conversion
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf",
        "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vpggkg4j",
    ],
)
def test_bip350_bad_padding_is_refused(address: str) -> None:
    _, data = decode(address)
    with pytest.raises(ValueError, match="padding"):
        convertbits(data[1:], 5, 8, pad=False)


def test_bech32_checksum_is_not_bech32m() -> None:
    with pytest.raises(ValueError, match="checksum"):
        decode("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd")


KEY = bytes(range(32))


def test_address_pays_the_key_on_its_chain_only() -> None:
    address = address_from_key(KEY, LOCAL)
    assert address.startswith("lshoal1p")  # p: witness version 1
    assert lock_from_address(address, LOCAL) == key_lock(KEY)
    assert lock_from_address(address.upper(), LOCAL) == key_lock(KEY)
    assert lock_from_address(f"  {address}\n", LOCAL) == key_lock(KEY)
    with pytest.raises(ValueError, match=r"is not a main address: it is for another chain"):
        lock_from_address(address, MAIN)


def test_a_mistyped_address_says_its_checksum_is_wrong() -> None:
    address = address_from_key(KEY, LOCAL)
    typo = address[:20] + ("q" if address[20] != "q" else "p") + address[21:]
    with pytest.raises(
        ValueError, match=r"^'lshoal1.*' is not a local address: its checksum"
    ) as info:
        lock_from_address(typo, LOCAL)
    assert str(info.value).endswith(".")
    assert "\n" not in str(info.value)


def test_wrong_length_and_version_are_refused() -> None:
    short = encode("lshoal", [1, *convertbits(KEY[:20], 8, 5, pad=True)])
    with pytest.raises(ValueError, match="holds 20 bytes"):
        lock_from_address(short, LOCAL)
    version_zero = encode("lshoal", [0, *convertbits(KEY, 8, 5, pad=True)])
    with pytest.raises(ValueError, match="version is not 1"):
        lock_from_address(version_zero, LOCAL)
    with pytest.raises(ValueError, match="32 bytes"):
        address_from_key(KEY[:31], LOCAL)


def test_encode_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ValueError):
        encode("a", [32])
    with pytest.raises(ValueError):
        encode("", [])
    with pytest.raises(ValueError):
        encode("a", [0] * bech32m.MAX_LENGTH)


@given(st.binary(min_size=32, max_size=32))
def test_any_key_round_trips(key: bytes) -> None:
    for params in (LOCAL, MAIN):
        address = address_from_key(key, params)
        assert len(address) <= bech32m.MAX_LENGTH
        assert key_from_address(address, params) == key


@given(st.text(max_size=120))
def test_any_text_decodes_or_raises_value_error(text: str) -> None:
    try:
        lock_from_address(text, LOCAL)
    except ValueError as error:
        assert str(error).endswith(".")


@given(st.lists(st.integers(0, 31), max_size=60), st.text("abcdefgh1?", min_size=1, max_size=20))
def test_any_data_round_trips(data: list[int], hrp: str) -> None:
    assert decode(encode(hrp, data)) == (hrp, data)


@given(st.binary(max_size=64))
def test_convertbits_round_trips(raw: bytes) -> None:
    assert bytes(convertbits(convertbits(raw, 8, 5, pad=True), 5, 8, pad=False)) == raw
