"""Addresses as text: Bech32m (BIP-350, the checksum of BIP-173 with a new constant) over a
witness version of 1 and an Ed25519 public key, as Bitcoin writes its taproot addresses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..errors import inert
from .params import ChainParams
from .primitives import key_lock

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_VALUES = {char: value for value, char in enumerate(CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
BECH32M_CONST = 0x2BC830A3
CHECKSUM_LENGTH = 6
MAX_LENGTH = 90  # BIP-173's bound on the whole string
MAX_HRP_LENGTH = 83
WITNESS_VERSION = 1  # the version our key addresses carry, as taproot's
KEY_SIZE = 32
_SHOWN = 100  # characters of a bad address quoted back in an error


def _polymod(values: Iterable[int]) -> int:
    """The BCH checksum's remainder over values (BIP-173)."""
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for bit, generator in enumerate(_GENERATOR):
            if top >> bit & 1:
                checksum ^= generator
    return checksum


def _hrp_expand(hrp: str) -> list[int]:
    """The human-readable part as the checksum covers it: high bits, a zero, low bits."""
    return [ord(char) >> 5 for char in hrp] + [0] + [ord(char) & 31 for char in hrp]


def _check_hrp(hrp: str) -> None:
    """ValueError unless hrp is 1 to 83 printable ASCII characters."""
    if not 1 <= len(hrp) <= MAX_HRP_LENGTH:
        raise ValueError(f"a human-readable part has 1 to {MAX_HRP_LENGTH} characters")
    if any(not 33 <= ord(char) <= 126 for char in hrp):
        raise ValueError("a human-readable part has only printable ASCII characters")


def encode(hrp: str, data: Sequence[int]) -> str:
    """hrp, the separator "1", data (5-bit values) and the Bech32m checksum, in lower case."""
    _check_hrp(hrp)
    hrp = hrp.lower()
    if any(not 0 <= value < 32 for value in data):
        raise ValueError("Bech32m data are 5-bit values")
    if len(hrp) + 1 + len(data) + CHECKSUM_LENGTH > MAX_LENGTH:
        raise ValueError(f"a Bech32m string has at most {MAX_LENGTH} characters")
    remainder = _polymod([*_hrp_expand(hrp), *data, *[0] * CHECKSUM_LENGTH]) ^ BECH32M_CONST
    checksum = [remainder >> 5 * (CHECKSUM_LENGTH - 1 - i) & 31 for i in range(CHECKSUM_LENGTH)]
    return hrp + "1" + "".join(CHARSET[value] for value in [*data, *checksum])


def decode(text: str) -> tuple[str, list[int]]:
    """The human-readable part (lower case) and the 5-bit data of a Bech32m string, checksum
    removed; ValueError saying what is wrong with it."""
    if len(text) > MAX_LENGTH:
        raise ValueError(f"it is longer than {MAX_LENGTH} characters")
    if text.lower() != text and text.upper() != text:
        raise ValueError("it mixes upper and lower case")
    text = text.lower()
    separator = text.rfind("1")
    if separator < 0:
        raise ValueError('it has no separator "1"')
    hrp, rest = text[:separator], text[separator + 1 :]
    _check_hrp(hrp)
    if len(rest) < CHECKSUM_LENGTH:
        raise ValueError("its checksum is too short")
    bad = next((char for char in rest if char not in _VALUES), None)
    if bad is not None:
        raise ValueError(f"{inert(bad)!r} is not a Bech32m character")
    data = [_VALUES[char] for char in rest]
    if _polymod([*_hrp_expand(hrp), *data]) != BECH32M_CONST:
        raise ValueError("its checksum is wrong (a mistyped character?)")
    return hrp, data[:-CHECKSUM_LENGTH]


def convertbits(data: Iterable[int], from_bits: int, to_bits: int, *, pad: bool) -> list[int]:
    """data regrouped from from_bits-bit to to_bits-bit values. With pad, the last group is
    filled with zeros; without, leftover bits must be fewer than from_bits and all zero (so
    each value has one encoding), else ValueError."""
    accumulator = bits = 0
    result = []
    mask = (1 << to_bits) - 1
    for value in data:
        if not 0 <= value < 1 << from_bits:
            raise ValueError(f"{value} is not a {from_bits}-bit value")
        accumulator = (accumulator << from_bits | value) & ((1 << (from_bits + to_bits)) - 1)
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            result.append(accumulator >> bits & mask)
    if pad:
        if bits:
            result.append(accumulator << (to_bits - bits) & mask)
    elif bits >= from_bits or accumulator << (to_bits - bits) & mask:
        raise ValueError("its padding bits are not zero")
    return result


def address_from_key(public_key: bytes, params: ChainParams) -> str:
    """The address that pays the holder of this 32-byte Ed25519 public key on params' chain."""
    if len(public_key) != KEY_SIZE:
        raise ValueError(f"an Ed25519 public key has {KEY_SIZE} bytes")
    return encode(
        params.address_prefix, [WITNESS_VERSION, *convertbits(public_key, 8, 5, pad=True)]
    )


def key_from_address(text: str, params: ChainParams) -> bytes:
    """The Ed25519 public key an address of params' chain pays; ValueError in one sentence."""
    shown = inert(text.strip()[:_SHOWN])
    try:
        hrp, data = decode(text.strip())
        if hrp != params.address_prefix:
            raise ValueError(
                f'it is for another chain (it starts "{hrp}1", not "{params.address_prefix}1")'
            )
        if not data or data[0] != WITNESS_VERSION:
            raise ValueError(f"its version is not {WITNESS_VERSION}")
        key = bytes(convertbits(data[1:], 5, 8, pad=False))
        if len(key) != KEY_SIZE:
            raise ValueError(f"it holds {len(key)} bytes, not a {KEY_SIZE}-byte key")
    except ValueError as error:
        raise ValueError(f"{shown!r} is not a {params.name} address: {error}.") from None
    return key


def lock_from_address(text: str, params: ChainParams) -> bytes:
    """The lock an output paying this address carries; ValueError in one plain sentence."""
    return key_lock(key_from_address(text, params))
