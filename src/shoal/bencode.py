"""Strict bencode (BEP 3): decode untrusted input, encode canonical output."""

from __future__ import annotations

from typing import Any

from shoal.errors import ShoalError

__all__ = ["BencodeError", "decode", "decode_prefix", "decode_torrent", "encode"]

_INT, _LIST, _DICT, _END, _ZERO, _NINE = b"ilde09"

_DEFAULT_MAX_DEPTH = 64

# Longest length prefix worth parsing: anything longer cannot fit in memory, and it keeps
# int() away from its quadratic and max-digits paths.
_MAX_LENGTH_DIGITS = 19


class BencodeError(ShoalError):
    """The input is not strict, canonical bencode."""


class _DictFrame:
    """A dictionary being filled: keys must arrive in strictly increasing order."""

    __slots__ = ("items", "key", "last_key")

    def __init__(self) -> None:
        self.items: dict[bytes, Any] = {}
        self.key: bytes | None = None
        self.last_key: bytes | None = None


def _read_int(data: bytes, pos: int) -> tuple[int, int]:
    """Parse `i<digits>e` starting at pos; return the value and the offset after `e`."""
    end = data.find(b"e", pos + 1)
    if end < 0:
        raise BencodeError(f"bencoded data ends inside the integer at byte {pos}")
    text = data[pos + 1 : end]
    digits = text[1:] if text[:1] == b"-" else text
    if not digits.isdigit():
        raise BencodeError(f"bencoded data has a malformed integer at byte {pos}")
    if digits[0] == _ZERO and len(digits) > 1:
        raise BencodeError(f"bencoded data has a leading zero in an integer at byte {pos}")
    if text == b"-0":
        raise BencodeError(f"bencoded data has a negative zero at byte {pos}")
    try:
        return int(text), end + 1
    except ValueError:
        raise BencodeError(f"bencoded data has an integer too long to read at byte {pos}") from None


def _read_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    """Parse `<length>:<bytes>` starting at pos; return the bytes and the offset after them."""
    colon = data.find(b":", pos, pos + _MAX_LENGTH_DIGITS + 1)
    if colon < 0:
        window = data[pos : pos + _MAX_LENGTH_DIGITS + 1]
        if window.isdigit() and pos + len(window) == len(data):
            raise BencodeError(f"bencoded data ends inside the string length at byte {pos}")
        raise BencodeError(f"bencoded data has a malformed string length at byte {pos}")
    digits = data[pos:colon]
    if not digits.isdigit():
        raise BencodeError(f"bencoded data has a malformed string length at byte {pos}")
    if digits[0] == _ZERO and len(digits) > 1:
        raise BencodeError(f"bencoded data has a leading zero in a string length at byte {pos}")
    start = colon + 1
    stop = start + int(digits)
    if stop > len(data):
        raise BencodeError(f"bencoded data has a string at byte {pos} that runs past the end")
    return data[start:stop], stop


def _decode_at(data: bytes, pos: int, max_depth: int) -> tuple[Any, int]:
    """Decode one value starting at pos without recursion; return it and the offset after it."""
    # The innermost open container is in open_dict or open_list (at most one is set) and
    # those around it are in parents; two variables spare this per-value loop a type test.
    parents: list[_DictFrame | list[Any] | None] = []
    open_dict: _DictFrame | None = None
    open_list: list[Any] | None = None
    size = len(data)
    value: Any
    while True:
        if pos >= size:
            raise BencodeError(f"bencoded data ends early at byte {pos}")
        byte = data[pos]
        if open_dict is not None and open_dict.key is None and byte != _END:
            if not _ZERO <= byte <= _NINE:
                raise BencodeError(
                    f"bencoded data has a dictionary key at byte {pos} that is not a string"
                )
            key, next_pos = _read_bytes(data, pos)
            last_key = open_dict.last_key
            if last_key is not None and key <= last_key:
                problem = "a duplicate" if key == last_key else "an unsorted"
                raise BencodeError(f"bencoded data has {problem} dictionary key at byte {pos}")
            open_dict.key = open_dict.last_key = key
            pos = next_pos
            continue

        if _ZERO <= byte <= _NINE:
            value, pos = _read_bytes(data, pos)
        elif byte == _INT:
            value, pos = _read_int(data, pos)
        elif byte in (_LIST, _DICT):
            if len(parents) >= max_depth:
                raise BencodeError(
                    f"bencoded data nests deeper than {max_depth} levels at byte {pos}"
                )
            parents.append(open_dict if open_dict is not None else open_list)
            open_dict, open_list = (_DictFrame(), None) if byte == _DICT else (None, [])
            pos += 1
            continue
        elif byte == _END and parents:
            if open_dict is not None:
                if open_dict.key is not None:
                    raise BencodeError(
                        f"bencoded data has a dictionary key without a value at byte {pos}"
                    )
                value = open_dict.items
            else:
                value = open_list
            parent = parents.pop()
            open_dict, open_list = (
                (parent, None) if isinstance(parent, _DictFrame) else (None, parent)
            )
            pos += 1
        else:
            raise BencodeError(
                f"bencoded data has an unexpected byte {bytes([byte])!r} at byte {pos}"
            )

        if open_dict is not None:
            # A value is only read in a dictionary after its key, so key is set here.
            open_dict.items[open_dict.key] = value  # type: ignore[index]
            open_dict.key = None
        elif open_list is not None:
            open_list.append(value)
        else:
            return value, pos


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """Return data as bytes, so that slicing yields bytes values."""
    return data if type(data) is bytes else bytes(data)


def decode_prefix(data: bytes, *, max_depth: int = _DEFAULT_MAX_DEPTH) -> tuple[Any, int]:
    """Decode the value at the start of data; return it and the offset where it ends."""
    return _decode_at(_as_bytes(data), 0, max_depth)


def decode(data: bytes, *, max_depth: int = _DEFAULT_MAX_DEPTH) -> Any:
    """Decode data, which must hold exactly one bencoded value."""
    data = _as_bytes(data)
    value, end = _decode_at(data, 0, max_depth)
    if end != len(data):
        raise BencodeError(f"bencoded data has trailing bytes after the value at byte {end}")
    return value


def decode_torrent(data: bytes) -> tuple[dict[bytes, Any], bytes]:
    """Decode a .torrent file; return its dictionary and the info value's bytes as received."""
    data = _as_bytes(data)
    if data[:1] != b"d":
        raise BencodeError("the top-level bencoded value is not a dictionary")
    # Walk the top-level dictionary here rather than in _decode_at, to note where info lies.
    result: dict[bytes, Any] = {}
    info_span: bytes | None = None
    last_key = b""
    pos = 1
    while True:
        if pos >= len(data):
            raise BencodeError(f"bencoded data ends early at byte {pos}")
        if data[pos] == _END:
            break
        if not _ZERO <= data[pos] <= _NINE:
            raise BencodeError(
                f"bencoded data has a dictionary key at byte {pos} that is not a string"
            )
        key, value_pos = _read_bytes(data, pos)
        if result and key <= last_key:
            problem = "a duplicate" if key == last_key else "an unsorted"
            raise BencodeError(f"bencoded data has {problem} dictionary key at byte {pos}")
        last_key = key
        value, pos = _decode_at(data, value_pos, _DEFAULT_MAX_DEPTH - 1)
        result[key] = value
        if key == b"info":
            info_span = data[value_pos:pos]
    if pos + 1 != len(data):
        raise BencodeError(f"bencoded data has trailing bytes after the value at byte {pos + 1}")
    if info_span is None or not isinstance(result[b"info"], dict):
        raise BencodeError("the top-level bencoded dictionary has no info dictionary")
    return result, info_span


def encode(obj: Any) -> bytes:
    """Encode obj canonically; raise TypeError for values bencode cannot hold."""
    parts: list[bytes] = []
    _encode_into(obj, parts)
    return b"".join(parts)


def _encode_into(obj: Any, parts: list[bytes]) -> None:
    """Append the encoding of obj to parts."""
    # The common exact types first (every DHT datagram is built here): no copies, no key
    # conversion, and a dictionary of bytes keys cannot hold one key twice.
    kind = type(obj)
    if kind is bytes:
        parts += (b"%d:" % len(obj), obj)
    elif kind is int:
        parts.append(b"i%de" % obj)
    elif kind is dict and all(type(key) is bytes for key in obj):
        parts.append(b"d")
        for key in sorted(obj):
            parts += (b"%d:" % len(key), key)
            _encode_into(obj[key], parts)
        parts.append(b"e")
    elif kind is list:
        parts.append(b"l")
        for item in obj:
            _encode_into(item, parts)
        parts.append(b"e")
    elif isinstance(obj, bytes | bytearray | memoryview):
        raw = bytes(obj)
        parts += (str(len(raw)).encode(), b":", raw)
    elif isinstance(obj, str):
        raw = obj.encode()
        parts += (str(len(raw)).encode(), b":", raw)
    elif isinstance(obj, int) and not isinstance(obj, bool):
        parts.append(b"i%de" % obj)
    elif isinstance(obj, list | tuple):
        parts.append(b"l")
        for item in obj:
            _encode_into(item, parts)
        parts.append(b"e")
    elif isinstance(obj, dict):
        items = sorted(
            ((_encode_key(key), value) for key, value in obj.items()), key=lambda item: item[0]
        )
        parts.append(b"d")
        for index, (key, value) in enumerate(items):
            if index and key == items[index - 1][0]:
                raise ValueError(f"the dictionary has the key {key!r} twice")
            parts += (str(len(key)).encode(), b":", key)
            _encode_into(value, parts)
        parts.append(b"e")
    else:
        raise TypeError(f"bencode cannot encode a value of type {type(obj).__name__}")


def _encode_key(key: Any) -> bytes:
    """Return a dictionary key as bytes; only bytes and str keys are allowed."""
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key)
    raise TypeError(f"bencode cannot encode a dictionary key of type {type(key).__name__}")
