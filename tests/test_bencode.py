"""Bencode: canonical round trips, strict rejection, and no stray exceptions on any input."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.bencode import BencodeError, decode, decode_prefix, decode_torrent, encode

values = st.recursive(
    st.integers() | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.binary(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)

# Bytes drawn from bencode's own alphabet reach far deeper into the parser than uniform noise.
bencode_ish = st.lists(
    st.sampled_from([b"i", b"e", b"l", b"d", b"0", b"1", b"2", b"9", b":", b"-", b"x", b"1:a"]),
    max_size=60,
).map(b"".join)


def mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """Strategy: data with a few bytes replaced, inserted or deleted."""
    edit = st.tuples(
        st.sampled_from(["replace", "insert", "delete"]),
        st.integers(0, max(len(data) - 1, 0)),
        st.integers(0, 255),
    )

    def apply(edits: list[tuple[str, int, int]]) -> bytes:
        out = bytearray(data)
        for kind, index, byte in edits:
            index = min(index, len(out))
            if kind == "insert":
                out.insert(index, byte)
            elif out and index < len(out):
                if kind == "replace":
                    out[index] = byte
                else:
                    del out[index]
        return bytes(out)

    return st.lists(edit, min_size=1, max_size=4).map(apply)


@given(values)
def test_round_trip(value):
    encoded = encode(value)
    assert decode(encoded) == value
    assert encode(decode(encoded)) == encoded


@given(values, st.binary(max_size=20))
def test_decode_prefix_returns_value_and_end(value, trailing):
    encoded = encode(value)
    assert decode_prefix(encoded + trailing) == (value, len(encoded))


@given(st.binary(max_size=200) | bencode_ish)
def test_any_input_raises_only_bencode_error(data):
    for parse in (decode, decode_prefix, decode_torrent):
        with contextlib.suppress(BencodeError):
            parse(data)


@given(st.data())
def test_mutated_input_raises_only_bencode_error(data):
    encoded = encode(data.draw(values))
    mutated = data.draw(mutations(encoded))
    with contextlib.suppress(BencodeError):
        assert encode(decode(mutated)) == mutated


@given(
    st.dictionaries(st.binary(max_size=8).filter(lambda k: k != b"info"), values, max_size=4),
    st.dictionaries(st.binary(max_size=8), values, max_size=6),
)
def test_decode_torrent_returns_info_bytes_as_received(outer, info):
    info_bytes = encode(info)
    # Assemble the file by hand so the info bytes are exactly these, not a re-encoding.
    items = sorted([*((k, encode(v)) for k, v in outer.items()), (b"info", info_bytes)])
    data = b"d" + b"".join(encode(key) + value for key, value in items) + b"e"
    top, span = decode_torrent(data)
    assert span == info_bytes
    assert top[b"info"] == info


def test_decode_torrent_span_is_a_slice_of_the_input():
    data = b"d8:announce3:url4:infod6:lengthi5e4:name1:xe7:zzzzzzzi1ee"
    top, span = decode_torrent(data)
    assert span == b"d6:lengthi5e4:name1:xe"
    assert top[b"announce"] == b"url"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"le", "not a dictionary"),
        (b"d4:infoi1ee", "no info dictionary"),
        (b"d3:foo3:bare", "no info dictionary"),
        (b"d4:infode4:infodee", "duplicate dictionary key"),
        (b"d4:infode1:a0:e", "unsorted dictionary key"),
        (b"d4:infodeex", "trailing bytes"),
        (b"d4:infode", "ends early"),
        (b"di1e4:infodee", "not a string"),
    ],
)
def test_decode_torrent_rejects(data, problem):
    with pytest.raises(BencodeError, match=problem):
        decode_torrent(data)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"i03e", "leading zero in an integer"),
        (b"03:abc", "leading zero in a string length"),
        (b"i-0e", "negative zero"),
        (b"i-03e", "leading zero"),
        (b"ie", "malformed integer"),
        (b"i-e", "malformed integer"),
        (b"i1.5e", "malformed integer"),
        (b"i 1e", "malformed integer"),
        (b"i1_0e", "malformed integer"),
        (b"i12", "ends inside the integer"),
        (b"d1:b0:1:a0:e", "unsorted dictionary key"),
        (b"d1:a0:1:a0:e", "duplicate dictionary key"),
        (b"di1e0:e", "not a string"),
        (b"dl0:e0:e", "not a string"),
        (b"d1:ae", "key without a value"),
        (b"i1ei2e", "trailing bytes"),
        (b"0:0:", "trailing bytes"),
        (b"5:abc", "runs past the end"),
        (b"12", "ends inside the string length"),
        (b"1a:x", "malformed string length"),
        (b"+1:x", "unexpected byte"),
        (b"99999999999999999999:x", "malformed string length"),
        (b"l", "ends early"),
        (b"", "ends early"),
        (b"e", "unexpected byte"),
        (b"i" + b"9" * 5000 + b"e", "too long"),
    ],
)
def test_rejects_non_canonical_or_broken_input(data, problem):
    with pytest.raises(BencodeError, match=problem):
        decode(data)


def test_error_names_the_offset():
    with pytest.raises(BencodeError, match=r"at byte 12$"):
        decode(b"l5:abcde2:xyi03ee")


@pytest.mark.timeout(5)
@pytest.mark.parametrize("opener", [b"l", b"d1:a"])
def test_deep_nesting_is_rejected_without_recursion(opener):
    for data in (opener * 100_000, opener * 100_000 + b"e" * 100_000):
        with pytest.raises(BencodeError, match="deeper than 64"):
            decode(data)
    with pytest.raises(BencodeError, match="deeper than"):
        decode_torrent(b"d4:info" + opener * 100_000)


def test_max_depth_is_inclusive():
    assert decode(b"l" * 3 + b"e" * 3, max_depth=3) == [[[]]]
    with pytest.raises(BencodeError):
        decode(b"l" * 4 + b"e" * 4, max_depth=3)


def test_decode_accepts_buffers():
    assert decode(bytearray(b"l1:ae")) == [b"a"]
    assert decode(memoryview(b"xd1:ai1ee")[1:]) == {b"a": 1}


def test_decode_prefix_leaves_raw_payload():
    message = encode({b"msg_type": 1, b"piece": 0}) + b"\x00raw metadata"
    header, end = decode_prefix(message)
    assert header == {b"msg_type": 1, b"piece": 0}
    assert message[end:] == b"\x00raw metadata"


def test_encode_accepts_python_conveniences():
    assert encode({"b": "é", b"a": (1, bytearray(b"x"), memoryview(b"y"))}) == (
        b"d1:ali1e1:x1:ye1:b2:\xc3\xa9e"
    )


def test_encode_sorts_keys_by_bytes_not_by_text():
    # "é" sorts after "z" as UTF-8 bytes (0xc3 > 0x7a), whatever the str order.
    assert encode({"é": 1, "z": 2, "Z": 3}) == b"d1:Zi3e1:zi2e2:\xc3\xa9i1ee"


@pytest.mark.parametrize("value", [True, 1.5, None, {1: 2}, {b"a": object()}, {1, 2}])
def test_encode_rejects_other_types(value):
    with pytest.raises(TypeError):
        encode(value)


def test_encode_rejects_a_key_given_twice():
    with pytest.raises(ValueError, match="twice"):
        encode({"a": 1, b"a": 2})
