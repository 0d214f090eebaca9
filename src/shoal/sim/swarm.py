"""Swarm cores wired together in memory, on a virtual clock: the same code as on the wire.

Every core's timer is an event; each node's bytes leave through its uplink (bandwidth shared by
its connections) and arrive a latency later; nothing polls.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..addresses import Address
from ..metainfo import Torrent, parse_info
from ..swarm import core
from ..swarm.ratelimit import Limits, TokenBucket
from ..wire.connection import PeerWire
from .kernel import EventQueue, Link

LATENCY = 0.005


@dataclass(eq=False)
class SimPeer:
    """One simulated node holding one torrent; data is kept only if asked (tests compare it)."""

    name: str
    address: Address
    swarm: core.Swarm
    data: bytearray | None  # the torrent's bytes; pieces not yet verified are garbage
    uplink: Link
    links: dict[int, tuple[SimPeer, int]] = field(default_factory=dict)
    # Bytes each connection has queued on the uplink that have not left yet (its "unsent").
    queued: dict[int, int] = field(default_factory=dict)
    metadata_ready: bytes | None = None
    alive: bool = True
    joined_at: float = 0.0
    completed_at: float | None = None


class SimNetwork:
    """Nodes, links between them and one event queue for everything that happens."""

    def __init__(
        self,
        torrent: Torrent,
        content: bytes,
        seed: int = 1,
        latency: float = LATENCY,
        upload: float | None = None,
    ) -> None:
        self.torrent = torrent
        self.content = content
        self.latency = latency
        self.upload = upload  # bytes per second each node sends; None: unlimited
        self.events = EventQueue(start=1000.0)
        self.peers: list[SimPeer] = []
        self.by_address: dict[Address, SimPeer] = {}
        self.rng = random.Random(seed)
        self.incomplete = 0  # live nodes still missing pieces
        self.arrivals_pending = 0  # nodes yet to join (see arrive_at)
        self.bytes_moved = 0
        self.peak_connections = 0  # the most connections one node held at once

    @property
    def now(self) -> float:
        """The virtual time."""
        return self.events.now

    def add(
        self,
        name: str,
        *,
        complete: bool,
        with_metadata: bool = True,
        corrupt: bool = False,
        upload_limit: int | None = None,
        download_limit: int | None = None,
        keep_data: bool = True,
    ) -> SimPeer:
        """A node that starts with all pieces or none; a corrupt one serves flipped bits."""
        num = self.torrent.num_pieces
        have = bytearray(b"\x01" * num if complete else num)
        data = None
        if keep_data or corrupt:
            data = bytearray(self.content if complete else len(self.content))
            if corrupt:
                data = bytearray(b ^ 0xFF for b in data)
        number = len(self.peers)
        swarm = core.Swarm(
            self.torrent.info_hash,
            f"-SIM000-{number:012d}".encode(),
            self.torrent if with_metadata else None,
            have if with_metadata else None,
            config=core.SwarmConfig(listen_port=7000),
            upload_limits=Limits(TokenBucket(upload_limit), TokenBucket(None)),
            download_limits=Limits(TokenBucket(download_limit), TokenBucket(None)),
            rng=random.Random(self.rng.random()),
        )
        address = (f"10.{number // 62500}.{number // 250 % 250}.{number % 250 + 1}", 7000)
        uplink = Link(self.latency, self.upload)
        peer = SimPeer(name, address, swarm, data, uplink, joined_at=self.now)
        self.peers.append(peer)
        self.by_address[address] = peer
        if not swarm.complete:
            self.incomplete += 1
        self._tick(peer)
        return peer

    def arrive_at(self, when: float, join: Callable[[], None]) -> None:
        """Schedule a node's arrival; runs wait for every scheduled one."""
        self.arrivals_pending += 1

        def arrive() -> None:
            self.arrivals_pending -= 1
            join()

        self.events.at(when, arrive)

    def connect(self, a: SimPeer, b: SimPeer, dialled: Address | None = None) -> None:
        """Open a connection from a to b (dialled: the ConnectTo it answers); either may refuse."""
        wire_a = PeerWire(self.torrent.info_hash, a.swarm.peer_id)
        wire_b = PeerWire(None, b.swarm.peer_id)
        key_a = a.swarm.add_peer(wire_a, b.address, True, self.now, dialled=dialled)
        if key_a is None:
            self.settle(a)
            return
        # b learns of the connection once a's handshake arrives; give it the wire up front.
        first = b"".join(wire_a.data_to_send())
        events = wire_b.receive(first)
        key_b = b.swarm.add_peer(wire_b, a.address, False, self.now)
        if key_b is None:
            a.swarm.remove_peer(key_a, self.now)
            self.settle(a)
            self.settle(b)
            return
        a.links[key_a] = (b, key_b)
        b.links[key_b] = (a, key_a)
        b.swarm.handle_events(key_b, events, self.now)
        self.settle(a)
        self.settle(b)
        self.peak_connections = max(self.peak_connections, len(a.links), len(b.links))

    def leave(self, peer: SimPeer) -> None:
        """The node goes away: every connection of it closes."""
        if not peer.alive:
            return
        peer.alive = False
        if not peer.swarm.complete:
            self.incomplete -= 1
        del self.by_address[peer.address]
        for key, (other, other_key) in list(peer.links.items()):
            peer.swarm.remove_peer(key, self.now)
            self._unlink(other, other_key)
        peer.links.clear()

    def run(self, until: float = 600.0) -> float:
        """Run until every live node is complete or until seconds pass; returns elapsed seconds."""
        start = self.now
        self.events.run(start + until, lambda: self.incomplete == 0 and not self.arrivals_pending)
        return self.now - start

    # -- the runner: what node.py does with sockets, done in memory ---------------------------

    def _tick(self, peer: SimPeer) -> None:
        """The core's timer: one chain of these per node, each at the time the last asked for."""
        if not peer.alive:
            return
        peer.swarm.handle_timer(self.now)
        wake = peer.swarm.get_timer()
        self.settle(peer)
        self.events.at(wake, lambda: self._tick(peer))

    def settle(self, peer: SimPeer) -> None:
        """Carry out the node's actions and send what it queued, until nothing is left."""
        swarm = peer.swarm
        while peer.alive and (swarm.actions or swarm.dirty):
            for action in swarm.take_actions():
                self._run(peer, action)
            for key in swarm.take_dirty():
                self._send(peer, key)

    def _send(self, peer: SimPeer, key: int) -> None:
        entry = peer.links.get(key)
        connection = peer.swarm.peers.get(key)
        if entry is None or connection is None:
            return
        data = b"".join(connection.wire.data_to_send())
        if not data:
            return
        other, other_key = entry
        size = len(data)
        arrival = peer.uplink.send(size, self.now)
        self.bytes_moved += size
        self.events.at(arrival, lambda: self._arrive(other, other_key, data))
        peer.queued[key] = peer.queued.get(key, 0) + size
        self.events.at(peer.uplink.free_at, lambda: self._left(peer, key, size))
        peer.swarm.flushed(key, peer.queued[key], self.now)

    def _left(self, peer: SimPeer, key: int, size: int) -> None:
        """Bytes of one connection left the uplink: as a drained send buffer, the core hears."""
        left = peer.queued.get(key, 0) - size
        if left > 0:
            peer.queued[key] = left
        else:
            peer.queued.pop(key, None)
        if peer.alive and key in peer.links:
            peer.swarm.flushed(key, max(left, 0), self.now)
            self.settle(peer)

    def _arrive(self, peer: SimPeer, key: int, data: bytes) -> None:
        if peer.alive and key in peer.links:
            peer.swarm.receive(key, data, self.now)
            self.settle(peer)

    def _unlink(self, peer: SimPeer, key: int) -> None:
        if peer.links.pop(key, None) is not None:
            peer.swarm.remove_peer(key, self.now)
            self.settle(peer)

    def _run(self, peer: SimPeer, action: core.Action) -> None:
        swarm = peer.swarm
        if isinstance(action, core.VerifyPiece):
            assert swarm.torrent is not None
            ok = hashlib.sha1(action.data).digest() == swarm.torrent.piece_hash(action.index)
            if ok and peer.data is not None:
                start = action.index * swarm.torrent.piece_length
                peer.data[start : start + len(action.data)] = action.data
            swarm.piece_checked(action.index, ok, self.now)
        elif isinstance(action, core.ReadBlock):
            assert swarm.torrent is not None
            start = action.index * swarm.torrent.piece_length + action.begin
            # Verified pieces equal the content, so nodes that keep no data serve from it.
            source = self.content if peer.data is None else peer.data
            block = bytes(source[start : start + action.length])
            swarm.send_block(action.peer, action.index, action.begin, block)
        elif isinstance(action, core.ClosePeer):
            entry = peer.links.pop(action.peer, None)
            if entry is not None:
                self._unlink(entry[0], entry[1])
        elif isinstance(action, core.ConnectTo):
            target = self.by_address.get(action.address)
            linked = {other.address for other, _key in peer.links.values()}
            if target is not None and target is not peer and action.address not in linked:
                self.connect(peer, target, dialled=action.address)
            else:
                swarm.dial_failed(action.address, self.now)
        elif isinstance(action, core.MetadataReady):
            peer.metadata_ready = action.info_bytes
            torrent = parse_info(action.info_bytes)
            swarm.attach_metadata(torrent, bytearray(torrent.num_pieces), self.now)
        elif isinstance(action, core.Completed) and peer.completed_at is None:
            peer.completed_at = self.now
            self.incomplete -= 1
