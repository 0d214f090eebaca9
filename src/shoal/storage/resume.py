"""Resume data: which pieces were verified, so a restart re-downloads and re-hashes nothing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .. import bencode
from . import files


def state_dir() -> Path:
    """shoal's state folder, per the XDG base directory spec."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "shoal"


class ResumeFile:
    """The resume record of one torrent in one download folder."""

    def __init__(self, info_hash: bytes, root: Path, folder: Path | None = None) -> None:
        # Keyed by folder too: the same torrent may be downloaded to two places.
        where = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
        self.path = (folder or state_dir() / "resume") / f"{info_hash.hex()}-{where}.resume"
        self.info_hash = info_hash

    def load(self, storage: files.PieceStorage) -> bytearray | None:
        """The verified pieces, if the record exists and every file still has its full size."""
        try:
            record = bencode.decode(self.path.read_bytes())
        except (OSError, bencode.BencodeError):
            return None
        num = storage.torrent.num_pieces
        if (
            not isinstance(record, dict)
            or record.get(b"info-hash") != self.info_hash
            or not isinstance(record.get(b"pieces"), bytes)
            or len(record[b"pieces"]) != num
        ):
            return None
        have = bytearray(record[b"pieces"])
        sizes = storage.file_sizes()
        for entry, size in zip(storage.torrent.files, sizes, strict=True):
            if size != entry.length:
                # A file went missing or was truncated: forget the pieces that touch it.
                first = entry.offset // storage.torrent.piece_length
                last = (entry.offset + max(entry.length, 1) - 1) // storage.torrent.piece_length
                have[first : last + 1] = bytes(last + 1 - first)
        return bytearray(min(1, b) for b in have)

    def save(self, have: bytearray) -> None:
        """Write the record atomically, so a crash mid-save leaves the previous one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_bytes(
            bencode.encode({b"info-hash": self.info_hash, b"pieces": bytes(have)})
        )
        os.replace(temporary, self.path)
