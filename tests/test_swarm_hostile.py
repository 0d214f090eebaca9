"""The swarm core against peers that misbehave: each case once stalled or bloated a download."""

from __future__ import annotations

import random

import pytest

from shoal.metainfo import Torrent, create_torrent
from shoal.swarm import core
from shoal.wire import extensions as ext
from shoal.wire import messages as m
from shoal.wire.connection import PeerWire

PIECE = 64 * 1024


class Remote:
    """A remote peer driven by hand, connected to the swarm under test."""

    def __init__(self, swarm: core.Swarm, number: int, now: float = 0.0) -> None:
        self.swarm = swarm
        self.peer_id = f"-RM0000-{number:012d}".encode()
        wire = PeerWire(None, swarm.peer_id)
        events = wire.receive(m.handshake_bytes(swarm.info_hash, self.peer_id))
        self.key = swarm.add_peer(wire, (f"10.9.9.{number}", 6881), False, now)
        swarm.handle_events(self.key, events, now)
        self.wire = wire
        self.reader = PeerWire(swarm.info_hash, self.peer_id)  # parses what the swarm sends

    def send(self, raw: bytes, now: float = 0.0) -> None:
        """Bytes from this remote to the swarm."""
        self.swarm.receive(self.key, raw, now)

    def received(self) -> list[m.Event]:
        """What the swarm sent this remote since the last call."""
        return self.reader.receive(b"".join(self.wire.data_to_send()))

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


def test_rejected_piece_is_not_asked_of_the_same_peer_again(torrent_and_content):
    torrent, _content = torrent_and_content
    swarm = leecher(torrent, torrent.info_hash)
    peer = Remote(swarm, 1)
    peer.send(m.frame(m.HAVE_ALL) + m.frame(m.UNCHOKE))
    first = requests(peer.received())[0]
    peer.send(m.frame_block_ref(m.REJECT_REQUEST, first.index, first.begin, first.length))
    swarm.tick(1.0)
    again = [r for r in requests(peer.received()) if r.index == first.index]
    assert again == []


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
        swarm.tick(float(now))
        liar.received()
        answer_metadata(honest, info, float(now))
        ready += [a for a in swarm.take_actions() if isinstance(a, core.MetadataReady)]
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
    ready = [a for a in swarm.take_actions() if isinstance(a, core.MetadataReady)]
    assert len(ready) == 1


def test_pex_floods_are_rate_limited(torrent_and_content):
    torrent, _content = torrent_and_content
    swarm = leecher(torrent, torrent.info_hash)
    peer = Remote(swarm, 1)
    peer.send(extension_handshake())
    for batch in range(100):
        added = [(f"10.{batch}.0.{i}", 6881) for i in range(1, 51)]
        peer.send(m.frame(m.EXTENDED, b"\x01" + ext.encode_pex(added, [])), batch / 10)
    learned = [a for a in swarm.take_actions() if isinstance(a, core.ConnectTo)]
    assert len(learned) == 50


def test_haves_before_metadata_are_bounded(torrent_and_content):
    torrent, _content = torrent_and_content
    swarm = leecher(None, torrent.info_hash)
    peer = Remote(swarm, 1)
    flood = b"".join(m.frame_index(m.HAVE, i) for i in range(core.MAX_PENDING_HAVES + 1))
    peer.send(flood)
    assert not peer.connected
