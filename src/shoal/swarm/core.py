"""One torrent's swarm as a sans-IO state machine: peer messages and time in, actions out.

The swarm is layered by concern, each layer a module: base (peers, dialling, slots) ←
downloads (requests, pieces) ← exchange (metadata, PEX) ← uploads (serving, choking) ← this
module (handshakes, message dispatch, time).
"""

from __future__ import annotations

import contextlib

from ..addresses import Address
from ..wire import extensions as ext
from ..wire import messages as m
from ..wire.connection import PeerWire
from . import admission, bits
from .choker import CHOKE_INTERVAL
from .state import (
    HANDSHAKE_TIMEOUT,
    IDLE_TIMEOUT,
    KEEP_ALIVE_INTERVAL,
    MAX_PENDING_HAVES,
    MAX_REQUEST_QUEUE,
    MAX_UPLOAD_QUEUE,
    METADATA_REPEATS,
    PEX_INTERVAL,
    RATE_INTERVAL,
    REJECT_REST,
    SNUB_TIMEOUT,
    Action,
    ClosePeer,
    Completed,
    ConnectTo,
    MetadataReady,
    NeedPeers,
    Peer,
    ReadBlock,
    Send,
    SwarmConfig,
    VerifyPiece,
)
from .uploads import Uploads

# What the adapter, the simulator and tests name as core.X.
__all__ = [
    "MAX_PENDING_HAVES",
    "MAX_REQUEST_QUEUE",
    "METADATA_REPEATS",
    "REJECT_REST",
    "Action",
    "ClosePeer",
    "Completed",
    "ConnectTo",
    "MetadataReady",
    "NeedPeers",
    "ReadBlock",
    "Send",
    "Swarm",
    "SwarmConfig",
    "VerifyPiece",
]


class Swarm(Uploads):
    """Drives the peers of one torrent; the adapter feeds it bytes and time, and runs actions."""

    def add_peer(
        self,
        wire: PeerWire,
        address: Address,
        outgoing: bool,
        now: float,
        *,
        dialled: Address | None = None,
    ) -> int | None:
        """Register a connection, or refuse it (None) when it would take a slot it may not.

        For an incoming connection the wire has already read the handshake; `dialled` is the
        source a ConnectTo named.
        """
        if dialled is not None:
            self.sources.connected(dialled)
        remote = wire.remote
        # A banned peer, or this node itself, must not push out a peer to make room.
        unwelcome = remote is not None and (
            remote.peer_id in self.banned_ids or remote.peer_id == self.peer_id
        )
        if not self._admit(address, now, may_evict=not unwelcome):
            if dialled is not None:
                self.sources.failed(dialled, now)
            return None
        key = self._next_key
        self._next_key += 1
        peer = Peer(key, wire, address, outgoing, connected_at=now, last_received=now)
        peer.dialled = dialled
        peer.waiting_since = now
        if outgoing:
            peer.listen_address = address
        self.peers[key] = peer
        self._groups[admission.address_group(address[0])] += 1
        # The newcomer itself may be evicted once its grace ends, maybe before the others.
        self._no_eviction_before = min(self._no_eviction_before, now + admission.EVICTION_GRACE)
        if outgoing:
            wire.send_handshake(self.info_hash)
            self._mark(peer, now)
        if wire.remote is not None:
            self._on_handshake(peer, wire.remote, now)
        return key

    def receive(self, key: int, data: bytes, now: float) -> None:
        """Bytes arrived from a peer."""
        peer = self.peers.get(key)
        if peer is None:
            return
        peer.last_received = now
        try:
            events = peer.wire.receive(data)
        except m.ProtocolError as exc:
            self._close(peer, str(exc), now=now)
            return
        self._process(peer, events, now)

    def handle_events(self, key: int, events: list[m.Event], now: float) -> None:
        """Events the adapter already parsed (the first bytes of an incoming connection)."""
        peer = self.peers.get(key)
        if peer is not None:
            # add_peer has already dealt with the handshake.
            self._process(peer, [e for e in events if not isinstance(e, m.Handshake)], now)

    def _process(self, peer: Peer, events: list[m.Event], now: float) -> None:
        try:
            for event in events:
                self._handle(peer, event, now)
                if peer.key not in self.peers:
                    return
        except m.ProtocolError as exc:
            self._close(peer, str(exc), now=now)
            return
        # Requests are served once per read, not one by one: far less work per block.
        if peer.upload_queue:
            self._serve(peer, now)

    def _on_handshake(self, peer: Peer, handshake: m.Handshake, now: float) -> None:
        if handshake.peer_id == self.peer_id:
            # A tracker or peer handed us our own address: never dial it again. The accepting
            # end answers with its handshake, so the dialling end learns it too.
            if not peer.wire.handshake_sent:
                peer.wire.send_handshake(self.info_hash)
            if peer.dialled is not None:
                self.sources.mark_self(peer.dialled)
            self.sources.mark_self(peer.address)
            self._close(peer, "connected to ourselves", now=now)
            return
        if handshake.peer_id in self.banned_ids:
            self._close(peer, "the peer is banned", now=now)
            return
        peer.handshaken = True
        wire = peer.wire
        if not wire.handshake_sent:
            wire.send_handshake(self.info_hash)
        if wire.supports_extensions:
            metadata_size = len(self.torrent.info_bytes) if self.torrent else None
            wire.send_extended(
                0,
                ext.encode_handshake(
                    listen_port=self.config.listen_port,
                    metadata_size=metadata_size,
                    request_queue=MAX_UPLOAD_QUEUE,
                    client=self.config.client,
                ),
            )
        self._send_have_state(peer)
        self._mark(peer, now)

    def _send_have_state(self, peer: Peer) -> None:
        wire = peer.wire
        have = self.picker.have if self.picker else None
        count = self.picker.have_count if self.picker else 0
        if wire.supports_fast:
            if have is not None and count == len(have):
                wire.send_simple(m.HAVE_ALL)
            elif count == 0:
                wire.send_simple(m.HAVE_NONE)
            else:
                wire.send_bitfield(bits.to_wire(have))  # type: ignore[arg-type]
        elif count:
            wire.send_bitfield(bits.to_wire(have))  # type: ignore[arg-type]

    def _handle(self, peer: Peer, event: m.Event, now: float) -> None:
        if isinstance(event, m.Piece):
            self._on_piece(peer, event, now)
        elif isinstance(event, m.Request):
            self._on_request(peer, event, now)
        elif isinstance(event, m.Have):
            self._on_have(peer, event.index, now)
        elif isinstance(event, m.Handshake):
            self._on_handshake(peer, event, now)
        elif isinstance(event, m.Bitfield | m.HaveAll | m.HaveNone):
            self._on_bitfield(peer, event, now)
        elif isinstance(event, m.Unchoke):
            peer.peer_choking = False
            self._fill_requests(peer, now)
        elif isinstance(event, m.Choke):
            peer.peer_choking = True
            # With the fast extension a choke cancels nothing (BEP 6): the peer rejects what
            # it will not send, and sends the rest; asking others at once would fetch it twice.
            if not peer.wire.supports_fast:
                self._release_all(peer)
        elif isinstance(event, m.Interested):
            self._on_interested(peer, now)
        elif isinstance(event, m.NotInterested):
            peer.peer_interested = False
            if not peer.am_choking:
                self._choke(peer, now)
                self._fill_free_slots(now)
        elif isinstance(event, m.Cancel):
            with contextlib.suppress(ValueError):
                peer.upload_queue.remove((event.index, event.begin, event.length))
        elif isinstance(event, m.RejectRequest):
            self._on_reject(peer, event, now)
        elif isinstance(event, m.Extended):
            self._on_extended(peer, event, now)

    def get_timer(self) -> float:
        """When handle_timer should run next (it may run earlier; at start, at once)."""
        return self._timer_at

    def handle_timer(self, now: float) -> None:
        """Periodic work: rates, choking, timeouts, keep-alives, PEX, dials; sets the next timer."""
        if self._last_rates is None or now - self._last_rates >= RATE_INTERVAL:
            elapsed = RATE_INTERVAL if self._last_rates is None else now - self._last_rates
            self._last_rates = now
            for peer in self.peers.values():
                previous = peer.download_rate
                peer.download_rate = 0.5 * peer.download_rate + 0.5 * peer.window_down / elapsed
                self._adjust_depth(peer, previous)
                peer.upload_rate = 0.5 * peer.upload_rate + 0.5 * peer.window_up / elapsed
                peer.window_down = peer.window_up = 0
        if self.picker is not None and now - self._last_choke >= CHOKE_INTERVAL:
            self._last_choke = now
            self._run_choker(now)
        for peer in list(self.peers.values()):
            self._tick_peer(peer, now)
        self._serve_waiting(now)
        self._dial(now)
        if not self.complete and not self.peers and not self.sources.dialling():
            self.actions.append(NeedPeers())
        wakes = [now + RATE_INTERVAL]
        for limits in (self.upload_limits, self.download_limits):
            wake = limits.wake_time(now)
            if wake is not None:
                wakes.append(wake)
        self._timer_at = min(wakes)

    def _tick_peer(self, peer: Peer, now: float) -> None:
        if now - peer.last_received > IDLE_TIMEOUT:
            self._close(peer, "the peer went silent", now=now)
            return
        if not peer.handshaken and now - peer.connected_at > HANDSHAKE_TIMEOUT:
            self._close(peer, "the peer sent no handshake", now=now)
            return
        if peer.resting:
            self._wake_rested(peer, now)
        if (
            peer.outstanding
            and now - max(peer.last_block, min(peer.outstanding.values())) > SNUB_TIMEOUT
        ):
            # The peer sits on our requests; let others have those blocks.
            self._release_all(peer)
        if self.torrent is None:
            self._request_metadata(peer, now)
        else:
            self._fill_requests(peer, now)
        if now - peer.last_sent > KEEP_ALIVE_INTERVAL:
            peer.wire.send_keep_alive()
            self._mark(peer, now)
        if not self.config.private and now - peer.last_pex >= PEX_INTERVAL:
            self._send_pex(peer, now)
