"""Peer wire framing and extension payloads: round trips, and hostile bytes never crash."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.swarm import bits
from shoal.wire import extensions as ext
from shoal.wire import messages as m
from shoal.wire.connection import MAX_MESSAGE_LENGTH, PeerWire

INFO_HASH = bytes(range(20))
FAST_HANDSHAKE = m.handshake_bytes(INFO_HASH, b"-XX0000-abcdefghijkl")


def connected_pair() -> tuple[PeerWire, PeerWire]:
    """Two wires that have exchanged handshakes."""
    a = PeerWire(INFO_HASH, b"-AA0000-aaaaaaaaaaaa")
    b = PeerWire(None, b"-BB0000-bbbbbbbbbbbb")
    a.send_handshake(INFO_HASH)
    b.receive(b"".join(a.data_to_send()))
    b.send_handshake(INFO_HASH)
    a.receive(b"".join(b.data_to_send()))
    return a, b


def test_handshake_names_torrent_and_extensions():
    a = PeerWire(INFO_HASH, b"-AA0000-aaaaaaaaaaaa")
    b = PeerWire(None, b"-BB0000-bbbbbbbbbbbb")
    a.send_handshake(INFO_HASH)
    [handshake] = b.receive(b"".join(a.data_to_send()))
    assert isinstance(handshake, m.Handshake)
    assert handshake.info_hash == INFO_HASH
    assert handshake.peer_id == b"-AA0000-aaaaaaaaaaaa"
    assert handshake.supports(m.EXTENSION_BIT) and handshake.supports(m.FAST_BIT)


def test_every_message_round_trips():
    a, b = connected_pair()
    a.send_keep_alive()
    for message_id in (m.CHOKE, m.UNCHOKE, m.INTERESTED, m.NOT_INTERESTED, m.HAVE_ALL, m.HAVE_NONE):
        a.send_simple(message_id)
    a.send_have(7)
    a.send_bitfield(b"\xf0")
    a.send_request(1, 16384, 16384)
    a.send_piece(1, 16384, b"x" * 100)
    a.send_cancel(1, 16384, 16384)
    a.send_reject(2, 0, 16384)
    a.send_allowed_fast(3)
    a.send_extended(1, b"d1:ai1ee")
    assert b.receive(b"".join(a.data_to_send())) == [
        m.KeepAlive(),
        m.Choke(),
        m.Unchoke(),
        m.Interested(),
        m.NotInterested(),
        m.HaveAll(),
        m.HaveNone(),
        m.Have(7),
        m.Bitfield(b"\xf0"),
        m.Request(1, 16384, 16384),
        m.Piece(1, 16384, b"x" * 100),
        m.Cancel(1, 16384, 16384),
        m.RejectRequest(2, 0, 16384),
        m.AllowedFast(3),
        m.Extended(1, b"d1:ai1ee"),
    ]


@given(st.lists(st.integers(min_value=1, max_value=50), max_size=40))
def test_framing_does_not_depend_on_how_bytes_are_split(cuts):
    a, b = connected_pair()
    for index in range(5):
        a.send_have(index)
        a.send_piece(index, 0, bytes([index]) * 300)
    stream = b"".join(a.data_to_send())
    events = []
    position = 0
    for cut in cuts:
        events += b.receive(stream[position : position + cut])
        position += cut
    events += b.receive(stream[position:])
    assert len(events) == 10
    assert events[1] == m.Piece(0, 0, b"\x00" * 300)


@given(st.binary(max_size=2000))
def test_random_bytes_after_handshake_raise_only_protocol_errors(data):
    wire = PeerWire(INFO_HASH, b"-AA0000-aaaaaaaaaaaa")
    wire.receive(FAST_HANDSHAKE)
    with contextlib.suppress(m.ProtocolError):
        wire.receive(data)


@given(st.binary(max_size=200))
def test_random_bytes_as_handshake_raise_only_protocol_errors(data):
    with contextlib.suppress(m.ProtocolError):
        PeerWire(None, b"-AA0000-aaaaaaaaaaaa").receive(data)


def test_oversized_message_is_refused_before_it_is_buffered():
    wire = PeerWire(INFO_HASH, b"-AA0000-aaaaaaaaaaaa")
    wire.receive(FAST_HANDSHAKE)
    with pytest.raises(m.ProtocolError, match="exceeds the limit"):
        wire.receive((MAX_MESSAGE_LENGTH + 1).to_bytes(4, "big") + b"\x07")


def test_handshake_for_another_torrent_is_refused():
    wire = PeerWire(bytes(20), b"-AA0000-aaaaaaaaaaaa")
    with pytest.raises(m.ProtocolError, match="another torrent"):
        wire.receive(FAST_HANDSHAKE)


def test_fast_messages_need_the_fast_extension():
    wire = PeerWire(INFO_HASH, b"-AA0000-aaaaaaaaaaaa")
    plain = bytearray(FAST_HANDSHAKE)
    plain[27] = 0
    wire.receive(bytes(plain))
    with pytest.raises(m.ProtocolError, match="without support"):
        wire.receive(m.frame(m.HAVE_ALL))


@pytest.mark.parametrize(
    "payload",
    [
        m.frame(m.HAVE, b"\x00\x00\x01"),
        m.frame(m.REQUEST, bytes(12)),  # zero length
        m.frame(m.REQUEST, bytes(8) + (1 << 20).to_bytes(4, "big")),
        m.frame(m.CHOKE, b"x"),
        m.frame(99),
    ],
)
def test_malformed_messages_are_protocol_errors(payload):
    wire = PeerWire(INFO_HASH, b"-AA0000-aaaaaaaaaaaa")
    wire.receive(FAST_HANDSHAKE)
    with pytest.raises(m.ProtocolError):
        wire.receive(payload)


@given(st.binary(max_size=300))
def test_extension_parsers_raise_only_protocol_errors(data):
    for parse in (ext.parse_handshake, ext.parse_metadata, ext.parse_pex):
        with contextlib.suppress(m.ProtocolError):
            parse(data)


def test_extension_handshake_round_trip():
    payload = ext.encode_handshake(
        listen_port=6881, metadata_size=1234, request_queue=500, client="shoal"
    )
    parsed = ext.parse_handshake(payload)
    assert parsed.ids == {ext.UT_PEX: 1, ext.UT_METADATA: 2}
    assert (parsed.listen_port, parsed.metadata_size, parsed.request_queue) == (6881, 1234, 500)


def test_metadata_messages_round_trip():
    data = ext.MetadataMessage(ext.METADATA_DATA, 2, 40000, b"z" * 100)
    assert ext.parse_metadata(ext.encode_metadata(data)) == data
    request = ext.MetadataMessage(ext.METADATA_REQUEST, 0)
    assert ext.parse_metadata(ext.encode_metadata(request)) == request


@given(
    st.lists(
        st.tuples(
            # An IPv4-mapped IPv6 address travels as the IPv4 address it is (test_addresses).
            st.ip_addresses().filter(lambda ip: getattr(ip, "ipv4_mapped", None) is None).map(str),
            st.integers(min_value=1, max_value=65535),
        ),
        max_size=50,
    )
)
def test_pex_round_trip(addresses):
    added, dropped = ext.parse_pex(ext.encode_pex(addresses, []))
    assert sorted(added) == sorted(addresses) and dropped == []


@given(st.lists(st.booleans(), min_size=1, max_size=100))
def test_bitfield_round_trip(flags):
    have = bytearray(flags)
    assert bits.from_wire(bits.to_wire(have), len(have)) == have


def test_bitfield_with_spare_bits_set_is_refused():
    with pytest.raises(m.ProtocolError, match="past the last piece"):
        bits.from_wire(b"\xff", 7)
