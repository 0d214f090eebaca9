"""Resume data: which pieces were verified, so a restart re-downloads and re-hashes nothing.

The record (bencode, replaced atomically) is saved now and then; between saves each verified
piece is appended to a journal beside it, so a killed process loses no verified piece.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from pathlib import Path

from .. import bencode
from . import files

# A journal entry: one verified piece index, big-endian like the wire.
_ENTRY = struct.Struct(">I")
_JOURNAL_CHUNK = 64 * 1024  # a whole number of entries
# Room for the record's keys around its one byte per piece.
_RECORD_OVERHEAD = 1024


def state_dir() -> Path:
    """shoal's state folder, per the XDG base directory spec."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "shoal"


class ResumeFile:
    """The resume record of one torrent in one download folder, and its journal."""

    def __init__(self, info_hash: bytes, root: Path, folder: Path | None = None) -> None:
        # Keyed by folder too: the same torrent may be downloaded to two places.
        where = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
        self.path = (folder or state_dir() / "resume") / f"{info_hash.hex()}-{where}.resume"
        self.journal_path = self.path.with_name(self.path.name + ".journal")
        self.info_hash = info_hash
        # Guards the journal: record_piece runs in worker threads, save may run in another.
        self._lock = threading.Lock()
        self._journal: int | None = None
        self._journaled: set[int] = set()  # since the record was last saved

    def load(self, storage: files.PieceStorage) -> bytearray | None:
        """The verified pieces, if the record exists and every file still has its full size."""
        num = storage.torrent.num_pieces
        try:
            with open(self.path, "rb") as file:
                record = bencode.decode(file.read(num + _RECORD_OVERHEAD + 1))
        except (OSError, bencode.BencodeError):
            record = None
        if (
            not isinstance(record, dict)
            or record.get(b"info-hash") != self.info_hash
            or not isinstance(record.get(b"pieces"), bytes)
            or len(record[b"pieces"]) != num
        ):
            # A journal without its record says nothing trustworthy.
            self._drop_journal()
            return None
        have = bytearray(min(1, b) for b in record[b"pieces"])
        self._read_journal(have)
        forgotten = False
        for entry, size in zip(storage.torrent.files, storage.file_sizes(), strict=True):
            if size != entry.length:
                # A file went missing or was truncated: forget the pieces that touch it.
                first = entry.offset // storage.torrent.piece_length
                last = (entry.offset + max(entry.length, 1) - 1) // storage.torrent.piece_length
                forgotten = forgotten or any(have[first : last + 1])
                have[first : last + 1] = bytes(len(have[first : last + 1]))
        if forgotten:
            # Saved now: once the files are allocated again, their sizes would look right.
            self.save(have)
        return have

    def record_piece(self, index: int) -> None:
        """Append a verified piece to the journal: one small write, callable from any thread."""
        if not 0 <= index < 2**32:
            raise ValueError(f"no piece can have the index {index}")
        entry = _ENTRY.pack(index)
        with self._lock:
            try:
                if self._journal is None:
                    self._journal = self._open_journal()
                done = 0
                while done < len(entry):
                    done += os.write(self._journal, entry[done:])
            except OSError as exc:
                raise files.storage_error(
                    "record a verified piece in", self.journal_path, exc
                ) from None
            self._journaled.add(index)

    def save(self, have: bytearray) -> None:
        """Write the record atomically (with the journaled pieces), then empty the journal."""
        with self._lock:
            pieces = bytearray(have)
            for index in self._journaled:
                if index < len(pieces):
                    pieces[index] = 1
            record = bencode.encode({b"info-hash": self.info_hash, b"pieces": bytes(pieces)})
            temporary = self.path.with_suffix(".tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                temporary.write_bytes(record)
                os.replace(temporary, self.path)
                # Only now: a crash before the replace leaves the old record and the journal.
                if self._journal is not None:
                    os.ftruncate(self._journal, 0)
                else:
                    self.journal_path.unlink(missing_ok=True)
            except OSError as exc:
                raise files.storage_error("save the resume record", self.path, exc) from None
            self._journaled.clear()

    def close(self) -> None:
        """Close the journal; record_piece opens it again if called later."""
        with self._lock:
            if self._journal is not None:
                os.close(self._journal)
                self._journal = None

    def _open_journal(self) -> int:
        self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        # Cut a torn last entry, so the entries after it stay aligned.
        size = os.fstat(fd).st_size
        if size % _ENTRY.size:
            os.ftruncate(fd, size - size % _ENTRY.size)
        return fd

    def _read_journal(self, have: bytearray) -> None:
        """Mark the pieces the journal names; indexes beyond the torrent's are ignored."""
        with self._lock:
            try:
                with open(self.journal_path, "rb") as journal:
                    while chunk := journal.read(_JOURNAL_CHUNK):
                        whole = len(chunk) - len(chunk) % _ENTRY.size  # a torn last entry
                        for (index,) in _ENTRY.iter_unpack(chunk[:whole]):
                            if index < len(have):
                                have[index] = 1
            except OSError:
                return

    def _drop_journal(self) -> None:
        with self._lock:
            self._journaled.clear()
            try:
                if self._journal is not None:
                    os.ftruncate(self._journal, 0)
                else:
                    self.journal_path.unlink(missing_ok=True)
            except OSError:
                pass  # not fatal: the journal is ignored without a valid record
