"""Who sent bad data: when a piece mixing several peers' blocks fails its hash, each block's
digest is kept, and once the piece passes, the peers whose blocks differed are known liars."""

from __future__ import annotations

import hashlib

from ..wire.messages import BLOCK_SIZE


class Blame:
    """Attributes hash failures to peers, exactly where it can."""

    def __init__(self) -> None:
        self._checking: dict[int, tuple[dict[int, int], bytearray]] = {}
        self._suspects: dict[
            int, list[tuple[int, int, bytes]]
        ] = {}  # piece -> (block, peer, digest)

    def checking(self, index: int, senders: dict[int, int], data: bytearray) -> None:
        """A piece went to verification with these block senders."""
        self._checking[index] = (senders, data)

    def failed(self, index: int) -> set[int]:
        """The piece failed; returns the peers certainly at fault (the sole sender, if one)."""
        senders, data = self._checking.pop(index, ({}, bytearray()))
        if len(set(senders.values())) == 1:
            return set(senders.values())
        records = self._suspects.setdefault(index, [])
        for block, peer in senders.items():
            chunk = data[block * BLOCK_SIZE : (block + 1) * BLOCK_SIZE]
            records.append((block, peer, hashlib.sha1(chunk).digest()))
        return set()

    def passed(self, index: int) -> set[int]:
        """The piece passed; returns the peers that earlier sent blocks differing from it."""
        _senders, data = self._checking.pop(index, ({}, bytearray()))
        liars = set()
        for block, peer, digest in self._suspects.pop(index, []):
            chunk = data[block * BLOCK_SIZE : (block + 1) * BLOCK_SIZE]
            if hashlib.sha1(chunk).digest() != digest:
                liars.add(peer)
        return liars
