"""Talk to a hub's keyword index: publish and withdraw signed listings, search by keywords."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from shoal.addresses import Address
from shoal.hub import HubError
from shoal.hub.listing import (
    DEFAULT_TTL,
    MAX_FILES,
    MAX_PATH,
    MAX_SIZE,
    Listing,
    ListingFile,
    sign_listing,
    sign_withdrawal,
)
from shoal.hub.urls import announce_url, base_url
from shoal.identity import Identity
from shoal.metainfo import MetainfoError, Torrent, make_magnet
from shoal.metainfo.magnet import parse_peer

__all__ = ["HubError", "SearchResult", "listing_for", "peers", "publish", "search", "withdraw"]

TIMEOUT = 10.0
# Bytes of file names a listing carries at most, well inside the hub's 256 KiB body limit.
LISTED_FILES_BUDGET = 160 * 1024
# A search reply of 200 results is some tens of KiB; a hub sending far more is not one.
MAX_REPLY = 4 * 1024 * 1024
_INFO_HASH = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True, slots=True)
class SearchResult:
    """A torrent the hub's index found: what its publishers say, and its swarm right now."""

    info_hash: bytes
    name: str
    size: int
    files: int
    seeders: int
    leechers: int
    publishers: int

    def magnet(self, hub_url: str) -> str:
        """A magnet link for the torrent with the hub as its tracker."""
        return make_magnet(self.info_hash, self.name, [announce_url(hub_url)])


def listing_for(torrent: Torrent, ttl: int = DEFAULT_TTL, now: float | None = None) -> Listing:
    """The listing that describes torrent, dated now; a huge file list is cut to fit the hub."""
    files: list[ListingFile] = []
    budget = LISTED_FILES_BUDGET
    for entry in torrent.files:
        if entry.padding:
            continue
        path = "/".join(entry.path)
        # JSON quoting can double a path's length; count what it may cost, and stop in time.
        budget -= 2 * len(path.encode()) + 40
        if budget < 0 or len(files) >= MAX_FILES or len(path) > MAX_PATH:
            break
        files.append(ListingFile(path, entry.length))
    return Listing(
        info_hash=torrent.info_hash_hex,
        name=torrent.name,
        size=torrent.total_length,
        files=tuple(files),
        published_at=int(time.time() if now is None else now),
        ttl=ttl,
    )


async def _request(
    hub_url: str,
    method: str,
    path: str,
    *,
    json_body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
) -> Any:
    """Send one request to the hub; return its JSON reply or raise HubError."""
    base = base_url(hub_url)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session,
            session.request(method, base + path, json=json_body, params=params) as response,
        ):
            raw = await _read_bounded(response)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {TIMEOUT:g} seconds"
        raise HubError(f"cannot reach the hub at {base}: {reason}") from None
    try:
        reply = json.loads(raw)
    except (ValueError, RecursionError):
        reply = None
    if not isinstance(reply, dict):
        raise HubError(f"the hub at {base} sent a reply that is not a JSON object")
    if status != 200:
        error = reply.get("error")
        if isinstance(error, str) and error:
            # The hub's own sentence, cut short in case the hub is not a friendly one.
            raise HubError(error[:300])
        raise HubError(f"the hub at {base} answered with HTTP status {status}")
    return reply


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    """The reply body, or HubError if it is larger than MAX_REPLY."""
    chunks = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_REPLY:
            raise HubError(f"the hub's reply is larger than {MAX_REPLY // (1024 * 1024)} MiB")
        chunks.append(chunk)
    return b"".join(chunks)


async def publish(
    hub_url: str, identity: Identity, torrent: Torrent, ttl: int = DEFAULT_TTL
) -> None:
    """List torrent in the hub's index under identity, for ttl seconds."""
    body = sign_listing(identity, listing_for(torrent, ttl))
    await _request(hub_url, "POST", "/index/publish", json_body=body)


async def withdraw(hub_url: str, identity: Identity, info_hash: bytes) -> None:
    """Take identity's listing of info_hash out of the hub's index."""
    body = sign_withdrawal(identity, info_hash.hex(), int(time.time()))
    await _request(hub_url, "POST", "/index/withdraw", json_body=body)


def _result(entry: Any) -> SearchResult:
    """One search result, checked: the hub is a stranger too."""
    if not isinstance(entry, dict):
        raise ValueError(entry)
    info_hash = entry.get("info_hash")
    name = entry.get("name")
    if not isinstance(info_hash, str) or not _INFO_HASH.fullmatch(info_hash):
        raise ValueError(info_hash)
    if not isinstance(name, str):
        raise ValueError(name)
    counts = []
    for key in ("size", "files", "seeders", "leechers", "publishers"):
        value = entry.get(key)
        # Bounded, as numbers of hundreds of digits would break whatever formats them.
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SIZE:
            raise ValueError(value)
        counts.append(value)
    return SearchResult(bytes.fromhex(info_hash), name, *counts)


async def search(hub_url: str, words: str, limit: int = 50) -> list[SearchResult]:
    """Torrents the hub's index lists under words, best match first."""
    reply = await _request(
        hub_url, "GET", "/index/search", params={"q": words, "limit": str(limit)}
    )
    results = reply.get("results")
    try:
        if not isinstance(results, list):
            raise ValueError(results)
        return [_result(entry) for entry in results]
    except ValueError:
        raise HubError(f"the hub at {base_url(hub_url)} sent malformed search results") from None


async def peers(hub_url: str, info_hash: bytes, wanted: int = 50) -> list[Address]:
    """Peers the hub's tracker holds for info_hash, asked without announcing (the asker is
    not listed)."""
    reply = await _request(
        hub_url, "GET", "/peers", params={"info_hash": info_hash.hex(), "numwant": str(wanted)}
    )
    found = reply.get("peers")
    try:
        if not isinstance(found, list) or not all(isinstance(entry, str) for entry in found):
            raise MetainfoError(repr(found)[:100])
        return [parse_peer(entry) for entry in found[:wanted]]
    except MetainfoError:
        raise HubError(f"the hub at {base_url(hub_url)} sent malformed peers") from None
