"""One torrent's swarm as a sans-IO state machine: peer messages and time in, actions out."""

from __future__ import annotations

import contextlib
import random
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..addresses import Address
from ..wire import extensions as ext
from ..wire import messages as m
from ..wire.connection import PeerWire
from . import admission, bits
from .blame import Blame
from .budget import PEER_OUTPUT_HARD_LIMIT, PEER_REPLY_LIMIT, ReplyBudget
from .choker import CHOKE_INTERVAL, Candidate, Choker
from .metadata import MetadataAssembler, MetadataOutcome
from .picker import PiecePicker
from .ratelimit import Limits, TokenBucket
from .sources import PeerSources

if TYPE_CHECKING:
    from ..metainfo import Torrent

# Requests we keep in flight per peer are sized to this many seconds of its download rate.
REQUEST_QUEUE_SECONDS = 2.0
# A new peer starts with this many requests and gains one per block received (slow start,
# doubling each round trip) until its rate stops growing; then the rate sets the depth.
INITIAL_REQUEST_QUEUE = 16
# Requests are topped up once this many slots are free (or a quarter of the queue, if smaller).
REFILL_BATCH = 32
MAX_REQUEST_QUEUE = 1000
# What we assume of a peer that does not say how many requests it queues (reqq).
DEFAULT_PEER_REQUEST_QUEUE = 250
# A piece the peer rejected a request for rests this long before we ask that peer again.
REJECT_REST = 3.0
# How many requests we accept queued from one peer before calling it abusive.
MAX_UPLOAD_QUEUE = 2000
SNUB_TIMEOUT = 30.0
IDLE_TIMEOUT = 180.0
HANDSHAKE_TIMEOUT = 20.0
# A connection we dialled counts as useful (the back-off resets) after trading or this long.
USEFUL_CONNECTION = 60.0
KEEP_ALIVE_INTERVAL = 90.0
PEX_INTERVAL = 60.0
RATE_INTERVAL = 1.0
HASH_FAILURES_BEFORE_BAN = 2
MAX_WASTED_BYTES = 8 * 1024 * 1024
MAX_REMEMBERED_PEERS = 1000
# How many times over a peer may have the whole metadata sent to it.
METADATA_REPEATS = 3
# Haves a peer may send before we know how many pieces there are.
MAX_PENDING_HAVES = 1 << 16


def ban_key(address: Address) -> Address | str:
    """What a ban covers: the IP, or on loopback (where local peers share one IP) the address."""
    host = address[0]
    return address if host.startswith("127.") or host == "::1" else host


@dataclass(frozen=True, slots=True)
class VerifyPiece:
    """Hash this complete piece off the event loop; on success write it, then report back."""

    index: int
    data: bytearray


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """Read a block of a verified piece and send it to the peer."""

    peer: int
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class ClosePeer:
    """Drop this connection; `ban` keeps the peer out for good."""

    peer: int
    reason: str
    ban: bool = False


@dataclass(frozen=True, slots=True)
class ConnectTo:
    """Dial this address; report back with add_peer(dialled=...) or dial_failed."""

    address: Address
    encrypted: bool = False  # open with the MSE handshake


@dataclass(frozen=True, slots=True)
class MetadataReady:
    """The info dictionary arrived and matches the info-hash."""

    info_bytes: bytes


@dataclass(frozen=True, slots=True)
class Completed:
    """Every piece is verified."""


Action = VerifyPiece | ReadBlock | ClosePeer | ConnectTo | MetadataReady | Completed


@dataclass(slots=True)
class SwarmConfig:
    """Tunables of one swarm."""

    client: str = "shoal"
    listen_port: int | None = None
    upload_slots: int = 4
    max_peers: int = 60
    private: bool = False
    encryption: str = "prefer"  # see sources.ENCRYPTION_POLICIES


@dataclass(slots=True)
class Peer:
    """What we know about one connected peer."""

    key: int
    wire: PeerWire
    address: Address
    outgoing: bool
    connected_at: float
    dialled: Address | None = None  # the source this connection was dialled from
    listen_address: Address | None = None
    handshaken: bool = False
    am_choking: bool = True
    am_interested: bool = False
    peer_choking: bool = True
    peer_interested: bool = False
    has: bytearray | None = None
    # Before the metadata arrives, what the peer announced is kept as it came.
    pending_bitfield: bytes | None = None
    pending_all: bool | None = None
    pending_haves: set[int] = field(default_factory=set)
    extensions: ext.ExtensionHandshake = field(default_factory=ext.ExtensionHandshake)
    outstanding: dict[tuple[int, int], float] = field(default_factory=dict)
    # Pieces the peer rejected a request for, and when we may ask it for them again.
    resting: dict[int, float] = field(default_factory=dict)
    upload_queue: deque[tuple[int, int, int]] = field(default_factory=deque)
    # Bytes queued for the peer that it has not read yet (as the adapter last reported).
    unsent: int = 0
    metadata_sent: int = 0  # bytes of metadata pieces sent
    downloaded: int = 0
    uploaded: int = 0
    download_rate: float = 0.0
    request_depth: int = INITIAL_REQUEST_QUEUE
    slow_start: bool = True
    upload_rate: float = 0.0
    window_down: int = 0
    window_up: int = 0
    wasted: int = 0
    last_block: float = 0.0
    last_payload: float = float("-inf")  # when a block last went either way
    last_received: float = 0.0
    last_sent: float = 0.0
    unchoked_since: float | None = None
    waiting_since: float = 0.0
    strikes: int = 0
    pex_sent: set[Address] = field(default_factory=set)
    last_pex: float = 0.0
    last_pex_received: float = float("-inf")

    @property
    def is_seed(self) -> bool:
        """Whether the peer has every piece."""
        return self.has is not None and all(self.has)


class Swarm:
    """Drives the peers of one torrent; the adapter feeds it bytes and time, and runs actions."""

    def __init__(
        self,
        info_hash: bytes,
        peer_id: bytes,
        torrent: Torrent | None,
        have: bytearray | None,
        *,
        config: SwarmConfig | None = None,
        upload_limits: Limits | None = None,
        download_limits: Limits | None = None,
        reply_budget: ReplyBudget | None = None,
        own_addresses: set[Address] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.info_hash = info_hash
        self.peer_id = peer_id
        self.config = config or SwarmConfig()
        self.rng = rng or random.Random()
        self.upload_limits = upload_limits or Limits(TokenBucket(None), TokenBucket(None))
        self.download_limits = download_limits or Limits(TokenBucket(None), TokenBucket(None))
        self.reply_budget = reply_budget or ReplyBudget()
        self.sources = PeerSources(own_addresses, self.config.encryption)
        self.peers: dict[int, Peer] = {}
        self.dirty: set[int] = set()
        self.actions: list[Action] = []
        self.choker = Choker(self.config.upload_slots, self.rng)
        self.banned_ids: set[bytes] = set()
        self.banned_addresses: set[Address | str] = set()  # see ban_key
        self.downloaded = 0
        self.uploaded = 0
        self.end_game = False
        self._next_key = 0
        self._last_choke = float("-inf")
        self._last_rates: float | None = None
        self.torrent: Torrent | None = None
        self.picker: PiecePicker | None = None
        self.metadata = MetadataAssembler(info_hash)
        self._closed_totals: dict[Address, tuple[int, int]] = {}
        self.blame = Blame()
        if torrent is not None:
            self._attach(torrent, have if have is not None else bytearray(torrent.num_pieces))

    # -- state the adapter and the CLI read -------------------------------------------------------

    @property
    def complete(self) -> bool:
        """Whether every piece is verified."""
        return self.picker is not None and self.picker.done

    @property
    def have_count(self) -> int:
        """How many pieces are verified."""
        return 0 if self.picker is None else sum(self.picker.have)

    def transfer_totals(self) -> dict[Address, tuple[int, int]]:
        """Payload bytes (downloaded from, uploaded to) per peer address, past peers included."""
        totals = dict(self._closed_totals)
        for peer in self.peers.values():
            address = peer.listen_address or peer.address
            down, up = totals.get(address, (0, 0))
            totals[address] = (down + peer.downloaded, up + peer.uploaded)
        return totals

    def take_actions(self) -> list[Action]:
        """Hand the pending actions to the adapter."""
        actions = self.actions
        self.actions = []
        return actions

    def take_dirty(self) -> set[int]:
        """Keys of peers whose wire has bytes to send."""
        dirty = self.dirty
        self.dirty = set()
        return dirty

    def is_banned(self, address: Address) -> bool:
        """Whether we refuse this address."""
        return ban_key(address) in self.banned_addresses

    # -- peers ------------------------------------------------------------------------------------

    def add_sources(self, addresses: list[Address], *, given: bool, now: float) -> None:
        """Addresses to dial: given ones (by the user) for as long as we run, learned ones once."""
        for address in addresses:
            if not self.is_banned(address):
                self.sources.add(address, given=given, now=now)
        self._dial(now)

    def dial_failed(self, address: Address, now: float, *, connected: bool = False) -> None:
        """A ConnectTo did not reach the peer, or (connected) it hung up during MSE."""
        if connected:
            self.sources.closed(address, now, useful=False, handshaken=False)
        else:
            self.sources.failed(address, now)

    def _dial(self, now: float) -> None:
        room = self.config.max_peers - len(self.peers)
        if room <= 0 or not self.sources.sources:
            return  # the common case in a big swarm: nothing to work out
        connected = {p.listen_address for p in self.peers.values()}
        connected.update(p.dialled for p in self.peers.values())
        for address in self.sources.due(now, room=room, seeding=self.complete, skip=connected):
            self.actions.append(ConnectTo(address, self.sources.encrypted(address)))

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
        if outgoing:
            wire.send_handshake(self.info_hash)
            self._mark(peer, now)
        if wire.remote is not None:
            self._on_handshake(peer, wire.remote, now)
        return key

    def _admit(self, address: Address, now: float, *, may_evict: bool) -> bool:
        """Whether a new connection from address gets a slot, evicting an idle peer if need be."""
        group = admission.address_group(address[0])
        same_group = sum(
            1 for peer in self.peers.values() if admission.address_group(peer.address[0]) == group
        )
        if same_group >= admission.per_address_limit(address[0]):
            return False
        if len(self.peers) < self.config.max_peers:
            return True
        if not may_evict:
            return False
        victim = admission.eviction_candidate(
            (self._standing(peer) for peer in self.peers.values()), now
        )
        if victim is None:
            return False
        self._close(self.peers[victim], "made room for another peer", now=now)
        return True

    @staticmethod
    def _standing(peer: Peer) -> admission.Standing:
        interested = peer.am_interested or peer.peer_interested
        return admission.Standing(peer.key, peer.connected_at, peer.last_payload, interested)

    def remove_peer(self, key: int, now: float) -> None:
        """Forget a closed connection and return its requests to the pool."""
        peer = self.peers.pop(key, None)
        if peer is None:
            return
        self._release_all(peer)
        self.reply_budget.change(-peer.unsent)
        if peer.dialled is not None:
            useful = bool(peer.downloaded or peer.uploaded) or (
                now - peer.connected_at >= USEFUL_CONNECTION
            )
            self.sources.closed(peer.dialled, now, useful=useful, handshaken=peer.handshaken)
        if self.torrent is None:
            self.metadata.forget(key)
        address = peer.listen_address or peer.address
        down, up = self._closed_totals.pop(address, (0, 0))
        self._closed_totals[address] = (down + peer.downloaded, up + peer.uploaded)
        if len(self._closed_totals) > MAX_REMEMBERED_PEERS:
            del self._closed_totals[next(iter(self._closed_totals))]
        if self.picker is not None and peer.has is not None:
            self.picker.remove_peer_pieces(peer.has)
        self.dirty.discard(key)

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

    def _close(self, peer: Peer, reason: str, ban: bool = False, *, now: float) -> None:
        if ban:
            self.banned_addresses.add(ban_key(peer.address))
            if peer.listen_address is not None:
                self.banned_addresses.add(ban_key(peer.listen_address))
            if peer.dialled is not None:
                self.sources.remove(peer.dialled)
            if peer.wire.remote is not None:
                self.banned_ids.add(peer.wire.remote.peer_id)
        self.actions.append(ClosePeer(peer.key, reason, ban))
        self.remove_peer(peer.key, now)

    def _mark(self, peer: Peer, now: float) -> None:
        peer.last_sent = now
        self.dirty.add(peer.key)

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
        count = sum(have) if have is not None else 0
        if wire.supports_fast:
            if have is not None and count == len(have):
                wire.send_simple(m.HAVE_ALL)
            elif count == 0:
                wire.send_simple(m.HAVE_NONE)
            else:
                wire.send_bitfield(bits.to_wire(have))  # type: ignore[arg-type]
        elif count:
            wire.send_bitfield(bits.to_wire(have))  # type: ignore[arg-type]

    # -- messages ---------------------------------------------------------------------------------

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
        # KeepAlive, Port (no DHT yet), SuggestPiece and AllowedFast need no action here.

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

    def _on_interested(self, peer: Peer, now: float) -> None:
        if peer.peer_interested:
            return
        peer.peer_interested = True
        peer.waiting_since = now
        if self.picker is not None and self._unchoked_count() < self.choker.slots:
            self._unchoke(peer, now)

    # -- downloading ------------------------------------------------------------------------------

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
        chosen = picker.next_blocks(peer.has, outstanding, room)
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

    def _release_all(self, peer: Peer) -> None:
        if self.picker is not None:
            for index, block in peer.outstanding:
                self.picker.release(index, block)
        peer.outstanding.clear()

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
                if peer.handshaken and not peer.is_seed:
                    peer.wire.send_have(index)
                    self._mark(peer, now)
            if picker.done:
                self.actions.append(Completed())
                for peer in list(self.peers.values()):
                    if peer.is_seed:
                        self._close(peer, "both sides are seeds", now=now)
                    else:
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

    # -- uploading --------------------------------------------------------------------------------

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

    def _queued(self, peer: Peer, size: int) -> None:
        peer.unsent += size
        self.reply_budget.change(size)

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

    # -- extensions -------------------------------------------------------------------------------

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

    def _attach(self, torrent: Torrent, have: bytearray) -> None:
        self.torrent = torrent
        sizes = [torrent.piece_size(i) for i in range(torrent.num_pieces)]
        self.picker = PiecePicker(sizes, have, self.rng)

    # -- time -------------------------------------------------------------------------------------

    def tick(self, now: float) -> float:
        """Periodic work (rates, choking, timeouts, keep-alives, PEX); returns when to wake."""
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
        wakes = [now + RATE_INTERVAL]
        for limits in (self.upload_limits, self.download_limits):
            wake = limits.wake_time(now)
            if wake is not None:
                wakes.append(wake)
        return min(wakes)

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
