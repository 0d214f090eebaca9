"""Downloading: what peers have, interest, the request pipeline, pieces in and verified."""

from __future__ import annotations

from ..wire import messages as m
from . import bits
from .base import SwarmBase
from .state import (
    DEFAULT_PEER_REQUEST_QUEUE,
    HASH_FAILURES_BEFORE_BAN,
    INITIAL_REQUEST_QUEUE,
    MAX_PENDING_HAVES,
    MAX_REQUEST_QUEUE,
    MAX_WASTED_BYTES,
    REFILL_BATCH,
    REJECT_REST,
    REQUEST_QUEUE_SECONDS,
    Completed,
    Peer,
    VerifyPiece,
)


class Downloads(SwarmBase):
    """What peers have, our interest, requests out and blocks in."""

    def _on_reject(self, peer: Peer, reject: m.RejectRequest, now: float) -> None:
        key = (reject.index, reject.begin // m.BLOCK_SIZE)
        picker = self.picker
        if picker is None or peer.outstanding.pop(key, None) is None:
            return
        picker.release(*key)
        # A peer rejects a piece it has when it is busy (a full request queue, a slow disk):
        # the piece rests for that peer a while, so others are asked first, then it is
        # asked again. Treating it as absent for good stalls a download with one source.
        index = reject.index
        if peer.has is not None and peer.has[index] and index not in peer.resting:
            peer.has[index] = 0
            picker.availability[index] -= 1
            peer.resting[index] = now + REJECT_REST

    def _wake_rested(self, peer: Peer, now: float) -> None:
        assert self.picker is not None and peer.has is not None
        for index, until in list(peer.resting.items()):
            if until <= now:
                del peer.resting[index]
                if not peer.has[index]:
                    peer.has[index] = 1
                    self.picker.add_have(index)

    def _on_bitfield(self, peer: Peer, event: m.Message, now: float) -> None:
        if self.torrent is None:
            if isinstance(event, m.Bitfield):
                peer.pending_bitfield = event.bits
            else:
                peer.pending_all = isinstance(event, m.HaveAll)
            return
        num = self.torrent.num_pieces
        if isinstance(event, m.Bitfield):
            pieces = bits.from_wire(event.bits, num)
        else:
            pieces = bytearray(b"\x01" * num if isinstance(event, m.HaveAll) else num)
        if peer.has is not None:
            # Some clients send haves before, or a bitfield after, have_none: keep the union.
            assert self.picker is not None
            self.picker.remove_peer_pieces(peer.has)
            pieces = bytearray(a | b for a, b in zip(pieces, peer.has, strict=True))
        peer.has = pieces
        self._adopt_pieces(peer, now)

    def _adopt_pieces(self, peer: Peer, now: float) -> None:
        assert self.picker is not None and peer.has is not None
        self.picker.add_peer_pieces(peer.has)
        if self.complete and peer.is_seed:
            self._close(peer, "both sides are seeds", now=now)
            return
        self._update_interest(peer, now)

    def _on_have(self, peer: Peer, index: int, now: float) -> None:
        if self.torrent is None:
            if len(peer.pending_haves) >= MAX_PENDING_HAVES:
                raise m.ProtocolError("too many have messages before the metadata")
            peer.pending_haves.add(index)
            return
        if index >= self.torrent.num_pieces:
            raise m.ProtocolError(f"have for piece {index}, past the last piece")
        if peer.has is None:
            peer.has = bytearray(self.torrent.num_pieces)
        if peer.has[index]:
            return
        peer.has[index] = 1
        peer.resting.pop(index, None)
        assert self.picker is not None
        self.picker.add_have(index)
        if self.complete:
            if peer.is_seed:
                self._close(peer, "both sides are seeds", now=now)
            return
        if not peer.am_interested and not self.picker.have[index]:
            peer.am_interested = True
            peer.wire.send_simple(m.INTERESTED)
            self._mark(peer, now)
        elif peer.am_interested and not peer.peer_choking:
            self._fill_requests(peer, now)

    def _update_interest(self, peer: Peer, now: float) -> None:
        if self.picker is None or peer.has is None:
            return
        wants = self.picker.needs_any(peer.has)
        if wants != peer.am_interested:
            peer.am_interested = wants
            peer.wire.send_simple(m.INTERESTED if wants else m.NOT_INTERESTED)
            self._mark(peer, now)

    def _request_depth(self, peer: Peer) -> int:
        reqq = peer.extensions.request_queue or DEFAULT_PEER_REQUEST_QUEUE
        # Some clients reject the request that fills their queue (Transmission rejects the
        # 512th of its reqq 512): keep an eighth of it free.
        limit = min(MAX_REQUEST_QUEUE, max(1, reqq - max(1, reqq // 8)))
        return min(peer.request_depth, limit)

    def _adjust_depth(self, peer: Peer, previous_rate: float) -> None:
        if peer.slow_start:
            if peer.download_rate > 0 and peer.download_rate < previous_rate * 1.1:
                peer.slow_start = False
            return
        wanted = int(peer.download_rate * REQUEST_QUEUE_SECONDS / m.BLOCK_SIZE)
        peer.request_depth = max(INITIAL_REQUEST_QUEUE, min(wanted, MAX_REQUEST_QUEUE))

    def _fill_requests(self, peer: Peer, now: float) -> None:
        picker = self.picker
        if picker is None or peer.peer_choking or peer.has is None or not peer.am_interested:
            return
        depth = self._request_depth(peer)
        outstanding = peer.outstanding
        room = depth - len(outstanding)
        # Top up in batches, not one request per block received: far less work per block.
        if room < min(REFILL_BATCH, max(1, depth // 4)) and outstanding:
            return
        limits = self.download_limits
        allowance = limits.allowance(now)
        if allowance < float("inf"):
            room = min(room, -(-int(allowance) // m.BLOCK_SIZE))
        if room <= 0:
            return
        chosen = picker.next_blocks(peer.has, outstanding, room, now=now)
        if not chosen:
            return
        wire = peer.wire
        partials = picker.partials
        total = 0
        for index, block in chosen:
            partial = partials[index]
            length = partial.block_length(block)
            if partial.in_flight[block] > 1:
                self.end_game = True
            wire.send_request(index, block * m.BLOCK_SIZE, length)
            outstanding[index, block] = now
            total += length
        limits.consume(total, now)
        self._mark(peer, now)

    def _on_piece(self, peer: Peer, piece: m.Piece, now: float) -> None:
        picker = self.picker
        if picker is None:
            raise m.ProtocolError("the peer sent a block before we had the metadata")
        length = len(piece.data)
        if picker.expected_block_length(piece.index, piece.begin) != length:
            raise m.ProtocolError(
                f"block at piece {piece.index} offset {piece.begin} has the wrong size {length}"
            )
        key = (piece.index, piece.begin // m.BLOCK_SIZE)
        outstanding = peer.outstanding
        asked = outstanding.pop(key, None) is not None
        peer.window_down += length
        peer.last_block = peer.last_payload = now
        partial = picker.receive(piece.index, piece.begin, piece.data, peer.key)
        if partial is None:
            peer.wasted += length
            if not asked and peer.wasted > MAX_WASTED_BYTES:
                raise m.ProtocolError("the peer keeps sending blocks nobody asked for")
        else:
            peer.downloaded += length
            self.downloaded += length
            if peer.slow_start and peer.request_depth < MAX_REQUEST_QUEUE:
                peer.request_depth += 1
            if self.end_game:
                self._cancel_duplicates(peer, key, length, now)
            if partial.complete:
                self.blame.checking(partial.index, partial.senders, partial.buffer)
                self.actions.append(VerifyPiece(partial.index, partial.buffer))
        # The cheap test first: most blocks leave the queue deep enough to need no top-up.
        if len(outstanding) + REFILL_BATCH <= self._request_depth(peer) or not outstanding:
            self._fill_requests(peer, now)

    def _cancel_duplicates(
        self, receiver: Peer, key: tuple[int, int], length: int, now: float
    ) -> None:
        for other in self.peers.values():
            if other is not receiver and other.outstanding.pop(key, None) is not None:
                other.wire.send_cancel(key[0], key[1] * m.BLOCK_SIZE, length)
                self._mark(other, now)

    def piece_checked(self, index: int, ok: bool, now: float) -> None:
        """The adapter hashed (and, if good, wrote) a piece."""
        picker = self.picker
        if picker is None:
            return
        picker.verified(index, ok)
        if ok:
            for key in self.blame.passed(index):
                self._strike(key, HASH_FAILURES_BEFORE_BAN, now)
            for peer in self.peers.values():
                # No have to a peer that has the piece (seeds included): it could not want
                # it from us, and haves are most of a swarm's messages. Once we are done,
                # those held back are sent (below).
                has = peer.has
                if peer.handshaken and not (has is not None and has[index]):
                    peer.wire.send_have(index)
                    self._mark(peer, now)
            if picker.done:
                self.actions.append(Completed())
                for peer in list(self.peers.values()):
                    if peer.is_seed:
                        self._close(peer, "both sides are seeds", now=now)
                        continue
                    # The haves held back (the peer had those pieces) go now, so it sees
                    # a seed in us, and closes when it completes too.
                    if peer.handshaken and peer.has is not None:
                        for held, had in enumerate(peer.has):
                            if had:
                                peer.wire.send_have(held)
                        self._mark(peer, now)
                    self._update_interest(peer, now)
            return
        for key in self.blame.failed(index):
            self._strike(key, 1, now)
        for peer in list(self.peers.values()):
            self._fill_requests(peer, now)

    def _strike(self, key: int, count: int, now: float) -> None:
        peer = self.peers.get(key)
        if peer is None:
            return
        peer.strikes += count
        if peer.strikes >= HASH_FAILURES_BEFORE_BAN:
            self._close(peer, "sent data that failed verification", ban=True, now=now)
