"""The swarm's shared state: peers, whom to dial, who gets a slot, closing connections."""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING

from ..addresses import Address
from . import admission
from .blame import Blame
from .budget import ReplyBudget
from .choker import Choker
from .metadata import MetadataAssembler
from .picker import PiecePicker
from .ratelimit import Limits, TokenBucket
from .sources import PeerSources
from .state import (
    MAX_REMEMBERED_PEERS,
    USEFUL_CONNECTION,
    Action,
    ClosePeer,
    ConnectTo,
    Peer,
    Send,
    SwarmConfig,
    ban_key,
)

if TYPE_CHECKING:
    from ..metainfo import Torrent


class SwarmBase:
    """The state every part of a swarm works on, and connecting and closing peers."""

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
        self._groups: Counter[str] = Counter()  # connected peers per address group
        self._no_eviction_before = float("-inf")  # see _admit
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
        self._timer_at = float("-inf")  # see get_timer
        self.torrent: Torrent | None = None
        self.picker: PiecePicker | None = None
        self.metadata = MetadataAssembler(info_hash)
        self._closed_totals: dict[Address, tuple[int, int]] = {}
        self.blame = Blame()
        if torrent is not None:
            self._attach(torrent, have if have is not None else bytearray(torrent.num_pieces))

    @property
    def complete(self) -> bool:
        """Whether every piece is verified."""
        return self.picker is not None and self.picker.done

    @property
    def have_count(self) -> int:
        """How many pieces are verified."""
        return 0 if self.picker is None else self.picker.have_count

    def verified_bytes(self) -> int:
        """Bytes of the verified pieces (0 while the metadata is unknown)."""
        picker, torrent = self.picker, self.torrent
        if picker is None or torrent is None:
            return 0
        done = picker.have_count * torrent.piece_length
        last = len(picker.have) - 1
        if last >= 0 and picker.have[last]:
            done -= torrent.piece_length - torrent.piece_size(last)
        return done

    def verified_pieces(self) -> bytearray | None:
        """A copy of which pieces are verified; None while the metadata is unknown."""
        return None if self.picker is None else bytearray(self.picker.have)

    def transfer_totals(self) -> dict[Address, tuple[int, int]]:
        """Payload bytes (downloaded from, uploaded to) per peer address, past peers included."""
        totals = dict(self._closed_totals)
        for peer in self.peers.values():
            address = peer.listen_address or peer.address
            down, up = totals.get(address, (0, 0))
            totals[address] = (down + peer.downloaded, up + peer.uploaded)
        return totals

    def check_invariants(self) -> None:
        """Raise AssertionError if the swarm's bookkeeping contradicts itself (for tests)."""
        picker = self.picker
        if picker is not None:
            picker.check()
            counted = [0] * len(picker.availability)
            for peer in self.peers.values():
                for index, held in enumerate(peer.has or ()):
                    counted[index] += held
            assert counted == picker.availability, "availability differs from what peers hold"
            for peer in self.peers.values():
                for index, block in peer.outstanding:
                    partial = picker.partials.get(index)
                    assert (
                        partial is None or block in partial.in_flight or (block in partial.received)
                    ), f"request for piece {index} block {block} is not in flight"
        assert self.reply_budget.used >= sum(peer.unsent for peer in self.peers.values())
        groups = Counter(admission.address_group(peer.address[0]) for peer in self.peers.values())
        assert self._groups == groups, "peers per address group miscounted"

    def take_outputs(self) -> list[Action]:
        """Everything the core asks of the adapter, in order: its actions, then the bytes
        queued for each peer (gathered here, so many messages leave in one write)."""
        outputs = self.actions
        self.actions = []
        for key in self.dirty:
            data = self.peers[key].wire.data_to_send()
            if data:
                outputs.append(Send(key, data))
        self.dirty.clear()
        return outputs

    def is_banned(self, address: Address) -> bool:
        """Whether we refuse this address."""
        return ban_key(address) in self.banned_addresses

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

    def _admit(self, address: Address, now: float, *, may_evict: bool) -> bool:
        """Whether a new connection from address gets a slot, evicting an idle peer if need be."""
        group = admission.address_group(address[0])
        if self._groups[group] >= admission.per_address_limit(address[0]):
            return False
        if len(self.peers) < self.config.max_peers:
            return True
        if not may_evict or now < self._no_eviction_before:
            return False
        standings = [self._standing(peer) for peer in self.peers.values()]
        victim = admission.eviction_candidate(standings, now)
        if victim is None:
            # Newcomers to a full swarm come often: spare them the search until one may go.
            self._no_eviction_before = admission.earliest_eviction(standings)
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
        group = admission.address_group(peer.address[0])
        self._groups[group] -= 1
        if not self._groups[group]:
            del self._groups[group]  # a long-running node meets addresses without end
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

    def _close(self, peer: Peer, reason: str, ban: bool = False, *, now: float) -> None:
        if ban:
            self.banned_addresses.add(ban_key(peer.address))
            if peer.listen_address is not None:
                self.banned_addresses.add(ban_key(peer.listen_address))
            if peer.dialled is not None:
                self.sources.remove(peer.dialled)
            if peer.wire.remote is not None:
                self.banned_ids.add(peer.wire.remote.peer_id)
        # Last words (a handshake, rejects) leave before the connection closes.
        last_words = peer.wire.data_to_send()
        if last_words:
            self.actions.append(Send(peer.key, last_words))
        self.actions.append(ClosePeer(peer.key, reason, ban))
        self.remove_peer(peer.key, now)

    def _mark(self, peer: Peer, now: float) -> None:
        peer.last_sent = now
        self.dirty.add(peer.key)

    def _queued(self, peer: Peer, size: int) -> None:
        peer.unsent += size
        self.reply_budget.change(size)

    def _release_all(self, peer: Peer) -> None:
        if self.picker is not None:
            for index, block in peer.outstanding:
                self.picker.release(index, block)
        peer.outstanding.clear()

    def _attach(self, torrent: Torrent, have: bytearray) -> None:
        self.torrent = torrent
        sizes = [torrent.piece_size(i) for i in range(torrent.num_pieces)]
        self.picker = PiecePicker(sizes, have, self.rng)
