"""Extension protocol payloads: the BEP 10 handshake, ut_metadata (BEP 9) and ut_pex (BEP 11)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import addresses, bencode
from ..addresses import Address
from .messages import ProtocolError

UT_METADATA = b"ut_metadata"
UT_PEX = b"ut_pex"
# The ids we ask peers to use when they send us these extensions.
LOCAL_IDS = {UT_PEX: 1, UT_METADATA: 2}

METADATA_PIECE_SIZE = 16 * 1024
MAX_METADATA_SIZE = 8 * 1024 * 1024
# BEP 11 asks for at most 50 added peers per message; tolerate a little more, ignore the rest.
MAX_PEX_PEERS = 100


@dataclass(slots=True)
class ExtensionHandshake:
    """What a peer told us in its extension handshake."""

    ids: dict[bytes, int] = field(default_factory=dict)
    listen_port: int | None = None
    client: str | None = None
    request_queue: int | None = None
    metadata_size: int | None = None


def _decode_dict(payload: bytes, what: str) -> dict[bytes, Any]:
    try:
        value = bencode.decode(payload, max_depth=8)
    except bencode.BencodeError as exc:
        raise ProtocolError(f"{what} is not valid bencode: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} is not a dictionary")
    return value


def _bounded_int(value: Any, low: int, high: int) -> int | None:
    return value if isinstance(value, int) and low <= value <= high else None


def encode_handshake(
    *, listen_port: int | None, metadata_size: int | None, request_queue: int, client: str
) -> bytes:
    """Our extension handshake."""
    payload: dict[bytes, Any] = {
        b"m": {name: ext_id for name, ext_id in LOCAL_IDS.items()},
        b"v": client,
        b"reqq": request_queue,
    }
    if listen_port:
        payload[b"p"] = listen_port
    if metadata_size:
        payload[b"metadata_size"] = metadata_size
    return bencode.encode(payload)


def parse_handshake(payload: bytes) -> ExtensionHandshake:
    """Read a peer's extension handshake, ignoring fields that are out of range."""
    value = _decode_dict(payload, "extension handshake")
    result = ExtensionHandshake()
    ids = value.get(b"m")
    if isinstance(ids, dict):
        for name, ext_id in ids.items():
            checked = _bounded_int(ext_id, 0, 255)
            if checked is not None:
                result.ids[name] = checked
    result.listen_port = _bounded_int(value.get(b"p"), 1, 65535)
    result.request_queue = _bounded_int(value.get(b"reqq"), 1, 100_000)
    result.metadata_size = _bounded_int(value.get(b"metadata_size"), 1, MAX_METADATA_SIZE)
    client = value.get(b"v")
    if isinstance(client, bytes):
        result.client = client[:64].decode("utf-8", "replace")
    return result


# -- ut_metadata -------------------------------------------------------------------------------

METADATA_REQUEST = 0
METADATA_DATA = 1
METADATA_REJECT = 2


@dataclass(frozen=True, slots=True)
class MetadataMessage:
    """One ut_metadata message; data is set only for a data message."""

    kind: int
    piece: int
    total_size: int | None = None
    data: bytes = b""


def encode_metadata(message: MetadataMessage) -> bytes:
    """Encode a ut_metadata message."""
    head: dict[bytes, Any] = {b"msg_type": message.kind, b"piece": message.piece}
    if message.kind == METADATA_DATA:
        head[b"total_size"] = message.total_size or 0
    return bencode.encode(head) + message.data


def parse_metadata(payload: bytes) -> MetadataMessage:
    """Decode a ut_metadata message: a bencoded dict, then raw data for a data message."""
    try:
        head, end = bencode.decode_prefix(payload, max_depth=4)
    except bencode.BencodeError as exc:
        raise ProtocolError(f"metadata message is not valid bencode: {exc}") from None
    if not isinstance(head, dict):
        raise ProtocolError("metadata message is not a dictionary")
    kind = _bounded_int(head.get(b"msg_type"), 0, 2)
    piece = _bounded_int(head.get(b"piece"), 0, MAX_METADATA_SIZE // METADATA_PIECE_SIZE)
    if kind is None or piece is None:
        raise ProtocolError("metadata message has a bad type or piece number")
    data = payload[end:]
    if kind != METADATA_DATA:
        return MetadataMessage(kind, piece)
    total = _bounded_int(head.get(b"total_size"), 1, MAX_METADATA_SIZE)
    if total is None or len(data) > METADATA_PIECE_SIZE:
        raise ProtocolError("metadata data message has a bad size")
    return MetadataMessage(kind, piece, total, data)


# -- ut_pex ------------------------------------------------------------------------------------


def _pex_peers(blob: Any, ipv6: bool) -> list[Address]:
    """A compact peer list of a PEX message; anything malformed yields nothing."""
    step = addresses.IPV6_ENTRY if ipv6 else addresses.IPV4_ENTRY
    if not isinstance(blob, bytes) or len(blob) % step:
        return []
    return addresses.unpack(blob, ipv6=ipv6, limit=MAX_PEX_PEERS)


def encode_pex(added: list[Address], dropped: list[Address]) -> bytes:
    """A ut_pex message."""
    added4, added6 = addresses.pack_all(added[:50])
    dropped4, dropped6 = addresses.pack_all(dropped[:50])
    return bencode.encode(
        {b"added": added4, b"added6": added6, b"dropped": dropped4, b"dropped6": dropped6}
    )


def parse_pex(payload: bytes) -> tuple[list[Address], list[Address]]:
    """The peers a ut_pex message adds and drops."""
    value = _decode_dict(payload, "peer exchange message")
    added = _pex_peers(value.get(b"added"), False) + _pex_peers(value.get(b"added6"), True)
    dropped = _pex_peers(value.get(b"dropped"), False) + _pex_peers(value.get(b"dropped6"), True)
    return added[:MAX_PEX_PEERS], dropped[:MAX_PEX_PEERS]
