"""KRPC (BEP 5): the DHT's bencoded messages over UDP, parsed with bounds, and built.

A message is a dictionary: `t` (transaction id), `y` (`q` query, `r` response, `e` error),
then for a query `q` (method) and `a` (arguments, with the sender's `id`), for a response `r`
(values, with the sender's `id`), for an error `e` ([code, message]). Responses may carry `ip`
(BEP 42: the requester's address as the responder saw it); queries from read-only nodes carry
`ro` (BEP 43).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .. import addresses
from ..addresses import Address
from ..bencode import BencodeError, decode, encode
from .routing import NodeInfo

# Larger than any honest KRPC message (a BEP 44 put of a 1000-byte value is about 1.2 KB).
MAX_MESSAGE = 2048
MAX_DEPTH = 16
MAX_TRANSACTION = 32
MAX_ERROR_TEXT = 200
NODE_ID_LENGTH = 20
IPV4_NODE = NODE_ID_LENGTH + addresses.IPV4_ENTRY
IPV6_NODE = NODE_ID_LENGTH + addresses.IPV6_ENTRY
# BEP 20 style: two letters naming the client, two bytes of version.
VERSION = b"SH\x00\x01"

PING, FIND_NODE, GET_PEERS, ANNOUNCE_PEER = b"ping", b"find_node", b"get_peers", b"announce_peer"
GET, PUT = b"get", b"put"  # BEP 44
SAMPLE_INFOHASHES = b"sample_infohashes"  # BEP 51
# shoal's own methods, for the keyword index; other clients answer them with error 204.
GET_LISTINGS, PUT_LISTING = b"shoal_get_listings", b"shoal_put_listing"

GENERIC_ERROR = 201
SERVER_ERROR = 202
PROTOCOL_ERROR = 203
METHOD_UNKNOWN = 204


class KrpcError(ValueError):
    """A datagram that is not a well-formed KRPC message, or a field that is missing or wrong;
    code is the error a query that caused it is answered with."""

    def __init__(self, message: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Query:
    """A query: method, arguments, and the sender's node id."""

    transaction: bytes
    method: bytes
    args: dict[bytes, Any]
    sender: bytes
    read_only: bool


@dataclass(frozen=True, slots=True)
class Response:
    """A response to one of our queries, with the responder's node id."""

    transaction: bytes
    values: dict[bytes, Any]
    sender: bytes
    seen_as: Address | None  # our own address as the responder saw it (BEP 42 `ip`)


@dataclass(frozen=True, slots=True)
class Error:
    """An error reply."""

    transaction: bytes
    code: int
    message: str


Message = Query | Response | Error


def parse(datagram: bytes) -> Message:
    """The message in a datagram; KrpcError if it is not one."""
    if len(datagram) > MAX_MESSAGE:
        raise KrpcError(f"a KRPC message of {len(datagram)} bytes is too long")
    try:
        message = decode(datagram, max_depth=MAX_DEPTH)
    except BencodeError as exc:
        raise KrpcError(str(exc)) from None
    if not isinstance(message, dict):
        raise KrpcError("a KRPC message is a dictionary")
    transaction = message.get(b"t")
    if not isinstance(transaction, bytes) or not 0 < len(transaction) <= MAX_TRANSACTION:
        raise KrpcError("the transaction id is missing or malformed")
    kind = message.get(b"y")
    if kind == b"q":
        method = message.get(b"q")
        args = message.get(b"a")
        if not isinstance(method, bytes) or not isinstance(args, dict):
            raise KrpcError("a query needs a method and arguments")
        read_only = message.get(b"ro") == 1
        return Query(transaction, method, args, node_id(args, b"id"), read_only)
    if kind == b"r":
        values = message.get(b"r")
        if not isinstance(values, dict):
            raise KrpcError("a response needs values")
        return Response(transaction, values, node_id(values, b"id"), _seen_as(message))
    if kind == b"e":
        body = message.get(b"e")
        if not isinstance(body, list) or not body or not isinstance(body[0], int):
            raise KrpcError("an error needs a code")
        text = body[1] if len(body) > 1 and isinstance(body[1], bytes) else b""
        return Error(transaction, body[0], text[:MAX_ERROR_TEXT].decode("utf-8", "replace"))
    raise KrpcError("the message type is not q, r or e")


def _seen_as(message: dict[bytes, Any]) -> Address | None:
    compact = message.get(b"ip")
    if not isinstance(compact, bytes) or len(compact) not in (
        addresses.IPV4_ENTRY,
        addresses.IPV6_ENTRY,
    ):
        return None
    found = addresses.unpack(compact, ipv6=len(compact) == addresses.IPV6_ENTRY)
    return found[0] if found else None


def query(
    transaction: bytes,
    method: bytes,
    args: dict[bytes, Any],
    *,
    sender: bytes,
    read_only: bool = False,
) -> bytes:
    """A query datagram."""
    message: dict[bytes, Any] = {
        b"t": transaction,
        b"y": b"q",
        b"q": method,
        b"a": {**args, b"id": sender},
        b"v": VERSION,
    }
    if read_only:
        message[b"ro"] = 1
    return encode(message)


def response(
    transaction: bytes, values: dict[bytes, Any], *, sender: bytes, requester: Address | None
) -> bytes:
    """A response datagram; it tells the requester its address as we see it (BEP 42)."""
    message: dict[bytes, Any] = {
        b"t": transaction,
        b"y": b"r",
        b"r": {**values, b"id": sender},
        b"v": VERSION,
    }
    if requester is not None:
        message[b"ip"] = addresses.pack(requester)
    return encode(message)


def error(transaction: bytes, code: int, text: str) -> bytes:
    """An error datagram."""
    return encode({b"t": transaction, b"y": b"e", b"e": [code, text.encode()]})


# -- fields -----------------------------------------------------------------------------------


def node_id(values: dict[bytes, Any], key: bytes) -> bytes:
    """A 20-byte id (a node id, a target, an info-hash) under key."""
    value = values.get(key)
    if not isinstance(value, bytes) or len(value) != NODE_ID_LENGTH:
        raise KrpcError(f"{key.decode()} is not a 20-byte id")
    return value


def port(values: dict[bytes, Any], key: bytes) -> int:
    """A port number under key."""
    value = values.get(key)
    if not isinstance(value, int) or not 0 < value < 65536:
        raise KrpcError(f"{key.decode()} is not a port number")
    return value


def pack_nodes(nodes: Iterable[NodeInfo]) -> tuple[bytes, bytes]:
    """Compact node lists (BEP 5 `nodes`, BEP 32 `nodes6`): id then compact address each."""
    v4 = bytearray()
    v6 = bytearray()
    for node in nodes:
        entry = node.id + addresses.pack(node.address)
        (v4 if len(entry) == IPV4_NODE else v6).extend(entry)
    return bytes(v4), bytes(v6)


def unpack_nodes(data: object, *, ipv6: bool, limit: int) -> list[NodeInfo]:
    """The nodes of a compact node list (at most limit); malformed lists yield nothing, and
    entries with port 0 are skipped."""
    step = IPV6_NODE if ipv6 else IPV4_NODE
    if not isinstance(data, bytes) or len(data) % step:
        return []
    nodes = []
    for start in range(0, min(len(data), limit * step), step):
        found = addresses.unpack(data[start + NODE_ID_LENGTH : start + step], ipv6=ipv6)
        if found:
            nodes.append(NodeInfo(data[start : start + NODE_ID_LENGTH], found[0]))
    return nodes


def unpack_peers(values: object, *, limit: int) -> list[Address]:
    """The peers of a get_peers `values` list (compact IPv4 or IPv6 addresses, one per string);
    anything malformed is skipped."""
    if not isinstance(values, list):
        return []
    peers: list[Address] = []
    for value in values[:limit]:
        if isinstance(value, bytes) and len(value) in (addresses.IPV4_ENTRY, addresses.IPV6_ENTRY):
            peers.extend(addresses.unpack(value, ipv6=len(value) == addresses.IPV6_ENTRY))
    return peers
