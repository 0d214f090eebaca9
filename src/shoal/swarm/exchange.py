"""Exchanges beside the pieces: the metadata (BEP 9) and peer exchange (BEP 11)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..wire import extensions as ext
from ..wire import messages as m
from . import bits
from .budget import PEER_OUTPUT_HARD_LIMIT, PEER_REPLY_LIMIT
from .metadata import MetadataOutcome
from .state import (
    METADATA_REPEATS,
    PEX_INTERVAL,
    MetadataReady,
    Peer,
)

if TYPE_CHECKING:
    from ..metainfo import Torrent
from .downloads import Downloads


class Exchange(Downloads):
    """Metadata fetched and served over ut_metadata, peers traded over ut_pex."""

    def _on_extended(self, peer: Peer, event: m.Extended, now: float) -> None:
        if event.extension_id == 0:
            peer.extensions = ext.parse_handshake(event.payload)
            if not peer.outgoing and peer.extensions.listen_port:
                peer.listen_address = (peer.address[0], peer.extensions.listen_port)
            if self.torrent is None and peer.extensions.metadata_size:
                self.metadata.offer_size(peer.key, peer.extensions.metadata_size)
                self._request_metadata(peer, now)
            return
        if event.extension_id == ext.LOCAL_IDS[ext.UT_METADATA]:
            self._on_metadata(peer, ext.parse_metadata(event.payload), now)
        elif event.extension_id == ext.LOCAL_IDS[ext.UT_PEX] and not self.config.private:
            # BEP 11 allows one message a minute; more is noise or an attempt to flood us.
            if now - peer.last_pex_received < PEX_INTERVAL / 2:
                return
            peer.last_pex_received = now
            added, _dropped = ext.parse_pex(event.payload)
            self.add_sources(added, given=False, now=now)

    def _request_metadata(self, peer: Peer, now: float) -> None:
        remote_id = peer.extensions.ids.get(ext.UT_METADATA)
        if not remote_id or self.torrent is not None:
            return
        piece = self.metadata.next_request(peer.key, now)
        if piece is not None:
            message = ext.MetadataMessage(ext.METADATA_REQUEST, piece)
            peer.wire.send_extended(remote_id, ext.encode_metadata(message))
            self._mark(peer, now)

    def _on_metadata(self, peer: Peer, message: ext.MetadataMessage, now: float) -> None:
        remote_id = peer.extensions.ids.get(ext.UT_METADATA)
        if message.kind == ext.METADATA_REQUEST:
            if remote_id:
                self._serve_metadata(peer, remote_id, message.piece, now)
            return
        if self.torrent is not None:
            return
        if message.kind == ext.METADATA_REJECT:
            self.metadata.rejected(message.piece)
            return
        outcome = self.metadata.receive(
            peer.key, message.piece, message.total_size or 0, message.data
        )
        if outcome is MetadataOutcome.COMPLETE:
            assert self.metadata.info is not None
            self.actions.append(MetadataReady(self.metadata.info))
        elif outcome is MetadataOutcome.MISMATCH:
            for key in self.metadata.take_sources():
                if key in self.peers:
                    self._close(
                        self.peers[key], "sent metadata that does not match the info-hash", now=now
                    )
        for other in list(self.peers.values()):
            self._request_metadata(other, now)

    def _serve_metadata(self, peer: Peer, remote_id: int, piece: int, now: float) -> None:
        info = self.torrent.info_bytes if self.torrent is not None else b""
        # Asking again for a piece that was slow to come is fair (Transmission does after
        # 3 s); asking for the whole metadata over and over, or while holding pieces, is not.
        if peer.metadata_sent >= METADATA_REPEATS * max(1, len(info)) or (
            peer.has is not None and any(peer.has)
        ):
            raise m.ProtocolError("the peer asks for metadata it already has")
        if peer.unsent >= PEER_OUTPUT_HARD_LIMIT:
            raise m.ProtocolError("the peer keeps asking and does not read the replies")
        start = piece * ext.METADATA_PIECE_SIZE
        busy = peer.unsent >= PEER_REPLY_LIMIT or not self.reply_budget.room()
        if start < len(info) and not busy:
            chunk = info[start : start + ext.METADATA_PIECE_SIZE]
            reply = ext.MetadataMessage(ext.METADATA_DATA, piece, len(info), chunk)
            peer.metadata_sent += len(chunk)
        else:
            reply = ext.MetadataMessage(ext.METADATA_REJECT, piece)
        payload = ext.encode_metadata(reply)
        peer.wire.send_extended(remote_id, payload)
        self._queued(peer, len(payload) + 6)
        self._mark(peer, now)

    def attach_metadata(self, torrent: Torrent, have: bytearray, now: float) -> None:
        """Start downloading pieces once the adapter has parsed the fetched metadata."""
        if self.torrent is not None:
            return
        self._attach(torrent, have)
        for peer in list(self.peers.values()):
            if peer.pending_bitfield is not None:
                try:
                    peer.has = bits.from_wire(peer.pending_bitfield, torrent.num_pieces)
                except m.ProtocolError as exc:
                    self._close(peer, str(exc), now=now)
                    continue
            elif peer.pending_all is not None:
                peer.has = bytearray(
                    b"\x01" * torrent.num_pieces if peer.pending_all else torrent.num_pieces
                )
            else:
                peer.has = bytearray(torrent.num_pieces)
            for index in peer.pending_haves:
                if index < torrent.num_pieces:
                    peer.has[index] = 1
            peer.pending_bitfield = None
            peer.pending_haves.clear()
            if peer.handshaken:
                for index, held in enumerate(have):
                    if held:
                        peer.wire.send_have(index)
            self._mark(peer, now)
            self._adopt_pieces(peer, now)

    def _send_pex(self, peer: Peer, now: float) -> None:
        remote_id = peer.extensions.ids.get(ext.UT_PEX)
        if not remote_id:
            return
        peer.last_pex = now
        current = {
            p.listen_address for p in self.peers.values() if p.listen_address and p is not peer
        }
        added = sorted(current - peer.pex_sent)
        dropped = sorted(peer.pex_sent - current)
        if not added and not dropped:
            return
        peer.pex_sent = current
        peer.wire.send_extended(remote_id, ext.encode_pex(added, dropped))
        self._mark(peer, now)
