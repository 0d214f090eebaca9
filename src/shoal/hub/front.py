"""The hub's TCP front: tracker GETs answered directly, everything else handed to aiohttp.

Announces are most of a tracker's traffic and need none of a web framework: a request head,
a query string, a bencoded reply. Answering them here costs a fraction of aiohttp's per-request
work. Every request is parsed by llhttp (httptools), those passed on to aiohttp too, so that the
front alone bounds what a connection may hold: time per request (head and body), idle time,
connections per address, and replies queued for a client that does not read them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Callable
from enum import Enum
from typing import NamedTuple, NoReturn

import httptools

__all__ = [
    "KEEP_ALIVE",
    "MAX_BODY",
    "MAX_CONNECTIONS_PER_ADDRESS",
    "MAX_LOOPBACK_CONNECTIONS",
    "REQUEST_TIMEOUT",
    "ConnectionFront",
    "FrontStats",
]

log = logging.getLogger(__name__)

# A request, head and body, must arrive within REQUEST_TIMEOUT of its first byte (a new
# connection's first request, of the connection); with no request under way a connection is
# closed after KEEP_ALIVE.
REQUEST_TIMEOUT = 10.0
KEEP_ALIVE = 30.0
# Connections one address may hold (an IPv6 address counts as its /64, what one host gets).
# Loopback clients are this machine's own programs, so they get more, but not without end.
MAX_CONNECTIONS_PER_ADDRESS = 64
MAX_LOOPBACK_CONNECTIONS = 512
MAX_HEAD = 8 * 1024
MAX_HEADERS = 100
MAX_BODY = 256 * 1024
# Past WRITE_HIGH bytes of unsent replies the front stops reading the connection, until they
# drain below WRITE_LOW. Input is parsed FEED_SLICE bytes at a time, so that what one read can
# make the front answer is bounded too.
WRITE_HIGH = 64 * 1024
WRITE_LOW = 16 * 1024
FEED_SLICE = 4 * 1024
TRACKER_PATHS = frozenset((b"/announce", b"/scrape"))
# Content-Length values longer than this are not lengths any request here could have.
_MAX_LENGTH_DIGITS = 18

# (path, raw query, sender address) -> bencoded reply body
TrackerHandler = Callable[[str, str, str], bytes]


class FrontStats(NamedTuple):
    """What the front's connections hold right now."""

    connections: int
    reading_paused: int
    queued_bytes: int


class ConnectionFront:
    """Makes the protocol for each accepted connection and counts connections per address."""

    def __init__(self, web: Callable[[], asyncio.Protocol], tracker: TrackerHandler) -> None:
        self.web = web
        self.tracker = tracker
        self.per_address: dict[str, int] = {}
        self.connections: set[_Front] = set()

    def protocol(self) -> asyncio.Protocol:
        """A protocol for one new connection."""
        return _Front(self)

    def stats(self) -> FrontStats:
        """Connections, how many are not being read (by the front or aiohttp), the bytes held."""
        paused = queued = 0
        for connection in self.connections:
            queued += len(connection.backlog)
            transport = connection.transport
            if transport is not None and not transport.is_closing():
                paused += not transport.is_reading()
                queued += transport.get_write_buffer_size()
        return FrontStats(len(self.connections), paused, queued)


class _Mode(Enum):
    UNDECIDED = "undecided"  # the first request's head is not complete yet
    TRACKER = "tracker"
    WEB = "web"  # aiohttp's; the front still parses, to keep the deadlines
    CLOSING = "closing"


class _Stop(Exception):
    """Raised in a parser callback to stop parsing a connection that is being closed."""


class _Front(asyncio.Protocol):
    """One connection: tracker requests answered here, other requests passed to aiohttp."""

    def __init__(self, front: ConnectionFront) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.ip = "?"
        self.address = "?"
        self.parser = httptools.HttpRequestParser(self)
        self.mode = _Mode.UNDECIDED
        # The raw bytes of an undecided connection, for aiohttp if the connection becomes its.
        self.pending: bytearray | None = bytearray()
        # Bytes read but not parsed yet, while replies wait for the client to read them.
        self.backlog = bytearray()
        self.web: asyncio.Protocol | None = None
        self.writing_paused = False
        self.reading_paused = False
        self.end_of_input = False
        # Whether bytes arrived since the last complete request, and whether they are timed.
        self.partial = True
        self.request_clock = False
        self.deadline: asyncio.TimerHandle | None = None
        # The request being parsed.
        self.url = b""
        self.path = b""
        self.query = b""
        self.in_head = False
        self.head_bytes: int | None = None
        self.header_count = 0
        self.body_length: int | None = None
        self.chunked = False
        self.problem: tuple[int, str] | None = None
        self.keep_alive = True

    # --- the connection ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        assert self.transport is not None
        self.transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        self.front.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if peer else "?"
        self.address, loopback = _address_key(self.ip)
        count = self.front.per_address.get(self.address, 0) + 1
        self.front.per_address[self.address] = count
        if count > (MAX_LOOPBACK_CONNECTIONS if loopback else MAX_CONNECTIONS_PER_ADDRESS):
            self.mode = _Mode.CLOSING
            self.transport.abort()
            return
        self._settle_deadline()

    def data_received(self, data: bytes) -> None:
        if self.mode is _Mode.TRACKER and not (
            self.backlog or self.writing_paused or len(data) > FEED_SLICE
        ):
            self._take(data)
        elif self.mode is _Mode.WEB:
            # aiohttp bounds its own queue of requests and pauses reading itself.
            self._take(data)
        elif self.mode is not _Mode.CLOSING:
            self.backlog += data
            self._pump()
        self._settle_deadline()

    def eof_received(self) -> bool | None:
        if self.web is not None:
            return self.web.eof_received()
        if self.mode is _Mode.CLOSING or not self.backlog:
            return None
        # Answer what was sent before the end; _pump closes once the backlog is parsed.
        self.end_of_input = True
        return True

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.web is not None:
            self.web.pause_writing()
        else:
            self._update_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.web is not None:
            self.web.resume_writing()
        else:
            self._pump()
            self._settle_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.front.connections.discard(self)
        left = self.front.per_address.get(self.address, 1) - 1
        if left:
            self.front.per_address[self.address] = left
        else:
            self.front.per_address.pop(self.address, None)
        self.backlog.clear()
        self.mode = _Mode.CLOSING
        if self.web is not None:
            self.web.connection_lost(exc)

    # --- reading, in bounded slices ---

    def _pump(self) -> None:
        """Parse the backlog while replies can be sent; stop reading while they cannot."""
        while self.backlog and not self.writing_paused and self.mode in _FRONT_MODES:
            piece = bytes(self.backlog[:FEED_SLICE])
            del self.backlog[:FEED_SLICE]
            self._take(piece)
        if self.mode is _Mode.CLOSING:
            self.backlog.clear()
        self._update_reading()
        if self.mode is _Mode.WEB and self.backlog:
            rest = bytes(self.backlog)
            self.backlog.clear()
            self._take(rest)
        elif self.end_of_input and not self.backlog and self.mode in _FRONT_MODES:
            self._close()

    def _update_reading(self) -> None:
        """Read while the front can take more: nothing queued and replies being read."""
        paused = self.mode in _FRONT_MODES and bool(self.backlog or self.writing_paused)
        transport = self.transport
        if paused == self.reading_paused or transport is None or transport.is_closing():
            return
        self.reading_paused = paused
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _take(self, piece: bytes) -> None:
        """Parse piece, answering tracker requests; pass it on if the connection is aiohttp's."""
        self.partial = True
        if self.pending is not None:
            self.pending += piece
        self._feed(piece)
        if self.in_head:
            # Parts of a header line wait inside the parser; bound them by counting what came
            # after the piece the head began in.
            if self.head_bytes is None:
                self.head_bytes = 0
            else:
                self.head_bytes += len(piece)
                if self.head_bytes > MAX_HEAD:
                    self._close(431, f"the request head is larger than {MAX_HEAD // 1024} KiB")
        if self.mode is _Mode.WEB:
            if self.web is None:
                self._start_web()
            else:
                self.web.data_received(piece)

    def _feed(self, data: bytes) -> None:
        while True:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                # The request asked to switch protocols, which the hub ignores (aiohttp answers
                # it as a plain request): what follows is parsed as more requests.
                data = data[upgrade.args[0] :]
                if data and self.mode is not _Mode.CLOSING:
                    continue
            except httptools.HttpParserCallbackError as error:
                if not isinstance(error.__context__, _Stop):
                    log.error("the hub's front failed on a request", exc_info=error.__context__)
                    self._close(500, "the hub failed on this request")
            except httptools.HttpParserError as error:
                self._close(400, f"the request is not valid HTTP ({str(error).lower()})")
            return

    def _start_web(self) -> None:
        """Hand the connection to aiohttp with every byte it has sent so far."""
        assert self.transport is not None and self.pending is not None
        web = self.web = self.front.web()
        web.connection_made(self.transport)
        data = bytes(self.pending)
        self.pending = None
        web.data_received(data)

    # --- deadlines ---

    def _settle_deadline(self) -> None:
        """A request under way must end within REQUEST_TIMEOUT of its start; idle, KEEP_ALIVE."""
        if self.mode is _Mode.CLOSING:
            return
        if self.partial or self.backlog:
            if not self.request_clock:
                self.request_clock = True
                self._arm(REQUEST_TIMEOUT)
        else:
            self._arm(KEEP_ALIVE)

    def _arm(self, seconds: float) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.deadline = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _expire(self) -> None:
        self.deadline = None
        if self.transport is not None:
            # Unsent replies go too: a client that does not read them may not hold them.
            self.transport.abort()

    def _close(self, status: int | None = None, message: str = "") -> None:
        """Answer status with message (unless aiohttp answers on this connection), then close."""
        if self.mode is _Mode.CLOSING or self.transport is None:
            return
        if status is not None and self.web is None:
            self.transport.write(_error(status, message))
        self.mode = _Mode.CLOSING
        self.backlog.clear()
        self.transport.close()
        # close() waits for the replies to be read; a client that never reads them is cut off.
        self._arm(REQUEST_TIMEOUT)

    def _stop(self, status: int | None = None, message: str = "") -> NoReturn:
        self._close(status, message)
        raise _Stop

    # --- parser callbacks ---

    def on_message_begin(self) -> None:
        self.partial = True
        self.url = b""
        self.in_head = True
        self.head_bytes = None
        self.header_count = 0
        self.body_length = None
        self.chunked = False
        self.problem = None

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_HEAD:
            self._stop(414, f"the request's URL is longer than {MAX_HEAD // 1024} KiB")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > MAX_HEADERS:
            self._stop(431, f"the request has more than {MAX_HEADERS} header fields")
        if len(name) == 14 and name.lower() == b"content-length":
            self.body_length = _content_length(value)
            if self.body_length is None:
                self.problem = (400, "the Content-Length is not a plain decimal number")
            elif self.body_length > MAX_BODY:
                self.problem = (413, f"the request body is larger than {MAX_BODY // 1024} KiB")
        elif len(name) == 17 and name.lower() == b"transfer-encoding":
            self.chunked = True

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.keep_alive = self.parser.should_keep_alive()
        if self.problem is not None:
            self._stop(*self.problem)
        self.path, _, self.query = self.url.partition(b"?")
        asks_tracker = self.path in TRACKER_PATHS and self.parser.get_method() == b"GET"
        if self.mode is _Mode.UNDECIDED:
            if not asks_tracker:
                self.mode = _Mode.WEB
                return
            self.mode = _Mode.TRACKER
            self.pending = None
        if self.mode is _Mode.TRACKER:
            if not asks_tracker:
                # A tracker connection asking for something else: let it reconnect for that.
                self._stop(404, "this connection serves tracker requests only")
            if self.body_length or self.chunked:
                self._stop(400, "a tracker request has no body")

    def on_message_complete(self) -> None:
        self.partial = False
        self.request_clock = False
        if self.mode is not _Mode.TRACKER:
            return
        assert self.transport is not None
        body = self.front.tracker(self.path.decode(), self.query.decode("latin-1"), self.ip)
        self.transport.write(_OK % (len(body), b"" if self.keep_alive else _CLOSE) + body)
        if not self.keep_alive:
            self._stop()


_FRONT_MODES = (_Mode.UNDECIDED, _Mode.TRACKER)
_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n"
_CLOSE = b"Connection: close\r\n"
_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


def _error(status: int, message: str) -> bytes:
    """A response with the index API's error form, {"error": sentence}, closing the connection."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _content_length(value: bytes) -> int | None:
    """The length a Content-Length value gives, or None unless it is plain digits."""
    # llhttp refuses signs, lists and repeats; leading zeros it reads as decimal, where other
    # parsers on the way may read octal or refuse them, so they are refused here.
    digits = value.strip(b" \t")
    if not digits.isdigit() or len(digits) > _MAX_LENGTH_DIGITS:
        return None
    if digits[0] == ord("0") and len(digits) > 1:
        return None
    return int(digits)


def _address_key(ip: str) -> tuple[str, bool]:
    """What connections from ip are counted under (IPv6 by /64), and whether it is loopback."""
    try:
        address = ipaddress.ip_address(ip.partition("%")[0])
    except ValueError:
        return ip, False
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif not address.is_loopback:
            return str(ipaddress.IPv6Network((address, 64), strict=False)), False
    return str(address), address.is_loopback
