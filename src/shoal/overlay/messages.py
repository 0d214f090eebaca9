"""The overlay's wire: a greeting, then messages each framed by a 23-byte header, in the
manner of Gnutella 0.6's descriptors.

A link opens with GREETING from each side, then HELLO (node id, listening port, role,
capabilities). Every message after that is

    id (16 bytes) | type (1) | ttl (1) | hops (1) | payload length (4, big-endian) | payload

Queries and their hits share the query's id, so a hit travels back along the path the query
came by. Everything read is bounded: a payload longer than its type allows, a field that runs
past its payload, or a name that is not UTF-8 is an OverlayError, and the link is dropped.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from .. import addresses
from ..addresses import Address

GREETING = b"SHOAL-OVERLAY/1\r\n"
HEADER = struct.Struct(">16sBBBI")
ID_LENGTH = 16
NODE_ID_LENGTH = 20
INFO_HASH_LENGTH = 20
# Words in a query, and a name in a hit, as UTF-8.
MAX_WORDS = 200
MAX_NAME = 200
MAX_HITS = 16  # results in one query hit
MAX_PONG_ADDRESSES = 16
# A query routing table: one bit per keyword hash slot (Gnutella's QRP, simplified).
QRP_BITS = 1 << 16
QRP_BYTES = QRP_BITS // 8
MAX_PAYLOAD = QRP_BYTES + 16  # the largest message is a whole routing table
# Bytes a link may hold unparsed: one largest message and its header.
MAX_BUFFERED = HEADER.size + MAX_PAYLOAD


class OverlayError(ValueError):
    """Bytes that are not a well-formed overlay message."""


class Kind(enum.IntEnum):
    """Message types."""

    HELLO = 0x01
    PING = 0x02
    PONG = 0x03
    BYE = 0x04
    QRP_TABLE = 0x30
    QUERY = 0x80
    QUERY_HIT = 0x81
    QUERY_STATUS = 0x82


class Role(enum.IntEnum):
    """A node's place in the overlay (Gnutella 0.6)."""

    LEAF = 0
    ULTRAPEER = 1


@dataclass(frozen=True, slots=True)
class Hello:
    """Who is at the other end of a link."""

    node_id: bytes
    port: int
    role: Role
    capabilities: int = 0


@dataclass(frozen=True, slots=True)
class Ping:
    """Asks for addresses of overlay nodes (and keeps a link alive)."""


@dataclass(frozen=True, slots=True)
class Pong:
    """Addresses of overlay nodes, ultrapeers first."""

    addresses: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class Bye:
    """The link is closing, and why."""

    reason: str


@dataclass(frozen=True, slots=True)
class QrpTable:
    """A leaf's query routing table: the keyword slots its listings fill."""

    bits: bytes


@dataclass(frozen=True, slots=True)
class Query:
    """A search: the words every result's name must hold (the last as a prefix)."""

    words: str
    walk: bool = False  # a random walker: forwarded to one neighbour, not flooded


@dataclass(frozen=True, slots=True)
class Result:
    """One listing that matches a query."""

    info_hash: bytes
    size: int
    name: str


@dataclass(frozen=True, slots=True)
class QueryHit:
    """Results from one holder, who may be dialled at its address."""

    holder: Address
    node_id: bytes
    results: tuple[Result, ...]


@dataclass(frozen=True, slots=True)
class QueryStatus:
    """How many results a query's origin has so far: walkers ask, and stop at enough."""

    results: int
    done: bool


Payload = Hello | Ping | Pong | Bye | QrpTable | Query | QueryHit | QueryStatus


@dataclass(frozen=True, slots=True)
class Message:
    """A framed message."""

    id: bytes
    ttl: int
    hops: int
    payload: Payload


def encode(message: Message) -> bytes:
    """A message as it goes on the wire."""
    kind, body = _encode_payload(message.payload)
    return HEADER.pack(message.id, kind, message.ttl, message.hops, len(body)) + body


def _encode_payload(payload: Payload) -> tuple[Kind, bytes]:
    if isinstance(payload, Hello):
        body = payload.node_id + struct.pack(
            ">HBH", payload.port, payload.role, payload.capabilities
        )
        return Kind.HELLO, body
    if isinstance(payload, Ping):
        return Kind.PING, b""
    if isinstance(payload, Pong):
        return Kind.PONG, b"".join(_address(a) for a in payload.addresses[:MAX_PONG_ADDRESSES])
    if isinstance(payload, Bye):
        return Kind.BYE, _clip(payload.reason, MAX_NAME)
    if isinstance(payload, QrpTable):
        return Kind.QRP_TABLE, payload.bits
    if isinstance(payload, Query):
        return Kind.QUERY, bytes((int(payload.walk),)) + _clip(payload.words, MAX_WORDS)
    if isinstance(payload, QueryHit):
        parts = [_address(payload.holder), payload.node_id, bytes((len(payload.results),))]
        for result in payload.results[:MAX_HITS]:
            name = _clip(result.name, MAX_NAME)
            parts += [result.info_hash, struct.pack(">QB", result.size, len(name)), name]
        return Kind.QUERY_HIT, b"".join(parts)
    return Kind.QUERY_STATUS, struct.pack(">HB", min(payload.results, 0xFFFF), payload.done)


def _clip(text: str, limit: int) -> bytes:
    """text as UTF-8, cut to at most limit bytes at a character's end (a cut inside one
    would make the message malformed for every receiver)."""
    data = text.encode()
    if len(data) <= limit:
        return data
    return data[:limit].decode(errors="ignore").encode()


def _address(address: Address) -> bytes:
    """An address as a family byte (4 or 6) and its compact form."""
    entry = addresses.pack(address)
    return bytes((4 if len(entry) == addresses.IPV4_ENTRY else 6,)) + entry


class Reader:
    """Reads a payload field by field; running past its end is an OverlayError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, count: int) -> bytes:
        """The next count bytes."""
        end = self.pos + count
        if end > len(self.data):
            raise OverlayError("a field runs past the end of its message")
        field = self.data[self.pos : end]
        self.pos = end
        return field

    def byte(self) -> int:
        """The next byte, as a number."""
        return self.take(1)[0]

    def address(self) -> Address:
        """A family byte and a compact address."""
        family = self.byte()
        if family not in (4, 6):
            raise OverlayError(f"an address of family {family}")
        entry = self.take(addresses.IPV4_ENTRY if family == 4 else addresses.IPV6_ENTRY)
        found = addresses.unpack(entry, ipv6=family == 6)
        if not found:
            raise OverlayError("an address no one can be reached at")
        return found[0]

    def text(self, count: int) -> str:
        """count bytes of UTF-8."""
        try:
            return self.take(count).decode()
        except UnicodeDecodeError:
            raise OverlayError("a name is not UTF-8") from None

    def end(self) -> None:
        """Nothing may follow the last field."""
        if self.pos != len(self.data):
            raise OverlayError("a message has bytes after its last field")


def parse_payload(kind: int, body: bytes) -> Payload:
    """The payload of a message of this type; OverlayError if it is malformed."""
    reader = Reader(body)
    payload: Payload
    if kind == Kind.HELLO:
        node_id = reader.take(NODE_ID_LENGTH)
        port, role, capabilities = struct.unpack(">HBH", reader.take(5))
        if role not in (Role.LEAF, Role.ULTRAPEER):
            raise OverlayError(f"a role of {role}")
        if port == 0:
            raise OverlayError("a hello with port 0: no one could link to it")
        payload = Hello(node_id, port, Role(role), capabilities)
    elif kind == Kind.PING:
        payload = Ping()
    elif kind == Kind.PONG:
        found: list[Address] = []
        while reader.pos < len(body):
            if len(found) == MAX_PONG_ADDRESSES:
                raise OverlayError("a pong with too many addresses")
            found.append(reader.address())
        payload = Pong(tuple(found))
    elif kind == Kind.BYE:
        if len(body) > MAX_NAME:
            raise OverlayError("a reason too long")
        payload = Bye(reader.text(len(body)))
    elif kind == Kind.QRP_TABLE:
        payload = QrpTable(reader.take(QRP_BYTES))
    elif kind == Kind.QUERY:
        walk = reader.byte()
        if walk > 1 or not 0 < len(body) - 1 <= MAX_WORDS:
            raise OverlayError("a query without words, or with too many")
        payload = Query(reader.text(len(body) - 1), bool(walk))
    elif kind == Kind.QUERY_HIT:
        holder, node_id, count = reader.address(), reader.take(NODE_ID_LENGTH), reader.byte()
        if not 0 < count <= MAX_HITS:
            raise OverlayError(f"a hit with {count} results")
        results = []
        for _ in range(count):
            info_hash = reader.take(INFO_HASH_LENGTH)
            size, name_length = struct.unpack(">QB", reader.take(9))
            if not 0 < name_length <= MAX_NAME or size >= 2**63:
                raise OverlayError("a result with a malformed name or size")
            results.append(Result(info_hash, size, reader.text(name_length)))
        payload = QueryHit(holder, node_id, tuple(results))
    elif kind == Kind.QUERY_STATUS:
        results, done = struct.unpack(">HB", reader.take(3))
        if done > 1:
            raise OverlayError("a status neither done nor not")
        payload = QueryStatus(results, bool(done))
    else:
        raise OverlayError(f"a message of unknown type {kind}")
    reader.end()
    return payload


class Framer:
    """Cuts a link's byte stream into messages (after the greeting); bounded, whatever the
    other side sends."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._greeted = False

    def feed(self, data: bytes) -> list[Message]:
        """The whole messages data completes; OverlayError if the stream is malformed."""
        self._buffer += data
        messages: list[Message] = []
        if not self._greeted:
            if len(self._buffer) < len(GREETING):
                if bytes(self._buffer) != GREETING[: len(self._buffer)]:
                    raise OverlayError("the link did not open with the overlay's greeting")
                return messages
            if bytes(self._buffer[: len(GREETING)]) != GREETING:
                raise OverlayError("the link did not open with the overlay's greeting")
            del self._buffer[: len(GREETING)]
            self._greeted = True
        while len(self._buffer) >= HEADER.size:
            message_id, kind, ttl, hops, length = HEADER.unpack_from(self._buffer)
            if length > MAX_PAYLOAD:
                raise OverlayError(f"a message of {length} bytes")
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            messages.append(Message(message_id, ttl, hops, parse_payload(kind, body)))
        if len(self._buffer) > MAX_BUFFERED:
            raise OverlayError("more bytes buffered than any message holds")
        return messages
