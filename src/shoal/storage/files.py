"""A torrent's pieces mapped onto its files; blocking calls, run by the adapter in threads."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import ShoalError
from ..metainfo import Torrent
from ..metainfo.paths import resolve_inside

# Whole pieces kept in memory for uploads, so each block served is not its own read.
READ_CACHE_PIECES = 16


class StorageError(ShoalError):
    """A file of the torrent cannot be read or written."""


class DiskFullError(StorageError):
    """There is no space left to write a verified piece."""


@dataclass(frozen=True, slots=True)
class Span:
    """The part of one file that a byte range covers."""

    path: Path | None  # None for a BEP 47 padding file: zeros, never on disk
    file_offset: int
    length: int


class PieceStorage:
    """Reads and writes pieces of one torrent below a download folder."""

    def __init__(self, torrent: Torrent, root: Path) -> None:
        self.torrent = torrent
        self.root = root
        self.paths = [
            None if entry.padding else resolve_inside(root, entry.path) for entry in torrent.files
        ]
        self._fds: dict[Path, tuple[int, bool]] = {}  # path -> (fd, writable)
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def spans(self, offset: int, length: int) -> list[Span]:
        """The file pieces that the torrent byte range [offset, offset+length) covers."""
        result = []
        end = offset + length
        for entry, path in zip(self.torrent.files, self.paths, strict=True):
            file_end = entry.offset + entry.length
            if file_end <= offset or entry.length == 0:
                continue
            if entry.offset >= end:
                break
            start = max(offset, entry.offset)
            stop = min(end, file_end)
            result.append(Span(path, start - entry.offset, stop - start))
        return result

    def _fd(self, path: Path, create: bool) -> int:
        # Files are opened read-only until the first write, so seeding works from read-only data.
        with self._lock:
            cached = self._fds.get(path)
            if cached is not None and (cached[1] or not create):
                return cached[0]
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            else:
                fd = os.open(path, os.O_RDONLY)
            if cached is not None:
                os.close(cached[0])
            self._fds[path] = (fd, create)
            return fd

    def allocate(self) -> None:
        """Create every file at its full size (sparse), so resume can check sizes cheaply."""
        try:
            for entry, path in zip(self.torrent.files, self.paths, strict=True):
                if path is None:
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists() or path.stat().st_size != entry.length:
                    fd = self._fd(path, create=True)
                    os.ftruncate(fd, entry.length)
        except OSError as exc:
            raise self._error("prepare", exc) from None

    def write_piece(self, index: int, data: bytes | bytearray) -> None:
        """Write a verified piece to its files."""
        view = memoryview(data)
        done = 0
        try:
            for span in self.spans(index * self.torrent.piece_length, len(data)):
                if span.path is None:
                    done += span.length
                    continue
                fd = self._fd(span.path, create=True)
                written = 0
                while written < span.length:
                    chunk = view[done + written : done + span.length]
                    written += os.pwrite(fd, chunk, span.file_offset + written)
                done += span.length
        except OSError as exc:
            raise self._error("write", exc) from None

    def read_piece(self, index: int) -> bytes:
        """Read a whole piece from its files."""
        size = self.torrent.piece_size(index)
        parts = []
        try:
            for span in self.spans(index * self.torrent.piece_length, size):
                if span.path is None:
                    parts.append(bytes(span.length))
                    continue
                data = os.pread(self._fd(span.path, create=False), span.length, span.file_offset)
                if len(data) != span.length:
                    raise StorageError(f"{span.path} is shorter than the torrent says")
                parts.append(data)
        except OSError as exc:
            raise self._error("read", exc) from None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_block(self, index: int, begin: int, length: int) -> memoryview:
        """Read part of a verified piece, through a small cache of whole pieces."""
        piece = self._cache.get(index)
        if piece is None:
            piece = self.read_piece(index)
            self._cache[index] = piece
            if len(self._cache) > READ_CACHE_PIECES:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(index)
        return memoryview(piece)[begin : begin + length]

    def check_piece(self, index: int, data: bytes | bytearray) -> bool:
        """Whether data matches the piece's SHA-1 hash."""
        return hashlib.sha1(data).digest() == self.torrent.piece_hash(index)

    def verify_and_write(self, index: int, data: bytearray) -> bool:
        """Hash a downloaded piece and write it if it is good; runs in a worker thread."""
        if not self.check_piece(index, data):
            return False
        self.write_piece(index, data)
        return True

    def recheck(self, candidates: list[int] | None = None, workers: int = 2) -> bytearray:
        """Hash the pieces already on disk, in parallel; returns which are good."""
        num = self.torrent.num_pieces
        have = bytearray(num)
        indexes = range(num) if candidates is None else candidates

        def check(index: int) -> None:
            try:
                have[index] = self.check_piece(index, self.read_piece(index))
            except (StorageError, FileNotFoundError):
                have[index] = 0

        present = [i for i in indexes if self._piece_files_present(i)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(check, present))
        return have

    def _piece_files_present(self, index: int) -> bool:
        spans = self.spans(index * self.torrent.piece_length, self.torrent.piece_size(index))
        return all(span.path is None or span.path.is_file() for span in spans)

    def file_sizes(self) -> list[int | None]:
        """Current size of each file (padding files count as present), None where missing."""
        sizes: list[int | None] = []
        for entry, path in zip(self.torrent.files, self.paths, strict=True):
            if path is None:
                sizes.append(entry.length)
                continue
            try:
                sizes.append(path.stat().st_size)
            except OSError:
                sizes.append(None)
        return sizes

    def close(self) -> None:
        """Close every open file."""
        with self._lock:
            for fd, _writable in self._fds.values():
                os.close(fd)
            self._fds.clear()
            self._cache.clear()

    def _error(self, action: str, exc: OSError) -> StorageError:
        name = exc.filename or self.torrent.name
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFullError(f"the disk is full: cannot {action} {name}")
        return StorageError(f"cannot {action} {name}: {exc.strerror or exc}")
