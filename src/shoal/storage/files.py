"""A torrent's pieces mapped onto its files; blocking calls, run by the adapter in threads."""

from __future__ import annotations

import bisect
import errno
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import ShoalError
from ..metainfo import Torrent
from ..metainfo.paths import resolve_inside

# Whole pieces kept in memory for uploads, so each block served is not its own read.
READ_CACHE_PIECES = 16
# Open files per torrent: far below the usual limit of 1,024 handles a process may hold.
OPEN_FILES = 128


class StorageError(ShoalError):
    """A file of the torrent cannot be read or written."""


class DiskFullError(StorageError):
    """There is no space left to write a verified piece."""


class RecheckStopped(ShoalError):
    """The check of the data on disk was stopped; `have` holds the pieces verified until then."""

    def __init__(self, have: bytearray, checked: int, total: int) -> None:
        super().__init__(f"the check of the data on disk stopped after {checked} of {total} pieces")
        self.have = have


@dataclass(frozen=True, slots=True)
class Span:
    """The part of one file that a byte range covers."""

    path: Path | None  # None for a BEP 47 padding file: zeros, never on disk
    file_offset: int
    length: int


@dataclass(eq=False, slots=True)
class _Handle:
    """One open file; `users` threads are reading or writing it right now."""

    fd: int
    writable: bool
    users: int = 0
    # Dropped from the pool while in use: the last user closes it.
    retired: bool = False


class FilePool:
    """Open files shared by threads; the least recently used idle ones close past `capacity`."""

    def __init__(self, capacity: int = OPEN_FILES) -> None:
        if capacity < 1:
            raise ValueError(f"a file pool needs room for at least one file, not {capacity}")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._open: OrderedDict[Path, _Handle] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)

    @contextmanager
    def use(self, path: Path, *, write: bool) -> Iterator[int]:
        """Yield a descriptor of path (read-write if write) that stays open until the block ends."""
        handle = self._acquire(path, write)
        try:
            yield handle.fd
        finally:
            self._release(handle)

    @contextmanager
    def use_if_open(self, path: Path) -> Iterator[int | None]:
        """Like use(), but never opens a file nor waits for the lock: None if that would be."""
        handle = None
        if self._lock.acquire(blocking=False):
            try:
                handle = self._open.get(path)
                if handle is not None:
                    self._open.move_to_end(path)
                    handle.users += 1
            finally:
                self._lock.release()
        if handle is None:
            yield None
            return
        try:
            yield handle.fd
        finally:
            self._release(handle)

    def close(self) -> None:
        """Close every file; one in use closes as soon as its last user is done."""
        with self._lock:
            handles = list(self._open.values())
            self._open.clear()
            for handle in handles:
                self._retire(handle)

    def _acquire(self, path: Path, write: bool) -> _Handle:
        # Opening under the lock keeps one handle per path; an open is short next to the reads
        # and writes it serves.
        with self._lock:
            handle = self._open.get(path)
            if handle is None or (write and not handle.writable):
                # Files are opened read-only until the first write, so seeding works from
                # read-only data.
                fd = self._open_fd(path, write)
                if handle is not None:
                    self._retire(handle)
                handle = _Handle(fd, write)
                self._open[path] = handle
            self._open.move_to_end(path)
            handle.users += 1
            self._close_idle(len(self._open) - self.capacity)
            return handle

    def _release(self, handle: _Handle) -> None:
        with self._lock:
            handle.users -= 1
            if handle.retired:
                self._retire(handle)
            else:
                # Files in use when the pool overflowed are closed now that they may be idle.
                self._close_idle(len(self._open) - self.capacity)

    def _open_fd(self, path: Path, write: bool) -> int:
        flags = os.O_RDWR | os.O_CREAT if write else os.O_RDONLY
        try:
            return os.open(path, flags, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
        # The process is out of handles (others hold many): give back every idle one, once.
        self._close_idle(len(self._open))
        return os.open(path, flags, 0o644)

    def _close_idle(self, count: int) -> None:
        """Close up to count of the least recently used files that no thread is using."""
        if count <= 0:
            return
        idle = []
        for path, handle in self._open.items():
            if handle.users == 0:
                idle.append(path)
                if len(idle) == count:
                    break
        for path in idle:
            os.close(self._open.pop(path).fd)

    @staticmethod
    def _retire(handle: _Handle) -> None:
        handle.retired = True
        if handle.users == 0:
            os.close(handle.fd)


class PieceStorage:
    """Reads and writes pieces of one torrent below a download folder; safe to share by threads."""

    def __init__(self, torrent: Torrent, root: Path, *, open_files: int = OPEN_FILES) -> None:
        self.torrent = torrent
        self.root = root
        self.paths = [
            None if entry.padding else resolve_inside(root, entry.path) for entry in torrent.files
        ]
        self._starts = [entry.offset for entry in torrent.files]
        self._files = FilePool(open_files)
        self._folders: set[Path] = set()  # folders already made, so each costs one mkdir
        self._cache_lock = threading.Lock()
        self._cache: OrderedDict[int, bytearray] = OrderedDict()
        # Whether reads may ask for the page cache only (RWF_NOWAIT); off where unsupported.
        self._nowait = hasattr(os, "RWF_NOWAIT")

    def spans(self, offset: int, length: int) -> list[Span]:
        """The file pieces that the torrent byte range [offset, offset+length) covers."""
        return [
            Span(self.paths[index], file_offset, size)
            for index, file_offset, size in self._covered(offset, length)
        ]

    def _covered(self, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
        """(file index, offset in that file, length) of each file part the byte range covers."""
        files = self.torrent.files
        end = offset + length
        # The last file starting at or before offset is the first that can hold it.
        index = max(0, bisect.bisect_right(self._starts, offset) - 1)
        while index < len(files) and files[index].offset < end:
            entry = files[index]
            start = max(offset, entry.offset)
            stop = min(end, entry.offset + entry.length)
            if stop > start:
                yield index, start - entry.offset, stop - start
            index += 1

    def _make_folder(self, folder: Path) -> None:
        if folder not in self._folders:
            folder.mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)

    def allocate(self) -> None:
        """Create every file at its full size (sparse), so resume can check sizes cheaply."""
        try:
            for entry, path in zip(self.torrent.files, self.paths, strict=True):
                if path is None:
                    continue
                self._make_folder(path.parent)
                if not path.exists() or path.stat().st_size != entry.length:
                    with self._files.use(path, write=True) as fd:
                        os.ftruncate(fd, entry.length)
        except OSError as exc:
            raise self._error("prepare", exc) from None

    def write_piece(self, index: int, data: bytes | bytearray) -> None:
        """Write a verified piece to its files."""
        view = memoryview(data)
        done = 0
        try:
            for file_index, file_offset, length in self._covered(
                index * self.torrent.piece_length, len(data)
            ):
                path = self.paths[file_index]
                if path is not None:
                    self._make_folder(path.parent)
                    with self._files.use(path, write=True) as fd:
                        written = 0
                        while written < length:
                            chunk = view[done + written : done + length]
                            written += os.pwrite(fd, chunk, file_offset + written)
                done += length
        except OSError as exc:
            raise self._error("write", exc) from None
        with self._cache_lock:
            self._cache.pop(index, None)

    def read_piece(self, index: int) -> bytearray:
        """Read a whole piece from its files."""
        piece = self._read_piece(index, wait=True)
        assert piece is not None
        return piece

    def _read_piece(self, index: int, *, wait: bool) -> bytearray | None:
        """Read a piece; without wait, only from the page cache (None if not all there)."""
        size = self.torrent.piece_size(index)
        piece = bytearray(size)  # zeros: padding files are right as they are
        view = memoryview(piece)
        flags = 0 if wait else os.RWF_NOWAIT
        done = 0
        try:
            for span in self.spans(index * self.torrent.piece_length, size):
                if span.path is not None:
                    # Without wait, opening a file (a path lookup, maybe closing another) is
                    # left to a thread too.
                    opened = (
                        self._files.use(span.path, write=False)
                        if wait
                        else self._files.use_if_open(span.path)
                    )
                    with opened as fd:
                        if fd is None:
                            return None
                        got = os.preadv(
                            fd, [view[done : done + span.length]], span.file_offset, flags
                        )
                    if got != span.length:
                        if not wait:
                            return None  # partly in memory: a thread reads it all
                        raise StorageError(f"{span.path} is shorter than the torrent says")
                done += span.length
        except BlockingIOError:
            return None
        except OSError as exc:
            if not wait and exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                self._nowait = False  # this file system cannot tell: threads read everything
                return None
            raise self._error("read", exc) from None
        return piece

    def cached_block(self, index: int, begin: int, length: int) -> memoryview | None:
        """Part of a verified piece if it is in memory (our read cache, or the kernel's page
        cache, read with RWF_NOWAIT), else None: never waits for the disk."""
        with self._cache_lock:
            piece = self._cache.get(index)
            if piece is not None:
                self._cache.move_to_end(index)
        if piece is None and self._nowait:
            piece = self._read_piece(index, wait=False)
            if piece is not None:
                self._remember(index, piece)
        return None if piece is None else memoryview(piece)[begin : begin + length]

    def _remember(self, index: int, piece: bytearray) -> None:
        with self._cache_lock:
            self._cache[index] = piece
            self._cache.move_to_end(index)
            while len(self._cache) > READ_CACHE_PIECES:
                self._cache.popitem(last=False)

    def read_block(self, index: int, begin: int, length: int) -> memoryview:
        """Part of a verified piece, through a small cache of whole pieces; any thread may call."""
        block = self.cached_block(index, begin, length)
        if block is not None:
            return block
        # Read outside the lock: two threads may both read a missing piece, which is cheaper
        # than making every cache hit wait for a disk read.
        piece = self.read_piece(index)
        self._remember(index, piece)
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

    def recheck(
        self,
        candidates: Sequence[int] | None = None,
        workers: int = 2,
        stop: threading.Event | None = None,
    ) -> bytearray:
        """Hash the pieces already on disk, in parallel; returns which are good.

        Once stop is set, pieces being hashed finish and RecheckStopped is raised with the
        pieces verified so far (unchecked ones count as missing there).
        """
        num = self.torrent.num_pieces
        have = bytearray(num)
        if stop is None:
            stop = threading.Event()
        present = []
        for path in self.paths:
            if stop.is_set():
                raise RecheckStopped(have, 0, num)
            present.append(path is None or path.is_file())
        indexes = range(num) if candidates is None else candidates
        todo = iter([i for i in indexes if self._piece_files_present(i, present)])
        lock = threading.Lock()
        failed = threading.Event()  # one worker's unexpected error stops the others too
        checked = 0

        def check() -> None:
            nonlocal checked
            while not (stop.is_set() or failed.is_set()):
                with lock:
                    index = next(todo, None)
                if index is None:
                    return
                try:
                    have[index] = self.check_piece(index, self.read_piece(index))
                except StorageError:
                    have[index] = 0
                except BaseException:
                    failed.set()
                    raise
                with lock:
                    checked += 1

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shoal-check") as pool:
            for future in [pool.submit(check) for _ in range(workers)]:
                future.result()
        if next(todo, None) is not None:
            raise RecheckStopped(have, checked, num)
        return have

    def _piece_files_present(self, index: int, present: list[bool]) -> bool:
        offset = index * self.torrent.piece_length
        covered = self._covered(offset, self.torrent.piece_size(index))
        return all(present[file_index] for file_index, _, _ in covered)

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
        """Close every open file (one being read or written closes when that ends)."""
        self._files.close()
        with self._cache_lock:
            self._cache.clear()

    def _error(self, action: str, exc: OSError) -> StorageError:
        return storage_error(action, exc.filename or self.torrent.name, exc)


def storage_error(action: str, name: object, exc: OSError) -> StorageError:
    """The error to show for an OSError raised while trying to `action` the file name."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"the disk is full: cannot {action} {name}")
    return StorageError(f"cannot {action} {name}: {exc.strerror or exc}")
