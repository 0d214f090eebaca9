"""Magnet links (BEP 9): an info-hash plus hints for finding the swarm."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit

from shoal.metainfo.paths import MetainfoError
from shoal.numbers import bounded_int

__all__ = ["Magnet", "is_magnet", "make_magnet", "parse_magnet", "parse_peer"]

_BTIH = "urn:btih:"
# A DNS name is at most 253 characters; an error quotes at most this much of a stranger's text.
MAX_HOST = 253
MAX_SHOWN = 80


@dataclass(frozen=True)
class Magnet:
    """What a magnet link says: the info-hash, a name, trackers and peers to try."""

    info_hash: bytes
    display_name: str | None
    trackers: tuple[str, ...]
    peers: tuple[tuple[str, int], ...]


def is_magnet(s: str) -> bool:
    """Return whether s looks like a magnet link rather than a file path."""
    return s[:7].lower() == "magnet:"


def parse_magnet(uri: str) -> Magnet:
    """Parse a magnet link, or raise MetainfoError saying what is wrong with it."""
    try:
        parts = urlsplit(uri.strip())
    except ValueError:
        raise MetainfoError(f"the text is not a magnet link: {shown(uri)}") from None
    if parts.scheme.lower() != "magnet":
        raise MetainfoError(f"the text is not a magnet link: {shown(uri)}")
    info_hash: bytes | None = None
    display_name: str | None = None
    trackers: list[str] = []
    peers: list[tuple[str, int]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "xt" and value.lower().startswith(_BTIH) and info_hash is None:
            info_hash = _parse_info_hash(value[len(_BTIH) :])
        elif key == "dn":
            display_name = value
        # Some clients number repeated parameters: tr.1=...&tr.2=...
        elif (key == "tr" or key.startswith("tr.")) and value and value not in trackers:
            trackers.append(value)
        elif key == "x.pe":
            peers.append(parse_peer(value))
    if info_hash is None:
        raise MetainfoError("the magnet link has no BitTorrent info-hash")
    return Magnet(info_hash, display_name, tuple(trackers), tuple(peers))


def _parse_info_hash(text: str) -> bytes:
    """Decode a btih value: 40 hex digits or 32 base32 characters."""
    try:
        if len(text) == 40:
            info_hash = bytes.fromhex(text)
        elif len(text) == 32:
            info_hash = base64.b32decode(text.upper())
        else:
            info_hash = b""
    except (ValueError, binascii.Error):
        info_hash = b""
    # fromhex skips spaces and base32 allows padding, so either can yield fewer bytes.
    if len(info_hash) == 20:
        return info_hash
    raise MetainfoError(
        f"the magnet link has an info-hash that is neither 40 hex digits"
        f" nor 32 base32 characters: {shown(text)}"
    )


def parse_peer(text: str) -> tuple[str, int]:
    """Parse a peer as host:port or [ipv6]:port."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 address without brackets cannot be told from its port
    port = bounded_int(port_text, 1, 65535)
    if not sep or not host or len(host) > MAX_HOST or port is None:
        raise MetainfoError(f"the peer address {shown(text)} is not host:port or [IPv6]:port")
    return host, port


def shown(text: str) -> str:
    """text cut to a length that fits in a one-sentence error."""
    return text if len(text) <= MAX_SHOWN else f"{text[: MAX_SHOWN - 3]}..."


def make_magnet(
    info_hash: bytes,
    display_name: str | None = None,
    trackers: Iterable[str] = (),
    peers: Iterable[tuple[str, int]] = (),
) -> str:
    """Build a percent-encoded magnet link."""
    if len(info_hash) != 20:
        raise ValueError(f"an info-hash has 20 bytes, not {len(info_hash)}")
    params = [f"xt={_BTIH}{info_hash.hex()}"]
    if display_name is not None:
        params.append(f"dn={quote(display_name, safe='')}")
    params += [f"tr={quote(tracker, safe='')}" for tracker in trackers]
    for host, port in peers:
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        params.append(f"x.pe={quote(address, safe=':[]')}")
    return "magnet:?" + "&".join(params)
