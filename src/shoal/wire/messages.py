"""Peer wire messages (BEP 3, BEP 6 fast extension, BEP 10 extension protocol) as plain values."""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOL = b"BitTorrent protocol"
HANDSHAKE_LENGTH = 1 + len(PROTOCOL) + 8 + 20 + 20

# Reserved-bit masks, as (byte index, bit) in the 8 reserved handshake bytes.
EXTENSION_BIT = (5, 0x10)  # BEP 10
FAST_BIT = (7, 0x04)  # BEP 6
DHT_BIT = (7, 0x01)  # BEP 5

CHOKE = 0
UNCHOKE = 1
INTERESTED = 2
NOT_INTERESTED = 3
HAVE = 4
BITFIELD = 5
REQUEST = 6
PIECE = 7
CANCEL = 8
PORT = 9
SUGGEST_PIECE = 13
HAVE_ALL = 14
HAVE_NONE = 15
REJECT_REQUEST = 16
ALLOWED_FAST = 17
EXTENDED = 20

BLOCK_SIZE = 16 * 1024
# Clients may ask for blocks up to 128 KiB; larger requests are a protocol violation here.
MAX_REQUEST_LENGTH = 128 * 1024


class ProtocolError(Exception):
    """A peer broke the wire protocol; the connection must be dropped."""


@dataclass(frozen=True, slots=True)
class Handshake:
    """The peer's handshake: which torrent, who it is, and what it supports."""

    info_hash: bytes
    peer_id: bytes
    reserved: bytes

    def supports(self, bit: tuple[int, int]) -> bool:
        """Whether the peer set one reserved bit."""
        index, mask = bit
        return bool(self.reserved[index] & mask)


@dataclass(frozen=True, slots=True)
class _PieceRef:
    """A message that names one piece."""

    index: int


@dataclass(frozen=True, slots=True)
class _BlockRef:
    """A message that names one block: piece, offset, length."""

    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A zero-length message."""


@dataclass(frozen=True, slots=True)
class Choke:
    """The peer will not serve our requests."""


@dataclass(frozen=True, slots=True)
class Unchoke:
    """The peer will serve our requests."""


@dataclass(frozen=True, slots=True)
class Interested:
    """The peer wants pieces we have."""


@dataclass(frozen=True, slots=True)
class NotInterested:
    """The peer wants nothing we have."""


@dataclass(frozen=True, slots=True)
class Have(_PieceRef):
    """The peer now has one piece."""


@dataclass(frozen=True, slots=True)
class Bitfield:
    """The pieces the peer has, as a big-endian bit string."""

    bits: bytes


@dataclass(frozen=True, slots=True)
class Request(_BlockRef):
    """The peer asks for a block."""


@dataclass(frozen=True, slots=True)
class Piece:
    """A block of data from the peer (a view into the bytes received)."""

    index: int
    begin: int
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class Cancel(_BlockRef):
    """The peer withdraws a request."""


@dataclass(frozen=True, slots=True)
class Port:
    """The peer's DHT port."""

    port: int


@dataclass(frozen=True, slots=True)
class SuggestPiece(_PieceRef):
    """The peer suggests a piece it can serve cheaply."""


@dataclass(frozen=True, slots=True)
class HaveAll:
    """The peer is a seed (fast extension)."""


@dataclass(frozen=True, slots=True)
class HaveNone:
    """The peer has nothing (fast extension)."""


@dataclass(frozen=True, slots=True)
class RejectRequest(_BlockRef):
    """The peer will not serve one of our requests (fast extension)."""


@dataclass(frozen=True, slots=True)
class AllowedFast(_PieceRef):
    """The peer will serve this piece even while choking us (fast extension)."""


@dataclass(frozen=True, slots=True)
class Extended:
    """An extension-protocol message; id 0 is the extension handshake (BEP 10)."""

    extension_id: int
    payload: bytes


Message = (
    KeepAlive
    | Choke
    | Unchoke
    | Interested
    | NotInterested
    | Have
    | Bitfield
    | Request
    | Piece
    | Cancel
    | Port
    | SuggestPiece
    | HaveAll
    | HaveNone
    | RejectRequest
    | AllowedFast
    | Extended
)
Event = Handshake | Message

KEEP_ALIVE = KeepAlive()
_NO_PAYLOAD: dict[int, Message] = {
    CHOKE: Choke(),
    UNCHOKE: Unchoke(),
    INTERESTED: Interested(),
    NOT_INTERESTED: NotInterested(),
    HAVE_ALL: HaveAll(),
    HAVE_NONE: HaveNone(),
}
_ONE_INDEX: dict[int, type[Have | SuggestPiece | AllowedFast]] = {
    HAVE: Have,
    SUGGEST_PIECE: SuggestPiece,
    ALLOWED_FAST: AllowedFast,
}
_BLOCK_REF: dict[int, type[Request | Cancel | RejectRequest]] = {
    REQUEST: Request,
    CANCEL: Cancel,
    REJECT_REQUEST: RejectRequest,
}
FAST_ONLY = frozenset({SUGGEST_PIECE, HAVE_ALL, HAVE_NONE, REJECT_REQUEST, ALLOWED_FAST})


def parse_message(message_id: int, payload: bytes) -> Message:
    """Turn one framed message into a value, checking its exact length."""
    if message_id in _NO_PAYLOAD:
        if payload:
            raise ProtocolError(f"message {message_id} must have no payload")
        return _NO_PAYLOAD[message_id]
    if message_id in _ONE_INDEX:
        if len(payload) != 4:
            raise ProtocolError(f"message {message_id} must carry exactly one index")
        return _ONE_INDEX[message_id](int.from_bytes(payload, "big"))
    if message_id in _BLOCK_REF:
        if len(payload) != 12:
            raise ProtocolError(f"message {message_id} must be 12 bytes long")
        index = int.from_bytes(payload[0:4], "big")
        begin = int.from_bytes(payload[4:8], "big")
        length = int.from_bytes(payload[8:12], "big")
        if length == 0 or length > MAX_REQUEST_LENGTH:
            raise ProtocolError(f"block length {length} is out of bounds")
        return _BLOCK_REF[message_id](index, begin, length)
    if message_id == PIECE:
        if len(payload) < 8:
            raise ProtocolError("piece message is too short")
        data = payload[8:]
        if len(data) > MAX_REQUEST_LENGTH:
            raise ProtocolError(f"block of {len(data)} bytes is too large")
        return Piece(int.from_bytes(payload[0:4], "big"), int.from_bytes(payload[4:8], "big"), data)
    if message_id == BITFIELD:
        return Bitfield(payload)
    if message_id == PORT:
        if len(payload) != 2:
            raise ProtocolError("port message must be 2 bytes long")
        return Port(int.from_bytes(payload, "big"))
    if message_id == EXTENDED:
        if not payload:
            raise ProtocolError("extended message has no extension id")
        return Extended(payload[0], payload[1:])
    raise ProtocolError(f"unknown message id {message_id}")


def frame(message_id: int, payload: bytes = b"") -> bytes:
    """Length-prefix one message."""
    return (len(payload) + 1).to_bytes(4, "big") + bytes((message_id,)) + payload


def frame_index(message_id: int, index: int) -> bytes:
    """Frame a message that carries one piece index."""
    return b"\x00\x00\x00\x05" + bytes((message_id,)) + index.to_bytes(4, "big")


# Bytes on the wire of a request, cancel or reject, and of a piece message's header.
BLOCK_REF_MESSAGE_LENGTH = 17
PIECE_HEADER_LENGTH = 13


def frame_block_ref(message_id: int, index: int, begin: int, length: int) -> bytes:
    """Frame a request, cancel or reject."""
    return (
        b"\x00\x00\x00\x0d"
        + bytes((message_id,))
        + index.to_bytes(4, "big")
        + begin.to_bytes(4, "big")
        + length.to_bytes(4, "big")
    )


def piece_header(index: int, begin: int, length: int) -> bytes:
    """The 13 bytes that precede a block's data in a piece message."""
    return (
        (length + 9).to_bytes(4, "big")
        + bytes((PIECE,))
        + index.to_bytes(4, "big")
        + begin.to_bytes(4, "big")
    )


def handshake_bytes(info_hash: bytes, peer_id: bytes, *, dht: bool = False) -> bytes:
    """Our handshake, announcing the extension protocol and the fast extension."""
    reserved = bytearray(8)
    for index, mask in (EXTENSION_BIT, FAST_BIT) + ((DHT_BIT,) if dht else ()):
        reserved[index] |= mask
    return bytes((len(PROTOCOL),)) + PROTOCOL + bytes(reserved) + info_hash + peer_id
