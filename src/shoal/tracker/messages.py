"""What shoal and trackers tell each other: announce parameters, replies, peers and errors."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from urllib.parse import urlsplit

from shoal.addresses import Address
from shoal.errors import ShoalError

__all__ = [
    "MAX_PEERS",
    "AnnounceParams",
    "AnnounceResponse",
    "Event",
    "ScrapeResult",
    "TrackerError",
    "TrackerRefused",
    "bounded_peers",
    "tracker_kind",
    "tracker_text",
]

# Peers kept from one reply: more than a torrent can use, few enough to cost nothing.
MAX_PEERS = 1000
# Characters kept of any text a tracker sends (failure reasons, warnings).
MAX_TEXT = 200


class TrackerError(ShoalError):
    """A tracker could not be reached, or its reply could not be used."""


class TrackerRefused(TrackerError):
    """A tracker answered, with a failure reason instead of peers."""


class Event(IntEnum):
    """An announce's event; the values are the codes of the UDP protocol (BEP 15)."""

    NONE = 0
    COMPLETED = 1
    STARTED = 2
    STOPPED = 3

    @property
    def http_name(self) -> str:
        """The value of the HTTP `event` parameter; empty for a regular announce."""
        return "" if self is Event.NONE else self.name.lower()


@dataclass(frozen=True)
class AnnounceParams:
    """One announce of one torrent, as sent to any kind of tracker."""

    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: Event = Event.NONE
    numwant: int = 50
    key: int = 0
    tracker_id: bytes | None = None


@dataclass(frozen=True)
class AnnounceResponse:
    """A tracker's answer to an announce; numbers it did not send are None."""

    interval: int | None
    min_interval: int | None
    peers: list[Address]
    seeders: int | None = None
    leechers: int | None = None
    tracker_id: bytes | None = None
    warning: str | None = None


@dataclass(frozen=True)
class ScrapeResult:
    """A tracker's counts for one torrent."""

    seeders: int
    completed: int
    leechers: int


def tracker_kind(url: str) -> str | None:
    """'http' or 'udp' for an announce URL shoal can use, else None."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    if scheme in ("http", "https"):
        return "http"
    if scheme == "udp":
        return "udp"
    return None


def tracker_text(raw: bytes) -> str:
    """Text from a tracker made safe to log and show: decoded, printable, short."""
    text = raw[: MAX_TEXT * 4].decode("utf-8", errors="replace")
    text = "".join(char if char.isprintable() else " " for char in text)
    return " ".join(text.split())[:MAX_TEXT]


def bounded_peers(peers: Iterable[tuple[object, object]]) -> list[Address]:
    """The first MAX_PEERS distinct usable peers: an IP literal and a port from 1 to 65535."""
    kept: dict[Address, None] = {}
    for host, port in peers:
        if not isinstance(port, int) or not 0 < port < 65536 or not isinstance(host, str):
            continue
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            continue  # host names would need a lookup per peer; trackers send addresses
        if address.is_unspecified or address.is_multicast:
            continue
        kept[(str(address), port)] = None
        if len(kept) >= MAX_PEERS:
            break
    return list(kept)
