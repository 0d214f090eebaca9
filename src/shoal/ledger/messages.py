"""The ledger's wire, framed as Bitcoin's: every message is

    magic (4, the chain's) | command (12, NUL-padded ASCII) | length (u32) |
    checksum (first 4 bytes of sha256d(payload)) | payload

and its payload is one of the messages below. Everything read is bounded: a payload longer
than its command allows (a block's and a transaction's as the chain's block size allows) is
refused from its header, before any of it is buffered; a count
over its limit, a field past the end, bytes after the last field, a wrong magic or checksum
are a ProtocolError, and the link is dropped. A well-formed message of a command we do not
know is skipped, as Bitcoin skips them (a later version may add commands).
"""

from __future__ import annotations

import enum
import socket
import struct
from dataclasses import dataclass
from typing import ClassVar

from ..addresses import Address, pack_ip
from .encoding import DecodeError, Reader, compact_size, u32, u64, var_bytes
from .primitives import (
    HASH_SIZE,
    Block,
    BlockHeader,
    Transaction,
    read_block,
    read_header,
    read_transaction,
    sha256d,
)

HEADER = struct.Struct("<4s12sI4s")
PROTOCOL_VERSION = 1
MAX_PAYLOAD = 4_000_000  # the most `encode` writes, and a Framer told no block size takes
# Bytes a block message may hold past the chain's block size: a block just too large is read,
# and refused by the consensus check with its reason.
BLOCK_SLACK = 1000
MAX_USER_AGENT = 64
MAX_ADDRESSES = 1000
MAX_INVENTORY = 50_000
MAX_LOCATOR = 101
MAX_HEADERS = 2000
_PORT = struct.Struct(">H")  # ports in network order, as Bitcoin's addr
_VERSION = struct.Struct("<IQQQHI")
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


class ProtocolError(DecodeError):
    """Bytes from a peer that are not a well-formed ledger message."""


class InvType(enum.IntEnum):
    """What an inventory item names."""

    TX = 1
    BLOCK = 2


@dataclass(frozen=True, slots=True)
class Version:
    """Who opens a link: protocol version, services, clock, a random nonce (a node that hears
    its own nonce has dialled itself), the port it listens on (0: none), its height."""

    command: ClassVar[bytes] = b"version"
    version: int
    services: int
    timestamp: int
    nonce: int
    listen_port: int
    start_height: int
    user_agent: str

    def encode(self) -> bytes:
        """The payload."""
        agent = self.user_agent.encode()
        if len(agent) > MAX_USER_AGENT:
            raise ValueError(f"a user agent of {len(agent)} bytes is over {MAX_USER_AGENT}")
        fixed = _VERSION.pack(
            self.version,
            self.services,
            self.timestamp,
            self.nonce,
            self.listen_port,
            self.start_height,
        )
        return fixed + var_bytes(agent)

    @classmethod
    def decode(cls, reader: Reader) -> Version:
        """One version payload from reader."""
        version, services, timestamp, nonce, port, height = _VERSION.unpack(
            reader.take(_VERSION.size)
        )
        try:
            agent = reader.var_bytes(MAX_USER_AGENT).decode()
        except UnicodeDecodeError:
            raise ProtocolError("a user agent that is not UTF-8") from None
        return cls(version, services, timestamp, nonce, port, height, agent)


@dataclass(frozen=True, slots=True)
class Verack:
    """The version was heard: the link is open."""

    command: ClassVar[bytes] = b"verack"

    def encode(self) -> bytes:
        """The payload (none)."""
        return b""

    @classmethod
    def decode(cls, reader: Reader) -> Verack:
        """An empty payload."""
        return cls()


@dataclass(frozen=True, slots=True)
class GetAddr:
    """Asks for addresses of other nodes."""

    command: ClassVar[bytes] = b"getaddr"

    def encode(self) -> bytes:
        """The payload (none)."""
        return b""

    @classmethod
    def decode(cls, reader: Reader) -> GetAddr:
        """An empty payload."""
        return cls()


@dataclass(frozen=True, slots=True)
class Ping:
    """Is the other end still there? Answered by a pong with the same nonce."""

    command: ClassVar[bytes] = b"ping"
    nonce: int

    def encode(self) -> bytes:
        """The payload."""
        return u64(self.nonce)

    @classmethod
    def decode(cls, reader: Reader) -> Ping:
        """One nonce."""
        return cls(reader.u64())


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to a ping."""

    command: ClassVar[bytes] = b"pong"
    nonce: int

    def encode(self) -> bytes:
        """The payload."""
        return u64(self.nonce)

    @classmethod
    def decode(cls, reader: Reader) -> Pong:
        """One nonce."""
        return cls(reader.u64())


@dataclass(frozen=True, slots=True)
class NetAddress:
    """A node's address as an addr message carries it: when it was last heard of, its IP
    (16 bytes, an IPv4 address mapped into IPv6) and its port."""

    time: int
    ip: bytes
    port: int

    @classmethod
    def of(cls, address: Address, time: int) -> NetAddress:
        """The entry for address (an IP and a port); ValueError if the host is not an IP."""
        packed = pack_ip(address[0])
        return cls(time, _MAPPED_PREFIX + packed if len(packed) == 4 else packed, address[1])

    @property
    def address(self) -> Address:
        """The IP as text and the port."""
        if self.ip.startswith(_MAPPED_PREFIX):
            return socket.inet_ntop(socket.AF_INET, self.ip[12:]), self.port
        return socket.inet_ntop(socket.AF_INET6, self.ip), self.port

    def encode(self) -> bytes:
        """30 bytes less Bitcoin's services: time, IP, port."""
        return u32(self.time) + self.ip + _PORT.pack(self.port)


@dataclass(frozen=True, slots=True)
class Addr:
    """Addresses of nodes that accept links."""

    command: ClassVar[bytes] = b"addr"
    entries: tuple[NetAddress, ...]

    def encode(self) -> bytes:
        """The payload."""
        _check_count(len(self.entries), MAX_ADDRESSES, "addresses")
        return compact_size(len(self.entries)) + b"".join(e.encode() for e in self.entries)

    @classmethod
    def decode(cls, reader: Reader) -> Addr:
        """A count and the entries."""
        count = reader.count(MAX_ADDRESSES)
        entries = []
        for _ in range(count):
            time, ip = reader.u32(), reader.take(16)
            entries.append(NetAddress(time, ip, _PORT.unpack(reader.take(2))[0]))
        return cls(tuple(entries))


@dataclass(frozen=True, slots=True)
class InvItem:
    """A transaction or block, by its hash (a txid, or a header hash)."""

    type: InvType
    hash: bytes


def _encode_items(items: tuple[InvItem, ...]) -> bytes:
    _check_count(len(items), MAX_INVENTORY, "inventory items")
    return compact_size(len(items)) + b"".join(u32(item.type) + item.hash for item in items)


def _decode_items(reader: Reader) -> tuple[InvItem, ...]:
    items = []
    for _ in range(reader.count(MAX_INVENTORY)):
        kind = reader.u32()
        if kind not in (InvType.TX, InvType.BLOCK):
            raise ProtocolError(f"an inventory item of unknown type {kind}")
        items.append(InvItem(InvType(kind), reader.take(HASH_SIZE)))
    return tuple(items)


@dataclass(frozen=True, slots=True)
class Inv:
    """Transactions and blocks the sender has, for the receiver to ask for if new to it."""

    command: ClassVar[bytes] = b"inv"
    items: tuple[InvItem, ...]

    def encode(self) -> bytes:
        """The payload."""
        return _encode_items(self.items)

    @classmethod
    def decode(cls, reader: Reader) -> Inv:
        """A count and the items."""
        return cls(_decode_items(reader))


@dataclass(frozen=True, slots=True)
class GetData:
    """Asks for the transactions and blocks named: each comes as a tx or block message, or
    in one notfound."""

    command: ClassVar[bytes] = b"getdata"
    items: tuple[InvItem, ...]

    def encode(self) -> bytes:
        """The payload."""
        return _encode_items(self.items)

    @classmethod
    def decode(cls, reader: Reader) -> GetData:
        """A count and the items."""
        return cls(_decode_items(reader))


@dataclass(frozen=True, slots=True)
class NotFound:
    """Items of a getdata that the sender does not have."""

    command: ClassVar[bytes] = b"notfound"
    items: tuple[InvItem, ...]

    def encode(self) -> bytes:
        """The payload."""
        return _encode_items(self.items)

    @classmethod
    def decode(cls, reader: Reader) -> NotFound:
        """A count and the items."""
        return cls(_decode_items(reader))


@dataclass(frozen=True, slots=True)
class GetHeaders:
    """Asks for the headers after the first block of locator that the receiver has on its
    active chain, up to stop (ZERO_HASH: as many as fit)."""

    command: ClassVar[bytes] = b"getheaders"
    locator: tuple[bytes, ...]
    stop: bytes

    def encode(self) -> bytes:
        """The payload."""
        _check_count(len(self.locator), MAX_LOCATOR, "locator hashes")
        return compact_size(len(self.locator)) + b"".join(self.locator) + self.stop

    @classmethod
    def decode(cls, reader: Reader) -> GetHeaders:
        """A count, the hashes, the stop hash."""
        count = reader.count(MAX_LOCATOR)
        locator = tuple(reader.take(HASH_SIZE) for _ in range(count))
        return cls(locator, reader.take(HASH_SIZE))


@dataclass(frozen=True, slots=True)
class Headers:
    """Headers in chain order, each parent before its child (80 bytes each; no transaction
    count after each, which Bitcoin sends as an always-zero byte)."""

    command: ClassVar[bytes] = b"headers"
    headers: tuple[BlockHeader, ...]

    def encode(self) -> bytes:
        """The payload."""
        _check_count(len(self.headers), MAX_HEADERS, "headers")
        return compact_size(len(self.headers)) + b"".join(h.serialize() for h in self.headers)

    @classmethod
    def decode(cls, reader: Reader) -> Headers:
        """A count and the headers."""
        return cls(tuple(read_header(reader) for _ in range(reader.count(MAX_HEADERS))))


@dataclass(frozen=True, slots=True)
class BlockMessage:
    """One whole block."""

    command: ClassVar[bytes] = b"block"
    block: Block

    def encode(self) -> bytes:
        """The payload."""
        return self.block.serialized

    @classmethod
    def decode(cls, reader: Reader) -> BlockMessage:
        """One block."""
        return cls(read_block(reader))


@dataclass(frozen=True, slots=True)
class TxMessage:
    """One transaction."""

    command: ClassVar[bytes] = b"tx"
    tx: Transaction

    def encode(self) -> bytes:
        """The payload."""
        return self.tx.serialized

    @classmethod
    def decode(cls, reader: Reader) -> TxMessage:
        """One transaction."""
        return cls(read_transaction(reader))


Message = (
    Version
    | Verack
    | GetAddr
    | Ping
    | Pong
    | Addr
    | Inv
    | GetData
    | NotFound
    | GetHeaders
    | Headers
    | BlockMessage
    | TxMessage
)
MESSAGE_TYPES: tuple[type[Message], ...] = (
    Version,
    Verack,
    GetAddr,
    Ping,
    Pong,
    Addr,
    Inv,
    GetData,
    NotFound,
    GetHeaders,
    Headers,
    BlockMessage,
    TxMessage,
)
_BY_COMMAND: dict[bytes, type[Message]] = {kind.command: kind for kind in MESSAGE_TYPES}
# The most each command's payload may hold: a header naming more is refused at once, so a
# peer cannot make us buffer megabytes for a ping.
_LIMITS: dict[bytes, int] = {
    Version.command: _VERSION.size + 1 + MAX_USER_AGENT,
    Verack.command: 0,
    GetAddr.command: 0,
    Ping.command: 8,
    Pong.command: 8,
    Addr.command: 3 + MAX_ADDRESSES * 22,
    Inv.command: 5 + MAX_INVENTORY * 36,
    GetData.command: 5 + MAX_INVENTORY * 36,
    NotFound.command: 5 + MAX_INVENTORY * 36,
    GetHeaders.command: 1 + (MAX_LOCATOR + 1) * HASH_SIZE,
    Headers.command: 3 + MAX_HEADERS * 80,
}


def _check_count(count: int, limit: int, what: str) -> None:
    if count > limit:
        raise ValueError(f"{count} {what} is over the limit of {limit}")


def encode(message: Message, magic: bytes) -> bytes:
    """message framed for the chain of magic, as it goes on the wire."""
    return frame(message.command, message.encode(), magic)


def frame(command: bytes, payload: bytes, magic: bytes) -> bytes:
    """A payload already encoded (a stored block's bytes) framed as a message of command."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    checksum = sha256d(payload)[:4]
    return HEADER.pack(magic, command, len(payload), checksum) + payload


def decode(command: bytes, payload: bytes) -> Message | None:
    """The message of command (its NUL padding stripped) with payload; None for a command we
    do not know; ProtocolError if the payload is malformed."""
    kind = _BY_COMMAND.get(command)
    if kind is None:
        return None
    reader = Reader(payload)
    try:
        message = kind.decode(reader)
        reader.end()
    except ProtocolError:
        raise
    except DecodeError as error:
        raise ProtocolError(f"a malformed {command.decode()}: {error}") from None
    return message


def _command(field: bytes) -> bytes:
    """The command of a header's 12-byte field: printable ASCII, then NULs only."""
    command = field.rstrip(b"\x00")
    if b"\x00" in command or not all(0x20 < byte < 0x7F for byte in command):
        raise ProtocolError(f"a malformed command {field!r}")
    return command


class Framer:
    """Cuts a link's byte stream into messages; holds at most one largest message, whatever
    the other side sends. A node gives its chain's max_block_size, so a block message is at
    most that and BLOCK_SLACK, a transaction at most that, and a command we do not know (a
    later version's) no longer than a block; the default reads whatever `encode` writes."""

    def __init__(self, magic: bytes, max_block_size: int = MAX_PAYLOAD - BLOCK_SLACK) -> None:
        self.magic = magic
        self._block_limit = min(max_block_size + BLOCK_SLACK, MAX_PAYLOAD)
        self._limits = {
            **_LIMITS,
            BlockMessage.command: self._block_limit,
            TxMessage.command: min(max_block_size, MAX_PAYLOAD),
        }
        self.max_buffered = HEADER.size + max(self._block_limit, *self._limits.values())
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held that are not yet a whole message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        """The messages data completes, in order; ProtocolError if the stream is malformed."""
        buffer = self._buffer
        buffer += data
        messages: list[Message] = []
        start = 0
        while len(buffer) - start >= HEADER.size:
            magic, field, length, checksum = HEADER.unpack_from(buffer, start)
            if magic != self.magic:
                raise ProtocolError(f"a message with magic {magic.hex()}, not {self.magic.hex()}")
            command = _command(field)
            if length > self._limits.get(command, self._block_limit):
                raise ProtocolError(f"a {command.decode()} of {length} bytes")
            end = start + HEADER.size + length
            if len(buffer) < end:
                break
            payload = bytes(buffer[start + HEADER.size : end])
            start = end
            if sha256d(payload)[:4] != checksum:
                raise ProtocolError(f"a {command.decode()} with a wrong checksum")
            message = decode(command, payload)
            if message is not None:
                messages.append(message)
        del buffer[:start]
        # A stream of another kind (or chain) is refused at its first bytes.
        head = bytes(buffer[: len(self.magic)])
        if head != self.magic[: len(head)]:
            raise ProtocolError("a stream that does not open with the chain's magic")
        return messages
