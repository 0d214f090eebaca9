"""Bytes of replies queued for peers that have not read them yet, bounded per node."""

from __future__ import annotations

# Replies (blocks, metadata, rejects) queued for one peer before we wait for it to read.
PEER_REPLY_LIMIT = 4 * 1024 * 1024
# Beyond this much unread output a peer is not slow but hostile: it is dropped.
PEER_OUTPUT_HARD_LIMIT = 4 * PEER_REPLY_LIMIT
# Replies queued for all the peers of a node together.
NODE_REPLY_LIMIT = 64 * 1024 * 1024
# An adapter tells the core when a peer's send buffer, once past the high mark, has drained
# below the low one (as asyncio's resume_writing does), and refreshes every figure each tick.
WRITE_BUFFER_HIGH = PEER_REPLY_LIMIT // 2
WRITE_BUFFER_LOW = PEER_REPLY_LIMIT // 8


class ReplyBudget:
    """Counts bytes queued for sending across every torrent of a node; shared like a bucket."""

    def __init__(self, limit: int = NODE_REPLY_LIMIT) -> None:
        self.limit = limit
        self.used = 0

    def room(self) -> bool:
        """Whether more replies may be queued now."""
        return self.used < self.limit

    def change(self, delta: int) -> None:
        """Account for bytes queued (positive) or gone out (negative)."""
        self.used = max(0, self.used + delta)
