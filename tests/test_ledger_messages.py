"""The ledger's wire: every message round-trips whole, split anywhere or byte by byte; any
bytes parse or raise ProtocolError only; a link's buffer stays bounded whatever comes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.ledger import messages as lm
from shoal.ledger.messages import (
    Addr,
    BlockMessage,
    Framer,
    GetAddr,
    GetData,
    GetHeaders,
    Headers,
    Inv,
    InvItem,
    InvType,
    NetAddress,
    NotFound,
    Ping,
    Pong,
    ProtocolError,
    TxMessage,
    Verack,
    Version,
    encode,
)
from shoal.ledger.params import LOCAL, MAIN
from shoal.ledger.primitives import Block, BlockHeader, OutPoint, Transaction, TxOut, sha256d

MAGIC = LOCAL.magic
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
hashes = st.binary(min_size=32, max_size=32)
header = st.builds(BlockHeader, u32, hashes, hashes, u32, u32, u32)


@st.composite
def transactions(draw: st.DrawFn) -> Transaction:
    inputs = draw(st.lists(st.builds(OutPoint, hashes, u32), min_size=1, max_size=3))
    outputs = draw(st.lists(st.builds(TxOut, u64, st.binary(max_size=40)), max_size=3))
    witnesses = [draw(st.binary(max_size=70)) for _ in inputs]
    return Transaction(draw(u32), tuple(inputs), tuple(outputs), draw(u32), tuple(witnesses))


blocks = st.builds(Block, header, st.lists(transactions(), min_size=1, max_size=3).map(tuple))
net_address = st.builds(NetAddress, u32, st.binary(min_size=16, max_size=16), st.integers(0, 65535))
items = st.lists(st.builds(InvItem, st.sampled_from(InvType), hashes), max_size=20).map(tuple)
messages = st.one_of(
    st.builds(
        Version,
        u32,
        u64,
        u64,
        u64,
        st.integers(0, 65535),
        u32,
        st.text(max_size=16),
    ),
    st.just(Verack()),
    st.just(GetAddr()),
    st.builds(Ping, u64),
    st.builds(Pong, u64),
    st.builds(Addr, st.lists(net_address, max_size=20).map(tuple)),
    st.builds(Inv, items),
    st.builds(GetData, items),
    st.builds(NotFound, items),
    st.builds(GetHeaders, st.lists(hashes, max_size=12).map(tuple), hashes),
    st.builds(Headers, st.lists(header, max_size=5).map(tuple)),
    st.builds(BlockMessage, blocks),
    st.builds(TxMessage, transactions()),
)


def frame(command: bytes, payload: bytes, magic: bytes = MAGIC) -> bytes:
    """A message header and payload as a peer might send them, checksum right."""
    return lm.HEADER.pack(magic, command, len(payload), sha256d(payload)[:4]) + payload


@given(blocks)
def test_a_raw_payload_framed_is_the_message_encoded(block):
    assert lm.frame(b"block", block.serialized, MAGIC) == encode(BlockMessage(block), MAGIC)
    assert lm.frame(b"ping", bytes(8), MAGIC) == frame(b"ping", bytes(8))


@given(st.lists(messages, max_size=4), st.data())
def test_messages_round_trip_at_any_split(sent, data):
    stream = b"".join(encode(message, MAGIC) for message in sent)
    cut = data.draw(st.integers(0, len(stream)))
    framer = Framer(MAGIC)
    assert framer.feed(stream[:cut]) + framer.feed(stream[cut:]) == sent
    assert framer.buffered == 0


@given(st.lists(messages, min_size=1, max_size=3))
def test_a_framer_fed_byte_by_byte_reads_each_message_once_it_is_whole(sent):
    framer = Framer(MAGIC)
    read = []
    for message in sent:
        data = encode(message, MAGIC)
        for offset in range(len(data) - 1):
            assert framer.feed(data[offset : offset + 1]) == []
        read += framer.feed(data[-1:])
    assert read == sent


@given(st.sampled_from(lm.MESSAGE_TYPES), st.binary(max_size=200))
def test_any_payload_of_any_command_decodes_or_raises_protocol_error(kind, payload):
    try:
        message = lm.decode(kind.command, payload)
    except ProtocolError:
        return
    # What decoded encodes back to the very bytes it came from: one form per message.
    assert message is not None
    assert message.encode() == payload


@given(st.binary(max_size=400))
def test_any_bytes_after_the_magic_read_or_raise_protocol_error(noise):
    try:
        read = Framer(MAGIC).feed(MAGIC + noise)
    except ProtocolError:
        return
    again = b"".join(encode(message, MAGIC) for message in read)
    assert (MAGIC + noise).startswith(again)


@given(st.binary(min_size=1, max_size=40))
def test_bytes_that_do_not_open_with_the_magic_are_refused(noise):
    if noise[:4] == MAGIC[: len(noise[:4])]:
        return
    with pytest.raises(ProtocolError):
        Framer(MAGIC).feed(noise)


def test_a_stream_of_another_chain_or_protocol_is_refused_at_once():
    with pytest.raises(ProtocolError):
        Framer(MAGIC).feed(MAIN.magic[:2])
    with pytest.raises(ProtocolError):
        Framer(MAGIC).feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ProtocolError):
        Framer(MAGIC).feed(encode(Ping(1), MAIN.magic))


def test_a_wrong_checksum_is_refused():
    data = bytearray(encode(Ping(7), MAGIC))
    data[20] ^= 1
    with pytest.raises(ProtocolError, match="checksum"):
        Framer(MAGIC).feed(bytes(data))


def test_a_length_over_the_command_limit_is_refused_from_the_header_alone():
    header = lm.HEADER.pack(MAGIC, b"ping", 9, bytes(4))
    with pytest.raises(ProtocolError):
        Framer(MAGIC).feed(header)
    header = lm.HEADER.pack(MAGIC, b"block", lm.MAX_PAYLOAD + 1, bytes(4))
    with pytest.raises(ProtocolError):
        Framer(MAGIC).feed(header)


@given(
    st.integers(1000, 2_000_000),
    st.sampled_from([b"block", b"tx", b"cmpctblock"]),
    st.integers(-999, 2000),
)
def test_a_block_or_tx_longer_than_the_chains_block_size_is_refused_from_its_header(
    max_block_size, command, over
):
    """A block may hold the block size and a little, a transaction the block size, a command
    we do not know (a later version's) no more than a block; the header alone decides."""
    limit = max_block_size + (0 if command == b"tx" else lm.BLOCK_SLACK)
    length = limit + over  # at least 1: a whole payload never arrives
    framer = Framer(MAGIC, max_block_size)
    header = lm.HEADER.pack(MAGIC, command, length, bytes(4))
    if length > limit:
        with pytest.raises(ProtocolError):
            framer.feed(header)
    else:
        assert framer.feed(header) == []
        assert framer.buffered == lm.HEADER.size <= framer.max_buffered


def test_a_node_on_the_local_chain_reads_no_block_of_4_mb():
    framer = Framer(MAGIC, LOCAL.max_block_size)
    assert framer.max_buffered < 2 * LOCAL.max_block_size
    with pytest.raises(ProtocolError, match="block"):
        framer.feed(lm.HEADER.pack(MAGIC, b"block", 4_000_000, bytes(4)))


def test_an_unknown_command_is_skipped_and_a_malformed_one_refused():
    framer = Framer(MAGIC)
    assert framer.feed(frame(b"sendcmpct", b"\x00" * 9) + encode(Ping(3), MAGIC)) == [Ping(3)]
    with pytest.raises(ProtocolError):
        Framer(MAGIC).feed(frame(b"pi\x00ng", b""))
    with pytest.raises(ProtocolError):
        Framer(MAGIC).feed(frame(b"p\xffng", b""))


@pytest.mark.parametrize(
    "command, payload",
    [
        (b"ping", bytes(7)),  # truncated
        (b"verack", b"x"),  # bytes after the last field
        (b"inv", b"\x01" + (3).to_bytes(4, "little") + bytes(32)),  # no such type
        (b"inv", b"\xfd\x01\x00" + bytes(36)),  # a count not in its shortest form
        (b"headers", b"\xfd\xd1\x07"),  # 2001 headers
        (b"getheaders", b"\x66" + bytes(32 * 103)),  # 102 locator hashes
        (b"version", bytes(34) + b"\x02\xff\xfe"),  # a user agent not UTF-8
        (b"version", bytes(34) + b"\x41" + b"a" * 65),  # a user agent too long
        (b"block", bytes(80) + b"\x00"),  # no transactions
    ],
)
def test_malformed_payloads_are_refused(command, payload):
    with pytest.raises(ProtocolError):
        Framer(MAGIC).feed(frame(command, payload))


def test_encode_refuses_what_no_peer_would_read():
    with pytest.raises(ValueError):
        encode(Inv((InvItem(InvType.TX, bytes(32)),) * (lm.MAX_INVENTORY + 1)), MAGIC)
    with pytest.raises(ValueError):
        encode(Version(1, 0, 0, 0, 0, 0, "x" * 65), MAGIC)


def test_a_peer_that_sends_much_never_makes_the_buffer_grow_past_one_message():
    framer = Framer(MAGIC)
    headers = encode(Headers((BlockHeader(1, bytes(32), bytes(32), 0, 0, 0),) * 2000), MAGIC)
    for _ in range(20):
        [message] = framer.feed(headers)
        assert isinstance(message, Headers)
    framer.feed(headers[:-1])
    assert framer.buffered == len(headers) - 1 <= framer.max_buffered


@pytest.mark.parametrize("address", [("127.3.0.1", 8333), ("2001:db8::7", 1), ("::1", 65535)])
def test_net_addresses_carry_ipv4_mapped_and_ipv6(address):
    entry = NetAddress.of(address, 5)
    assert len(entry.ip) == 16
    assert entry.address == address
    [back] = Framer(MAGIC).feed(encode(Addr((entry,)), MAGIC))
    assert back == Addr((entry,))
