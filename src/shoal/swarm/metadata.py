"""Fetching a torrent's info dictionary from peers (BEP 9), for magnet links."""

from __future__ import annotations

import hashlib

from ..wire.extensions import MAX_METADATA_SIZE, METADATA_PIECE_SIZE

# A metadata piece not answered in this long may be asked of another peer.
REQUEST_TIMEOUT = 10.0


class MetadataAssembler:
    """Collects metadata pieces and checks the whole against the info-hash."""

    def __init__(self, info_hash: bytes) -> None:
        self.info_hash = info_hash
        self.size: int | None = None
        self.pieces: dict[int, bytes] = {}
        self.asked: dict[int, tuple[int, float]] = {}  # piece -> (peer, when)
        self.sources: set[int] = set()

    @property
    def num_pieces(self) -> int:
        """How many 16 KiB pieces the metadata has (0 while its size is unknown)."""
        return (
            0 if self.size is None else (self.size + METADATA_PIECE_SIZE - 1) // METADATA_PIECE_SIZE
        )

    def offer_size(self, size: int) -> None:
        """A peer announced the metadata size; the first plausible one is used."""
        if self.size is None and 0 < size <= MAX_METADATA_SIZE:
            self.size = size

    def next_request(self, peer: int, now: float) -> int | None:
        """A piece to ask this peer for, or None; a peer is asked one piece at a time."""
        if any(
            asker == peer and now - when < REQUEST_TIMEOUT for asker, when in self.asked.values()
        ):
            return None
        for piece in range(self.num_pieces):
            if piece in self.pieces:
                continue
            asked = self.asked.get(piece)
            if asked is None or now - asked[1] >= REQUEST_TIMEOUT:
                self.asked[piece] = (peer, now)
                return piece
        return None

    def rejected(self, piece: int) -> None:
        """A peer declined a piece; someone else may be asked."""
        self.asked.pop(piece, None)

    def receive(self, peer: int, piece: int, total_size: int, data: bytes) -> bytes | None:
        """Store a piece; returns the verified info bytes once all have arrived and match."""
        if self.size is None or total_size != self.size or piece >= self.num_pieces:
            return None
        expected = min(METADATA_PIECE_SIZE, self.size - piece * METADATA_PIECE_SIZE)
        if len(data) != expected:
            return None
        self.pieces[piece] = data
        self.asked.pop(piece, None)
        self.sources.add(peer)
        if len(self.pieces) < self.num_pieces:
            return None
        info = b"".join(self.pieces[i] for i in range(self.num_pieces))
        if hashlib.sha1(info).digest() == self.info_hash:
            return info
        # Someone sent wrong data; start over rather than guess who.
        self.pieces.clear()
        return b""
