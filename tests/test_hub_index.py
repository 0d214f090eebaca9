"""The hub's keyword index: signed publish, search and withdraw over HTTP, and node identities."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
import time
import urllib.error
import urllib.request
from dataclasses import replace
from typing import Any
from urllib.parse import quote, quote_from_bytes

import pytest
from conftest import LOOPBACK, free_port
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.bencode import encode
from shoal.hub import HubError
from shoal.hub.client import listing_for, publish, search, withdraw
from shoal.hub.index import KeywordIndex, SearchError, match_expression
from shoal.hub.listing import (
    PUBLISH_CONTEXT,
    Listing,
    ListingError,
    ListingFile,
    ListingForbidden,
    parse_publish,
    parse_withdraw,
    sign_listing,
    sign_withdrawal,
)
from shoal.hub.registry import TrackerConfig
from shoal.hub.server import HubThread
from shoal.identity import Identity, IdentityError, verify
from shoal.metainfo import Torrent, create_torrent

# --- identity ---


def test_identity_is_created_once_and_kept_private(tmp_path):
    path = tmp_path / "state" / "identity.key"
    first = Identity.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = Identity.load_or_create(path)
    assert again.public_key_hex == first.public_key_hex and len(first.public_key_hex) == 64
    signature = again.sign(b"hello")
    assert verify(first.public_key_hex, b"hello", signature)
    assert not verify(first.public_key_hex, b"hellO", signature)
    assert not verify(Identity.generate().public_key_hex, b"hello", signature)
    assert not verify("zz" * 32, b"hello", signature)
    assert not verify(first.public_key_hex, b"hello", signature[:63])
    # A key another process wrote first is never replaced.
    before = path.read_bytes()
    assert not Identity.generate()._save_new(path)
    assert path.read_bytes() == before and len(list(path.parent.iterdir())) == 1


def test_identity_defaults_to_the_state_folder(tmp_path):
    identity = Identity.load_or_create()
    assert (tmp_path / "xdg-state" / "shoal" / "identity.key").is_file()
    assert Identity.load_or_create().public_key_hex == identity.public_key_hex


def test_identity_reads_a_raw_key_and_refuses_garbage(tmp_path):
    raw = tmp_path / "raw.key"
    raw.write_bytes(bytes(range(32)))
    assert (
        Identity.load_or_create(raw).public_key_hex == Identity.load_or_create(raw).public_key_hex
    )
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"not a key at all")
    with pytest.raises(IdentityError, match="is not an Ed25519 private key"):
        Identity.load_or_create(bad)


# --- fixtures and helpers ---


@pytest.fixture
def bunny(random_file) -> Torrent:
    return create_torrent(random_file(100_000, "Big.Buck-Bunny_1080p.mkv"))


@pytest.fixture
def album(random_file, tmp_path) -> Torrent:
    random_file(1000, "Album/01 - Blue Monday.flac", seed=1)
    random_file(2000, "Album/02 - Ceremony.flac", seed=2)
    return create_torrent(tmp_path / "Album")


def request(url: str, body: Any = None, *, raw: bytes | None = None) -> tuple[int, Any]:
    """(status, JSON reply) of a GET, or of a POST of body as JSON (or of raw bytes)."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        assert error.headers["Content-Type"].startswith("application/json")
        return error.code, json.loads(error.read())


def find(hub: HubThread, words: str, limit: int = 50) -> list:
    return asyncio.run(search(hub.url, words, limit))


def names(results) -> list[str]:
    return [result.name for result in results]


def signed(identity: Identity, listing: Listing) -> dict:
    return sign_listing(identity, listing)


# --- publish, search, withdraw ---


def test_publish_search_withdraw(hub, bunny, album):
    me = Identity.generate()
    asyncio.run(publish(hub.url, me, bunny))
    asyncio.run(publish(hub.url + "/announce", me, album))
    [hit] = find(hub, "bunny 1080p")
    assert (hit.info_hash, hit.name, hit.size, hit.files) == (
        bunny.info_hash,
        "Big.Buck-Bunny_1080p.mkv",
        100_000,
        1,
    )
    assert (hit.seeders, hit.leechers, hit.publishers) == (0, 0, 1)
    assert hit.magnet(hub.url).startswith(f"magnet:?xt=urn:btih:{bunny.info_hash_hex}")
    # Words anywhere in the name or the file names; the last one may be a prefix.
    assert names(find(hub, "buck")) == ["Big.Buck-Bunny_1080p.mkv"]
    assert names(find(hub, "BIG bun")) == ["Big.Buck-Bunny_1080p.mkv"]
    assert names(find(hub, "monday")) == ["Album"]
    assert names(find(hub, "ceremony flac")) == ["Album"]
    assert find(hub, "bunny monday") == []
    assert find(hub, "bun 1080p") == []
    assert find(hub, "ceremony", limit=1)[0].files == 2
    asyncio.run(withdraw(hub.url, me, bunny.info_hash))
    assert find(hub, "bunny") == []
    assert names(find(hub, "album")) == ["Album"]


def test_the_name_ranks_above_file_names(hub, random_file, tmp_path):
    random_file(10, "Misc/monday.txt")
    random_file(10, "Misc/other.txt")
    in_files = create_torrent(tmp_path / "Misc")
    in_name = create_torrent(random_file(10, "monday.iso"))
    me = Identity.generate()
    asyncio.run(publish(hub.url, me, in_files))
    asyncio.run(publish(hub.url, me, in_name))
    assert names(find(hub, "monday")) == ["monday.iso", "Misc"]


def test_every_key_has_its_own_listing(hub, bunny):
    alice, bob = Identity.generate(), Identity.generate()
    asyncio.run(publish(hub.url, alice, bunny))
    listing = replace(listing_for(bunny), name="bunny by bob")
    assert request(f"{hub.url}/index/publish", signed(bob, listing))[0] == 200
    [hit] = find(hub, "bunny")
    assert hit.publishers == 2
    # Bob can take back his own listing only; Alice's stays.
    asyncio.run(withdraw(hub.url, bob, bunny.info_hash))
    assert [(hit.name, hit.publishers) for hit in find(hub, "bunny")] == [
        ("Big.Buck-Bunny_1080p.mkv", 1)
    ]


def test_forged_requests_are_refused(hub, bunny):
    alice, mallory = Identity.generate(), Identity.generate()
    listing = listing_for(bunny)
    body = signed(alice, listing)
    tampered = {**body, "listing": {**body["listing"], "name": "malware.exe"}}
    status, reply = request(f"{hub.url}/index/publish", tampered)
    assert status == 403 and reply == {
        "error": "the signature does not match the listing and public key"
    }
    # Mallory signs with her key but names Alice's.
    forged = {**signed(mallory, listing), "public_key": alice.public_key_hex}
    assert request(f"{hub.url}/index/publish", forged)[0] == 403
    assert request(f"{hub.url}/index/publish", body)[0] == 200
    withdrawal = sign_withdrawal(mallory, bunny.info_hash_hex, int(time.time()))
    forged_withdrawal = {**withdrawal, "public_key": alice.public_key_hex}
    status, reply = request(f"{hub.url}/index/withdraw", forged_withdrawal)
    assert status == 403 and "signature" in reply["error"]
    status, reply = request(f"{hub.url}/index/withdraw", withdrawal)
    assert (status, reply) == (200, {"ok": True, "withdrawn": False})
    assert find(hub, "bunny")[0].publishers == 1


def test_replays_and_stale_times_are_refused(hub, bunny):
    me = Identity.generate()
    now = int(time.time())
    old = signed(me, replace(listing_for(bunny), published_at=now - 60, name="old name"))
    new = signed(me, replace(listing_for(bunny), published_at=now - 30, name="new name"))
    assert request(f"{hub.url}/index/publish", new)[0] == 200
    status, reply = request(f"{hub.url}/index/publish", old)
    assert status == 403 and "as new or newer" in reply["error"]
    assert request(f"{hub.url}/index/publish", new)[0] == 403
    # A withdrawal older than the listing cannot remove it, and after a withdrawal an old
    # publish cannot bring it back.
    late = sign_withdrawal(me, bunny.info_hash_hex, now - 45)
    assert request(f"{hub.url}/index/withdraw", late)[0] == 403
    assert request(f"{hub.url}/index/withdraw", sign_withdrawal(me, bunny.info_hash_hex, now))[
        1
    ] == {
        "ok": True,
        "withdrawn": True,
    }
    assert request(f"{hub.url}/index/publish", new)[0] == 403
    assert find(hub, "name") == []
    # Far from the hub's clock either way.
    for skew in (-700, 700):
        stale = signed(me, replace(listing_for(bunny), published_at=now + skew))
        status, reply = request(f"{hub.url}/index/publish", stale)
        assert status == 403 and "10 minutes" in reply["error"]


def test_expired_listings_never_show(hub, bunny, album):
    me = Identity.generate()
    now = int(time.time())
    expired = replace(listing_for(bunny), published_at=now - 500, ttl=60)
    assert request(f"{hub.url}/index/publish", signed(me, expired))[0] == 200
    assert find(hub, "bunny") == []
    live = replace(listing_for(album), ttl=86400)
    reply = request(f"{hub.url}/index/publish", signed(me, live))[1]
    assert reply == {"ok": True, "expires_at": live.published_at + 86400}
    status, reply = request(f"{hub.url}/index/publish", signed(me, replace(live, ttl=86401)))
    assert status == 400 and "ttl" in reply["error"]


def test_index_expiry_and_purge_on_a_fake_clock(tmp_path, bunny):
    index = KeywordIndex(tmp_path / "index.db")
    me = Identity.generate()
    listing = replace(listing_for(bunny, now=1000), ttl=100)
    index.publish(listing, me.public_key_hex)
    assert [hit.name for hit in index.search("bunny", 10, now=1099)] == [listing.name]
    assert index.search("bunny", 10, now=1100) == []
    assert index.counts(now=1050) == (1, 1)
    assert index.purge(now=1099) == 0
    assert index.purge(now=1100) == 1
    # The replay guard outlives the listing while the old publish could still pass the skew check.
    with pytest.raises(ListingForbidden):
        index.publish(listing, me.public_key_hex)
    index.purge(now=1000 + 601)
    index.publish(listing, me.public_key_hex)
    index.close()


def test_a_restarted_hub_keeps_its_listings(tmp_path, bunny):
    db = tmp_path / "hub.db"
    me = Identity.generate()
    with HubThread(db, config=TrackerConfig(announce_rate=None)) as first:
        asyncio.run(publish(first.url, me, bunny))
    with HubThread(db, config=TrackerConfig(announce_rate=None)) as second:
        [hit] = find(second, "bunny")
        assert hit.info_hash == bunny.info_hash
        status, reply = request(f"{second.url}/")
        assert status == 200 and reply["index"]["listings"] == 1


def test_a_broken_database_is_one_sentence(tmp_path):
    db = tmp_path / "hub.db"
    db.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(HubError, match=r"^cannot open the hub's index .*: file is not a database$"):
        HubThread(db).start()


def test_search_carries_the_swarm_counts(hub, bunny):
    asyncio.run(publish(hub.url, Identity.generate(), bunny))
    hash_param = quote_from_bytes(bunny.info_hash)
    for number, left in ((1, 0), (2, 0), (3, 500)):
        url = (
            f"{hub.url}/announce?info_hash={hash_param}&peer_id=-XX0001-{number:012d}"
            f"&port={6880 + number}&left={left}"
        )
        with urllib.request.urlopen(url, timeout=10) as response:
            assert b"failure" not in response.read()
    [hit] = find(hub, "bunny")
    assert (hit.seeders, hit.leechers) == (2, 1)


# --- hostile and malformed requests ---


def test_oversized_body_is_413(hub):
    status, reply = request(f"{hub.url}/index/publish", raw=b"[" + b"0," * 200_000 + b"0]")
    assert status == 413 and reply == {"error": "the request body is larger than 256 KiB"}


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        (b"[]", "the request is not a JSON object"),
        (b'{"listing": 5}', "the listing is not a JSON object"),
    ],
)
def test_malformed_json_is_400(hub, raw, problem):
    status, reply = request(f"{hub.url}/index/publish", raw=raw)
    assert status == 400 and problem in reply["error"], reply
    status, reply = request(f"{hub.url}/index/withdraw", raw=raw)
    assert status == 400 and set(reply) == {"error"}


def listing_json(**changes: Any) -> dict:
    listing = {
        "info_hash": "ab" * 20,
        "name": "x",
        "size": 1,
        "files": [{"path": "x", "size": 1}],
        "published_at": int(time.time()),
    }
    listing.update(changes)
    return listing


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"info_hash": "AB" * 20}, "info_hash is not 40 lowercase hex digits"),
        ({"size": "1"}, "the size is not a whole number"),
        ({"size": True}, "the size is not a whole number"),
        ({"size": -1}, "the size is not between"),
        ({"name": ""}, "the name is empty"),
        ({"name": "n" * 1025}, "longer than 1024"),
        ({"name": "\ud800"}, "not valid Unicode"),
        ({"files": {}}, "not a JSON array"),
        ({"files": [{"path": "x"}]}, "exactly a path and a size"),
        ({"files": [{"path": "x", "size": 1}] * 10_001}, "more than 10000 files"),
        ({"ttl": 0}, "the ttl is not between 1 and 86400"),
        ({"extra": 1}, "unknown field 'extra'"),
        ({"published_at": 1.5}, "published_at is not a whole number"),
    ],
)
def test_wrong_types_are_400(hub, changes, problem):
    me = Identity.generate()
    body = {
        "listing": listing_json(**changes),
        "public_key": me.public_key_hex,
        "signature": "00" * 64,
    }
    status, reply = request(f"{hub.url}/index/publish", body)
    assert (status, problem in reply["error"]) == (400, True), reply


def test_search_requests_are_checked(hub):
    for query, problem in [
        ("", "no words"),
        ("q=...", "no words"),
        ("q=" + "a" * 257, "longer than 256"),
        ("q=a&limit=0", "limit"),
        ("q=a&limit=201", "limit"),
        ("q=a&limit=ten", "limit"),
    ]:
        status, reply = request(f"{hub.url}/index/search?{query}")
        assert status == 400 and problem in reply["error"], (query, reply)
    # FTS5 syntax typed by a user is just words.
    syntax = quote('NEAR(a b) OR name:* "')
    status, reply = request(f"{hub.url}/index/search?q={syntax}")
    assert (status, reply) == (200, {"results": []})
    status, reply = request(f"{hub.url}/nothing/here")
    assert status == 404 and "nothing at /nothing/here" in reply["error"]
    assert request(f"{hub.url}/index/search", {"q": "x"})[0] == 405


def test_client_errors_are_one_sentence(tmp_path):
    config = TrackerConfig(announce_rate=0.001, announce_burst=1)
    with HubThread(tmp_path / "hub.db", config=config) as strict:
        assert find(strict, "anything") == []
        with pytest.raises(HubError, match=r"^too many requests from this address; slow down$"):
            find(strict, "anything")
    port = free_port()
    with pytest.raises(HubError, match=f"^cannot reach the hub at http://{LOOPBACK}:{port}: "):
        asyncio.run(search(f"{LOOPBACK}:{port}", "x"))


# --- parsers of network input, by property ---

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)
FIELDS = st.sampled_from(["info_hash", "name", "size", "files", "published_at", "ttl", "x"])


@settings(max_examples=300)
@given(JSON)
def test_publish_and_withdraw_parsers_never_crash(body):
    for parse in (parse_publish, parse_withdraw):
        with contextlib.suppress(ListingError, ListingForbidden):
            parse(body, time.time())


PUBLISHER = Identity.generate()


@settings(max_examples=300)
@given(st.dictionaries(FIELDS, JSON, max_size=3), st.sets(FIELDS, max_size=2))
def test_listing_parser_never_crashes_on_listing_shapes(changes, removed):
    listing = {**listing_json(), **changes}
    for field in removed:
        listing.pop(field, None)
    body = {"listing": listing, "public_key": PUBLISHER.public_key_hex, "signature": "00" * 64}
    # Signed whenever bencode can hold it, so that checks past the signature run too.
    with contextlib.suppress(TypeError, ValueError, UnicodeEncodeError):
        body["signature"] = PUBLISHER.sign(PUBLISH_CONTEXT + encode(listing)).hex()
    with contextlib.suppress(ListingError, ListingForbidden):
        parsed, _ = parse_publish(body, time.time())
        assert parsed.to_json() == listing


@pytest.fixture(scope="module")
def search_index():
    """An index with one listing, shared by every example of the search property."""
    index = KeywordIndex(":memory:")
    listing = Listing("cd" * 20, "Über Straße 1080p", 1, (ListingFile("a/b", 1),), 0, 100)
    index.publish(listing, Identity.generate().public_key_hex)
    yield index
    index.close()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=256))
def test_any_search_text_is_safe_for_fts5(search_index, words):
    try:
        match_expression(words)
    except SearchError:
        return
    assert isinstance(search_index.search(words, 10, now=0), list)


def test_signed_listing_round_trips(bunny):
    me = Identity.generate()
    body = json.loads(json.dumps(sign_listing(me, listing_for(bunny))))
    listing, key = parse_publish(body, time.time())
    assert key == me.public_key_hex and listing == listing_for(bunny, now=listing.published_at)


def test_a_torrent_with_many_files_is_listed_with_as_many_as_fit(hub, tmp_path):
    folder = tmp_path / "many"
    for number in range(3000):
        path = folder / f"{'deeply-nested-folder-name/' * 3}file-{number:05d}-with-a-long-name.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    torrent = create_torrent(folder)
    asyncio.run(publish(hub.url, Identity.generate(), torrent))
    [found] = asyncio.run(search(hub.url, "many"))
    assert 0 < found.files < 3000
