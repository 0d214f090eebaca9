"""Signed listings: what a node tells the hub it shares, and how it takes that back.

A listing is signed with Ed25519 over b"shoal-publish\\0" + bencode(listing), a withdrawal
over b"shoal-withdraw\\0" + bencode({"info_hash", "timestamp"}); bencode makes the bytes
canonical whatever order the JSON keys came in.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from shoal.bencode import encode
from shoal.errors import ShoalError
from shoal.identity import Identity, public_key_problem, verify

__all__ = [
    "DEFAULT_TTL",
    "MAX_CLOCK_SKEW",
    "MAX_TTL",
    "PUBLISH_CONTEXT",
    "WITHDRAW_CONTEXT",
    "Listing",
    "ListingError",
    "ListingFile",
    "ListingForbidden",
    "Withdrawal",
    "parse_listing",
    "parse_publish",
    "parse_withdraw",
    "sign_listing",
    "sign_withdrawal",
    "withdrawal_bytes",
]

PUBLISH_CONTEXT = b"shoal-publish\0"
WITHDRAW_CONTEXT = b"shoal-withdraw\0"
DEFAULT_TTL = 3600
MAX_TTL = 86400
# How far a listing's own clock may be from the hub's, in seconds.
MAX_CLOCK_SKEW = 600
MAX_FILES = 10_000
MAX_NAME = 1024
MAX_PATH = 4096
# Sizes are SQLite integers.
MAX_SIZE = 2**63 - 1

_INFO_HASH = re.compile(r"[0-9a-f]{40}")
_PUBLIC_KEY = re.compile(r"[0-9a-f]{64}")
_SIGNATURE = re.compile(r"[0-9a-fA-F]{128}")
_LISTING_KEYS = {"info_hash", "name", "size", "files", "published_at", "ttl"}
_REQUIRED_KEYS = _LISTING_KEYS - {"ttl"}


class ListingError(ShoalError):
    """A publish or withdraw request is malformed (an HTTP 400)."""


class ListingForbidden(ShoalError):
    """A publish or withdraw request is well formed but not acceptable (an HTTP 403)."""


@dataclass(frozen=True, slots=True)
class ListingFile:
    """One file of a listed torrent, its path joined with '/'."""

    path: str
    size: int


@dataclass(frozen=True, slots=True)
class Listing:
    """What one key says about one torrent; ttl None means it was not given (DEFAULT_TTL)."""

    info_hash: str
    name: str
    size: int
    files: tuple[ListingFile, ...]
    published_at: int
    ttl: int | None = None

    @property
    def expires_at(self) -> int:
        """Unix time after which the listing no longer counts."""
        return self.published_at + (DEFAULT_TTL if self.ttl is None else self.ttl)

    def to_json(self) -> dict[str, Any]:
        """The listing as a JSON object, exactly the fields that are signed."""
        listing: dict[str, Any] = {
            "info_hash": self.info_hash,
            "name": self.name,
            "size": self.size,
            "files": [{"path": file.path, "size": file.size} for file in self.files],
            "published_at": self.published_at,
        }
        if self.ttl is not None:
            listing["ttl"] = self.ttl
        return listing

    def signed_bytes(self) -> bytes:
        """The bytes a publisher signs."""
        return PUBLISH_CONTEXT + encode(self.to_json())


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """A key's request to drop its listing of one torrent."""

    info_hash: str
    public_key: str
    timestamp: int


def withdrawal_bytes(info_hash: str, timestamp: int) -> bytes:
    """The bytes a withdrawing publisher signs."""
    return WITHDRAW_CONTEXT + encode({"info_hash": info_hash, "timestamp": timestamp})


def sign_listing(identity: Identity, listing: Listing) -> dict[str, Any]:
    """The JSON body of POST /index/publish for listing."""
    return {
        "listing": listing.to_json(),
        "public_key": identity.public_key_hex,
        "signature": identity.sign(listing.signed_bytes()).hex(),
    }


def sign_withdrawal(identity: Identity, info_hash: str, timestamp: int) -> dict[str, Any]:
    """The JSON body of POST /index/withdraw."""
    return {
        "info_hash": info_hash,
        "public_key": identity.public_key_hex,
        "timestamp": timestamp,
        "signature": identity.sign(withdrawal_bytes(info_hash, timestamp)).hex(),
    }


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ListingError(f"{what} is not a JSON object")
    return value


def _integer(value: Any, what: str, low: int = 0, high: int = MAX_SIZE) -> int:
    # bool is an int in Python, and true is not a number in JSON.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ListingError(f"{what} is not a whole number")
    if not low <= value <= high:
        raise ListingError(f"{what} is not between {low} and {high}")
    return value


def _text(value: Any, what: str, longest: int) -> str:
    if not isinstance(value, str):
        raise ListingError(f"{what} is not a string")
    if not value:
        raise ListingError(f"{what} is empty")
    if len(value) > longest:
        raise ListingError(f"{what} is longer than {longest} characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        # JSON can escape lone surrogates, which no UTF-8 text (nor its bencode) can hold.
        raise ListingError(f"{what} is not valid Unicode text") from None
    if any(unicodedata.category(char) == "Cc" for char in value):
        # Control characters would reach searchers' terminals as escape sequences.
        raise ListingError(f"{what} contains control characters")
    return value


def _pattern(value: Any, what: str, pattern: re.Pattern[str], form: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ListingError(f"{what} is not {form}")
    return value


def _info_hash(value: Any) -> str:
    return _pattern(value, "the info_hash", _INFO_HASH, "40 lowercase hex digits")


def _public_key(value: Any) -> str:
    key = _pattern(value, "the public_key", _PUBLIC_KEY, "64 lowercase hex digits")
    problem = public_key_problem(bytes.fromhex(key))
    if problem is not None:
        raise ListingForbidden(f"the public_key is {problem}")
    return key


def _signature(value: Any) -> bytes:
    return bytes.fromhex(_pattern(value, "the signature", _SIGNATURE, "128 hex digits"))


def parse_listing(value: Any) -> Listing:
    """A listing from its JSON object, every field checked and bounded."""
    listing = _object(value, "the listing")
    unknown = listing.keys() - _LISTING_KEYS
    if unknown:
        raise ListingError(f"the listing has an unknown field {sorted(unknown)[0]!r}")
    missing = _REQUIRED_KEYS - listing.keys()
    if missing:
        raise ListingError(f"the listing has no {sorted(missing)[0]}")
    files = listing["files"]
    if not isinstance(files, list):
        raise ListingError("the listing's files are not a JSON array")
    if len(files) > MAX_FILES:
        raise ListingError(f"the listing has more than {MAX_FILES} files")
    entries = []
    for file in files:
        entry = _object(file, "a file of the listing")
        if entry.keys() != {"path", "size"}:
            raise ListingError("a file of the listing does not have exactly a path and a size")
        entries.append(
            ListingFile(
                _text(entry["path"], "a file's path", MAX_PATH),
                _integer(entry["size"], "a file's size"),
            )
        )
    ttl = listing.get("ttl")
    return Listing(
        info_hash=_info_hash(listing["info_hash"]),
        name=_text(listing["name"], "the name", MAX_NAME),
        size=_integer(listing["size"], "the size"),
        files=tuple(entries),
        published_at=_integer(listing["published_at"], "published_at"),
        ttl=None if ttl is None else _integer(ttl, "the ttl", 1, MAX_TTL),
    )


def _check_fresh(timestamp: int, now: float, what: str) -> None:
    if abs(timestamp - now) > MAX_CLOCK_SKEW:
        raise ListingForbidden(
            f"the {what} is more than {MAX_CLOCK_SKEW // 60} minutes away from the hub's clock"
        )


def parse_publish(body: Any, now: float) -> tuple[Listing, str]:
    """The listing and publisher key of a publish request, its signature and time checked."""
    request = _object(body, "the request")
    listing = parse_listing(request.get("listing"))
    public_key = _public_key(request.get("public_key"))
    signature = _signature(request.get("signature"))
    if not verify(public_key, listing.signed_bytes(), signature):
        raise ListingForbidden("the signature does not match the listing and public key")
    _check_fresh(listing.published_at, now, "listing's published_at")
    return listing, public_key


def parse_withdraw(body: Any, now: float) -> Withdrawal:
    """A withdraw request, its signature and time checked."""
    request = _object(body, "the request")
    info_hash = _info_hash(request.get("info_hash"))
    public_key = _public_key(request.get("public_key"))
    timestamp = _integer(request.get("timestamp"), "the timestamp")
    signature = _signature(request.get("signature"))
    if not verify(public_key, withdrawal_bytes(info_hash, timestamp), signature):
        raise ListingForbidden("the signature does not match the withdrawal and public key")
    _check_fresh(timestamp, now, "withdrawal's timestamp")
    return Withdrawal(info_hash, public_key, timestamp)
