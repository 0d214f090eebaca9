"""HTTP tracker requests (BEP 3, 7, 23, 48): parse announce and scrape queries, build replies."""

from __future__ import annotations

import socket
from typing import Any, NamedTuple
from urllib.parse import unquote_to_bytes

from shoal import addresses
from shoal.bencode import encode
from shoal.hub.registry import (
    IPV4_LENGTH,
    AnnounceRequest,
    AnnounceResult,
    Event,
    MalformedRequest,
    SwarmStats,
)
from shoal.numbers import bounded_int

__all__ = [
    "MAX_QUERY_LENGTH",
    "MAX_SCRAPE_HASHES",
    "HttpAnnounce",
    "announce_reply",
    "failure_reply",
    "parse_announce",
    "parse_scrape",
    "scrape_reply",
]

# A full announce is about 300 characters; scrapes of many torrents are the long ones.
MAX_QUERY_LENGTH = 8192
MAX_SCRAPE_HASHES = 100
_HASH_LENGTH = 20
_COMPACT_V4 = IPV4_LENGTH + 2
_PEER_ID_LENGTH = 20
# Counters (uploaded, downloaded, left) are 64-bit in every client, as in BEP 15.
_MAX_COUNTER = 2**64 - 1
_EVENTS = {
    b"": Event.NONE,
    b"started": Event.STARTED,
    b"completed": Event.COMPLETED,
    b"stopped": Event.STOPPED,
    # BEP 21's partial seed says so with "paused"; to the tracker it is a plain announce.
    b"paused": Event.NONE,
}


def _split_query(query: str) -> list[tuple[bytes, bytes]]:
    """The query's key=value pairs, percent-decoded to bytes (info_hash and peer_id are binary)."""
    if len(query) > MAX_QUERY_LENGTH:
        raise MalformedRequest("the request is too long")
    try:
        # aiohttp hands over a non-ASCII request target decoded with surrogateescape.
        raw = query.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = query.encode("utf-8", "surrogatepass")
    pairs = []
    for pair in raw.split(b"&"):
        if pair:
            key, _, value = pair.partition(b"=")
            # Most keys and numbers hold no escapes; skipping the call is a tenth of the parse.
            if b"%" in key:
                key = unquote_to_bytes(key)
            if b"%" in value:
                value = unquote_to_bytes(value)
            pairs.append((key, value))
    return pairs


def _first(pairs: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Each key's first value."""
    values: dict[bytes, bytes] = {}
    for key, value in pairs:
        values.setdefault(key, value)
    return values


def _number(values: dict[bytes, bytes], name: str, default: int | None) -> int | None:
    """A decimal field from 0 to 2**64 - 1, or default when absent or empty."""
    raw = values.get(name.encode())
    if not raw:
        return default
    value = bounded_int(raw, 0, _MAX_COUNTER)
    if value is None:
        raise MalformedRequest(f"the {name} field is not a whole number below 2^64")
    return value


def _binary(values: dict[bytes, bytes], name: str, length: int) -> bytes:
    """A required field of exactly length bytes."""
    raw = values.get(name.encode())
    if raw is None:
        raise MalformedRequest(f"the request has no {name}")
    if len(raw) != length:
        raise MalformedRequest(f"the {name} is {len(raw)} bytes long instead of {length}")
    return raw


class HttpAnnounce(NamedTuple):
    """An announce and the reply form it asked for (compact unless compact=0)."""

    request: AnnounceRequest
    compact: bool
    no_peer_id: bool


def parse_announce(query: str, sender_ip: bytes) -> HttpAnnounce:
    """Parse an announce's raw query string; raise TrackerRefusal with a failure reason.

    The peer's address is always the sender's: an `ip` parameter could only point the swarm
    at someone else, so it is ignored, as are key and trackerid.
    """
    values = _first(_split_query(query))
    info_hash = _binary(values, "info_hash", _HASH_LENGTH)
    peer_id = _binary(values, "peer_id", _PEER_ID_LENGTH)
    port = _number(values, "port", None)
    if port is None:
        raise MalformedRequest("the request has no port")
    if not 0 < port < 65536:
        raise MalformedRequest(f"the port {port} is not between 1 and 65535")
    event = _EVENTS.get(values.get(b"event", b""))
    if event is None:
        raise MalformedRequest("the event is not started, completed or stopped")
    numwant_raw = values.get(b"numwant")
    # Some clients send numwant=-1 for "the default", as in UDP announces.
    numwant = None if numwant_raw in (None, b"", b"-1") else _number(values, "numwant", None)
    request = AnnounceRequest(
        info_hash=info_hash,
        peer_id=peer_id,
        ip=sender_ip,
        port=port,
        uploaded=_number(values, "uploaded", 0) or 0,
        downloaded=_number(values, "downloaded", 0) or 0,
        left=_number(values, "left", None),
        event=event,
        numwant=numwant,
    )
    return HttpAnnounce(request, values.get(b"compact") != b"0", values.get(b"no_peer_id") == b"1")


def parse_scrape(query: str) -> list[bytes]:
    """The info-hashes a scrape asks about (at least one, at most MAX_SCRAPE_HASHES)."""
    hashes = [value for key, value in _split_query(query) if key == b"info_hash"]
    if not hashes:
        raise MalformedRequest("the scrape names no info_hash")
    if len(hashes) > MAX_SCRAPE_HASHES:
        raise MalformedRequest(f"a scrape may name at most {MAX_SCRAPE_HASHES} torrents")
    for info_hash in hashes:
        if len(info_hash) != _HASH_LENGTH:
            raise MalformedRequest(
                f"the info_hash is {len(info_hash)} bytes long instead of {_HASH_LENGTH}"
            )
    # A dict drops repeats and keeps the order.
    return list(dict.fromkeys(hashes))


def announce_reply(result: AnnounceResult, *, compact: bool = True) -> bytes:
    """The bencoded reply to an announce: IPv4 peers in peers, IPv6 ones in peers6 (BEP 7).

    A non-compact reply lists both families in peers, with peer ids if result has them.
    """
    reply: dict[str, Any] = {
        "interval": result.interval,
        "min interval": result.min_interval,
        "complete": result.seeders,
        "incomplete": result.leechers,
    }
    if compact:
        reply["peers"] = b"".join([p for p in result.peers if len(p) == _COMPACT_V4])
        peers6 = b"".join([p for p in result.peers if len(p) != _COMPACT_V4])
        if peers6:
            reply["peers6"] = peers6
    else:
        entries = []
        for index, peer in enumerate(result.peers):
            ip, port = addresses.split(peer)
            family = socket.AF_INET if len(ip) == IPV4_LENGTH else socket.AF_INET6
            entry: dict[str, Any] = {"ip": socket.inet_ntop(family, ip), "port": port}
            if result.peer_ids is not None:
                entry["peer id"] = result.peer_ids[index]
            entries.append(entry)
        reply["peers"] = entries
    return encode(reply)


def scrape_reply(info_hashes: list[bytes], stats: list[SwarmStats]) -> bytes:
    """The bencoded reply to a scrape (BEP 48)."""
    files = {
        info_hash: {
            "complete": swarm.seeders,
            "downloaded": swarm.completed,
            "incomplete": swarm.leechers,
        }
        for info_hash, swarm in zip(info_hashes, stats, strict=True)
    }
    return encode({"files": files})


def failure_reply(reason: str) -> bytes:
    """The bencoded reply to a request the tracker refuses."""
    return encode({"failure reason": reason})
