"""The swarm core against peers that misbehave: each case once stalled or bloated a download."""

from __future__ import annotations

import random
import weakref

import pytest

from shoal.metainfo import Torrent, create_torrent
from shoal.swarm import core, uploads
from shoal.swarm.admission import MAX_PER_ADDRESS, MAX_PER_LOOPBACK_ADDRESS, HandshakeGate
from shoal.swarm.budget import PEER_REPLY_LIMIT, ReplyBudget
from shoal.swarm.sources import DIALS_PER_SECOND
from shoal.wire import extensions as ext
from shoal.wire import messages as m
from shoal.wire.connection import PeerWire

PIECE = 64 * 1024


# Per swarm under test: its remotes by key, and the outputs other than bytes to send.
_remotes: weakref.WeakKeyDictionary[core.Swarm, dict[int, Remote]] = weakref.WeakKeyDictionary()
_actions: weakref.WeakKeyDictionary[core.Swarm, list[core.Action]] = weakref.WeakKeyDictionary()


def collect(swarm: core.Swarm) -> None:
    """Take the swarm's outputs, as an adapter would: bytes go to their remote's inbox."""
    for output in swarm.take_outputs():
        if isinstance(output, core.Send):
            remote = _remotes.get(swarm, {}).get(output.peer)
            if remote is not None:
                remote.inbox.extend(output.data)
        else:
            _actions.setdefault(swarm, []).append(output)


def actions(swarm: core.Swarm) -> list[core.Action]:
    """What the swarm asked for (other than sending) since the last call."""
    collect(swarm)
    return _actions.pop(swarm, [])


class Remote:
    """A remote peer driven by hand, connected to the swarm under test."""

    def __init__(self, swarm: core.Swarm, number: int, now: float = 0.0) -> None:
        self.swarm = swarm
        self.peer_id = f"-RM0000-{number:012d}".encode()
        wire = PeerWire(None, swarm.peer_id)
        events = wire.receive(m.handshake_bytes(swarm.info_hash, self.peer_id))
        self.inbox: list[bytes] = []  # bytes the swarm sent, not yet read
        key = swarm.add_peer(wire, (f"10.9.9.{number}", 6881), False, now)
        assert key is not None
        self.key = key
        _remotes.setdefault(swarm, {})[key] = self
        swarm.handle_events(key, events, now)
        self.reader = PeerWire(swarm.info_hash, self.peer_id)  # parses what the swarm sends

    def send(self, raw: bytes, now: float = 0.0) -> None:
        """Bytes from this remote to the swarm."""
        self.swarm.receive(self.key, raw, now)

    def received(self) -> list[m.Event]:
        """What the swarm sent this remote since the last call."""
        collect(self.swarm)
        data, self.inbox = b"".join(self.inbox), []
        return self.reader.receive(data)

    @property
    def connected(self) -> bool:
        """Whether the swarm still has this peer."""
        return self.key in self.swarm.peers


@pytest.fixture
def torrent_and_content(tmp_path) -> tuple[Torrent, bytes]:
    """Four 64 KiB pieces."""
    content = random.Random(5).randbytes(4 * PIECE)
    path = tmp_path / "payload.bin"
    path.write_bytes(content)
    return create_torrent(path, piece_length=PIECE), content


def leecher(torrent: Torrent | None, info_hash: bytes) -> core.Swarm:
    """A swarm with nothing yet."""
    have = bytearray(torrent.num_pieces) if torrent else None
    return core.Swarm(info_hash, b"-SH0000-000000000000", torrent, have, rng=random.Random(1))


def requests(events: list[m.Event]) -> list[m.Request]:
    """The requests among events."""
    return [e for e in events if isinstance(e, m.Request)]


def test_wrong_size_block_drops_the_peer_and_frees_its_requests(torrent_and_content):
    torrent, _content = torrent_and_content
    swarm = leecher(torrent, torrent.info_hash)
    liar = Remote(swarm, 1)
    liar.send(m.frame(m.HAVE_ALL) + m.frame(m.UNCHOKE))
    [first, *_] = requests(liar.received())
    liar.send(m.piece_header(first.index, first.begin, 1) + b"\x00")
    assert not liar.connected
    honest = Remote(swarm, 2)
    honest.send(m.frame(m.HAVE_ALL) + m.frame(m.UNCHOKE))
    asked = {(r.index, r.begin) for r in requests(honest.received())}
    assert (first.index, first.begin) in asked


def test_have_for_a_piece_in_progress_makes_us_interested(torrent_and_content):
    torrent, _content = torrent_and_content
    swarm = leecher(torrent, torrent.info_hash)
    first = Remote(swarm, 1)
    first.send(m.frame(m.HAVE_ALL) + m.frame(m.UNCHOKE))
    assert requests(first.received())
    first.send(m.frame(m.CHOKE))
    second = Remote(swarm, 2)
    second.send(m.frame(m.HAVE_NONE) + m.frame_index(m.HAVE, 0))
    assert m.Interested() in second.received()


def test_rejected_piece_rests_then_is_asked_again(torrent_and_content):
    torrent, _content = torrent_and_content
    swarm = leecher(torrent, torrent.info_hash)
    peer = Remote(swarm, 1)
    peer.send(m.frame(m.HAVE_ALL) + m.frame(m.UNCHOKE))
    asked = requests(peer.received())
    first = asked[0]
    for request in asked:  # a busy peer: "not now" to everything
        peer.send(m.frame_block_ref(m.REJECT_REQUEST, request.index, request.begin, request.length))
    swarm.handle_timer(1.0)
    assert [r for r in requests(peer.received()) if r.index == first.index] == []
    # A seeder never announces the piece anew: "not now" must not become "never".
    swarm.handle_timer(core.REJECT_REST + 1.0)
    again = [
        r for r in requests(peer.received()) if (r.index, r.begin) == (first.index, first.begin)
    ]
    assert again


def test_requests_in_flight_stay_below_the_peers_reqq(tmp_path):
    content = random.Random(2).randbytes(16 * 1024 * 1024)
    (tmp_path / "big.bin").write_bytes(content)
    torrent = create_torrent(tmp_path / "big.bin", piece_length=256 * 1024)
    swarm = leecher(torrent, torrent.info_hash)
    peer = Remote(swarm, 1)
    payload = ext.encode_handshake(listen_port=1, metadata_size=None, request_queue=512, client="")
    peer.send(m.frame(m.EXTENDED, b"\x00" + payload))
    swarm.peers[peer.key].request_depth = core.MAX_REQUEST_QUEUE  # as if slow start grew it
    peer.send(m.frame(m.HAVE_ALL) + m.frame(m.UNCHOKE))
    # Transmission rejects the request that fills its queue of 512.
    assert 0 < len(requests(peer.received())) < 512


def seeder(torrent: Torrent, budget: ReplyBudget | None = None) -> core.Swarm:
    """A swarm with every piece."""
    have = bytearray(b"\x01" * torrent.num_pieces)
    return core.Swarm(
        torrent.info_hash, b"-SH0000-111111111111", torrent, have, reply_budget=budget
    )


def reads(swarm: core.Swarm) -> list[core.ReadBlock]:
    """The block reads the swarm asked for since the last call."""
    return [a for a in actions(swarm) if isinstance(a, core.ReadBlock)]


def request_flood(count: int, pieces: int) -> bytes:
    """count requests for whole blocks spread over the pieces."""
    return b"".join(
        m.frame_block_ref(m.REQUEST, i % pieces, (i // pieces % 4) * 16384, 16384)
        for i in range(count)
    )


def asking_peer(swarm: core.Swarm, count: int) -> Remote:
    """A peer, unchoked at once as it is the first interested, that asks for count blocks."""
    peer = Remote(swarm, 1)
    peer.send(m.frame(m.INTERESTED))
    assert swarm.torrent is not None
    peer.send(request_flood(count, swarm.torrent.num_pieces))
    return peer


def test_requests_are_served_only_as_the_peer_reads(torrent_and_content):
    torrent, _content = torrent_and_content
    swarm = seeder(torrent)
    peer = asking_peer(swarm, 1999)
    first = reads(swarm)
    assert 0 < len(first) * 16384 <= PEER_REPLY_LIMIT
    swarm.flushed(peer.key, PEER_REPLY_LIMIT, 0.0)  # the peer has read nothing
    assert reads(swarm) == []
    swarm.flushed(peer.key, 0, 0.0)  # now it has read everything
    assert 0 < len(reads(swarm)) * 16384 <= PEER_REPLY_LIMIT


def test_replies_queued_for_all_peers_share_one_bound(torrent_and_content):
    torrent, _content = torrent_and_content
    budget = ReplyBudget(limit=1024 * 1024)
    swarms = [seeder(torrent, budget), seeder(torrent, budget)]
    for number, swarm in enumerate(swarms):
        peer = Remote(swarm, number + 1)
        peer.send(m.frame(m.INTERESTED))
        peer.send(request_flood(1000, torrent.num_pieces))
    served = sum(len(reads(swarm)) for swarm in swarms)
    assert 0 < served * 16384 <= budget.limit + 16384 + 13


def test_a_choked_peer_that_asks_and_never_reads_is_dropped(torrent_and_content, monkeypatch):
    monkeypatch.setattr(uploads, "PEER_OUTPUT_HARD_LIMIT", 1024 * 1024)  # a quicker test
    torrent, _content = torrent_and_content
    swarm = seeder(torrent)
    peer = Remote(swarm, 1)  # not interested, so choked: every request is rejected
    flood = request_flood(1000, torrent.num_pieces)
    for _ in range(100):
        peer.send(flood)
        if not peer.connected:
            break
    assert not peer.connected
    assert swarm.reply_budget.used == 0


def test_a_slow_peer_choked_with_requests_in_flight_is_not_dropped(torrent_and_content):
    torrent, _content = torrent_and_content
    swarm = seeder(torrent)
    peer = asking_peer(swarm, 1000)
    swarm.flushed(peer.key, PEER_REPLY_LIMIT + 1000, 0.0)  # slower than our disk
    swarm._choke(swarm.peers[peer.key], 0.0)
    peer.send(request_flood(50, torrent.num_pieces))  # already on their way when choked
    assert peer.connected
    rejects = [e for e in peer.received() if isinstance(e, m.RejectRequest)]
    assert len(rejects) >= 50


def metadata_request(piece: int) -> bytes:
    """A ut_metadata request for one piece, to our local id for it."""
    message = ext.encode_metadata(ext.MetadataMessage(ext.METADATA_REQUEST, piece))
    return m.frame(m.EXTENDED, bytes((ext.LOCAL_IDS[ext.UT_METADATA],)) + message)


def test_a_peer_asking_for_the_metadata_over_and_over_is_dropped(torrent_and_content):
    torrent, _content = torrent_and_content
    swarm = seeder(torrent)
    peer = Remote(swarm, 1)
    peer.send(extension_handshake())
    # Once more after a slow reply is fair: Transmission asks again after 3 s.
    peer.send(metadata_request(0) * 2)
    assert peer.connected
    replies = [e for e in peer.received() if isinstance(e, m.Extended) and e.extension_id == 2]
    assert [ext.parse_metadata(r.payload).kind for r in replies] == [ext.METADATA_DATA] * 2
    peer.send(metadata_request(0) * 1000)
    assert not peer.connected
    collect(swarm)
    sent = sum(len(data) for data in peer.inbox)
    assert sent < (core.METADATA_REPEATS + 1) * (len(torrent.info_bytes) + 64)


def test_a_peer_with_pieces_asking_for_metadata_is_dropped(torrent_and_content):
    torrent, _content = torrent_and_content
    swarm = seeder(torrent)
    peer = Remote(swarm, 1)
    peer.send(extension_handshake() + m.frame_index(m.HAVE, 0))
    peer.send(metadata_request(0))
    assert not peer.connected


def test_idle_peers_make_way_for_new_ones_but_traders_do_not(torrent_and_content):
    torrent, content = torrent_and_content
    swarm = leecher(torrent, torrent.info_hash)
    swarm.config.max_peers = 3
    remotes = [Remote(swarm, number) for number in (1, 2, 3)]
    trader, pretender, idle = remotes
    trader.send(m.frame(m.HAVE_ALL) + m.frame(m.UNCHOKE), 25.0)
    first = requests(trader.received())[0]
    block = content[first.index * PIECE + first.begin :][: first.length]
    trader.send(m.piece_header(first.index, first.begin, first.length) + block, 25.0)
    # Unchoking us and never sending a block is no trade.
    pretender.send(m.frame(m.HAVE_ALL) + m.frame(m.UNCHOKE), 25.0)
    newcomer = PeerWire(torrent.info_hash, swarm.peer_id)
    assert swarm.add_peer(newcomer, ("10.1.1.1", 1), True, 5.0) is None  # within the grace
    for number, now in ((1, 30.0), (2, 31.0)):
        wire = PeerWire(torrent.info_hash, swarm.peer_id)
        assert swarm.add_peer(wire, (f"10.1.1.{number}", 1), True, now) is not None
    assert trader.connected
    assert not pretender.connected and not idle.connected
    # Everyone left trades or is new: the next newcomer waits, until the new ones idle.
    assert swarm.add_peer(newcomer, ("10.1.1.9", 1), True, 32.0) is None
    later = PeerWire(torrent.info_hash, swarm.peer_id)
    assert swarm.add_peer(later, ("10.1.1.8", 1), True, 45.0) is not None
    assert trader.connected


@pytest.mark.parametrize(
    ("hosts", "limit", "other"),
    [
        # Local nodes share one loopback address: more slots, but not every one.
        (["127.0.0.2"] * 60, MAX_PER_LOOPBACK_ADDRESS, "127.0.0.1"),
        # One subscriber's IPv6 /64 counts as one address, however many it uses.
        ([f"2001:db8::{n}" for n in range(1, 61)], MAX_PER_ADDRESS, "2001:db8:0:1::1"),
    ],
)
def test_one_address_cannot_take_every_slot(torrent_and_content, hosts, limit, other):
    torrent, _content = torrent_and_content
    swarm = leecher(torrent, torrent.info_hash)
    taken = [
        swarm.add_peer(PeerWire(torrent.info_hash, swarm.peer_id), (host, port), True, 0)
        for port, host in enumerate(hosts, start=1000)
    ]
    assert sum(key is not None for key in taken) == limit
    newcomer = PeerWire(torrent.info_hash, swarm.peer_id)
    assert swarm.add_peer(newcomer, (other, 999), True, 0) is not None


def test_a_banned_peer_cannot_push_out_an_idle_one(torrent_and_content):
    torrent, _content = torrent_and_content
    swarm = leecher(torrent, torrent.info_hash)
    swarm.config.max_peers = 2
    idle = [Remote(swarm, number) for number in (1, 2)]
    swarm.banned_ids.add(b"-XX0000-000000000001")
    wire = PeerWire(None, swarm.peer_id)
    wire.receive(m.handshake_bytes(torrent.info_hash, b"-XX0000-000000000001"))
    assert swarm.add_peer(wire, ("10.7.7.7", 1), False, 100.0) is None
    assert all(remote.connected for remote in idle)


def test_silent_connections_from_one_host_cannot_lock_others_out():
    gate = HandshakeGate()
    for connection in range(1000):
        gate.admit(connection, "127.0.0.2")
    assert len(gate.waiting) <= 32
    for connection in range(1000, 1100):
        gate.admit(connection, f"10.0.0.{connection % 100}")
    assert len(gate.waiting) == gate.limit
    assert gate.admit(5000, "127.0.0.1") != [5000]
    assert 5000 in gate.waiting


def extension_handshake(size: int | None = None) -> bytes:
    """An extension handshake offering ut_pex and ut_metadata, with a metadata size if given."""
    payload = ext.encode_handshake(
        listen_port=6881, metadata_size=size, request_queue=250, client="t"
    )
    return m.frame(m.EXTENDED, b"\x00" + payload)


def answer_metadata(remote: Remote, info: bytes, now: float) -> None:
    """Answer every metadata request the remote received."""
    for event in remote.received():
        if isinstance(event, m.Extended) and event.extension_id == 2:
            asked = ext.parse_metadata(event.payload)
            chunk = info[asked.piece * 16384 : (asked.piece + 1) * 16384]
            reply = ext.MetadataMessage(ext.METADATA_DATA, asked.piece, len(info), chunk)
            remote.send(m.frame(m.EXTENDED, b"\x02" + ext.encode_metadata(reply)), now)


def test_a_peer_lying_about_the_metadata_size_does_not_block_a_magnet(torrent_and_content):
    torrent, _content = torrent_and_content
    info = torrent.info_bytes
    swarm = leecher(None, torrent.info_hash)
    liar = Remote(swarm, 1)
    liar.send(extension_handshake(len(info) + 1))
    honest = Remote(swarm, 2)
    honest.send(extension_handshake(len(info)))
    ready = []
    for now in range(0, 60):
        swarm.handle_timer(float(now))
        liar.received()
        answer_metadata(honest, info, float(now))
        ready += [a for a in actions(swarm) if isinstance(a, core.MetadataReady)]
    assert [a.info_bytes for a in ready] == [info]


def test_metadata_arrives_once_even_if_a_piece_comes_twice(torrent_and_content):
    torrent, _content = torrent_and_content
    info = torrent.info_bytes
    swarm = leecher(None, torrent.info_hash)
    peer = Remote(swarm, 1)
    peer.send(extension_handshake(len(info)))
    [request] = [e for e in peer.received() if isinstance(e, m.Extended) and e.extension_id == 2]
    reply = ext.MetadataMessage(ext.METADATA_DATA, 0, len(info), info)
    frame = m.frame(m.EXTENDED, b"\x02" + ext.encode_metadata(reply))
    assert ext.parse_metadata(request.payload).piece == 0
    peer.send(frame)
    peer.send(frame)
    ready = [a for a in actions(swarm) if isinstance(a, core.MetadataReady)]
    assert len(ready) == 1


def test_pex_floods_are_rate_limited(torrent_and_content):
    torrent, _content = torrent_and_content
    swarm = leecher(torrent, torrent.info_hash)
    peer = Remote(swarm, 1)
    peer.send(extension_handshake())
    for batch in range(100):
        added = [(f"10.{batch}.0.{i}", 6881) for i in range(1, 51)]
        peer.send(m.frame(m.EXTENDED, b"\x01" + ext.encode_pex(added, [])), batch / 10)
    # One message per half minute is heeded; dials go out a bounded number at a time.
    assert swarm.sources.learned_count() == 50
    dials = [a for a in actions(swarm) if isinstance(a, core.ConnectTo)]
    assert len(dials) == DIALS_PER_SECOND


def test_haves_before_metadata_are_bounded(torrent_and_content):
    torrent, _content = torrent_and_content
    swarm = leecher(None, torrent.info_hash)
    peer = Remote(swarm, 1)
    flood = b"".join(m.frame_index(m.HAVE, i) for i in range(core.MAX_PENDING_HAVES + 1))
    peer.send(flood)
    assert not peer.connected


def test_haves_go_only_to_peers_that_lack_the_piece(torrent_and_content):
    torrent, _content = torrent_and_content
    swarm = leecher(torrent, torrent.info_hash)
    holder, lacker = Remote(swarm, 1), Remote(swarm, 2)
    holder.send(m.frame_index(m.HAVE, 0))
    lacker.send(m.frame(m.HAVE_NONE))
    holder.received(), lacker.received()
    swarm.piece_checked(0, True, 1.0)
    haves = [e for e in lacker.received() if isinstance(e, m.Have)]
    assert [have.index for have in haves] == [0]
    assert not [e for e in holder.received() if isinstance(e, m.Have)]


def test_a_peer_that_joins_a_full_swarm_later_can_be_evicted_in_its_turn(torrent_and_content):
    torrent, content = torrent_and_content
    swarm = leecher(torrent, torrent.info_hash)
    swarm.config.max_peers = 3
    traders = [Remote(swarm, number) for number in (1, 2, 3)]
    for piece, trader in enumerate(traders):
        trader.send(m.frame_index(m.HAVE, piece) + m.frame(m.UNCHOKE), 5.0)
        first = requests(trader.received())[0]
        block = content[first.index * PIECE + first.begin :][: first.length]
        trader.send(m.piece_header(first.index, first.begin, first.length) + block, 5.0)
    refused = PeerWire(torrent.info_hash, swarm.peer_id)
    assert swarm.add_peer(refused, ("10.1.1.1", 1), True, 20.0) is None  # all trade
    swarm.remove_peer(traders[0].key, 21.0)
    idle = Remote(swarm, 4, 22.0)
    newcomer = PeerWire(torrent.info_hash, swarm.peer_id)
    assert swarm.add_peer(newcomer, ("10.1.1.2", 1), True, 40.0) is not None
    assert not idle.connected and traders[1].connected and traders[2].connected
