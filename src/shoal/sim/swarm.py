"""Swarm cores wired together in memory, on a virtual clock: the same code as on the wire."""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field

from ..addresses import Address
from ..metainfo import Torrent, parse_info
from ..swarm import core
from ..swarm.ratelimit import Limits, TokenBucket
from ..wire.connection import PeerWire


@dataclass
class SimPeer:
    """One simulated node holding one torrent in memory."""

    name: str
    address: Address
    swarm: core.Swarm
    data: bytearray  # the torrent's bytes; pieces not yet verified are garbage
    links: dict[int, tuple[SimPeer, int]] = field(default_factory=dict)  # key -> (other, its key)
    metadata_ready: bytes | None = None


class SimNetwork:
    """Delivers bytes between cores after a fixed latency, stepping a virtual clock."""

    def __init__(
        self, torrent: Torrent, content: bytes, seed: int = 1, latency: float = 0.005
    ) -> None:
        self.torrent = torrent
        self.content = content
        self.latency = latency
        self.now = 1000.0
        self.peers: list[SimPeer] = []
        self.rng = random.Random(seed)
        self.in_flight: list[tuple[float, int, SimPeer, int, bytes]] = []
        self._sequence = 0

    def add(
        self,
        name: str,
        *,
        complete: bool,
        with_metadata: bool = True,
        corrupt: bool = False,
        upload_limit: int | None = None,
        download_limit: int | None = None,
    ) -> SimPeer:
        """A node that starts with all pieces or none; a corrupt one serves flipped bits."""
        num = self.torrent.num_pieces
        have = bytearray(b"\x01" * num if complete else num)
        data = bytearray(self.content if complete else len(self.content))
        if corrupt:
            data = bytearray(b ^ 0xFF for b in data)
        swarm = core.Swarm(
            self.torrent.info_hash,
            f"-SIM000-{len(self.peers):012d}".encode(),
            self.torrent if with_metadata else None,
            have if with_metadata else None,
            config=core.SwarmConfig(listen_port=7000),
            upload_limits=Limits(TokenBucket(upload_limit), TokenBucket(None)),
            download_limits=Limits(TokenBucket(download_limit), TokenBucket(None)),
            rng=random.Random(self.rng.random()),
        )
        peer = SimPeer(
            name, (f"10.0.{len(self.peers) // 250}.{len(self.peers) % 250 + 1}", 7000), swarm, data
        )
        self.peers.append(peer)
        return peer

    def connect(self, a: SimPeer, b: SimPeer, dialled: Address | None = None) -> None:
        """Open a connection from a to b (dialled: the ConnectTo it answers); either may refuse."""
        wire_a = PeerWire(self.torrent.info_hash, a.swarm.peer_id)
        wire_b = PeerWire(None, b.swarm.peer_id)
        key_a = a.swarm.add_peer(wire_a, b.address, True, self.now, dialled=dialled)
        if key_a is None:
            return
        # b learns of the connection once a's handshake arrives; give it the wire up front.
        first = b"".join(wire_a.data_to_send())
        events = wire_b.receive(first)
        key_b = b.swarm.add_peer(wire_b, a.address, False, self.now)
        if key_b is None:
            a.swarm.remove_peer(key_a, self.now)
            return
        b.swarm.handle_events(key_b, events, self.now)
        a.links[key_a] = (b, key_b)
        b.links[key_b] = (a, key_a)

    def _run_actions(self, peer: SimPeer) -> bool:
        busy = False
        swarm = peer.swarm
        for action in swarm.take_actions():
            busy = True
            if isinstance(action, core.VerifyPiece):
                assert swarm.torrent is not None
                ok = hashlib.sha1(action.data).digest() == swarm.torrent.piece_hash(action.index)
                if ok:
                    start = action.index * swarm.torrent.piece_length
                    peer.data[start : start + len(action.data)] = action.data
                swarm.piece_checked(action.index, ok, self.now)
            elif isinstance(action, core.ReadBlock):
                assert swarm.torrent is not None
                start = action.index * swarm.torrent.piece_length + action.begin
                block = bytes(peer.data[start : start + action.length])
                swarm.send_block(action.peer, action.index, action.begin, block)
            elif isinstance(action, core.ClosePeer):
                other, other_key = peer.links.pop(action.peer)
                other.links.pop(other_key, None)
                other.swarm.remove_peer(other_key, self.now)
            elif isinstance(action, core.ConnectTo):
                linked = {other.address for other, _key in peer.links.values()}
                targets = [t for t in self.peers if t.address == action.address]
                if targets and action.address not in linked:
                    self.connect(peer, targets[0], dialled=action.address)
                else:
                    swarm.dial_failed(action.address, self.now)
            elif isinstance(action, core.MetadataReady):
                peer.metadata_ready = action.info_bytes
                torrent = parse_info(action.info_bytes)
                swarm.attach_metadata(torrent, bytearray(torrent.num_pieces), self.now)
        return busy

    def _deliver(self, peer: SimPeer) -> bool:
        busy = False
        for key in peer.swarm.take_dirty():
            if key not in peer.links or key not in peer.swarm.peers:
                continue
            data = b"".join(peer.swarm.peers[key].wire.data_to_send())
            # The simulated network takes everything at once: nothing stays unsent.
            peer.swarm.flushed(key, 0, self.now)
            if not data:
                continue
            busy = True
            other, other_key = peer.links[key]
            self._sequence += 1
            arrival = (self.now + self.latency, self._sequence, other, other_key, data)
            heapq.heappush(self.in_flight, arrival)
        return busy

    def _arrive(self) -> None:
        while self.in_flight and self.in_flight[0][0] <= self.now:
            _when, _seq, peer, key, data = heapq.heappop(self.in_flight)
            if key in peer.links:
                peer.swarm.receive(key, data, self.now)

    def run(self, until: float = 600.0, tick_every: float = 0.1) -> float:
        """Step until every node is complete or the virtual deadline; returns elapsed seconds."""
        start = self.now
        next_tick = self.now
        while self.now - start < until:
            self._arrive()
            busy = True
            while busy:
                busy = False
                for peer in self.peers:
                    busy |= self._run_actions(peer)
                    busy |= self._deliver(peer)
            if all(p.swarm.complete for p in self.peers):
                return self.now - start
            if self.now >= next_tick:
                for peer in self.peers:
                    peer.swarm.tick(self.now)
                next_tick = self.now + tick_every
            self.now = self.in_flight[0][0] if self.in_flight else next_tick
            self.now = min(self.now, next_tick)
        return self.now - start
