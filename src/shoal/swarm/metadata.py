"""Fetching a torrent's info dictionary from peers (BEP 9), for magnet links."""

from __future__ import annotations

import enum
import hashlib
from collections import Counter

from ..wire.extensions import MAX_METADATA_SIZE, METADATA_PIECE_SIZE

# A metadata piece not answered in this long may be asked of another peer.
REQUEST_TIMEOUT = 10.0


class MetadataOutcome(enum.Enum):
    """What one received metadata piece led to."""

    IGNORED = enum.auto()  # not asked for, wrong size, or the metadata is already complete
    STORED = enum.auto()
    COMPLETE = enum.auto()  # `info` now holds the verified info dictionary
    MISMATCH = enum.auto()  # all pieces arrived but do not hash to the info-hash


class MetadataAssembler:
    """Collects metadata pieces and checks the whole against the info-hash."""

    def __init__(self, info_hash: bytes) -> None:
        self.info_hash = info_hash
        self.info: bytes | None = None
        self.sizes: dict[int, int] = {}  # peer -> the metadata size it announced
        self.size: int | None = None
        self.pieces: dict[int, bytes] = {}
        self.asked: dict[int, tuple[int, float]] = {}  # piece -> (peer, when)
        self.sources: set[int] = set()
        self.silent: set[int] = set()  # peers that let a request time out

    @property
    def num_pieces(self) -> int:
        """How many 16 KiB pieces the metadata has (0 while its size is unknown)."""
        if self.size is None:
            return 0
        return (self.size + METADATA_PIECE_SIZE - 1) // METADATA_PIECE_SIZE

    def offer_size(self, peer: int, size: int) -> None:
        """A peer announced the metadata size; the size most peers agree on is used."""
        if 0 < size <= MAX_METADATA_SIZE:
            self.sizes[peer] = size
        if self.size is None:
            self._choose_size()

    def _choose_size(self) -> None:
        counts = Counter(self.sizes.values())
        self.size = counts.most_common(1)[0][0] if counts else None

    def next_request(self, peer: int, now: float) -> int | None:
        """A piece to ask this peer for, or None; a peer is asked one piece at a time."""
        if self.info is not None or self.size is None or peer not in self.sizes:
            return None
        for piece, (asker, when) in list(self.asked.items()):
            if now - when >= REQUEST_TIMEOUT:
                # It did not answer in time: ask others from now on.
                self.silent.add(asker)
                del self.asked[piece]
        if peer in self.silent:
            return None
        if self.sizes[peer] != self.size:
            if self.pieces or self.asked:
                return None
            # Nobody answers for the size we chose: believe this peer's size instead.
            self.size = self.sizes[peer]
            self.asked.clear()
        if any(asker == peer for asker, _when in self.asked.values()):
            return None
        for piece in range(self.num_pieces):
            if piece not in self.pieces and piece not in self.asked:
                self.asked[piece] = (peer, now)
                return piece
        return None

    def rejected(self, piece: int) -> None:
        """A peer declined a piece; someone else may be asked."""
        self.asked.pop(piece, None)

    def receive(self, peer: int, piece: int, total_size: int, data: bytes) -> MetadataOutcome:
        """Store a piece this peer was asked for, and check the whole once it is complete."""
        asked = self.asked.get(piece)
        if self.info is not None or asked is None or asked[0] != peer:
            return MetadataOutcome.IGNORED
        if self.size is None or total_size != self.size:
            return MetadataOutcome.IGNORED
        expected = min(METADATA_PIECE_SIZE, self.size - piece * METADATA_PIECE_SIZE)
        if len(data) != expected:
            return MetadataOutcome.IGNORED
        self.pieces[piece] = data
        del self.asked[piece]
        self.sources.add(peer)
        if len(self.pieces) < self.num_pieces:
            return MetadataOutcome.STORED
        info = b"".join(self.pieces[i] for i in range(self.num_pieces))
        if hashlib.sha1(info).digest() == self.info_hash:
            self.info = info
            return MetadataOutcome.COMPLETE
        # Someone sent wrong data or a wrong size; start over without the peers involved.
        self.pieces.clear()
        for source in self.sources:
            self.sizes.pop(source, None)
        self._choose_size()
        return MetadataOutcome.MISMATCH

    def take_sources(self) -> set[int]:
        """The peers whose pieces made up the last attempt; forgets them."""
        sources = self.sources
        self.sources = set()
        return sources

    def forget(self, peer: int) -> None:
        """A peer left."""
        self.sizes.pop(peer, None)
        if self.size not in self.sizes.values() and not self.pieces:
            self._choose_size()
