"""The hub's tracker: the sans-IO registry and UDP core, and HTTP and UDP announces on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote_from_bytes

import pytest
from conftest import LOOPBACK, free_port, port_open, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal import addresses
from shoal.bencode import decode
from shoal.hub import HubError
from shoal.hub import client as hub_client
from shoal.hub.http import (
    MAX_SCRAPE_HASHES,
    HttpAnnounce,
    announce_reply,
    parse_announce,
    parse_scrape,
)
from shoal.hub.registry import (
    AnnounceRequest,
    Event,
    Registry,
    TrackerConfig,
    TrackerRefusal,
)
from shoal.hub.server import HubThread, load_allow_list, run_hub
from shoal.hub.udp import PROTOCOL_ID, UdpTracker

V4 = socket.inet_aton(LOOPBACK)
V6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
INFO_HASH = bytes(range(20))
OTHER_HASH = bytes(range(1, 21))
UNLIMITED = TrackerConfig(announce_rate=None)


def peer_id(number: int) -> bytes:
    return b"-XX0001-" + number.to_bytes(12, "big")


def request(
    number: int, *, ip: bytes = V4, info_hash: bytes = INFO_HASH, **fields
) -> AnnounceRequest:
    """An announce by peer `number`, listening on port 10000 + number."""
    return AnnounceRequest(
        info_hash=info_hash, peer_id=peer_id(number), ip=ip, port=10000 + number, **fields
    )


def ports(peers: list[bytes]) -> set[int]:
    return {addresses.split(peer)[1] for peer in peers}


# --- the registry, on a fake clock ---


def test_announce_returns_the_others_and_counts_seeders():
    registry = Registry(UNLIMITED)
    registry.announce(request(1, left=0, event=Event.STARTED), now=0)
    registry.announce(request(2, left=100), now=1)
    result = registry.announce(request(3, left=5), now=2)
    assert ports(result.peers) == {10001, 10002}
    assert (result.seeders, result.leechers) == (1, 2)
    assert result.interval == 1800 and result.min_interval == 60
    # The first peer's reply never held itself.
    assert ports(registry.announce(request(1, left=0), now=3).peers) == {10002, 10003}


def test_completed_counts_each_peer_once():
    registry = Registry(UNLIMITED)
    registry.announce(request(1, left=10, event=Event.STARTED), now=0)
    registry.announce(request(1, left=0, event=Event.COMPLETED), now=1)
    registry.announce(request(1, left=0, event=Event.COMPLETED), now=2)
    # A client that never sends "completed" is counted when it turns seeder.
    registry.announce(request(2, left=10), now=3)
    registry.announce(request(2, left=0), now=4)
    # A seeder from the start has completed nothing here.
    registry.announce(request(3, left=0), now=5)
    # A leecher that stops with nothing left has completed on its way out.
    registry.announce(request(4, left=10), now=6)
    registry.announce(request(4, left=0, event=Event.STOPPED), now=7)
    registry.announce(request(5, left=10), now=6)
    registry.announce(request(5, left=3, event=Event.STOPPED), now=7)
    [stats] = registry.scrape([INFO_HASH], V4, now=8)
    assert (stats.seeders, stats.completed, stats.leechers) == (3, 3, 0)


def test_silent_peers_expire_after_two_intervals():
    config = TrackerConfig(interval=100, announce_rate=None)
    registry = Registry(config)
    registry.announce(request(1), now=0)
    registry.announce(request(2), now=150)
    assert ports(registry.announce(request(3), now=199).peers) == {10001, 10002}
    # Peer 1 last announced at 0: gone after 200 s; the others are still fresh.
    assert ports(registry.announce(request(3), now=201).peers) == {10002}
    assert registry.expire(now=500) == 2
    assert registry.swarm_count == 0 and registry.peer_count == 0
    assert registry.scrape([INFO_HASH], V4, now=500)[0].leechers == 0


def test_reannouncing_keeps_a_peer_alive():
    registry = Registry(TrackerConfig(interval=100, announce_rate=None))
    registry.announce(request(1), now=0)
    registry.announce(request(1), now=190)
    assert ports(registry.announce(request(2), now=300).peers) == {10001}


def test_stopped_removes_the_peer():
    registry = Registry(UNLIMITED)
    registry.announce(request(1, left=0), now=0)
    registry.announce(request(2), now=0)
    result = registry.announce(request(1, left=0, event=Event.STOPPED), now=1)
    assert result.peers == [] and result.seeders == 0
    assert ports(registry.announce(request(3), now=2).peers) == {10002}
    assert registry.peer_count == 2


def test_one_address_cannot_fill_a_swarm():
    registry = Registry(UNLIMITED)
    outsider = socket.inet_aton("192.0.2.9")
    for number in range(TrackerConfig().max_peers_per_ip):
        registry.announce(request(number, ip=outsider), now=0)
    with pytest.raises(TrackerRefusal, match="too many peers"):
        registry.announce(request(999, ip=outsider), now=0)
    registry.announce(request(999), now=0)  # loopback peers share one address by nature


def test_numwant_is_bounded_and_has_a_default():
    registry = Registry(UNLIMITED)
    for number in range(300):
        registry.announce(request(number, numwant=0), now=0)
    asker = 1000
    huge = registry.announce(request(asker, numwant=2**31 - 1), now=1)
    assert len(huge.peers) == 200 and asker + 10000 not in ports(huge.peers)
    assert len(registry.announce(request(asker), now=2).peers) == 50
    assert len(registry.announce(request(asker, numwant=-1), now=3).peers) == 50
    assert len(registry.announce(request(asker, numwant=7), now=4).peers) == 7
    assert len(ports(huge.peers)) == 200


def test_picks_vary_between_announces():
    registry = Registry(UNLIMITED, rng=random.Random(1))
    for number in range(500):
        registry.announce(request(number, numwant=0), now=0)
    seen = set()
    for _ in range(20):
        seen |= ports(registry.announce(request(999, numwant=10), now=1).peers)
    assert len(seen) > 100


def test_ipv6_peers_go_to_peers6():
    registry = Registry(UNLIMITED)
    registry.announce(request(1, ip=V6), now=0)
    registry.announce(request(2), now=0)
    result = registry.announce(request(3), now=1)
    reply = decode(announce_reply(result))
    assert reply[b"peers6"] == V6 + (10001).to_bytes(2, "big")
    assert reply[b"peers"] == V4 + (10002).to_bytes(2, "big")
    # Non-compact replies name both families in one list.
    with_ids = registry.announce(request(3), now=1, peer_ids=True)
    listed = decode(announce_reply(with_ids, compact=False))[b"peers"]
    assert {(entry[b"ip"], entry[b"port"], entry[b"peer id"]) for entry in listed} == {
        (b"2001:db8::1", 10001, peer_id(1)),
        (LOOPBACK.encode(), 10002, peer_id(2)),
    }
    # A UDP reply holds one address size, so only the asker's family.
    own_family = registry.announce(request(3), now=2, mixed_families=False)
    assert ports(own_family.peers) == {10002}


def test_rate_limit_per_address():
    registry = Registry(TrackerConfig(announce_rate=1.0, announce_burst=3))
    for number in range(3):
        registry.announce(request(number), now=0)
    with pytest.raises(TrackerRefusal, match="too many requests"):
        registry.announce(request(4), now=0)
    # Another address has its own bucket; the first one refills with time.
    registry.announce(request(5, ip=V6), now=0)
    registry.announce(request(4), now=1.0)
    with pytest.raises(TrackerRefusal):
        registry.scrape([INFO_HASH], V4, now=1.0)


def test_peers_asked_without_an_announce_leave_the_asker_out_of_the_swarm():
    registry = Registry(TrackerConfig(announce_rate=1.0, announce_burst=3))
    registry.announce(request(1, left=0), now=0)
    registry.announce(request(2, ip=V6), now=0)
    assert ports(registry.peers(INFO_HASH, 50, V4, now=1)) == {10001, 10002}
    assert ports(registry.peers(INFO_HASH, 1, V4, now=1)) <= {10001, 10002}
    assert registry.peers(OTHER_HASH, 50, V4, now=1) == []
    assert registry.peer_count == 2 and registry.stats(OTHER_HASH).seeders == 0
    with pytest.raises(TrackerRefusal, match="too many requests"):
        registry.peers(INFO_HASH, 50, V4, now=1)  # rate counted like an announce


def test_allow_list_refuses_other_torrents():
    registry = Registry(TrackerConfig(allowed=frozenset({INFO_HASH}), announce_rate=None))
    registry.announce(request(1), now=0)
    with pytest.raises(TrackerRefusal, match="does not serve"):
        registry.announce(request(1, info_hash=OTHER_HASH), now=0)


def test_caps_evict_the_oldest():
    registry = Registry(
        TrackerConfig(max_peers_per_swarm=3, max_swarms=2, max_peers=5, announce_rate=None)
    )
    for number in range(4):
        registry.announce(request(number), now=number)
    assert registry.peer_count == 3
    assert ports(registry.announce(request(9, numwant=0), now=5).peers) == set()
    assert ports(registry.announce(request(9), now=6).peers) == {10002, 10003}
    registry.announce(request(1, info_hash=OTHER_HASH), now=7)
    registry.announce(request(2, info_hash=OTHER_HASH), now=8)
    # Five peers at most: the oldest of the least recently announced swarm made room.
    assert registry.peer_count == 5
    registry.announce(request(1, info_hash=bytes(20)), now=9)
    assert registry.swarm_count == 2


# --- HTTP query parsing ---


def query(**fields: bytes | str | int) -> str:
    return "&".join(
        f"{key}={quote_from_bytes(value) if isinstance(value, bytes) else value}"
        for key, value in fields.items()
    )


GOOD = {"info_hash": INFO_HASH, "peer_id": peer_id(1), "port": 6881, "left": 0}


def test_parse_announce_reads_every_field():
    parsed = parse_announce(
        query(
            **GOOD, uploaded=5, downloaded=7, event="completed", numwant=9, compact=0, ip="1.2.3.4"
        ),
        V4,
    )
    assert parsed == HttpAnnounce(
        AnnounceRequest(INFO_HASH, peer_id(1), V4, 6881, 5, 7, 0, Event.COMPLETED, 9),
        compact=False,
        no_peer_id=False,
    )
    minimal = parse_announce(query(info_hash=INFO_HASH, peer_id=peer_id(1), port=1), V4)
    assert minimal.compact and minimal.request.left is None and minimal.request.numwant is None


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"peer_id": peer_id(1), "port": 1}, "no info_hash"),
        ({**GOOD, "info_hash": b"short"}, "info_hash is 5 bytes"),
        ({**GOOD, "peer_id": b"x" * 21}, "peer_id is 21 bytes"),
        ({**GOOD, "port": 0}, "port 0"),
        ({**GOOD, "port": 70000}, "port 70000"),
        ({**GOOD, "port": "x"}, "port field"),
        ({**GOOD, "event": "exploded"}, "event"),
        ({**GOOD, "left": "-1"}, "left field"),
        ({**GOOD, "uploaded": "1e9"}, "uploaded field"),
        ({**GOOD, "numwant": "lots"}, "numwant field"),
    ],
)
def test_parse_announce_refuses_malformed(fields, reason):
    with pytest.raises(TrackerRefusal, match=reason):
        parse_announce(query(**fields), V4)


def test_parse_scrape():
    hashes = parse_scrape(query(info_hash=INFO_HASH) + "&" + query(info_hash=OTHER_HASH))
    assert hashes == [INFO_HASH, OTHER_HASH]
    with pytest.raises(TrackerRefusal):
        parse_scrape("")
    with pytest.raises(TrackerRefusal):
        parse_scrape("&".join([query(info_hash=INFO_HASH)] * (MAX_SCRAPE_HASHES + 1)))


FIELD_NAMES = st.sampled_from(
    ["info_hash", "peer_id", "port", "left", "uploaded", "downloaded", "event", "numwant",
     "compact", "no_peer_id", "ip", "key", "x"]
)  # fmt: skip


@settings(max_examples=300)
@given(st.text(max_size=400))
def test_parse_announce_never_crashes_on_any_text(text):
    try:
        parsed = parse_announce(text, V4)
    except TrackerRefusal:
        return
    assert len(parsed.request.info_hash) == 20 and 0 < parsed.request.port < 65536


@settings(max_examples=300)
@given(st.lists(st.tuples(FIELD_NAMES, st.binary(max_size=25)), max_size=12))
def test_parse_announce_never_crashes_on_any_fields(pairs):
    text = "&".join(f"{key}={quote_from_bytes(value)}" for key, value in pairs)
    try:
        parsed = parse_announce(text, V6)
    except TrackerRefusal:
        return
    assert parsed.request.ip == V6 and len(parsed.request.peer_id) == 20


@given(st.text(max_size=400))
def test_parse_scrape_never_crashes(text):
    try:
        hashes = parse_scrape(text)
    except TrackerRefusal:
        return
    assert 1 <= len(hashes) <= MAX_SCRAPE_HASHES and all(len(h) == 20 for h in hashes)


# --- the UDP core ---

CONNECT = struct.Struct(">QII")
ANNOUNCE = struct.Struct(">8sII20s20sQQQIIIiH")


def ask(core: UdpTracker, data: bytes, ip: bytes, now: float) -> bytes | None:
    """The core's reply to a datagram from ip (packed), if any."""
    host = socket.inet_ntop(socket.AF_INET if len(ip) == 4 else socket.AF_INET6, ip)
    core.receive(data, (host, 6881), now)
    replies = core.take_outputs()
    assert len(replies) <= 1 and all(reply.address == (host, 6881) for reply in replies)
    return replies[0].data if replies else None


def udp_core(config: TrackerConfig = UNLIMITED) -> UdpTracker:
    return UdpTracker(Registry(config), secret=b"s" * 32)


def connect(core: UdpTracker, now: float) -> bytes:
    reply = ask(core, CONNECT.pack(PROTOCOL_ID, 0, 77), V4, now)
    assert reply is not None and reply[:8] == struct.pack(">II", 0, 77)
    return reply[8:]


def udp_announce(connection_id: bytes, number: int, **fields: int) -> bytes:
    values = {"downloaded": 0, "left": 1, "uploaded": 0, "event": 0, "numwant": -1}
    values.update(fields)
    return ANNOUNCE.pack(
        connection_id, 1, 42, INFO_HASH, peer_id(number), values["downloaded"], values["left"],
        values["uploaded"], values["event"], 0, 0, values["numwant"], 10000 + number,
    )  # fmt: skip


def error_message(reply: bytes | None) -> str:
    assert reply is not None
    action, _ = struct.unpack_from(">II", reply)
    assert action == 3, reply
    return reply[8:].decode()


def test_udp_core_announce_and_scrape():
    core = udp_core()
    connection_id = connect(core, now=0)
    ask(core, udp_announce(connection_id, 1, left=0), V4, now=1)
    reply = ask(core, udp_announce(connection_id, 2), V4, now=2)
    assert reply is not None
    action, transaction, interval, leechers, seeders = struct.unpack_from(">IIIII", reply)
    assert (action, transaction, interval, leechers, seeders) == (1, 42, 1800, 1, 1)
    assert reply[20:] == V4 + (10001).to_bytes(2, "big")
    scrape = connection_id + struct.pack(">II", 2, 43) + INFO_HASH + OTHER_HASH
    reply = ask(core, scrape, V4, now=3)
    assert reply == struct.pack(">II", 2, 43) + struct.pack(">IIIIII", 1, 0, 1, 0, 0, 0)


def test_udp_connection_ids_are_per_address_and_expire():
    core = udp_core()
    connection_id = connect(core, now=1000)
    assert ask(core, udp_announce(connection_id, 1), V4, now=1050)[:4] == b"\0\0\0\1"
    # Another address, or two minutes later, and the id is no good.
    assert "connect again" in error_message(ask(core, udp_announce(connection_id, 1), V6, 1001))
    assert "connect again" in error_message(ask(core, udp_announce(connection_id, 1), V4, 1200))


def test_udp_errors():
    core = udp_core(TrackerConfig(announce_rate=1.0, announce_burst=5))
    connection_id = connect(core, now=0)
    assert ask(core, b"short", V4, 0) is None
    # A connect without the protocol id is not BEP 15.
    assert ask(core, CONNECT.pack(1234, 0, 1), V4, 0) is None
    assert "unknown action" in error_message(
        ask(core, connection_id + struct.pack(">II", 9, 1), V4, 0)
    )
    assert "too short" in error_message(ask(core, udp_announce(connection_id, 1)[:60], V4, 0))
    assert "event" in error_message(ask(core, udp_announce(connection_id, 1, event=7), V4, 0))
    assert "no info-hash" in error_message(
        ask(core, connection_id + struct.pack(">II", 2, 1), V4, 0)
    )
    ask(core, udp_announce(connection_id, 1), V4, 0)
    assert "too many" in error_message(ask(core, udp_announce(connection_id, 1), V4, 0.1))
    # Malformed requests spend the same budget as announces.
    assert "too many" in error_message(ask(core, udp_announce(connection_id, 1)[:60], V4, 0.2))
    # A short datagram from an unproven source gets nothing larger back: no amplification.
    assert ask(core, bytes(8) + struct.pack(">II", 1, 5), V4, 0) is None


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_udp_core_never_crashes_on_any_datagram(data):
    core = udp_core()
    reply = ask(core, data, V4, now=0)
    if reply is not None:
        assert struct.unpack_from(">I", reply)[0] in (0, 3)


@settings(max_examples=500)
@given(st.integers(0, 5), st.binary(max_size=200))
def test_udp_core_never_crashes_when_connected(action, tail):
    core = udp_core()
    connection_id = connect(core, now=0)
    reply = ask(core, connection_id + struct.pack(">II", action, 5) + tail, V4, now=1)
    if action == 0:
        assert reply is None
    else:
        assert reply is not None and struct.unpack_from(">II", reply)[1] == 5


# --- over loopback: HTTP and UDP ---


@pytest.fixture
def hub(tmp_path: Path):
    with HubThread(tmp_path / "hub.db", config=UNLIMITED) as running:
        yield running


def http_get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return decode(response.read())


def test_http_announce_and_scrape(hub):
    first = http_get(f"{hub.url}/announce?" + query(**GOOD, event="started"))
    assert first[b"peers"] == b"" and first[b"complete"] == 1 and first[b"interval"] == 1800
    second = http_get(
        f"{hub.url}/announce?" + query(**{**GOOD, "peer_id": peer_id(2), "port": 7000, "left": 9})
    )
    assert second[b"peers"] == V4 + (6881).to_bytes(2, "big")
    assert (second[b"complete"], second[b"incomplete"]) == (1, 1)
    full = http_get(f"{hub.url}/announce?" + query(**{**GOOD, "port": 6881}, compact=0))
    assert full[b"peers"] == [{b"ip": LOOPBACK.encode(), b"port": 7000, b"peer id": peer_id(2)}]
    bare = http_get(f"{hub.url}/announce?" + query(**GOOD, compact=0, no_peer_id=1))
    assert bare[b"peers"] == [{b"ip": LOOPBACK.encode(), b"port": 7000}]
    scrape = http_get(
        f"{hub.url}/scrape?" + query(info_hash=INFO_HASH) + "&" + query(info_hash=OTHER_HASH)
    )
    assert scrape[b"files"] == {
        INFO_HASH: {b"complete": 1, b"downloaded": 0, b"incomplete": 1},
        OTHER_HASH: {b"complete": 0, b"downloaded": 0, b"incomplete": 0},
    }


def test_http_peers_without_announcing(hub):
    http_get(f"{hub.url}/announce?" + query(**GOOD, event="started"))
    assert asyncio.run(hub_client.peers(hub.url, INFO_HASH)) == [(LOOPBACK, 6881)]
    assert asyncio.run(hub_client.peers(hub.url, OTHER_HASH)) == []
    assert hub.hub.registry.peer_count == 1
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{hub.url}/peers?info_hash=zz&numwant=5", timeout=10)
    assert refused.value.code == 400
    assert b"40 hex digits" in refused.value.read()


def test_http_malformed_announce_gets_a_failure_reason(hub):
    reply = http_get(f"{hub.url}/announce?" + query(**{**GOOD, "info_hash": b"x" * 19}))
    assert reply == {b"failure reason": b"the info_hash is 19 bytes long instead of 20"}
    # Raw bytes that are not even UTF-8 in the query are just another bad request.
    with socket.create_connection((LOOPBACK, hub.port), timeout=10) as sock:
        sock.sendall(
            b"GET /announce?info_hash=\xff\xfe%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert b"failure reason" in answer or b" 400 " in answer.partition(b"\r\n")[0]


def test_http_rate_limit(tmp_path):
    config = TrackerConfig(announce_rate=0.001, announce_burst=2)
    with HubThread(tmp_path / "hub.db", config=config) as limited:
        url = f"{limited.url}/announce?" + query(**GOOD)
        assert b"failure reason" not in http_get(url)
        assert b"failure reason" not in http_get(url)
        assert b"too many requests" in http_get(url)[b"failure reason"]


def udp_request(sock: socket.socket, port: int, data: bytes) -> bytes:
    """Send a request and return the reply with the same transaction id."""
    sock.sendto(data, (LOOPBACK, port))
    while True:
        reply, _ = sock.recvfrom(65536)
        if reply[4:8] == data[12:16]:
            return reply


def test_udp_announce_and_scrape_over_loopback(hub):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(10)
        connected = udp_request(sock, hub.port, CONNECT.pack(PROTOCOL_ID, 0, 1))
        connection_id = connected[8:16]
        http_get(f"{hub.url}/announce?" + query(**GOOD))
        reply = udp_request(sock, hub.port, udp_announce(connection_id, 2, numwant=500))
        assert struct.unpack_from(">IIIII", reply)[3:] == (1, 1)
        assert reply[20:] == V4 + (6881).to_bytes(2, "big")
        scrape = udp_request(sock, hub.port, connection_id + struct.pack(">II", 2, 8) + INFO_HASH)
        assert scrape == struct.pack(">IIIII", 2, 8, 1, 0, 1)
        wrong = udp_request(sock, hub.port, bytes(8) + struct.pack(">II", 2, 9) + INFO_HASH)
        assert "connect again" in error_message(wrong)
        # The endpoint survives garbage and keeps answering.
        for size in (0, 3, 16, 17, 99, 1400):
            sock.sendto(random.randbytes(size), (LOOPBACK, hub.port))
        again = udp_request(sock, hub.port, CONNECT.pack(PROTOCOL_ID, 0, 2))
        assert again[:8] == struct.pack(">II", 0, 2)


def test_run_hub_with_an_allow_list(tmp_path):
    allow = tmp_path / "allow.txt"
    allow.write_text(f"# torrents we track\n{INFO_HASH.hex()}\n\n")
    assert load_allow_list(allow) == {INFO_HASH}
    port = free_port()
    stopped = threading.Event()

    async def serve(stop_holder: list) -> None:
        stop_holder.append((asyncio.get_running_loop(), asyncio.Event()))
        await run_hub(LOOPBACK, port, tmp_path / "hub.db", allow=allow, stop=stop_holder[0][1])

    holder: list = []
    thread = threading.Thread(target=lambda: (asyncio.run(serve(holder)), stopped.set()))
    thread.start()
    try:
        wait_for(lambda: port_open(port), message="run_hub never listened")
        url = f"http://{LOOPBACK}:{port}/announce?"
        assert b"failure reason" not in http_get(url + query(**GOOD))
        refused = http_get(url + query(**{**GOOD, "info_hash": OTHER_HASH}))
        assert refused == {b"failure reason": b"this tracker does not serve that torrent"}
    finally:
        loop, stop = holder[0]
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
    assert stopped.is_set() and not port_open(port)


def test_bad_allow_list_is_one_sentence(tmp_path):
    allow = tmp_path / "allow.txt"
    allow.write_text(f"{INFO_HASH.hex()}\nnot-a-hash\n")
    with pytest.raises(HubError, match=r"line 2 of .* is not a 40-hex-digit info-hash"):
        load_allow_list(allow)
    with pytest.raises(HubError, match="cannot read the allow list"):
        load_allow_list(tmp_path / "missing.txt")


def test_port_taken_is_one_sentence(tmp_path, hub):
    with pytest.raises(HubError, match="cannot listen on"):
        HubThread(tmp_path / "other.db", port=hub.port).start()


def test_a_request_head_that_never_ends_is_cut_off(tmp_path, monkeypatch):
    monkeypatch.setattr("shoal.hub.front.REQUEST_TIMEOUT", 0.3)
    with HubThread(tmp_path / "hub.db", config=UNLIMITED) as running:
        with socket.create_connection((LOOPBACK, running.port), timeout=10) as slow:
            slow.sendall(b"GET /announce?info_hash=")  # and then nothing more
            assert slow.recv(100) == b""  # closed by the hub, not by our timeout
        with socket.create_connection((LOOPBACK, running.port), timeout=10) as fine:
            fine.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert fine.recv(100).startswith(b"HTTP/1.1 200")


def read_response(sock: socket.socket) -> tuple[bytes, dict]:
    """One HTTP response from a raw socket: (status line, decoded bencoded body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line for line in head.split(b"\r\n") if line.startswith(b"Content-Length")).split(
            b":"
        )[1]
    )
    while len(body) < length:
        body += sock.recv(4096)
    return head.split(b"\r\n")[0], decode(body[:length])


def test_front_answers_many_announces_on_one_kept_alive_connection(hub):
    request = f"GET /announce?{query(**GOOD)} HTTP/1.1\r\nHost: hub\r\n\r\n".encode()
    with socket.create_connection((LOOPBACK, hub.port), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(request)
            status, reply = read_response(sock)
            assert status == b"HTTP/1.1 200 OK" and reply[b"complete"] == 1
        # Byte by byte is as good as all at once.
        for byte in request:
            sock.sendall(bytes([byte]))
        assert read_response(sock)[1][b"complete"] == 1


def test_front_closes_after_http10_and_refuses_other_paths(hub):
    with socket.create_connection((LOOPBACK, hub.port), timeout=10) as sock:
        sock.sendall(
            f"GET /scrape?info_hash={quote_from_bytes(INFO_HASH)} HTTP/1.0\r\n\r\n".encode()
        )
        assert read_response(sock)[0] == b"HTTP/1.1 200 OK"
        assert sock.recv(10) == b""
    with socket.create_connection((LOOPBACK, hub.port), timeout=10) as sock:
        sock.sendall(b"GET /announce?x HTTP/1.1\r\n\r\nGET /index/search?q=a HTTP/1.1\r\n\r\n")
        replies = b""
        while chunk := sock.recv(4096):
            replies += chunk
        # A failure reason (bencoded, status 200), then a refusal and the connection closed.
        assert replies.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 404" in replies


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(min_size=1, max_size=300))
def test_front_survives_any_bytes(hub, data):
    with socket.create_connection((LOOPBACK, hub.port), timeout=10) as sock:
        sock.sendall(b"GET /announce" + data + b"\r\n\r\n")
        with contextlib.suppress(OSError):
            sock.recv(4096)
    assert http_get(f"{hub.url}/announce?" + query(**GOOD))[b"complete"] == 1
