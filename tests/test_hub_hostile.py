"""Hostile clients of the hub: floods, slow requests, odd framing, weak keys, huge numbers."""

from __future__ import annotations

import asyncio
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, quote_from_bytes

import httptools
import pytest
from conftest import LOOPBACK, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st
from test_hub_index import listing_json

from shoal.bencode import decode
from shoal.hub import HubError, front
from shoal.hub.client import search
from shoal.hub.front import TRACKER_PATHS, ConnectionFront
from shoal.hub.listing import ListingForbidden, parse_publish, parse_withdraw
from shoal.hub.registry import TrackerConfig
from shoal.hub.server import HubThread
from shoal.hub.urls import base_url
from shoal.identity import Identity, public_key_problem, verify

INFO_HASH = bytes(range(20))
ANNOUNCE = (
    f"GET /announce?info_hash={quote_from_bytes(INFO_HASH)}&peer_id=-XX0001-000000000001"
    "&port=6881&left=0&numwant=0 HTTP/1.1\r\nHost: hub\r\n\r\n"
).encode()
LAST_ANNOUNCE = ANNOUNCE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deadlines of a fraction of a second (HEAD_TIMEOUT is the name the first front used)."""
    monkeypatch.setattr(front, "REQUEST_TIMEOUT", 0.5, raising=False)
    monkeypatch.setattr(front, "HEAD_TIMEOUT", 0.5, raising=False)


@pytest.fixture
def quiet_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record the hub logs; the test fails if any is a warning or carries a traceback."""
    caplog.set_level(logging.DEBUG)
    yield caplog
    records = caplog.get_records("setup") + caplog.get_records("call")
    loud = [r for r in records if r.exc_info or r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud]


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send data on a new connection and return all the hub answers until it closes."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def status(answer: bytes) -> int:
    """The status code of the first response in answer."""
    return int(answer.split(b" ", 2)[1])


def closed_by_hub(sock: socket.socket, dribble: bytes = b"", timeout: float = 10.0) -> bool:
    """Send dribble a byte at a time, 10 per second, until the hub closes sock; or time out."""
    sock.settimeout(0.1)
    deadline = time.monotonic() + timeout
    sent = 0
    while time.monotonic() < deadline:
        try:
            if sent < len(dribble):
                sock.send(dribble[sent : sent + 1])
                sent += 1
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


# --- 7: replies a client never reads, and malformed floods ---


def flood(sock: socket.socket, data: bytes, stop: Callable[[], bool], timeout: float = 30.0) -> int:
    """Send data without reading until it is all sent, or sending blocks and stop() holds."""
    sock.setblocking(False)
    view = memoryview(data)
    sent = 0
    deadline = time.monotonic() + timeout
    while sent < len(data) and time.monotonic() < deadline:
        try:
            sent += sock.send(view[sent : sent + 65536])
        except BlockingIOError:
            if stop():
                break
            select.select([], [sock], [], 0.05)
    return sent


def test_the_front_stops_reading_while_its_replies_are_not_read(hub):
    malformed = b"GET /announce HTTP/1.1\r\n\r\n"  # about 7 times as many bytes come back
    data = malformed * (2 * 1024 * 1024 // len(malformed))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.connect((LOOPBACK, hub.port))
        paused = lambda: hub.front_stats().reading_paused == 1  # noqa: E731
        sent = flood(sock, data, paused)
        # 15 MB of replies are more than the kernel's buffers can hold.
        wait_for(paused, message="the hub read 2 MiB of requests whose replies wait")
        stats = hub.front_stats()
        # Held: the rest of one read of input (256 KiB at most), the write buffer's high mark
        # and the replies to one slice of input.
        assert stats.queued_bytes < 512 * 1024, stats
        # Once the client reads, the front goes on and answers every request it sent.
        sock.setblocking(True)
        sock.settimeout(30)
        expected, seen, tail = sent // len(malformed), 0, b""
        while seen < expected:
            chunk = sock.recv(1 << 20)
            assert chunk, f"the hub closed after {seen} of {expected} replies"
            text = tail + chunk
            seen += text.count(b"HTTP/1.1 200 OK")
            tail = text[-20:]
            seen -= tail.count(b"HTTP/1.1 200 OK")
        assert seen == expected


def test_pipelined_index_requests_are_bounded_too(hub):
    request = b"GET /nothing HTTP/1.1\r\nHost: hub\r\n\r\n"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.connect((LOOPBACK, hub.port))
        flood(sock, request * (4 * 1024 * 1024 // len(request)), lambda: True)
        wait_for(lambda: hub.front_stats().reading_paused == 1, message="aiohttp kept reading")
        assert hub.front_stats().queued_bytes < 256 * 1024


def test_malformed_announces_spend_the_rate_limit(tmp_path):
    config = TrackerConfig(announce_rate=0.001, announce_burst=2)
    with HubThread(tmp_path / "hub.db", config=config) as limited:
        answer = exchange(
            limited.port, b"GET /announce?port=x HTTP/1.1\r\n\r\n" * 2 + LAST_ANNOUNCE
        )
        reasons = [
            decode(part.partition(b"\r\n\r\n")[2]).get(b"failure reason")
            for part in answer.split(b"HTTP/1.1 ")[1:]
        ]
    assert reasons == [b"the request has no info_hash"] * 2 + [
        b"too many requests from this address; slow down"
    ]


# --- 8: deadlines over whole requests, connections per address ---


@pytest.mark.parametrize(
    "start",
    [
        b"\r\n\r\n",  # blank lines before a request are skipped by HTTP parsers
        b"POST /index/publish HTTP/1.1\r\nHost: hub\r\nContent-Length: 100\r\n\r\n{",
        b"GET /announce?" + b"x" * 100,
        ANNOUNCE + b"GET /announce?info_hash=",  # the second request on a kept-alive connection
    ],
)
def test_a_request_dribbled_byte_by_byte_is_cut_off(quick, hub, start):
    with socket.create_connection((LOOPBACK, hub.port), timeout=10) as sock:
        sock.sendall(start)
        # Bytes keep coming, ten a second, as a slow-loris client sends them.
        assert closed_by_hub(sock, dribble=b"\r\n" * 50 if start.endswith(b"\n") else b"x" * 50)
    # The hub still serves others.
    assert status(exchange(hub.port, LAST_ANNOUNCE)) == 200


def test_loopback_connections_are_bounded_too(monkeypatch, hub):
    monkeypatch.setattr(front, "MAX_LOOPBACK_CONNECTIONS", 4, raising=False)
    held = [socket.create_connection((LOOPBACK, hub.port), timeout=10) for _ in range(4)]
    try:
        for _ in range(2):  # before the fifth connection, and after it
            for sock in held:
                sock.sendall(ANNOUNCE)
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
            with socket.create_connection((LOOPBACK, hub.port), timeout=10) as extra:
                assert closed_by_hub(extra, timeout=2)  # well before any deadline
    finally:
        for sock in held:
            sock.close()


# --- 16: framing of request bodies, and logs without tracebacks ---


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (b"05", 400),
        (b"+5", 400),
        (b"0x5", 400),
        (b"5, 5", 400),
        (b"", 400),
        (b"5\r\nContent-Length: 5", 400),
        (b"99999999999999999999999999", 400),
        (str(300 * 1024).encode(), 413),
    ],
)
def test_odd_content_lengths_are_refused(hub, quiet_log, length, expected):
    for path in (b"GET /announce?x", b"POST /index/withdraw"):
        answer = exchange(
            hub.port,
            path + b" HTTP/1.1\r\nHost: hub\r\nContent-Length: " + length + b"\r\n\r\n"
            b"{}{}}GET /announce?y HTTP/1.1\r\n\r\n",
        )
        # One refusal, in the index API's form, and nothing read as a request from the body.
        head, _, body = answer.partition(b"\r\n\r\n")
        assert status(head) == expected, answer
        assert set(json.loads(body)) == {"error"} and b"HTTP/1.1" not in body


def test_a_tracker_request_with_a_body_is_refused(hub):
    answer = exchange(
        hub.port, ANNOUNCE.replace(b"\r\n\r\n", b"\r\nContent-Length: 5\r\n\r\n") + ANNOUNCE
    )
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1") == 1
    assert b"a tracker request has no body" in answer


def test_an_aborted_body_leaves_no_traceback(tmp_path, quiet_log):
    with HubThread(tmp_path / "hub.db") as running:
        sock = socket.create_connection((LOOPBACK, running.port), timeout=10)
        sock.sendall(b"POST /index/publish HTTP/1.1\r\nHost: hub\r\nContent-Length: 100\r\n\r\n{")
        # The index's rate limit has seen this address once the handler waits for the body.
        wait_for(lambda: len(running.hub._index_limiter) == 1, message="no handler started")
        sock.close()
        # The log is checked once the hub has stopped, after these requests.
        # Malformed HTTP that the front lets through to aiohttp (HTTP/1.1 without Host).
        assert status(exchange(running.port, b"GET / HTTP/1.1\r\n\r\n")) == 400
        assert status(exchange(running.port, b"GET /nothing HTTP/1.0\r\n\r\n")) == 404


# --- 13: numbers from outside ---


def test_a_search_limit_of_thousands_of_digits_is_a_sentence(hub, quiet_log):
    answer = exchange(
        hub.port, b"GET /index/search?q=a&limit=" + b"9" * 5000 + b" HTTP/1.0\r\nHost: x\r\n\r\n"
    )
    assert status(answer) == 400
    assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {
        "error": "the limit is not a whole number from 1 to 200"
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", "9" * 5000),
        ("numwant", "9" * 5000),
        ("uploaded", str(2**64)),
        ("left", "9" * 21),
        ("downloaded", "１２"),  # digits, but not ASCII ones
    ],
)
def test_announce_numbers_are_bounded(hub, field, value):
    query = {
        "info_hash": quote_from_bytes(INFO_HASH),
        "peer_id": "-XX0001-000000000001",
        "port": "6881",
        field: quote(value),
    }
    line = "&".join(f"{key}={item}" for key, item in query.items())
    answer = exchange(hub.port, f"GET /announce?{line} HTTP/1.0\r\n\r\n".encode())
    reply = decode(answer.partition(b"\r\n\r\n")[2])
    assert field.encode() in reply[b"failure reason"]


def test_a_hub_url_port_of_thousands_of_digits_is_a_sentence():
    for port in ("9" * 5000, "65536", "0", "x"):
        with pytest.raises(HubError, match=r"^the port in the hub URL is not a number"):
            base_url(f"hub.example:{port}")
    assert base_url("hub.example:6969") == "http://hub.example:6969"


@pytest.fixture
def fake_index() -> Iterator[tuple[str, list[Any]]]:
    """An HTTP server answering every search with the results the test puts in the list."""
    results: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"results": results}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}", results
    finally:
        server.shutdown()
        server.server_close()


def test_search_results_with_huge_numbers_are_refused(fake_index):
    url, results = fake_index
    entry = {"info_hash": "ab" * 20, "name": "x", "size": 1, "files": 1, "seeders": 0}
    results.append({**entry, "leechers": 0, "publishers": 1})
    assert [found.size for found in asyncio.run(search(url, "x"))] == [1]
    results[0]["size"] = 10**400
    with pytest.raises(HubError, match="malformed search results"):
        asyncio.run(search(url, "x"))


# --- 15: keys of small order, and encodings that are not canonical ---

# The 8 points of order 1, 2, 4 and 8 (as the EdDSA literature and libsodium's list give them).
SMALL_ORDER = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
]
NOT_CANONICAL = [
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 1
    "0100000000000000000000000000000000000000000000000000000000000080",  # x = -0
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
]
# With the neutral key, R = the neutral point and S = 0 verify every message.
NEUTRAL = SMALL_ORDER[0]
TRIVIAL_SIGNATURE = NEUTRAL + "00" * 32


def test_weak_keys_are_refused():
    for key in SMALL_ORDER:
        assert "small order" in public_key_problem(bytes.fromhex(key))
    for key in NOT_CANONICAL:
        assert "canonical" in public_key_problem(bytes.fromhex(key))
    assert not verify(NEUTRAL, b"any message", bytes.fromhex(TRIVIAL_SIGNATURE))
    honest = Identity.generate()
    assert public_key_problem(bytes.fromhex(honest.public_key_hex)) is None
    assert verify(honest.public_key_hex, b"m", honest.sign(b"m"))
    # An honest key with a signature whose S is not reduced below the group order.
    signature = honest.sign(b"m")
    s = int.from_bytes(signature[32:], "little") + 2**252 + 27742317777372353535851937790883648493
    assert not verify(honest.public_key_hex, b"m", signature[:32] + s.to_bytes(32, "little"))


@settings(max_examples=300)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=64, max_size=64))
def test_key_checks_never_crash(key, signature):
    problem = public_key_problem(key)
    assert problem is None or isinstance(problem, str)
    assert isinstance(verify(key.hex(), b"m", signature), bool)


def forged_publish() -> dict[str, Any]:
    listing = listing_json(name="forged")
    return {"listing": listing, "public_key": NEUTRAL, "signature": TRIVIAL_SIGNATURE}


def forged_withdraw() -> dict[str, Any]:
    return {
        "info_hash": "ab" * 20,
        "public_key": NEUTRAL,
        "timestamp": int(time.time()),
        "signature": TRIVIAL_SIGNATURE,
    }


def test_the_trivial_forgery_is_refused_by_the_parsers():
    for parse, body in ((parse_publish, forged_publish()), (parse_withdraw, forged_withdraw())):
        with pytest.raises(ListingForbidden, match="small order"):
            parse(body, time.time())
        for key in SMALL_ORDER + NOT_CANONICAL:
            with pytest.raises(ListingForbidden, match="the public_key is"):
                parse({**body, "public_key": key}, time.time())


def post(port: int, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    raw = json.dumps(body).encode()
    answer = exchange(
        port,
        f"POST {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n".encode()
        + raw,
    )
    head, _, reply = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(reply)


def test_publish_and_withdraw_with_a_small_order_key_get_403(hub):
    status, reply = post(hub.port, "/index/publish", forged_publish())
    assert status == 403 and "small order" in reply["error"], reply
    status, reply = post(hub.port, "/index/withdraw", forged_withdraw())
    assert status == 403 and "small order" in reply["error"], reply


# --- the front's parsing, without sockets, by property ---


class FakeTransport(asyncio.Transport):
    """Records what the front writes; reading and closing are flags."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closing = True

    abort = close

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.1", 50000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


class WebStub(asyncio.Protocol):
    """Stands for aiohttp: keeps what the front passes on."""

    def __init__(self) -> None:
        self.received = bytearray()

    def data_received(self, data: bytes) -> None:
        self.received += data


def run_front(pieces: list[bytes]) -> tuple[FakeTransport, list[str], WebStub | None]:
    """Feed pieces to one front connection; return its transport, tracker paths, web stub."""
    paths: list[str] = []
    webs: list[WebStub] = []

    def tracker(path: str, query: str, sender: str) -> bytes:
        paths.append(path)
        return b"d8:intervali1800ee"

    def web() -> WebStub:
        webs.append(WebStub())
        return webs[-1]

    async def main() -> FakeTransport:
        protocol = ConnectionFront(web, tracker).protocol()
        transport = FakeTransport()
        protocol.connection_made(transport)
        for piece in pieces:
            if transport.closing:
                break
            protocol.data_received(piece)
        protocol.connection_lost(None)
        return transport

    transport = asyncio.run(main())
    return transport, paths, webs[0] if webs else None


def responses(data: bytes) -> int:
    """How many complete HTTP responses data holds; raises if it is not a run of them."""
    count = 0

    class Counter:
        def on_message_complete(self) -> None:
            nonlocal count
            count += 1

    parser = httptools.HttpResponseParser(Counter())
    parser.feed_data(data)
    return count


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8))
def test_the_front_survives_any_bytes_in_any_pieces(data, cuts):
    transport, paths, web = run_front(split(data, cuts))
    assert set(paths) <= {path.decode() for path in TRACKER_PATHS}
    assert responses(bytes(transport.written)) >= len(paths)
    if web is not None:
        # aiohttp gets the bytes as they came, from the first, in order.
        assert data.startswith(web.received)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 20), st.lists(st.integers(0, 10_000), max_size=20))
def test_tracker_requests_in_any_pieces_are_each_answered_once(count, cuts):
    data = ANNOUNCE * count
    transport, paths, web = run_front(split(data, cuts))
    assert web is None and paths == ["/announce"] * count
    assert responses(bytes(transport.written)) == count and not transport.closing
