"""Uploading: requests served only as the peer reads, choking and unchoking."""

from __future__ import annotations

from ..wire import messages as m
from .budget import PEER_OUTPUT_HARD_LIMIT, PEER_REPLY_LIMIT
from .choker import Candidate
from .exchange import Exchange
from .state import (
    MAX_UPLOAD_QUEUE,
    Peer,
    ReadBlock,
)


class Uploads(Exchange):
    """Serving requests as peers read, and choosing whom to unchoke."""

    def _on_interested(self, peer: Peer, now: float) -> None:
        if peer.peer_interested:
            return
        peer.peer_interested = True
        peer.waiting_since = now
        if self.picker is not None and self._unchoked_count() < self.choker.slots:
            self._unchoke(peer, now)

    def _on_request(self, peer: Peer, request: m.Request, now: float) -> None:
        torrent = self.torrent
        if torrent is None or self.picker is None:
            self._reject(peer, request, now)
            return
        if request.index >= torrent.num_pieces or (
            request.begin + request.length > torrent.piece_size(request.index)
        ):
            raise m.ProtocolError(f"request past the end of piece {request.index}")
        if peer.am_choking or not self.picker.have[request.index]:
            self._reject(peer, request, now)
            return
        if len(peer.upload_queue) >= MAX_UPLOAD_QUEUE:
            raise m.ProtocolError("the peer has too many requests queued")
        peer.upload_queue.append((request.index, request.begin, request.length))

    def _reject(self, peer: Peer, request: m.Request, now: float) -> None:
        # Rejects are output too. A slow peer choked with requests in flight is owed them;
        # one that keeps asking while choked and never reads cannot pile them up for ever.
        if peer.unsent >= PEER_OUTPUT_HARD_LIMIT:
            raise m.ProtocolError("the peer keeps asking and does not read the replies")
        if peer.wire.send_reject(request.index, request.begin, request.length):
            self._queued(peer, m.BLOCK_REF_MESSAGE_LENGTH)
        self._mark(peer, now)

    def _serve(self, peer: Peer, now: float, limit: int | None = None) -> None:
        """Turn queued requests into reads, only as far as the peer reads what we send."""
        limits = self.upload_limits
        budget = self.reply_budget
        queue = peer.upload_queue
        served = 0
        while (
            queue
            and peer.unsent < PEER_REPLY_LIMIT
            and budget.room()
            and limits.available(now)
            and (limit is None or served < limit)
        ):
            index, begin, length = queue.popleft()
            limits.consume(length, now)
            peer.uploaded += length
            peer.window_up += length
            self.uploaded += length
            self._queued(peer, length + m.PIECE_HEADER_LENGTH)
            self.actions.append(ReadBlock(peer.key, index, begin, length))
            served += 1
        if served:
            peer.last_payload = now
        peer.last_sent = now

    def _serve_waiting(self, now: float) -> None:
        """Share what the upload limit allows among queued peers, a block each in turn."""
        waiting = [
            p
            for p in self.peers.values()
            if p.upload_queue and p.unsent < PEER_REPLY_LIMIT and not p.am_choking
        ]
        self.rng.shuffle(waiting)
        while waiting and self.upload_limits.available(now) and self.reply_budget.room():
            for peer in waiting:
                self._serve(peer, now, limit=1)
            waiting = [p for p in waiting if p.upload_queue and p.unsent < PEER_REPLY_LIMIT]

    def send_block(self, key: int, index: int, begin: int, data: bytes) -> None:
        """The adapter read the block a ReadBlock asked for: queue it for the peer."""
        peer = self.peers.get(key)
        if peer is not None:
            peer.wire.send_piece(index, begin, data)
            self.dirty.add(key)

    def flushed(self, key: int, unsent: int, now: float) -> None:
        """The adapter wrote a peer's output; `unsent` bytes of it (and of reads in progress)
        still wait for the peer to read them."""
        peer = self.peers.get(key)
        if peer is None:
            return
        # Blocks queued since the adapter took the peer's output are unsent too.
        unsent += peer.wire.queued_bytes
        self.reply_budget.change(unsent - peer.unsent)
        peer.unsent = unsent
        if unsent > PEER_OUTPUT_HARD_LIMIT:
            self._close(peer, "the peer does not read what we send", now=now)
        elif peer.upload_queue and not peer.am_choking:
            self._serve(peer, now)

    def _unchoked_count(self) -> int:
        return sum(1 for peer in self.peers.values() if not peer.am_choking)

    def _unchoke(self, peer: Peer, now: float) -> None:
        peer.am_choking = False
        peer.unchoked_since = now
        peer.wire.send_simple(m.UNCHOKE)
        self._mark(peer, now)

    def _choke(self, peer: Peer, now: float) -> None:
        peer.am_choking = True
        peer.unchoked_since = None
        peer.waiting_since = now
        peer.wire.send_simple(m.CHOKE)
        for index, begin, length in peer.upload_queue:
            peer.wire.send_reject(index, begin, length)
        peer.upload_queue.clear()
        self._mark(peer, now)

    def _fill_free_slots(self, now: float) -> None:
        free = self.choker.slots - self._unchoked_count()
        waiting = sorted(
            (p for p in self.peers.values() if p.peer_interested and p.am_choking),
            key=lambda p: p.waiting_since,
        )
        for peer in waiting[: max(0, free)]:
            self._unchoke(peer, now)

    def _run_choker(self, now: float) -> None:
        candidates = [
            Candidate(p.key, p.download_rate, p.unchoked_since, p.waiting_since, p.connected_at)
            for p in self.peers.values()
            if p.peer_interested and p.handshaken
        ]
        chosen = self.choker.choose(candidates, self.complete, now)
        for peer in list(self.peers.values()):
            if peer.key in chosen and peer.am_choking:
                self._unchoke(peer, now)
            elif peer.key not in chosen and not peer.am_choking:
                self._choke(peer, now)
