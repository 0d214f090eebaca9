"""BEP 44: arbitrary items in the DHT, immutable (keyed by the SHA-1 of their value) or
mutable (keyed by an Ed25519 public key and a salt, signed, with a sequence number).

A value is any bencoded value of at most 1,000 bytes. A mutable item's signature covers
"4:salt<len>:<salt>" (when there is a salt), "3:seqi<seq>e" and "1:v<the bencoded value>", so
libtorrent and every BEP 44 node check the same bytes. Stored items live two hours unless put
again; the store is bounded in total and per source.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from ..bencode import decode, encode
from ..identity import Identity, verify
from .krpc import KrpcError

MAX_VALUE = 1000
# The longest string that fits: bencoding adds its length and a colon ("996:").
MAX_TEXT = MAX_VALUE - len(b"996:")
MAX_SALT = 64
KEY_LENGTH = 32
SIGNATURE_LENGTH = 64
ITEM_LIFETIME = 2 * 3600.0
MAX_ITEMS = 2000
# New items one source may place; it can still refresh those it placed.
MAX_PER_SOURCE = 100
# The error codes of BEP 44.
VALUE_TOO_BIG = 205
INVALID_SIGNATURE = 206
SALT_TOO_BIG = 207
CAS_MISMATCH = 301
SEQUENCE_TOO_LOW = 302


class ItemError(KrpcError):
    """An item that is malformed, badly signed, or older than the one held (with its BEP 44
    error code)."""


@dataclass(frozen=True, slots=True)
class Item:
    """A stored value: immutable when key is None, otherwise signed by key."""

    encoded: bytes  # the bencoded value, at most MAX_VALUE bytes
    key: bytes | None = None
    salt: bytes = b""
    seq: int = 0
    signature: bytes = b""

    @property
    def value(self) -> Any:
        """The value, decoded."""
        return decode(self.encoded)

    @property
    def target(self) -> bytes:
        """The 20-byte DHT key it is stored under."""
        if self.key is None:
            return immutable_target(self.encoded)
        return mutable_target(self.key, self.salt)

    def fields(self) -> dict[bytes, Any]:
        """What a get reply carries of it (and a put sends, with the salt)."""
        if self.key is None:
            return {b"v": self.value}
        return {b"v": self.value, b"k": self.key, b"seq": self.seq, b"sig": self.signature}

    def put_args(self) -> dict[bytes, Any]:
        """The arguments of a put of it, but the token."""
        args = self.fields()
        if self.salt:
            args[b"salt"] = self.salt
        return args


def immutable_target(encoded: bytes) -> bytes:
    """The key of an immutable item: the SHA-1 of its bencoded value."""
    return hashlib.sha1(encoded).digest()


def mutable_target(key: bytes, salt: bytes = b"") -> bytes:
    """The key of a mutable item: the SHA-1 of its public key and salt."""
    return hashlib.sha1(key + salt).digest()


def signed_part(encoded: bytes, seq: int, salt: bytes) -> bytes:
    """The bytes a mutable item's signature covers."""
    salted = b"4:salt%d:%s" % (len(salt), salt) if salt else b""
    return salted + b"3:seqi%de1:v" % seq + encoded


def immutable(value: Any) -> Item:
    """An immutable item of value; ItemError if it encodes to more than 1,000 bytes."""
    return Item(_encoded(value))


def mutable(identity: Identity, value: Any, seq: int, salt: bytes = b"") -> Item:
    """A mutable item of value signed by identity, with this sequence number and salt."""
    encoded = _encoded(value)
    _check_salt(salt)
    _check_seq(seq)
    signature = identity.sign(signed_part(encoded, seq, salt))
    return Item(encoded, bytes.fromhex(identity.public_key_hex), salt, seq, signature)


def parse_item(values: dict[bytes, Any], *, salt: bytes | None = None) -> Item | None:
    """The item in a put's arguments or a get's reply, signature checked; None if there is
    no value; ItemError if it is malformed or badly signed. A get reply carries no salt: the
    asker, who made the target from it, says which."""
    if b"v" not in values:
        return None
    try:
        encoded = _encoded(values[b"v"])
    except TypeError:
        raise ItemError("the value is not bencodable") from None
    key = values.get(b"k")
    if key is None:
        return Item(encoded)
    if salt is None:
        salt = values.get(b"salt", b"")
        if not isinstance(salt, bytes):
            raise ItemError("the salt is not a string")
    _check_salt(salt)
    seq, signature = values.get(b"seq"), values.get(b"sig")
    if not isinstance(key, bytes) or len(key) != KEY_LENGTH:
        raise ItemError("the public key is not 32 bytes")
    if not isinstance(seq, int):
        raise ItemError("the sequence number is missing")
    _check_seq(seq)
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LENGTH:
        raise ItemError("the signature is not 64 bytes", INVALID_SIGNATURE)
    if not verify(key.hex(), signed_part(encoded, seq, salt), signature):
        raise ItemError("the signature does not match", INVALID_SIGNATURE)
    return Item(encoded, key, salt, seq, signature)


def _encoded(value: Any) -> bytes:
    encoded = encode(value)
    if len(encoded) > MAX_VALUE:
        raise ItemError(f"a value is at most {MAX_VALUE} bytes bencoded", VALUE_TOO_BIG)
    return encoded


def _check_salt(salt: bytes) -> None:
    if len(salt) > MAX_SALT:
        raise ItemError(f"a salt is at most {MAX_SALT} bytes", SALT_TOO_BIG)


def _check_seq(seq: int) -> None:
    if not 0 <= seq < 2**63:
        raise ItemError("the sequence number is out of range")


@dataclass(slots=True)
class _Held:
    item: Item
    expiry: float
    source: bytes


class ItemStore:
    """Items put to this node, each for ITEM_LIFETIME unless put again; bounded in total and
    by source (an IP, or an address on loopback), and a full store keeps what it has."""

    def __init__(self) -> None:
        self._items: dict[bytes, _Held] = {}
        self._per_source: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Item, source: bytes, now: float, *, cas: int | None = None) -> None:
        """Store a verified item; ItemError (with its code) for an older mutable one, or when
        cas is not the sequence number held."""
        target = item.target
        held = self._items.get(target)
        if held is not None and held.expiry <= now:
            self._forget(target)
            held = None
        if held is None:
            if cas is not None and cas != 0:
                raise ItemError("no item is held to compare with", CAS_MISMATCH)
            if len(self._items) >= MAX_ITEMS:
                self.expire(now)
            if len(self._items) >= MAX_ITEMS or self._per_source.get(source, 0) >= MAX_PER_SOURCE:
                return
            self._per_source[source] = self._per_source.get(source, 0) + 1
            self._items[target] = _Held(item, now + ITEM_LIFETIME, source)
            return
        if item.key is not None:
            if cas is not None and cas != held.item.seq:
                raise ItemError("the sequence number held is another", CAS_MISMATCH)
            if item.seq < held.item.seq or (
                item.seq == held.item.seq and item.encoded != held.item.encoded
            ):
                raise ItemError("a newer item is held already", SEQUENCE_TOO_LOW)
            held.item = item
        held.expiry = now + ITEM_LIFETIME

    def get(self, target: bytes, now: float) -> Item | None:
        """The live item under target, if any."""
        held = self._items.get(target)
        return held.item if held is not None and held.expiry > now else None

    def expire(self, now: float) -> None:
        """Forget items not put again in time."""
        for target in [t for t, held in self._items.items() if held.expiry <= now]:
            self._forget(target)

    def _forget(self, target: bytes) -> None:
        held = self._items.pop(target)
        left = self._per_source[held.source] - 1
        if left:
            self._per_source[held.source] = left
        else:
            del self._per_source[held.source]
