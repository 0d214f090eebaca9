"""The overlay's wire: every message round-trips, any bytes parse or are refused, and a
link's buffer stays bounded whatever the other side sends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.overlay import messages as om
from shoal.overlay.messages import (
    GREETING,
    Bye,
    Framer,
    Hello,
    Message,
    OverlayError,
    Ping,
    Pong,
    QrpTable,
    Query,
    QueryHit,
    QueryStatus,
    Result,
    Role,
    encode,
)

ids = st.binary(min_size=16, max_size=16)
ipv4 = st.tuples(st.integers(1, 254), st.integers(0, 255), st.integers(1, 254)).map(
    lambda p: f"10.{p[0]}.{p[1]}.{p[2]}"
)
ipv6 = st.integers(1, 0xFFFF).map(lambda n: f"2001:db8::{n:x}")
address = st.tuples(st.one_of(ipv4, ipv6), st.integers(1, 65535))
text = st.text(min_size=1, max_size=60)
result = st.builds(Result, st.binary(min_size=20, max_size=20), st.integers(0, 2**63 - 1), text)
payloads = st.one_of(
    st.builds(
        Hello,
        st.binary(min_size=20, max_size=20),
        st.integers(1, 65535),
        st.sampled_from(Role),
        st.integers(0, 65535),
    ),
    st.just(Ping()),
    st.builds(Pong, st.lists(address, max_size=16).map(tuple)),
    st.builds(Bye, st.text(max_size=60)),
    st.builds(QrpTable, st.binary(min_size=om.QRP_BYTES, max_size=om.QRP_BYTES)),
    st.builds(Query, text, st.booleans()),
    st.builds(
        QueryHit,
        address,
        st.binary(min_size=20, max_size=20),
        st.lists(result, min_size=1, max_size=16).map(tuple),
    ),
    st.builds(QueryStatus, st.integers(0, 0xFFFF), st.booleans()),
)
messages = st.builds(Message, ids, st.integers(0, 255), st.integers(0, 255), payloads)


@given(st.lists(messages, max_size=4), st.data())
def test_messages_round_trip_at_any_split(sent, data):
    stream = GREETING + b"".join(encode(message) for message in sent)
    cut = data.draw(st.integers(0, len(stream)))
    framer = Framer()
    assert framer.feed(stream[:cut]) + framer.feed(stream[cut:]) == sent


@given(st.binary(max_size=300))
def test_any_bytes_after_the_greeting_parse_or_are_refused(noise):
    try:
        read = Framer().feed(GREETING + noise)
    except OverlayError:
        return
    # What was read is exactly what the bytes said, message by message.
    again = b"".join(encode(message) for message in read)
    assert noise.startswith(again)


@given(st.integers(0, 255), st.binary(max_size=120))
def test_any_payload_of_any_type_parses_or_is_refused(kind, body):
    try:
        payload = om.parse_payload(kind, body)
    except OverlayError:
        return
    # What parsed encodes back to the very bytes it came from.
    assert encode(Message(bytes(16), 0, 0, payload))[om.HEADER.size :] == body


def test_a_stream_that_does_not_greet_is_refused_at_once():
    with pytest.raises(OverlayError):
        Framer().feed(b"GET / HTTP/1.1\r\n")


def test_a_huge_length_is_refused_before_anything_is_buffered():
    header = om.HEADER.pack(bytes(16), om.Kind.QUERY, 7, 0, 2**31)
    with pytest.raises(OverlayError):
        Framer().feed(GREETING + header)


def test_a_peer_that_sends_much_never_makes_the_buffer_grow_past_one_message():
    framer = Framer()
    framer.feed(GREETING)
    table = encode(Message(bytes(16), 1, 0, QrpTable(bytes(om.QRP_BYTES))))
    for _ in range(50):
        [message] = framer.feed(table)
        assert isinstance(message.payload, QrpTable)
    framer.feed(table[:-1])
    assert len(framer._buffer) <= om.MAX_BUFFERED


@pytest.mark.parametrize(
    "kind, body",
    [
        (om.Kind.QUERY, b"\x00"),  # no words
        (om.Kind.QUERY, b"\x00" + b"w" * 201),  # too many
        (om.Kind.QUERY, b"\x02words"),  # neither flood nor walk
        (om.Kind.QUERY, b"\x00\xff\xfe"),  # not UTF-8
        (om.Kind.QUERY_HIT, b"\x04" + bytes(6) + bytes(20) + b"\x00"),  # no results
        (om.Kind.PONG, b"\x05" + bytes(6)),  # no such family
        (om.Kind.QRP_TABLE, bytes(10)),  # not a whole table
        (om.Kind.HELLO, bytes(20) + b"\x00\x01\x07\x00\x00"),  # no such role
        (om.Kind.PING, b"x"),  # bytes after the last field
        (0x7F, b""),  # no such type
    ],
)
def test_malformed_payloads_are_refused(kind, body):
    with pytest.raises(OverlayError):
        om.parse_payload(kind, body)


@given(st.text(min_size=1, max_size=400), st.text(min_size=1, max_size=400))
def test_long_words_and_names_are_cut_at_a_character_and_still_parse(words, name):
    """A cut inside a multi-byte character would make the message malformed for everyone."""
    hit = QueryHit(("10.0.0.1", 1), bytes(20), (Result(bytes(20), 1, name),))
    sent = [Message(bytes(16), 1, 0, Query(words)), Message(bytes(16), 1, 0, hit)]
    if not name.encode()[: om.MAX_NAME].decode(errors="ignore"):
        return  # nothing of the name survives the cut (a first character past the limit)
    [query, got] = Framer().feed(GREETING + b"".join(encode(m) for m in sent))
    assert words.startswith(query.payload.words)
    assert len(query.payload.words.encode()) <= om.MAX_WORDS
    assert name.startswith(got.payload.results[0].name)


def test_a_hello_with_port_0_is_malformed():
    hello = Message(bytes(16), 1, 0, Hello(bytes(20), 0, Role.ULTRAPEER))
    with pytest.raises(OverlayError):
        Framer().feed(GREETING + encode(hello))
