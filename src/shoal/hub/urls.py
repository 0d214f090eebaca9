"""A hub's URLs, as users give them and as clients use them; light enough to import anywhere."""

from __future__ import annotations


def base_url(hub_url: str) -> str:
    """The hub's base URL, whether given as http://HOST:PORT, with a trailing / or /announce."""
    url = hub_url.strip().rstrip("/")
    if url.endswith("/announce"):
        url = url[: -len("/announce")]
    if not url.startswith(("http://", "https://")):
        url = f"http://{url}"
    return url


def announce_url(hub_url: str) -> str:
    """The hub's HTTP tracker announce URL."""
    return f"{base_url(hub_url)}/announce"
