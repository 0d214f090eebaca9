"""Torrent files (BEP 3, 12, 19, 47): parse and validate them, or create one from disk."""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import itertools
import os
import stat
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal import __version__
from shoal.bencode import BencodeError, decode, decode_torrent, encode
from shoal.metainfo.magnet import make_magnet
from shoal.metainfo.paths import MetainfoError, safe_components

__all__ = [
    "FileEntry",
    "Torrent",
    "create_torrent",
    "load_torrent",
    "parse_info",
    "parse_torrent",
]

KiB = 1024
MiB = 1024 * KiB

_HASH_SIZE = 20
_MAX_PIECE_LENGTH = 64 * MiB
_MAX_FILES = 100_000
# Bounds on all file paths of a torrent together, so parsing one costs little memory.
_MAX_ALL_PATH_PARTS = 1_000_000
_MAX_ALL_PATH_BYTES = 16 * MiB
_MAX_TORRENT_FILE = 50 * MiB
_MIN_CREATED_PIECE_LENGTH = 16 * KiB
_MAX_DEFAULT_PIECE_LENGTH = 16 * MiB
# With the default piece length a torrent gets between half this many pieces and this many.
_MAX_DEFAULT_PIECES = 2000


@dataclass(frozen=True)
class FileEntry:
    """One file of a torrent, placed in the torrent's concatenated data."""

    path: tuple[str, ...]
    offset: int
    length: int
    # BEP 47 padding files hold zeros to align the next file; they are never written to disk.
    padding: bool = False


@dataclass(frozen=True)
class Torrent:
    """A validated torrent: the info dictionary as received plus the hints around it."""

    info_hash: bytes
    name: str
    piece_length: int
    piece_hashes: bytes = field(repr=False)
    files: tuple[FileEntry, ...] = field(repr=False)
    total_length: int
    private: bool
    trackers: tuple[tuple[str, ...], ...]
    web_seeds: tuple[str, ...]
    info_bytes: bytes = field(repr=False)
    comment: str | None
    is_multi_file: bool
    created_by: str | None = None
    creation_date: int | None = None

    @property
    def num_pieces(self) -> int:
        """The number of pieces."""
        return len(self.piece_hashes) // _HASH_SIZE

    @property
    def info_hash_hex(self) -> str:
        """The info-hash as 40 lowercase hex digits."""
        return self.info_hash.hex()

    def piece_size(self, index: int) -> int:
        """The length of piece index; only the last piece may be shorter."""
        self._check_index(index)
        return min(self.piece_length, self.total_length - index * self.piece_length)

    def piece_hash(self, index: int) -> bytes:
        """The 20-byte SHA-1 that piece index must have."""
        self._check_index(index)
        return self.piece_hashes[index * _HASH_SIZE : (index + 1) * _HASH_SIZE]

    def _check_index(self, index: int) -> None:
        """Raise IndexError unless index names a piece."""
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"the torrent has no piece {index}")

    def magnet(self, peers: Iterable[tuple[str, int]] = ()) -> str:
        """A magnet link for this torrent, with its trackers and the given peers."""
        trackers = [tracker for tier in self.trackers for tracker in tier]
        return make_magnet(self.info_hash, self.name, trackers, peers)

    def to_bytes(self) -> bytes:
        """A complete .torrent file, with the info dictionary exactly as received."""
        fields: dict[bytes, Any] = {}
        if self.trackers:
            fields[b"announce"] = self.trackers[0][0]
            if len(self.trackers) > 1 or len(self.trackers[0]) > 1:
                fields[b"announce-list"] = [list(tier) for tier in self.trackers]
        if self.web_seeds:
            fields[b"url-list"] = list(self.web_seeds)
        if self.comment is not None:
            fields[b"comment"] = self.comment
        if self.created_by is not None:
            fields[b"created by"] = self.created_by
        if self.creation_date is not None:
            fields[b"creation date"] = self.creation_date
        # Splice the info bytes in unchanged: re-encoding could change the info-hash.
        parts = [b"d"]
        for key in sorted([*fields, b"info"]):
            parts.append(encode(key))
            parts.append(self.info_bytes if key == b"info" else encode(fields[key]))
        parts.append(b"e")
        return b"".join(parts)


def parse_torrent(data: bytes) -> Torrent:
    """Parse and validate a .torrent file; malformed optional fields outside info are ignored."""
    try:
        top, info_bytes = decode_torrent(data)
    except BencodeError as error:
        raise MetainfoError(f"the torrent file is not valid bencode: {error}") from None
    creation_date = top.get(b"creation date")
    return _build(
        info_bytes,
        top[b"info"],
        trackers=_tiers(top),
        web_seeds=_web_seeds(top.get(b"url-list")),
        comment=_text(top.get(b"comment.utf-8", top.get(b"comment"))),
        created_by=_text(top.get(b"created by")),
        creation_date=creation_date if isinstance(creation_date, int) else None,
    )


def parse_info(
    info_bytes: bytes,
    *,
    trackers: Iterable[Sequence[str] | str] = (),
    web_seeds: Iterable[str] = (),
) -> Torrent:
    """Build a torrent from a raw info dictionary; each tracker is a tier or a lone URL."""
    try:
        info = decode(info_bytes)
    except BencodeError as error:
        raise MetainfoError(f"the torrent metadata is not valid bencode: {error}") from None
    if not isinstance(info, dict):
        raise MetainfoError("the torrent metadata is not a bencoded dictionary")
    tiers = tuple((tier,) if isinstance(tier, str) else tuple(tier) for tier in trackers)
    return _build(bytes(info_bytes), info, trackers=tiers, web_seeds=tuple(web_seeds))


def load_torrent(path: Path) -> Torrent:
    """Read and parse a .torrent file of at most 50 MiB."""
    try:
        with open(path, "rb") as file:
            data = file.read(_MAX_TORRENT_FILE + 1)
    except OSError as error:
        raise MetainfoError(f"cannot read torrent file {path}: {error.strerror or error}") from None
    if len(data) > _MAX_TORRENT_FILE:
        raise MetainfoError(f"the torrent file {path} is larger than 50 MiB")
    return parse_torrent(data)


def _build(
    info_bytes: bytes,
    info: dict[bytes, Any],
    *,
    trackers: tuple[tuple[str, ...], ...],
    web_seeds: tuple[str, ...],
    comment: str | None = None,
    created_by: str | None = None,
    creation_date: int | None = None,
) -> Torrent:
    """Validate a decoded info dictionary and make the Torrent."""
    if b"pieces" not in info and info.get(b"meta version") == 2:
        raise MetainfoError("the torrent is BitTorrent v2 only, which shoal does not support")
    piece_length = info.get(b"piece length")
    if not isinstance(piece_length, int) or not 0 < piece_length <= _MAX_PIECE_LENGTH:
        raise MetainfoError(f"the torrent has an invalid piece length: {_show(piece_length)}")
    raw_name = _utf8_variant(info, b"name", bytes)
    if not isinstance(raw_name, bytes):
        raise MetainfoError("the torrent has no name")
    (name,) = safe_components([raw_name])

    if b"files" in info:
        files = _file_list(name, info[b"files"])
    else:
        files = (FileEntry((name,), 0, _check_length(info.get(b"length"))),)
    total_length = files[-1].offset + files[-1].length

    pieces = info.get(b"pieces")
    if not isinstance(pieces, bytes) or len(pieces) % _HASH_SIZE:
        raise MetainfoError("the torrent's piece hashes are not a whole number of SHA-1 hashes")
    needed = -(-total_length // piece_length)
    if len(pieces) != needed * _HASH_SIZE:
        raise MetainfoError(
            f"the torrent has {len(pieces) // _HASH_SIZE} piece hashes"
            f" but its {total_length} bytes make {needed} pieces"
        )
    return Torrent(
        info_hash=hashlib.sha1(info_bytes).digest(),
        name=name,
        piece_length=piece_length,
        piece_hashes=pieces,
        files=files,
        total_length=total_length,
        private=info.get(b"private") == 1,
        trackers=trackers,
        web_seeds=web_seeds,
        info_bytes=info_bytes,
        comment=comment,
        is_multi_file=b"files" in info,
        created_by=created_by,
        creation_date=creation_date,
    )


def _file_list(name: str, raw_files: Any) -> tuple[FileEntry, ...]:
    """Validate the files list of a multi-file torrent and place each file in the data."""
    if not isinstance(raw_files, list) or not raw_files:
        raise MetainfoError("the torrent has a files list with no files in it")
    if len(raw_files) > _MAX_FILES:
        raise MetainfoError(
            f"the torrent lists {len(raw_files)} files, more than the {_MAX_FILES} shoal accepts"
        )
    entries: list[FileEntry] = []
    parts = 0
    path_bytes = 0
    offset = 0
    for raw in raw_files:
        if not isinstance(raw, dict):
            raise MetainfoError("the torrent has a file entry that is not a dictionary")
        length = _check_length(raw.get(b"length"))
        raw_path = _utf8_variant(raw, b"path", list)
        if not isinstance(raw_path, list) or not all(isinstance(p, bytes) for p in raw_path):
            raise MetainfoError("the torrent has a file entry without a valid path")
        # Counted before the path is decoded, so a hostile list costs no more than its bytes.
        parts += len(raw_path)
        path_bytes += sum(map(len, raw_path))
        if parts > _MAX_ALL_PATH_PARTS:
            raise MetainfoError(
                f"the torrent's file paths have more than the {_MAX_ALL_PATH_PARTS} parts in all"
                " that shoal accepts"
            )
        if path_bytes > _MAX_ALL_PATH_BYTES:
            raise MetainfoError(
                "the torrent's file paths take more than the"
                f" {_MAX_ALL_PATH_BYTES // MiB} MiB in all that shoal accepts"
            )
        path = (name, *safe_components(raw_path))
        attributes = raw.get(b"attr")
        padding = isinstance(attributes, bytes) and b"p" in attributes
        entries.append(FileEntry(path, offset, length, padding))
        offset += length
    _check_unique_paths(entries)
    return tuple(entries)


def _check_unique_paths(entries: list[FileEntry]) -> None:
    """Raise MetainfoError if a file is listed twice or one file's path is another's folder."""
    # Padding files may share a path (libtorrent names them by size); they are never stored.
    numbered = sorted(
        (entry.path, number) for number, entry in enumerate(entries) if not entry.padding
    )
    # Sorted, a path that is a folder of another comes right before it or before one of its
    # siblings, so comparing neighbours costs one pass instead of a set of every folder.
    for (first, first_number), (second, second_number) in itertools.pairwise(numbered):
        if second[: len(first)] != first:
            continue
        if len(first) == len(second):
            raise MetainfoError(f"the torrent lists the file {'/'.join(first)} twice")
        # Name the path listed later, as a reader going down the list would meet the clash.
        later = first if first_number > second_number else second
        raise MetainfoError(
            f"the torrent has a path that is both a file and a folder: {'/'.join(later)}"
        )


def _utf8_variant(mapping: dict[bytes, Any], key: bytes, kind: type) -> Any:
    """The value of key + ".utf-8" if it has the right type (older clients wrote it), else key's."""
    value = mapping.get(key + b".utf-8")
    return value if isinstance(value, kind) else mapping.get(key)


def _check_length(length: Any) -> int:
    """Return length if it is a valid file length, else raise MetainfoError."""
    if not isinstance(length, int) or length < 0:
        raise MetainfoError(f"the torrent has a file with an invalid length: {_show(length)}")
    return length


def _show(value: Any) -> str:
    """A short repr of an untrusted value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(value: Any) -> str | None:
    """Decode an optional text field, or None if it is missing or not a string."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else None


def _url(value: Any) -> str | None:
    """Decode an optional URL, or None if it is missing, empty or not UTF-8."""
    if not isinstance(value, bytes):
        return None
    try:
        return value.decode().strip() or None
    except UnicodeDecodeError:
        return None


def _tiers(top: dict[bytes, Any]) -> tuple[tuple[str, ...], ...]:
    """Tracker tiers: announce-list if it has any usable URL (BEP 12), else announce."""
    tiers: list[tuple[str, ...]] = []
    announce_list = top.get(b"announce-list")
    if isinstance(announce_list, list):
        for raw_tier in announce_list:
            if isinstance(raw_tier, list):
                tier = tuple(dict.fromkeys(url for url in map(_url, raw_tier) if url))
                if tier:
                    tiers.append(tier)
    announce = _url(top.get(b"announce"))
    if not tiers and announce:
        tiers.append((announce,))
    return tuple(tiers)


def _web_seeds(url_list: Any) -> tuple[str, ...]:
    """Web seed URLs (BEP 19): url-list is a single string or a list of them."""
    raw = url_list if isinstance(url_list, list) else [url_list]
    return tuple(dict.fromkeys(url for url in map(_url, raw) if url))


def create_torrent(
    path: Path,
    *,
    trackers: Sequence[str] = (),
    piece_length: int | None = None,
    private: bool = False,
    web_seeds: Sequence[str] = (),
    comment: str | None = None,
    workers: int | None = None,
) -> Torrent:
    """Hash a file or folder into a new torrent; symlinks inside a folder are not followed."""
    if isinstance(trackers, str) or isinstance(web_seeds, str):
        raise TypeError("trackers and web_seeds are sequences of URLs, not a single string")
    path = Path(path)
    (name,) = safe_components([Path(os.path.abspath(path)).name])
    is_multi_file = path.is_dir()
    if is_multi_file:
        sources = _list_folder(path)
        if not sources:
            raise MetainfoError(f"the folder {path} has no files to share")
    elif path.is_file():
        sources = [((), str(path), path.stat().st_size)]
    else:
        raise MetainfoError(f"cannot create a torrent from {path}: it is not a file or a folder")
    total_length = sum(size for _, _, size in sources)
    if piece_length is None:
        piece_length = _default_piece_length(total_length)
    elif piece_length < _MIN_CREATED_PIECE_LENGTH or piece_length & (piece_length - 1):
        raise MetainfoError(
            f"the piece length must be a power of two of at least 16 KiB, not {piece_length}"
        )

    info: dict[bytes, Any] = {
        b"name": name,
        b"piece length": piece_length,
        b"pieces": _hash_pieces(
            [(file_path, size) for _, file_path, size in sources], piece_length, workers
        ),
    }
    if is_multi_file:
        info[b"files"] = [{b"length": size, b"path": list(parts)} for parts, _, size in sources]
    else:
        info[b"length"] = total_length
    if private:
        info[b"private"] = 1
    draft = parse_info(encode(info), trackers=trackers, web_seeds=web_seeds)
    draft = dataclasses.replace(
        draft,
        comment=comment,
        created_by=f"shoal {__version__}",
        creation_date=int(time.time()),
    )
    # Parse what a user would save, so the result is exactly what load_torrent returns later.
    return parse_torrent(draft.to_bytes())


def _default_piece_length(total_length: int) -> int:
    """The smallest power of two from 16 KiB to 16 MiB giving at most about 2000 pieces."""
    length = _MIN_CREATED_PIECE_LENGTH
    while length < _MAX_DEFAULT_PIECE_LENGTH and total_length > length * _MAX_DEFAULT_PIECES:
        length *= 2
    return length


def _list_folder(root: Path) -> list[tuple[tuple[str, ...], str, int]]:
    """Regular files under root as (components, path, size), sorted by path like mktorrent."""
    found = []

    def fail(error: OSError) -> None:
        raise MetainfoError(f"cannot read folder {error.filename}: {error.strerror}")

    for folder, _, names in os.walk(root, onerror=fail):
        for file_name in names:
            file_path = os.path.join(folder, file_name)
            try:
                info = os.lstat(file_path)
            except OSError as error:
                raise MetainfoError(f"cannot read {file_path}: {error.strerror}") from None
            if stat.S_ISREG(info.st_mode):
                parts = safe_components(os.path.relpath(file_path, root).split(os.sep))
                found.append((parts, file_path, info.st_size))
    found.sort(key=lambda item: "/".join(item[0]).encode())
    return found


def _hash_pieces(files: list[tuple[str, int]], piece_length: int, workers: int | None) -> bytes:
    """SHA-1 every piece of the files' concatenated data, in parallel threads."""
    starts = []
    total_length = 0
    for _, size in files:
        starts.append(total_length)
        total_length += size
    num_pieces = -(-total_length // piece_length)
    workers = max(1, min(workers or os.cpu_count() or 1, num_pieces))

    def hash_range(first: int, last: int) -> bytes:
        return _hash_range(files, starts, total_length, piece_length, first, last)

    # One contiguous range per worker keeps each worker's reads sequential.
    bounds = [num_pieces * worker // workers for worker in range(workers + 1)]
    if workers == 1:
        return hash_range(0, num_pieces)
    with ThreadPoolExecutor(workers, thread_name_prefix="shoal-hash") as pool:
        return b"".join(pool.map(hash_range, bounds[:-1], bounds[1:]))


def _hash_range(
    files: list[tuple[str, int]],
    starts: list[int],
    total_length: int,
    piece_length: int,
    first: int,
    last: int,
) -> bytes:
    """Hash pieces first..last-1, reading into one reused buffer across file boundaries."""
    buffer = memoryview(bytearray(piece_length))
    digests = []
    position = first * piece_length
    index = bisect.bisect_right(starts, position) - 1
    file = None
    try:
        for _ in range(first, last):
            piece_size = min(piece_length, total_length - position)
            filled = 0
            while filled < piece_size:
                file_path, size = files[index]
                file_offset = position + filled - starts[index]
                if file_offset >= size:
                    index += 1
                    if file is not None:
                        file.close()
                        file = None
                    continue
                if file is None:
                    # Kept open across pieces, so closed by hand rather than by a with block.
                    file = open(file_path, "rb", buffering=0)  # noqa: SIM115
                    file.seek(file_offset)
                want = min(piece_size - filled, size - file_offset)
                read = file.readinto(buffer[filled : filled + want])
                if not read:
                    raise MetainfoError(f"the file {file_path} shrank while it was being hashed")
                filled += read
            digests.append(hashlib.sha1(buffer[:piece_size]).digest())
            position += piece_size
    except OSError as error:
        raise MetainfoError(f"cannot read {files[index][0]}: {error.strerror}") from None
    finally:
        if file is not None:
            file.close()
    return b"".join(digests)
