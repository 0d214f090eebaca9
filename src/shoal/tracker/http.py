"""HTTP trackers (BEP 3, 7, 23, 48), sans-IO: build announce and scrape URLs, parse replies."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import quote_from_bytes, urlsplit, urlunsplit

from shoal import addresses, bencode
from shoal.addresses import Address

from .messages import (
    MAX_PEERS,
    AnnounceParams,
    AnnounceResponse,
    ScrapeResult,
    TrackerError,
    TrackerRefused,
    bounded_peers,
    tracker_text,
)

__all__ = [
    "MAX_BODY",
    "announce_url",
    "parse_announce_response",
    "parse_scrape_response",
    "scrape_url",
]

# Largest reply body read from a tracker: a full compact list of 1000 peers is 18 KiB.
MAX_BODY = 1024 * 1024
# A tracker id longer than this is not an id; it is ignored rather than echoed back.
MAX_TRACKER_ID = 256


def _with_query(base_url: str, parts: list[str]) -> str:
    """base_url with the query parts appended to any query it already has."""
    scheme, netloc, path, query, _fragment = urlsplit(base_url)
    query = "&".join([query, *parts] if query else parts)
    return urlunsplit((scheme, netloc, path, query, ""))


def _quote(raw: bytes) -> str:
    """Percent-encode bytes one by one, as BEP 3 asks for info_hash and peer_id."""
    return quote_from_bytes(raw, safe="")


def announce_url(base_url: str, params: AnnounceParams) -> str:
    """The GET URL of an announce to the tracker at base_url."""
    parts = [
        f"info_hash={_quote(params.info_hash)}",
        f"peer_id={_quote(params.peer_id)}",
        f"port={params.port}",
        f"uploaded={max(0, params.uploaded)}",
        f"downloaded={max(0, params.downloaded)}",
        f"left={max(0, params.left)}",
        "compact=1",
        "no_peer_id=1",
        f"numwant={max(0, params.numwant)}",
        f"key={params.key & 0xFFFFFFFF:08x}",
    ]
    if params.event.http_name:
        parts.append(f"event={params.event.http_name}")
    if params.tracker_id is not None:
        parts.append(f"trackerid={_quote(params.tracker_id)}")
    return _with_query(base_url, parts)


def scrape_url(announce: str, info_hashes: Sequence[bytes]) -> str:
    """The scrape URL for an announce URL (BEP 48), asking about info_hashes."""
    scheme, netloc, path, query, _fragment = urlsplit(announce)
    head, _, last = path.rpartition("/")
    if not last.startswith("announce"):
        raise TrackerError("the tracker does not support scrape: its URL does not end in announce")
    path = f"{head}/scrape{last[len('announce') :]}"
    base = urlunsplit((scheme, netloc, path, query, ""))
    return _with_query(base, [f"info_hash={_quote(info_hash)}" for info_hash in info_hashes])


def _decode_dict(body: bytes, what: str) -> dict[bytes, Any]:
    """The top-level dictionary of a tracker reply; a failure reason becomes TrackerRefused."""
    try:
        # decode_prefix: some trackers end the body with a newline or other trailing bytes.
        reply, _end = bencode.decode_prefix(body)
    except bencode.BencodeError:
        raise TrackerError("the tracker's reply is not valid bencode") from None
    if not isinstance(reply, dict):
        raise TrackerError("the tracker's reply is not a dictionary")
    failure = reply.get(b"failure reason")
    if failure is not None:
        reason = tracker_text(failure) if isinstance(failure, bytes) else ""
        raise TrackerRefused(f"the tracker refused the {what}: {reason or 'no reason given'}")
    return reply


def _count(value: object) -> int | None:
    """A non-negative integer from a reply, or None."""
    return value if isinstance(value, int) and value >= 0 else None


def _dict_peers(peers: list[Any]) -> Iterator[tuple[object, object]]:
    """(host, port) of each entry of a non-compact peer list."""
    for entry in peers:
        if isinstance(entry, dict) and isinstance(entry.get(b"ip"), bytes):
            yield entry[b"ip"].decode("ascii", errors="replace"), entry.get(b"port")


def _peers(reply: dict[bytes, Any]) -> list[Address]:
    """Peers of an announce reply: compact or dictionary model, and IPv6 peers."""
    peers = reply.get(b"peers")
    sources: list[Iterable[tuple[object, object]]] = []
    if isinstance(peers, bytes):
        sources.append(addresses.unpack(peers, ipv6=False, limit=MAX_PEERS))
    elif isinstance(peers, list):
        sources.append(_dict_peers(peers))
    peers6 = reply.get(b"peers6")
    if isinstance(peers6, bytes):
        sources.append(addresses.unpack(peers6, ipv6=True, limit=MAX_PEERS))
    return bounded_peers(peer for source in sources for peer in source)


def parse_announce_response(body: bytes) -> AnnounceResponse:
    """Parse an HTTP tracker's announce reply; raise TrackerError if it cannot be used."""
    reply = _decode_dict(body, "announce")
    tracker_id = reply.get(b"tracker id")
    if not isinstance(tracker_id, bytes) or not 0 < len(tracker_id) <= MAX_TRACKER_ID:
        tracker_id = None
    warning = reply.get(b"warning message")
    warning_text = tracker_text(warning) if isinstance(warning, bytes) else ""
    return AnnounceResponse(
        interval=_count(reply.get(b"interval")),
        min_interval=_count(reply.get(b"min interval")),
        peers=_peers(reply),
        seeders=_count(reply.get(b"complete")),
        leechers=_count(reply.get(b"incomplete")),
        tracker_id=tracker_id,
        warning=warning_text or None,
    )


def parse_scrape_response(body: bytes, info_hashes: Sequence[bytes]) -> dict[bytes, ScrapeResult]:
    """Counts for those of info_hashes the scrape reply mentions; others are left out."""
    files = _decode_dict(body, "scrape").get(b"files")
    if not isinstance(files, dict):
        raise TrackerError("the tracker's scrape reply has no files dictionary")
    results = {}
    for info_hash in info_hashes:
        entry = files.get(info_hash)
        if not isinstance(entry, dict):
            continue
        counts = [_count(entry.get(key, 0)) for key in (b"complete", b"downloaded", b"incomplete")]
        seeders, completed, leechers = counts
        if seeders is not None and completed is not None and leechers is not None:
            results[info_hash] = ScrapeResult(seeders, completed, leechers)
    return results
