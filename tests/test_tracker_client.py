"""Tracker client: parsers under hostile input, the UDP and schedule cores on a fake clock, and
round trips against small fake HTTP and UDP trackers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import struct
import time
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from conftest import LOOPBACK, free_port, until
from hypothesis import given
from hypothesis import strategies as st

from shoal.bencode import encode
from shoal.tracker import AnnounceStats, TrackerClient, scrape
from shoal.tracker.http import (
    announce_url,
    parse_announce_response,
    parse_scrape_response,
    scrape_url,
)
from shoal.tracker.messages import (
    MAX_PEERS,
    AnnounceParams,
    AnnounceResponse,
    Event,
    ScrapeResult,
    TrackerError,
    TrackerRefused,
)
from shoal.tracker.schedule import Announce, AnnounceSchedule, backoff
from shoal.tracker.udp import (
    PROTOCOL_ID,
    ConnectionCache,
    UdpAnnounce,
    UdpScrape,
    UdpTrackerExchange,
)

INFO_HASH = bytes([0, 255, 37, 38, 43, 61, 63, 32]) + b"hashhashhash"  # %, &, +, =, ?, space
PEER_ID = b"-SH0100-" + bytes(range(200, 212))
OTHER_HASH = b"\x11" * 20


def compact(*peers: tuple[str, int]) -> bytes:
    """Compact peer bytes (BEP 23 / BEP 7) for (ip, port) pairs."""
    return b"".join(ipaddress.ip_address(ip).packed + port.to_bytes(2, "big") for ip, port in peers)


def params(event: Event = Event.NONE, **changes: Any) -> AnnounceParams:
    """Announce parameters with small distinct numbers."""
    fields = dict(
        info_hash=INFO_HASH,
        peer_id=PEER_ID,
        port=6881,
        uploaded=11,
        downloaded=22,
        left=33,
        event=event,
        numwant=50,
        key=0xABCDEF,
    )
    return AnnounceParams(**{**fields, **changes})


def query_of(url: str) -> dict[str, bytes]:
    """The query of a URL, each value as raw bytes."""
    query = parse_qs(urlsplit(url).query, encoding="latin-1")
    return {name: values[0].encode("latin-1") for name, values in query.items()}


# -- HTTP: URLs and replies --------------------------------------------------------------------


def sent(exchange: UdpTrackerExchange[Any]) -> bytes | None:
    """The one datagram the exchange queued since the last call, if any."""
    outputs = exchange.take_outputs()
    assert len(outputs) <= 1
    return outputs[0] if outputs else None


def due(schedule: AnnounceSchedule, now: float) -> list[Announce]:
    """The announces the schedule's timer queues at now."""
    schedule.handle_timer(now)
    return schedule.take_outputs()


def stopping(schedule: AnnounceSchedule, now: float) -> list[Announce]:
    """The `stopped` announces the schedule owes when it ends at now."""
    schedule.stop(now)
    return schedule.take_outputs()


def test_announce_url_encodes_bytes_and_keeps_the_query():
    url = announce_url(
        "http://t.example/announce?passkey=abc",
        params(Event.STARTED, tracker_id=b"id\x00&"),
    )
    assert url.startswith("http://t.example/announce?passkey=abc&info_hash=%00%FF%25%26%2B%3D")
    query = query_of(url)
    assert query["info_hash"] == INFO_HASH
    assert query["peer_id"] == PEER_ID
    assert query["passkey"] == b"abc"
    assert query["trackerid"] == b"id\x00&"
    expected = {"port": b"6881", "uploaded": b"11", "downloaded": b"22", "left": b"33"}
    assert {name: query[name] for name in expected} == expected
    assert (query["event"], query["compact"], query["numwant"]) == (b"started", b"1", b"50")
    assert query["key"] == b"00abcdef"
    assert "event" not in query_of(announce_url("http://t.example/announce", params()))


def test_scrape_url_follows_bep48():
    url = scrape_url("http://t.example/x/announce.php?k=1", [INFO_HASH, OTHER_HASH])
    assert url.startswith("http://t.example/x/scrape.php?k=1&info_hash=")
    assert parse_qs(urlsplit(url).query, encoding="latin-1")["info_hash"] == [
        INFO_HASH.decode("latin-1"),
        OTHER_HASH.decode("latin-1"),
    ]
    with pytest.raises(TrackerError, match="does not support scrape"):
        scrape_url("http://t.example/announce/x", [INFO_HASH])


def test_compact_reply_with_ipv6_peers():
    reply = parse_announce_response(
        encode(
            {
                b"complete": 3,
                b"incomplete": 4,
                b"interval": 900,
                b"min interval": 300,
                b"peers": compact(("10.0.0.1", 6881), ("10.0.0.2", 0), ("10.0.0.3", 51413))
                + b"\x01\x02",  # a truncated entry at the end is ignored
                b"peers6": compact(("2001:db8::1", 6882)),
                b"tracker id": b"T1",
                b"warning message": b"be nice\x07",
            }
        )
    )
    assert reply.peers == [("10.0.0.1", 6881), ("10.0.0.3", 51413), ("2001:db8::1", 6882)]
    assert (reply.interval, reply.min_interval, reply.seeders, reply.leechers) == (900, 300, 3, 4)
    assert reply.tracker_id == b"T1"
    assert reply.warning == "be nice"


def test_non_compact_reply():
    peers = [
        {b"ip": b"192.0.2.7", b"peer id": b"x" * 20, b"port": 7000},
        {b"ip": b"2001:db8::2", b"port": 7001},
        {b"ip": b"tracker.example", b"port": 7002},  # host names are not looked up
        {b"ip": b"192.0.2.8", b"port": 0},
        {b"ip": b"192.0.2.9", b"port": 70000},
        {b"port": 7003},
        b"junk",
    ]
    reply = parse_announce_response(encode({b"interval": 60, b"peers": peers}))
    assert reply.peers == [("192.0.2.7", 7000), ("2001:db8::2", 7001)]


def test_failure_reason_is_a_refusal():
    body = encode({b"failure reason": b"unregistered torrent"})
    with pytest.raises(TrackerRefused, match=r"^the tracker refused the announce: unregistered"):
        parse_announce_response(body)
    with pytest.raises(TrackerRefused, match="refused the scrape"):
        parse_scrape_response(body, [INFO_HASH])


def test_peer_list_is_bounded():
    many = compact(*[(f"10.{i // 256 % 256}.{i % 256}.1", 1000 + i) for i in range(3000)])
    reply = parse_announce_response(encode({b"interval": 60, b"peers": many}))
    assert len(reply.peers) == MAX_PEERS


def test_garbage_replies_are_plain_errors():
    with pytest.raises(TrackerError, match=r"^the tracker's reply is not valid bencode$"):
        parse_announce_response(b"<html>502 Bad Gateway</html>")
    with pytest.raises(TrackerError, match="not a dictionary"):
        parse_announce_response(b"li1ee")
    with pytest.raises(TrackerError, match="no files dictionary"):
        parse_scrape_response(b"de", [INFO_HASH])


def test_scrape_reply():
    files = {
        INFO_HASH: {b"complete": 5, b"downloaded": 9, b"incomplete": 2},
        OTHER_HASH: {b"complete": -1},
        b"\x22" * 20: {b"complete": 1},
    }
    results = parse_scrape_response(encode({b"files": files}), [INFO_HASH, OTHER_HASH])
    assert results == {INFO_HASH: ScrapeResult(seeders=5, completed=9, leechers=2)}


# -- HTTP parsers under hostile input ----------------------------------------------------------

KEYS = [
    b"peers",
    b"peers6",
    b"interval",
    b"min interval",
    b"failure reason",
    b"warning message",
    b"tracker id",
    b"complete",
    b"incomplete",
    b"downloaded",
    b"files",
    b"ip",
    b"port",
    INFO_HASH,
]
bencode_values = st.recursive(
    st.integers(-(2**70), 2**70) | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.sampled_from(KEYS) | st.binary(max_size=8), children, max_size=6)
    ),
    max_leaves=30,
)
replies = st.dictionaries(st.sampled_from(KEYS), bencode_values, max_size=8).map(encode)
valid_replies = st.builds(
    lambda peers, peers6, interval: encode(
        {
            b"interval": interval,
            b"peers": peers,
            b"peers6": peers6,
            b"files": {INFO_HASH: {b"complete": 1, b"downloaded": 2, b"incomplete": 3}},
        }
    ),
    st.binary(max_size=60),
    st.binary(max_size=60),
    st.integers(0, 10_000),
)


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid reply with a few bytes flipped, inserted, deleted or the end cut off."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, max(0, len(data) - 1)))
        operation = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if operation == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=4))
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 4))]
        else:
            del data[position:]
    return bytes(data)


def check_announce_parser(body: bytes) -> None:
    """The announce parser either raises TrackerError or returns bounded, usable peers."""
    try:
        reply = parse_announce_response(body)
    except TrackerError:
        return
    assert len(reply.peers) <= MAX_PEERS
    assert all(0 < port < 65536 for _host, port in reply.peers)


def check_scrape_parser(body: bytes) -> None:
    """The scrape parser either raises TrackerError or returns counts for asked hashes only."""
    try:
        results = parse_scrape_response(body, [INFO_HASH])
    except TrackerError:
        return
    assert set(results) <= {INFO_HASH}


@given(st.binary(max_size=300) | replies | mutated(valid_replies))
def test_announce_parser_raises_only_tracker_error(body):
    check_announce_parser(body)


@given(st.binary(max_size=300) | replies | mutated(valid_replies))
def test_scrape_parser_raises_only_tracker_error(body):
    check_scrape_parser(body)


# -- UDP exchange on a fake clock ----------------------------------------------------------------


def transaction_of(datagram: bytes) -> int:
    """The transaction id of a request (connect, announce or scrape)."""
    return struct.unpack_from(">I", datagram, 12)[0]


def connect_reply(request: bytes, connection_id: bytes = b"C" * 8) -> bytes:
    return struct.pack(">II", 0, transaction_of(request)) + connection_id


def announce_reply(request: bytes, peers: bytes = b"") -> bytes:
    return struct.pack(">IIIII", 1, transaction_of(request), 1200, 4, 5) + peers


def new_announce(cache: ConnectionCache, now: float, **options: Any) -> UdpAnnounce:
    return UdpAnnounce(params(Event.STARTED), now, cache=cache, tracker="t:1", **options)


def test_udp_connect_then_announce_and_reuse_the_connection_id():
    cache = ConnectionCache()
    exchange = new_announce(cache, 0.0)
    connect = sent(exchange)
    assert connect is not None and len(connect) == 16
    assert struct.unpack(">QI", connect[:12]) == (PROTOCOL_ID, 0)
    assert sent(exchange) is None  # each datagram is handed out once
    exchange.receive(connect_reply(connect), 1.0)
    request = sent(exchange)
    assert request is not None and len(request) == 98 and request[:8] == b"C" * 8
    fields = struct.unpack_from(">20s20sQQQIIIiH", request, 16)
    assert fields == (INFO_HASH, PEER_ID, 22, 33, 11, 2, 0, 0xABCDEF, 50, 6881)
    exchange.receive(announce_reply(request, compact(("10.1.1.1", 6881), ("10.1.1.2", 0))), 2.0)
    assert exchange.done and exchange.error is None and exchange.get_timer() is None
    assert exchange.result == AnnounceResponse(1200, None, [("10.1.1.1", 6881)], 5, 4)

    # Within 60 s of receiving it, the connection id is used again without a connect.
    again = new_announce(cache, 60.9)
    request = sent(again)
    assert request is not None and request[:8] == b"C" * 8 and len(request) == 98
    # After that a new connect comes first.
    later = new_announce(cache, 61.0)
    assert struct.unpack_from(">Q", sent(later) or b"")[0] == PROTOCOL_ID


def test_udp_retransmits_with_doubling_timeouts_then_gives_up():
    exchange = new_announce(ConnectionCache(), 100.0)
    first = sent(exchange)
    deadlines = []
    for _ in range(4):
        deadline = exchange.get_timer()
        assert deadline is not None
        deadlines.append(deadline - 100.0)
        exchange.handle_timer(deadline - 0.001)  # early: nothing happens
        assert sent(exchange) is None
        exchange.handle_timer(deadline)
        if not exchange.done:
            assert sent(exchange) == first  # same transaction id: late replies count
    assert deadlines == [3.0, 9.0, 21.0, 45.0]
    assert exchange.done and exchange.result is None
    assert str(exchange.error) == "the tracker did not answer after 4 tries"


def test_udp_ignores_wrong_transactions_and_reports_tracker_errors():
    cache = ConnectionCache()
    cache.put("t:1", b"K" * 8, 0.0)
    exchange = new_announce(cache, 1.0)
    request = sent(exchange)
    assert request is not None
    tid = transaction_of(request)
    exchange.receive(struct.pack(">II", 1, tid ^ 1) + bytes(12), 1.5)  # another transaction
    exchange.receive(struct.pack(">II", 0, tid) + b"Z" * 8, 1.5)  # a connect reply, unasked
    exchange.receive(struct.pack(">II", 1, tid) + bytes(4), 1.5)  # too short for an announce
    assert not exchange.done
    exchange.receive(struct.pack(">II", 3, tid) + b"bad connection id\n", 1.6)
    assert isinstance(exchange.error, TrackerRefused)
    assert str(exchange.error) == "the tracker refused the announce: bad connection id"
    assert cache.get("t:1", 1.6) is None  # the rejected id is not used again


def test_udp_reconnects_when_the_connection_id_expires_during_retries():
    cache = ConnectionCache()
    cache.put("t:1", b"K" * 8, 0.0)
    exchange = new_announce(cache, 50.0, first_timeout=15.0)
    assert (sent(exchange) or b"")[:8] == b"K" * 8
    exchange.handle_timer(65.0)
    assert struct.unpack_from(">Q", sent(exchange) or b"")[0] == PROTOCOL_ID


def test_udp_peers_are_ipv6_when_the_tracker_is_reached_over_ipv6():
    cache = ConnectionCache()
    cache.put("t:1", b"K" * 8, 0.0)
    exchange = new_announce(cache, 1.0, ipv6=True)
    request = sent(exchange) or b""
    exchange.receive(announce_reply(request, compact(("2001:db8::5", 6000))), 2.0)
    assert exchange.result is not None and exchange.result.peers == [("2001:db8::5", 6000)]


def test_udp_scrape():
    cache = ConnectionCache()
    cache.put("t:1", b"K" * 8, 0.0)
    exchange = UdpScrape([INFO_HASH, OTHER_HASH], 1.0, cache=cache, tracker="t:1")
    request = sent(exchange)
    assert request == b"K" * 8 + struct.pack(">II", 2, transaction_of(request)) + INFO_HASH + (
        OTHER_HASH
    )
    exchange.receive(struct.pack(">IIIII", 2, transaction_of(request), 7, 8, 9), 2.0)
    assert exchange.result == {INFO_HASH: ScrapeResult(seeders=7, completed=8, leechers=9)}


@given(st.lists(st.binary(max_size=120) | st.tuples(st.integers(0, 4), st.binary(max_size=120))))
def test_udp_receive_never_raises(datagrams):
    exchange = new_announce(ConnectionCache(), 0.0)
    connect = sent(exchange)
    assert connect is not None
    tid = transaction_of(connect)
    for index, datagram in enumerate(datagrams):
        if isinstance(datagram, tuple):  # a reply to the right transaction, with random content
            action, tail = datagram
            datagram = struct.pack(">II", action, tid) + tail
        exchange.receive(datagram, float(index))
        request = sent(exchange)
        if request is not None:
            tid = transaction_of(request)
        assert exchange.done == (exchange.result is not None or exchange.error is not None)
        if exchange.result is not None:
            assert all(0 < port < 65536 for _host, port in exchange.result.peers)


# -- Schedule on a fake clock -----------------------------------------------------------------


def reply(
    interval: int = 1800, min_interval: int | None = None, peers: int = 0
) -> AnnounceResponse:
    return AnnounceResponse(interval, min_interval, [("10.0.0.1", 1000 + i) for i in range(peers)])


def test_schedule_honours_interval_and_min_interval():
    schedule = AnnounceSchedule([["http://a/announce"]])
    assert due(schedule, 0.0) == [] and schedule.get_timer() is None  # not started
    schedule.start(10.0)
    [started] = due(schedule, 10.0)
    assert started.event is Event.STARTED and due(schedule, 10.0) == []
    schedule.succeeded(started, reply(interval=600, min_interval=120), 11.0)
    assert schedule.get_timer() == 611.0
    assert due(schedule, 610.9) == []
    # Asking for peers early waits for the min interval, not the whole interval.
    schedule.reannounce(20.0)
    assert schedule.get_timer() == 131.0
    [early] = due(schedule, 131.0)
    assert early.event is Event.NONE
    # An interval below the min interval, or absurdly small or large, is bounded.
    schedule.succeeded(early, reply(interval=5, min_interval=300), 200.0)
    assert schedule.get_timer() == 500.0
    [regular] = due(schedule, 500.0)
    schedule.succeeded(regular, reply(interval=10**12), 500.0)
    assert schedule.get_timer() == 500.0 + 6 * 3600


def test_schedule_tries_the_tier_in_order_and_moves_the_answering_tracker_to_the_front():
    urls = ["udp://a:1/announce", "http://b/announce", "http://c/announce"]
    schedule = AnnounceSchedule([urls], rng=random.Random(7))
    order = [status.url for status in schedule.status()]
    assert sorted(order) == sorted(urls)
    schedule.start(0.0)
    [first] = due(schedule, 0.0)
    assert first.url == order[0]
    schedule.failed(first, "could not reach the tracker", 1.0)
    [second] = due(schedule, 1.0)  # the next tracker of the tier, at once, still `started`
    assert (second.url, second.event) == (order[1], Event.STARTED)
    schedule.succeeded(second, reply(peers=3), 2.0)
    statuses = schedule.status()
    assert [status.url for status in statuses] == [order[1], order[0], order[2]]
    assert statuses[0].peers == 3 and statuses[0].next_announce == 1802.0
    assert statuses[1].last_error == "could not reach the tracker"
    [regular] = due(schedule, 1802.0)
    assert (regular.url, regular.event) == (order[1], Event.NONE)


def test_schedule_announces_to_every_tier_and_skips_unknown_schemes():
    schedule = AnnounceSchedule(
        [
            ["http://a/announce"],
            ["ftp://b/announce", "udp://c:1"],
            ["wss://d", "http://[bad/announce"],
            ["http://a/announce"],
        ]
    )
    schedule.start(0.0)
    assert [announce.url for announce in due(schedule, 0.0)] == ["http://a/announce", "udp://c:1"]
    errors = {status.url: status.last_error for status in schedule.status()}
    assert list(errors) == [
        "http://a/announce",
        "udp://c:1",
        "ftp://b/announce",
        "wss://d",
        "http://[bad/announce",
    ]
    assert errors["ftp://b/announce"] == "the URL is not that of an http, https or udp tracker"
    assert errors["wss://d"] == errors["http://[bad/announce"] == errors["ftp://b/announce"]
    # A tier added later (--tracker) is announced to at once; URLs already known are skipped.
    schedule.add_tier(["udp://c:1", "http://e/announce"], now=5.0)
    [added] = due(schedule, 5.0)
    assert (added.url, added.event) == ("http://e/announce", Event.STARTED)


def test_schedule_backs_off_exponentially_when_every_tracker_fails():
    schedule = AnnounceSchedule([["http://a/announce", "http://b/announce"]])
    schedule.start(0.0)
    now = 0.0
    waits = []
    for _ in range(9):
        for _tracker in range(2):
            [announce] = due(schedule, now)
            schedule.failed(announce, "down", now)
        wake = schedule.get_timer()
        assert wake is not None
        waits.append(wake - now)
        now = wake
    assert waits == [30, 60, 120, 240, 480, 960, 1800, 1800, 1800]
    assert [backoff(n) for n in (1, 2, 100)] == [30, 60, 1800]
    [announce] = due(schedule, now)
    schedule.succeeded(announce, reply(interval=900), now)
    assert schedule.get_timer() == now + 900  # success resets the backoff


def test_schedule_completed_once_and_stopped_to_started_trackers():
    schedule = AnnounceSchedule([["http://a/announce"], ["http://b/announce"]])
    schedule.start(0.0)
    first, second = due(schedule, 0.0)
    schedule.succeeded(first, reply(), 1.0)
    schedule.completed(2.0)
    schedule.completed(3.0)
    [done] = due(schedule, 2.0)
    assert (done.url, done.event) == ("http://a/announce", Event.COMPLETED)
    schedule.succeeded(done, reply(), 2.5)
    # The other tier's `started` was in flight during completion: it learns of it right after.
    schedule.succeeded(second, reply(), 4.0)
    [told] = due(schedule, 4.0)
    assert (told.url, told.event) == ("http://b/announce", Event.COMPLETED)
    schedule.failed(told, "down", 5.0)
    assert schedule.get_timer() == 35.0
    [retry] = due(schedule, 35.0)
    assert retry.event is Event.COMPLETED
    schedule.succeeded(retry, reply(), 36.0)
    # Completed is sent once per tier; both tiers are back to their regular interval.
    assert [status.next_announce for status in schedule.status()] == [1802.5, 1836.0]
    stops = stopping(schedule, 40.0)
    assert [(stop.url, stop.event) for stop in stops] == [
        ("http://a/announce", Event.STOPPED),
        ("http://b/announce", Event.STOPPED),
    ]
    assert due(schedule, 10**6) == [] and schedule.get_timer() is None


def test_schedule_stop_skips_trackers_never_reached():
    schedule = AnnounceSchedule([["http://a/announce"], ["http://b/announce"]])
    schedule.start(0.0)
    first, _second = due(schedule, 0.0)
    schedule.failed(first, "down", 1.0)
    # The failed tier owes nothing; the one still in flight may have been reached.
    assert [stop.url for stop in stopping(schedule, 2.0)] == ["http://b/announce"]


# -- Fake trackers -----------------------------------------------------------------------------


class Recorder:
    """Requests seen by a fake tracker, and a way to wait for them without polling."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self._arrived = asyncio.Event()

    def record(self, request: Any) -> None:
        self.requests.append(request)
        self._arrived.set()

    async def wait(self, count: int, timeout: float = 5.0) -> None:
        """Wait until at least count requests have arrived."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()


class FakeHttpTracker(Recorder):
    """An HTTP tracker on 127.0.0.1 that records query strings and sends a set reply."""

    def __init__(self) -> None:
        super().__init__()
        self.reply = encode({b"interval": 1800, b"peers": b""})
        self.scrape_reply = encode({b"files": {}})
        self.status = 200
        self.headers: dict[str, str] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/announce"

    async def __aenter__(self) -> FakeHttpTracker:
        app = web.Application()
        app.router.add_get("/announce", self._announce)
        app.router.add_get("/scrape", self._scrape)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _announce(self, request: web.Request) -> web.Response:
        self.record(query_of(str(request.rel_url)))
        return web.Response(body=self.reply, status=self.status, headers=self.headers)

    async def _scrape(self, request: web.Request) -> web.Response:
        return web.Response(body=self.scrape_reply)


class UdpAnnounceRecord(NamedTuple):
    """The fields of a BEP 15 announce request after its header."""

    info_hash: bytes
    peer_id: bytes
    downloaded: int
    left: int
    uploaded: int
    event: int
    ip: int
    key: int
    numwant: int
    port: int


class FakeUdpTracker(Recorder, asyncio.DatagramProtocol):
    """A BEP 15 tracker on 127.0.0.1 that can drop datagrams; records every one it gets."""

    def __init__(self, peers: bytes = b"", drop: int = 0) -> None:
        super().__init__()
        self.peers = peers
        self.drop = drop
        self.connects = 0
        self.announces: list[UdpAnnounceRecord] = []
        self.issued: set[bytes] = set()
        self.transport: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> FakeUdpTracker:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(LOOPBACK, 0))
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.transport is not None
        self.transport.close()

    @property
    def url(self) -> str:
        assert self.transport is not None
        return f"udp://{LOOPBACK}:{self.transport.get_extra_info('sockname')[1]}/announce"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.record(data)
        if self.drop:
            self.drop -= 1
            return
        action, tid = struct.unpack_from(">II", data, 8)
        header = struct.pack(">II", action, tid)
        if action == 0 and data[:8] == PROTOCOL_ID.to_bytes(8, "big"):
            self.connects += 1
            connection_id = os.urandom(8)
            self.issued.add(connection_id)
            self.transport.sendto(header + connection_id, addr)
        elif data[:8] not in self.issued:
            self.transport.sendto(struct.pack(">II", 3, tid) + b"unknown connection id", addr)
        elif action == 1:
            fields = struct.unpack_from(">20s20sQQQIIIiH", data, 16)
            self.announces.append(UdpAnnounceRecord(*fields))
            self.transport.sendto(header + struct.pack(">III", 1800, 1, 2) + self.peers, addr)
        elif action == 2:
            hashes = len(data[16:]) // 20
            self.transport.sendto(header + struct.pack(">III", 5, 3, 1) * hashes, addr)


class Peers:
    """An on_peers callback that keeps what it was given and wakes waiters."""

    def __init__(self) -> None:
        self.received: list[list[tuple[str, int]]] = []
        self._arrived = asyncio.Event()

    def __call__(self, peers: list[tuple[str, int]]) -> None:
        self.received.append(peers)
        self._arrived.set()

    async def wait(self, timeout: float = 5.0) -> list[tuple[str, int]]:
        """The next list of peers (or the first one, if it came already)."""
        async with asyncio.timeout(timeout):
            while not self.received:
                await self._arrived.wait()
        return self.received[-1]


def new_client(
    tiers: list[list[str]], stats: AnnounceStats | None = None, **options: Any
) -> tuple[TrackerClient, Peers]:
    numbers = stats if stats is not None else AnnounceStats(uploaded=0, downloaded=0, left=100)
    peers = Peers()
    client = TrackerClient(INFO_HASH, PEER_ID, 6881, tiers, lambda: numbers, peers, **options)
    return client, peers


# -- Round trips -----------------------------------------------------------------------------


def test_http_events_stats_and_peers():
    async def scenario() -> None:
        async with FakeHttpTracker() as tracker:
            tracker.reply = encode(
                {
                    b"interval": 1800,
                    b"peers": compact(("10.0.0.1", 6881)),
                    b"peers6": compact(("2001:db8::1", 6882)),
                    b"tracker id": b"TID",
                }
            )
            stats = AnnounceStats(uploaded=0, downloaded=0, left=1000)
            client, peers = new_client([[tracker.url]], stats)
            client.start()
            assert await peers.wait() == [("10.0.0.1", 6881), ("2001:db8::1", 6882)]
            started = tracker.requests[0]
            assert (started["info_hash"], started["peer_id"]) == (INFO_HASH, PEER_ID)
            assert (started["event"], started["left"], started["port"]) == (
                b"started",
                b"1000",
                b"6881",
            )
            assert "trackerid" not in started

            stats.downloaded, stats.left = 1000, 0
            client.completed()
            client.completed()
            await tracker.wait(2)
            done = tracker.requests[1]
            assert (done["event"], done["downloaded"], done["left"]) == (
                b"completed",
                b"1000",
                b"0",
            )
            assert done["trackerid"] == b"TID"
            loop = asyncio.get_running_loop()
            await until(
                lambda: (client.status()[0].next_announce or 0) > loop.time() + 1000, "rescheduling"
            )
            assert len(tracker.requests) == 2  # completed went once; next is the regular announce

            stats.uploaded = 4242
            await client.stop()
            assert len(tracker.requests) == 3
            stopped = tracker.requests[2]
            assert (
                stopped["event"],
                stopped["uploaded"],
                stopped["downloaded"],
                stopped["left"],
            ) == (
                b"stopped",
                b"4242",
                b"1000",
                b"0",
            )
            assert stopped["numwant"] == b"0"

    asyncio.run(scenario())


def test_http_non_compact_peers_and_failure_reason():
    async def scenario() -> None:
        async with FakeHttpTracker() as tracker:
            tracker.reply = encode({b"interval": 60, b"peers": [{b"ip": b"10.9.9.9", b"port": 99}]})
            client, peers = new_client([[tracker.url]])
            client.start()
            assert await peers.wait() == [("10.9.9.9", 99)]
            await client.stop()

            tracker.reply = encode({b"failure reason": b"torrent not registered"})
            client, peers = new_client([[tracker.url]])
            client.start()
            await until(lambda: client.status()[0].last_error, "the refusal")
            assert (
                client.status()[0].last_error
                == "the tracker refused the announce: torrent not registered"
            )
            assert peers.received == []
            await client.stop()
            # The tracker never accepted `started`, so it is owed no `stopped`.
            assert [request["event"] for request in tracker.requests[-1:]] == [b"started"]

    asyncio.run(scenario())


def test_dead_tracker_falls_through_to_the_next_one_of_its_tier():
    async def scenario() -> None:
        async with FakeHttpTracker() as live:
            live.reply = encode({b"interval": 1800, b"peers": compact(("10.0.0.5", 5000))})
            dead = f"http://{LOOPBACK}:{free_port()}/announce"
            # With seed 0 the shuffle leaves the dead tracker first (checked below).
            client, peers = new_client([[dead, live.url]], rng=random.Random(0))
            assert [status.url for status in client.status()] == [dead, live.url]
            client.start()
            assert await peers.wait() == [("10.0.0.5", 5000)]
            statuses = client.status()
            assert [status.url for status in statuses] == [live.url, dead]
            assert statuses[0].last_error is None and statuses[0].peers == 1
            assert (statuses[1].last_error or "").startswith("could not reach the tracker")
            await client.stop()

    asyncio.run(scenario())


def test_a_hanging_tracker_blocks_neither_other_tiers_nor_stop():
    async def scenario() -> None:
        connections: list[asyncio.StreamWriter] = []

        async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(writer)  # and never answer

        server = await asyncio.start_server(accept, LOOPBACK, 0)
        hanging = f"http://{LOOPBACK}:{server.sockets[0].getsockname()[1]}/announce"
        async with FakeHttpTracker() as live, server:
            live.reply = encode({b"interval": 1800, b"peers": compact(("10.0.0.6", 6000))})
            client, peers = new_client([[hanging], ["ftp://nowhere/announce", live.url]])
            client.start()
            assert await peers.wait() == [("10.0.0.6", 6000)]
            assert len(connections) == 1
            started = time.monotonic()
            await client.stop(timeout=0.5)
            assert time.monotonic() - started < 2.0
            assert [request["event"] for request in live.requests] == [b"started", b"stopped"]
            errors = {status.url: status.last_error for status in client.status()}
            assert errors["ftp://nowhere/announce"] is not None
            for writer in connections:
                writer.close()

    asyncio.run(scenario())


def test_udp_round_trip_reuses_the_connection_id():
    async def scenario() -> None:
        async with FakeUdpTracker(peers=compact(("10.0.0.7", 7000))) as tracker:
            stats = AnnounceStats(uploaded=5, downloaded=6, left=7)
            client, peers = new_client([[tracker.url]], stats)
            client.start()
            assert await peers.wait() == [("10.0.0.7", 7000)]
            stats.left = 0
            client.completed()
            await until(lambda: len(tracker.announces) == 2, "the completed announce")
            stats.uploaded = 99
            await client.stop()
            # One connect served all three announces: the id is reused within 60 s.
            assert tracker.connects == 1
            sent = [(a.event, a.uploaded, a.downloaded, a.left) for a in tracker.announces]
            assert sent == [(2, 5, 6, 7), (1, 5, 6, 0), (3, 99, 6, 0)]
            first = tracker.announces[0]
            assert (first.info_hash, first.peer_id, first.port, first.numwant) == (
                INFO_HASH,
                PEER_ID,
                6881,
                50,
            )

    asyncio.run(scenario())


def test_udp_retransmits_after_a_lost_datagram():
    async def scenario() -> None:
        async with FakeUdpTracker(peers=compact(("10.0.0.8", 8000)), drop=1) as tracker:
            client, peers = new_client([[tracker.url]], udp_timeout=0.1)
            client.start()
            assert await peers.wait() == [("10.0.0.8", 8000)]
            # The first connect was lost; the second, sent after the timeout, was answered.
            assert [len(datagram) for datagram in tracker.requests] == [16, 16, 98]
            assert tracker.requests[0] == tracker.requests[1]
            await client.stop()

    asyncio.run(scenario())


def test_udp_tracker_that_never_answers_is_given_up():
    async def scenario() -> None:
        async with FakeUdpTracker(drop=10**6) as tracker:
            client, _peers = new_client([[tracker.url]], udp_timeout=0.02, udp_tries=3)
            client.start()
            await until(lambda: client.status()[0].last_error, "giving up")
            assert client.status()[0].last_error == "the tracker did not answer after 3 tries"
            assert len(tracker.requests) == 3
            next_announce = client.status()[0].next_announce
            assert next_announce is not None
            assert next_announce - asyncio.get_running_loop().time() > 25  # backing off
            await client.stop()

    asyncio.run(scenario())


def test_scrape_over_http_and_udp():
    async def scenario() -> None:
        async with FakeHttpTracker() as http_tracker, FakeUdpTracker() as udp_tracker:
            http_tracker.scrape_reply = encode(
                {b"files": {INFO_HASH: {b"complete": 4, b"downloaded": 5, b"incomplete": 6}}}
            )
            assert await scrape(http_tracker.url, [INFO_HASH, OTHER_HASH]) == {
                INFO_HASH: ScrapeResult(seeders=4, completed=5, leechers=6)
            }
            many = [bytes([i]) * 20 for i in range(80)]  # two UDP scrape requests
            results = await scrape(udp_tracker.url, many)
            assert results == {info_hash: ScrapeResult(5, 3, 1) for info_hash in many}
            assert udp_tracker.connects == 1
            with pytest.raises(TrackerError, match=r"did not answer within 0\.2 seconds"):
                async with FakeUdpTracker(drop=10**6) as silent:
                    await scrape(silent.url, [INFO_HASH], timeout=0.2)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, b"x" * (1024 * 1024 + 1), "the tracker's reply is larger than 1 MiB"),
        (302, b"", "the tracker redirected more than 3 times"),
        (404, b"<html>not found</html>", "the tracker answered with HTTP status 404"),
        (400, encode({b"failure reason": b"bad key"}), "the tracker refused the announce: bad key"),
        (200, b"<html>", "the tracker's reply is not valid bencode"),
    ],
)
def test_http_errors_are_reported_in_status(status, body, error):
    async def scenario() -> None:
        async with FakeHttpTracker() as tracker:
            tracker.status, tracker.reply = status, body
            if status == 302:
                tracker.headers = {"Location": "/announce"}  # to itself, for ever
            client, peers = new_client([[tracker.url]])
            client.start()
            await until(lambda: client.status()[0].last_error, "the error")
            assert client.status()[0].last_error == error
            assert peers.received == []
            await client.stop()

    asyncio.run(scenario())
