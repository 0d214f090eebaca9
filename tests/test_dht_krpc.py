"""KRPC messages (BEP 5): the spec's examples, round trips, and any input parsed safely."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.bencode import encode
from shoal.dht import krpc
from shoal.dht.routing import NodeInfo

ID = b"abcdefghij0123456789"
OTHER = b"mnopqrstuvwxyz123456"


def test_the_specs_ping_query_and_response_parse():
    query = krpc.parse(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe")
    assert query == krpc.Query(b"aa", b"ping", {b"id": ID}, ID, read_only=False)
    reply = krpc.parse(b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re")
    assert reply == krpc.Response(b"aa", {b"id": OTHER}, OTHER, seen_as=None)
    error = krpc.parse(b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee")
    assert error == krpc.Error(b"aa", 201, "A Generic Error Ocurred")


def test_what_we_build_parses_back():
    data = krpc.query(b"t1", b"find_node", {b"target": OTHER}, sender=ID, read_only=True)
    query = krpc.parse(data)
    assert isinstance(query, krpc.Query)
    assert (query.method, query.sender, query.read_only) == (b"find_node", ID, True)
    assert krpc.node_id(query.args, b"target") == OTHER
    data = krpc.response(b"t1", {b"token": b"x"}, sender=OTHER, requester=("10.1.2.3", 6881))
    reply = krpc.parse(data)
    assert isinstance(reply, krpc.Response)
    assert reply.seen_as == ("10.1.2.3", 6881) and reply.values[b"token"] == b"x"
    assert krpc.parse(krpc.error(b"t1", 204, "method unknown")) == krpc.Error(
        b"t1", 204, "method unknown"
    )


def test_compact_nodes_round_trip_in_both_families():
    nodes = [NodeInfo(ID, ("10.0.0.1", 6881)), NodeInfo(OTHER, ("2001:db8::1", 51413))]
    v4, v6 = krpc.pack_nodes(nodes)
    assert len(v4) == 26 and len(v6) == 38
    assert (
        krpc.unpack_nodes(v4, ipv6=False, limit=8) + krpc.unpack_nodes(v6, ipv6=True, limit=8)
        == nodes
    )
    assert krpc.unpack_nodes(v4 + b"x", ipv6=False, limit=8) == []  # a torn list: nothing
    assert krpc.unpack_nodes(v4 * 10, ipv6=False, limit=3) == nodes[:1] * 3


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"le",
        b"d1:t2:aa1:y1:qe",  # a query without method or arguments
        b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe",  # an id that is not 20 bytes
        b"d1:ade1:q4:ping1:t0:1:y1:qe",  # an empty transaction id
        b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:xe",  # no such message type
        b"d1:eli201ee1:t2:aa1:y1:ee" + b" " * 3000,  # longer than any KRPC message
    ],
)
def test_malformed_messages_are_refused(datagram):
    with pytest.raises(krpc.KrpcError):
        krpc.parse(datagram)


def test_fields_are_checked():
    with pytest.raises(krpc.KrpcError):
        krpc.port({b"port": 70000}, b"port")
    with pytest.raises(krpc.KrpcError):
        krpc.port({b"port": b"1"}, b"port")
    assert krpc.port({b"port": 6881}, b"port") == 6881
    assert krpc.unpack_peers([b"\x0a\x00\x00\x01\x1a\xe1", b"junk", 5], limit=10) == [
        ("10.0.0.1", 6881)
    ]


bencoded = st.recursive(
    st.integers(-(2**70), 2**70) | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from([b"t", b"y", b"q", b"a", b"r", b"e", b"id", b"ip", b"ro"]),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@given(bencoded)
def test_any_bencoded_value_parses_or_is_refused(value):
    with contextlib.suppress(krpc.KrpcError):
        krpc.parse(encode(value))


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_are_refused(data):
    with contextlib.suppress(krpc.KrpcError):
        krpc.parse(data)
