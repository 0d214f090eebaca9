"""The keyword index in the DHT (after eMule's Kad): signed listings stored under the keys of
their name's words, on the nodes closest to each key.

A listing says: this info-hash, this name, this size, these few files, published at this time
by this Ed25519 key. It travels bencoded and signed over b"shoal-dht-listing\\0" +
bencode(the fields), and is stored only under the keys of its own name's words, so a
publisher cannot file it under words it does not contain.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, replace
from typing import Any

from ..bencode import encode
from ..identity import Identity, verify
from ..words import name_matches, words

SIGNED_CONTEXT = b"shoal-dht-listing\0"
KEY_CONTEXT = b"shoal-keyword\0"
# Words shorter than this, and the commonest, are not worth a key: every listing has them.
MIN_WORD = 3
STOP_WORDS = frozenset({"the", "and", "for", "with", "from", "mp3", "avi", "mkv", "mp4", "zip"})
MAX_KEYWORDS = 8
# A listing must fit a datagram with room to spare: a short name and a few files.
MAX_NAME = 200
MAX_FILES = 4
MAX_FILE_NAME = 40
LISTING_LIFETIME = 3600.0
REPUBLISH_INTERVAL = 1800.0
MAX_KEYS = 2000
MAX_PER_KEY = 100
MAX_PER_PUBLISHER = 200
# Listings in one reply: a datagram holds a few.
MAX_REPLY_LISTINGS = 4


class ListingError(ValueError):
    """A listing that is malformed, unsigned or not for the key it came with."""


@dataclass(frozen=True, slots=True)
class DhtListing:
    """A listing as published in the DHT."""

    info_hash: bytes
    name: str
    size: int
    files: tuple[str, ...]
    published_at: int
    public_key: bytes
    signature: bytes

    def fields(self) -> dict[bytes, Any]:
        """What the signature covers."""
        return {
            b"ih": self.info_hash,
            b"n": self.name.encode(),
            b"s": self.size,
            b"f": [name.encode() for name in self.files],
            b"t": self.published_at,
        }

    def to_value(self) -> dict[bytes, Any]:
        """The listing as a bencodable value, for KRPC."""
        return {**self.fields(), b"k": self.public_key, b"sig": self.signature}

    def keyword_keys(self) -> list[bytes]:
        """The keyword keys it is stored under."""
        return [keyword_key(word) for word in keywords(self.name)]


def keywords(name: str) -> list[str]:
    """The words of a name worth a key: long enough, not too common, each once."""
    chosen: list[str] = []
    for word in words(name):
        if len(word) >= MIN_WORD and word not in STOP_WORDS and word not in chosen:
            chosen.append(word)
    return chosen[:MAX_KEYWORDS]


def keyword_key(word: str) -> bytes:
    """The 160-bit DHT key of a word."""
    return hashlib.sha1(KEY_CONTEXT + word.lower().encode()).digest()


def sign_listing(
    identity: Identity,
    info_hash: bytes,
    name: str,
    size: int,
    files: list[str],
    published_at: int,
) -> DhtListing:
    """A listing signed by identity, cut to fit a datagram."""
    unsigned = DhtListing(
        info_hash,
        _cut(name, MAX_NAME),
        size,
        tuple(_cut(file, MAX_FILE_NAME) for file in files[:MAX_FILES]),
        published_at,
        bytes.fromhex(identity.public_key_hex),
        b"",
    )
    signature = identity.sign(SIGNED_CONTEXT + encode(unsigned.fields()))
    return replace(unsigned, signature=signature)


def _cut(text: str, longest: int) -> str:
    """text cut to at most longest bytes of UTF-8, on a character boundary."""
    return text.encode()[:longest].decode("utf-8", "ignore")


def parse_listing(value: object) -> DhtListing:
    """A listing from KRPC, its signature checked; ListingError if anything is wrong."""
    if not isinstance(value, dict):
        raise ListingError("a listing is a dictionary")
    info_hash, name, size, files, published_at, key, signature = (
        value.get(field) for field in (b"ih", b"n", b"s", b"f", b"t", b"k", b"sig")
    )
    if not isinstance(info_hash, bytes) or len(info_hash) != 20:
        raise ListingError("the info-hash is not 20 bytes")
    if not isinstance(name, bytes) or not 0 < len(name) <= MAX_NAME:
        raise ListingError("the name is missing or too long")
    if not isinstance(size, int) or not 0 <= size < 2**63:
        raise ListingError("the size is not a number of bytes")
    if (
        not isinstance(files, list)
        or len(files) > MAX_FILES
        or not all(isinstance(f, bytes) and len(f) <= MAX_FILE_NAME for f in files)
    ):
        raise ListingError("the file names are malformed")
    # Only its publisher can replace a listing, so a time in the future harms nobody else.
    if not isinstance(published_at, int) or not 0 <= published_at < 2**63:
        raise ListingError("the publication time is malformed")
    if not isinstance(key, bytes) or not isinstance(signature, bytes):
        raise ListingError("the listing is not signed")
    try:
        listing = DhtListing(
            info_hash,
            name.decode(),
            size,
            tuple(f.decode() for f in files),
            published_at,
            key,
            signature,
        )
    except UnicodeDecodeError:
        raise ListingError("a name is not UTF-8") from None
    if not verify(key.hex(), SIGNED_CONTEXT + encode(listing.fields()), signature):
        raise ListingError("the signature does not match")
    return listing


def matches(listing: DhtListing, query: list[str]) -> bool:
    """Whether every word of the query is a word of the listing's name (the last as a prefix,
    as the hub matches)."""
    return name_matches(listing.name, query)


class ListingStore:
    """Listings published to this node, by keyword key, each expiring unless republished."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        # key -> (info-hash, publisher) -> (listing, expiry)
        self._keys: dict[bytes, dict[tuple[bytes, bytes], tuple[DhtListing, float]]] = {}
        self._per_publisher: dict[bytes, int] = {}

    def __len__(self) -> int:
        return sum(len(listings) for listings in self._keys.values())

    def put(self, key: bytes, listing: DhtListing, now: float) -> None:
        """Store a verified listing under key (ListingError if the key is not one of its
        words', or if it is older than the one held); full stores keep what they have."""
        if key not in listing.keyword_keys():
            raise ListingError("the listing's name has no word with that key")
        listings = self._keys.get(key)
        if listings is None:
            if len(self._keys) >= MAX_KEYS:
                self.expire(now)
                if len(self._keys) >= MAX_KEYS:
                    return
            listings = self._keys[key] = {}
        slot = (listing.info_hash, listing.public_key)
        held = listings.get(slot)
        if held is not None:
            if held[0].published_at > listing.published_at:
                raise ListingError("a newer listing is held already")
        elif (
            len(listings) >= MAX_PER_KEY
            or self._per_publisher.get(listing.public_key, 0) >= MAX_PER_PUBLISHER
        ):
            return
        else:
            self._per_publisher[listing.public_key] = (
                self._per_publisher.get(listing.public_key, 0) + 1
            )
        listings[slot] = (listing, now + LISTING_LIFETIME)

    def get(self, key: bytes, now: float) -> list[DhtListing]:
        """Up to MAX_REPLY_LISTINGS live listings under key, a random sample if more."""
        listings = [listing for listing, expiry in self._keys.get(key, {}).values() if expiry > now]
        if len(listings) > MAX_REPLY_LISTINGS:
            listings = self._rng.sample(listings, MAX_REPLY_LISTINGS)
        return listings

    def expire(self, now: float) -> None:
        """Forget listings not republished in time."""
        for key in list(self._keys):
            listings = self._keys[key]
            for slot in [s for s, (_l, expiry) in listings.items() if expiry <= now]:
                publisher = slot[1]
                self._per_publisher[publisher] -= 1
                if not self._per_publisher[publisher]:
                    del self._per_publisher[publisher]
                del listings[slot]
            if not listings:
                del self._keys[key]
