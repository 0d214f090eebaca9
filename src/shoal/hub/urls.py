"""A hub's URLs, as users give them and as clients use them; light enough to import anywhere."""

from __future__ import annotations

from urllib.parse import urlsplit

from . import HubError


def base_url(hub_url: str) -> str:
    """The hub's base URL, from http://HOST:PORT, HOST:PORT, or either with / or /announce."""
    url = hub_url.strip().rstrip("/")
    if url.endswith("/announce"):
        url = url[: -len("/announce")]
    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    try:
        port = parts.port  # checked as it is read: digits, at most 65535
    except ValueError:
        port = 0
    if port == 0:
        raise HubError("the port in the hub URL is not a number from 1 to 65535")
    if parts.scheme == "udp":
        # The hub prints its UDP tracker URL too; the index only speaks HTTP, on the same port.
        url = f"http://{parts.netloc}"
    elif parts.scheme not in ("http", "https") or not parts.hostname:
        raise HubError(f"a hub URL looks like http://host:6969, not {hub_url}")
    return url


def announce_url(hub_url: str) -> str:
    """The hub's HTTP tracker announce URL."""
    return f"{base_url(hub_url)}/announce"
