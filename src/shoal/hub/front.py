"""The hub's TCP front: tracker GETs answered directly, everything else handed to aiohttp.

Announces are most of a tracker's traffic and need none of a web framework: a bounded request
head, a query string, a bencoded reply. Answering them here costs a fraction of aiohttp's
per-request work. The front also bounds what slow or idle connections can hold (aiohttp has no
deadline for a request's head, so a client dribbling bytes would keep its socket forever).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# A new connection must send a whole request head this soon; a kept-alive tracker connection
# must send its next one within KEEP_ALIVE; one address may hold MAX_CONNECTIONS_PER_IP.
HEAD_TIMEOUT = 10.0
KEEP_ALIVE = 30.0
MAX_CONNECTIONS_PER_IP = 64
MAX_HEAD = 8 * 1024
TRACKER_PATHS = (b"GET /announce", b"GET /scrape")
_DECIDE_AFTER = max(len(prefix) for prefix in TRACKER_PATHS)

# (path, raw query, sender address) -> bencoded reply body
TrackerHandler = Callable[[str, str, str], bytes]


class ConnectionFront:
    """Makes the protocol for each accepted connection and counts connections per address."""

    def __init__(self, web: Callable[[], asyncio.Protocol], tracker: TrackerHandler) -> None:
        self.web = web
        self.tracker = tracker
        self.per_ip: dict[str, int] = {}

    def protocol(self) -> asyncio.Protocol:
        """A protocol for one new connection."""
        return _Front(self)


class _Front(asyncio.Protocol):
    """One connection: tracker requests answered here, other requests passed to aiohttp."""

    def __init__(self, front: ConnectionFront) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.ip = "?"
        self.pending = bytearray()
        self.web: asyncio.Protocol | None = None  # set once the connection is aiohttp's
        self.tracker_mode = False
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if peer else "?"
        count = self.front.per_ip.get(self.ip, 0) + 1
        self.front.per_ip[self.ip] = count
        loopback = self.ip.startswith("127.") or self.ip == "::1"
        if count > MAX_CONNECTIONS_PER_IP and not loopback:
            transport.close()
            return
        self._arm(HEAD_TIMEOUT)

    def _arm(self, seconds: float) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        assert self.transport is not None
        self.deadline = asyncio.get_running_loop().call_later(seconds, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if self.web is not None:
            self._watch_web_head(data)
            self.web.data_received(data)
            return
        self.pending += data
        if self.tracker_mode:
            self._serve_tracker()
            return
        head = bytes(self.pending[:_DECIDE_AFTER])
        if any(head.startswith(prefix) for prefix in TRACKER_PATHS):
            self.tracker_mode = True
            self._serve_tracker()
        elif len(head) >= _DECIDE_AFTER or not any(p.startswith(head) for p in TRACKER_PATHS):
            self._hand_to_web()

    def _hand_to_web(self) -> None:
        assert self.transport is not None
        self.web = self.front.web()
        self.web.connection_made(self.transport)
        data = bytes(self.pending)
        self.pending.clear()
        self._watch_web_head(data)
        self.web.data_received(data)

    def _watch_web_head(self, data: bytes) -> None:
        # The first request's head ends at its blank line; then aiohttp's keep-alive rules.
        if self.deadline is not None and b"\r\n\r\n" in data:
            self.deadline.cancel()
            self.deadline = None

    def _serve_tracker(self) -> None:
        transport = self.transport
        assert transport is not None
        while True:
            end = self.pending.find(b"\r\n\r\n")
            if end < 0:
                if len(self.pending) > MAX_HEAD:
                    transport.close()
                return
            head = bytes(self.pending[:end])
            del self.pending[: end + 4]
            reply, keep_alive = self._answer(head)
            transport.write(reply)
            if not keep_alive:
                transport.close()
                return
            self._arm(KEEP_ALIVE)

    def _answer(self, head: bytes) -> tuple[bytes, bool]:
        request_line, _, header_block = head.partition(b"\r\n")
        parts = request_line.split(b" ")
        if len(parts) != 3 or parts[0] != b"GET" or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
            return _response(400, b"bad request", keep_alive=False), False
        headers = header_block.lower()
        if b"content-length:" in headers and b"content-length: 0" not in headers:
            return _response(400, b"a tracker request has no body", keep_alive=False), False
        if parts[2] == b"HTTP/1.1":
            keep_alive = b"connection: close" not in headers
        else:
            keep_alive = b"connection: keep-alive" in headers
        path, _, query = parts[1].decode("latin-1").partition("?")
        if path not in ("/announce", "/scrape"):
            # A tracker connection asking for something else: let it reconnect for that.
            return _response(404, b"not found", keep_alive=False), False
        return _response(200, self.front.tracker(path, query, self.ip), keep_alive), keep_alive

    def eof_received(self) -> bool | None:
        return self.web.eof_received() if self.web is not None else None

    def pause_writing(self) -> None:
        if self.web is not None:
            self.web.pause_writing()

    def resume_writing(self) -> None:
        if self.web is not None:
            self.web.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        left = self.front.per_ip.get(self.ip, 1) - 1
        if left:
            self.front.per_ip[self.ip] = left
        else:
            self.front.per_ip.pop(self.ip, None)
        if self.web is not None:
            self.web.connection_lost(exc)


def _response(status: int, body: bytes, keep_alive: bool) -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}[status]
    head = [
        b"HTTP/1.1 %d %s" % (status, reason),
        b"Content-Type: text/plain",
        b"Content-Length: %d" % len(body),
    ]
    if not keep_alive:
        head.append(b"Connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + body
