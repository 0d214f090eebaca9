"""Swarm cores wired together in memory, on a virtual clock: the same code as on the wire.

A simulated node has one address, one uplink and any number of torrents; each torrent is a
real `Swarm` whose outputs the shared runner (`swarm/runner.py`, as in node/) carries out
through `SimPeer`'s in-memory effects. Every core's timer is an event; each node's bytes leave
through its uplink (bandwidth shared by its connections) and arrive a latency later; nothing
polls. Datagrams travel the same links and may be lost.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..addresses import Address
from ..contract import Datagram, DatagramCore
from ..metainfo import Torrent, parse_info
from ..swarm import core
from ..swarm.budget import WRITE_BUFFER_HIGH, WRITE_BUFFER_LOW
from ..swarm.ratelimit import Limits, TokenBucket
from ..swarm.runner import run_outputs
from ..wire.connection import PeerWire
from ..wire.messages import ProtocolError
from .kernel import EventQueue, Link

LATENCY = 0.005
PORT = 7000

DatagramHandler = Callable[[bytes, Address], None]


@dataclass(slots=True)
class SendBuffer:
    """One connection's bytes queued on its node's uplink: a socket's send buffer."""

    departures: deque[tuple[float, int]] = field(default_factory=deque)  # (leaves at, size)
    size: int = 0
    waking: bool = False  # a wake-up for when it drains is queued

    def unsent(self, now: float) -> int:
        """Bytes that have not left by now."""
        departures = self.departures
        while departures and departures[0][0] <= now:
            self.size -= departures.popleft()[1]
        return self.size

    def drained_at(self, low: int) -> float:
        """When no more than low bytes will be left."""
        leaving = self.size - low
        for when, size in self.departures:
            leaving -= size
            if leaving <= 0:
                return when
        raise ValueError(f"the buffer holds no more than {low} bytes")


@dataclass(eq=False)
class SimNode:
    """One simulated host: an address, an uplink, its torrents and its UDP port."""

    name: str
    address: Address
    uplink: Link
    joined_at: float
    torrents: dict[bytes, SimPeer] = field(default_factory=dict)
    on_datagram: DatagramHandler | None = None
    alive: bool = True


class SimPeer:
    """One torrent on one simulated node: its swarm core and the in-memory effects it asks for.

    Data is kept only if asked (tests compare it); nodes that keep none serve the content.
    """

    def __init__(
        self,
        network: SimNetwork,
        node: SimNode,
        swarm: core.Swarm,
        content: bytes,
        data: bytearray | None,
    ) -> None:
        self.network = network
        self.node = node
        self.swarm = swarm
        self.content = content
        self.data = data  # the torrent's bytes; pieces not yet verified are garbage
        # Each connection's other end; its key is None until it has read our handshake.
        self.links: dict[int, tuple[SimPeer, int | None]] = {}
        # What each connection has queued on the uplink that has not left yet (its "unsent").
        self.buffers: dict[int, SendBuffer] = {}
        self.metadata_ready: bytes | None = None
        self.completed_at: float | None = None

    @property
    def address(self) -> Address:
        """The node's listening address."""
        return self.node.address

    def settle(self) -> None:
        """Carry out what the core asks, as the node does, until it asks nothing more."""
        if self.node.alive:
            run_outputs(self.swarm, self, self.network.now)

    # -- the effects: what the node does with sockets and threads, done in memory ------------

    def send(self, peer: int, data: list[bytes]) -> int | None:
        """Queue bytes on the uplink; they arrive after the link's delay. As asyncio does, the
        core hears again when a buffer past the high mark drains below the low one."""
        entry = self.links.get(peer)
        if entry is None:
            return None
        payload = b"".join(data)
        size = len(payload)
        network = self.network
        other = entry[0]
        uplink = self.node.uplink
        arrival = uplink.send(size, network.now) + other.node.uplink.latency
        network.bytes_moved += size
        network.events.at(arrival, lambda: other.arrive_from(self, peer, payload))
        buffer = self.buffers.get(peer)
        if buffer is None:
            buffer = self.buffers[peer] = SendBuffer()
        buffer.departures.append((uplink.free_at, size))
        buffer.size += size
        unsent = buffer.unsent(network.now)
        if unsent > WRITE_BUFFER_HIGH and not buffer.waking:
            buffer.waking = True
            network.events.at(buffer.drained_at(WRITE_BUFFER_LOW), lambda: self._drained(peer))
        return unsent

    def verify_piece(self, index: int, data: bytearray) -> None:
        """Hash at once (virtual time does not pass) and keep good data if we keep any."""
        torrent = self.swarm.torrent
        assert torrent is not None
        ok = hashlib.sha1(data).digest() == torrent.piece_hash(index)
        if ok and self.data is not None:
            start = index * torrent.piece_length
            self.data[start : start + len(data)] = data
        self.swarm.piece_checked(index, ok, self.network.now)

    def read_block(self, action: core.ReadBlock) -> None:
        """Serve the block from memory."""
        torrent = self.swarm.torrent
        assert torrent is not None
        start = action.index * torrent.piece_length + action.begin
        # Verified pieces equal the content, so nodes that keep no data serve from it.
        source = self.content if self.data is None else self.data
        block = bytes(source[start : start + action.length])
        self.swarm.send_block(action.peer, action.index, action.begin, block)

    def close_peer(self, peer: int, reason: str) -> None:
        """The other end sees the connection close."""
        entry = self.links.pop(peer, None)
        self.buffers.pop(peer, None)
        if entry is not None and entry[1] is not None:
            entry[0].unlink(entry[1])

    def connect_to(self, address: Address, encrypted: bool) -> None:
        """Connect at once to a live node that runs this torrent, or fail."""
        network = self.network
        node = network.by_address.get(address)
        target = node.torrents.get(self.swarm.info_hash) if node is not None else None
        if target is None or node is self.node or self._linked_to(address):
            self.swarm.dial_failed(address, network.now)
        else:
            network.connect(self, target, dialled=address)

    def use_metadata(self, info_bytes: bytes) -> None:
        """Open the torrent the fetched info dict describes."""
        self.metadata_ready = info_bytes
        torrent = parse_info(info_bytes)
        self.swarm.attach_metadata(torrent, bytearray(torrent.num_pieces), self.network.now)

    def find_peers(self) -> None:
        """Ask the scenario's tracker, if it has one, for more addresses."""
        if self.network.tracker is not None:
            self.swarm.add_sources(self.network.tracker(self), given=False, now=self.network.now)

    def finish(self) -> None:
        """Note the completion time once."""
        if self.completed_at is None:
            self.completed_at = self.network.now
            self.network.incomplete -= 1

    # -- what the network does to this torrent ------------------------------------------------

    def arrive_from(self, sender: SimPeer, sender_key: int, data: bytes) -> None:
        """Bytes from the other end of a connection; the first ones of a connection dialled
        to us carry its handshake, and it is accepted or refused then, as on a real socket."""
        entry = sender.links.get(sender_key)
        if entry is None:
            return  # the sender has closed the connection since
        key = entry[1]
        if key is not None:
            if self.node.alive and key in self.links:
                self.swarm.receive(key, data, self.network.now)
                self.settle()
            return
        if not self.node.alive:
            sender.unlink(sender_key)
            return
        now = self.network.now
        wire = PeerWire(None, self.swarm.peer_id)
        try:
            events = wire.receive(data)
        except ProtocolError:
            sender.unlink(sender_key)
            return
        accepted = self.swarm.add_peer(wire, sender.address, False, now)
        if accepted is None:
            sender.unlink(sender_key)
            self.settle()
            return
        self.links[accepted] = (sender, sender_key)
        sender.links[sender_key] = (self, accepted)
        self.swarm.handle_events(accepted, events, now)
        self.settle()
        network = self.network
        network.peak_connections = max(network.peak_connections, len(self.links))

    def unlink(self, key: int) -> None:
        """The other end closed the connection."""
        self.buffers.pop(key, None)
        if self.links.pop(key, None) is not None:
            self.swarm.remove_peer(key, self.network.now)
            self.settle()

    def tick(self) -> None:
        """The core's timer: one chain of these per torrent, each when the last asked."""
        if not self.node.alive:
            return
        now = self.network.now
        # Send buffers drain without telling: fresh figures each tick, as the node does.
        for key, buffer in list(self.buffers.items()):
            self.swarm.flushed(key, buffer.unsent(now), now)
            if not buffer.size and not buffer.waking:
                del self.buffers[key]
        self.swarm.handle_timer(now)
        wake = self.swarm.get_timer()
        self.settle()
        self.network.events.at(wake, self.tick)

    def _drained(self, key: int) -> None:
        """A full send buffer drained below the low mark (asyncio's resume_writing)."""
        buffer = self.buffers.get(key)
        if buffer is None:
            return
        now = self.network.now
        if buffer.unsent(now) > WRITE_BUFFER_LOW:  # written to since: not drained yet
            self.network.events.at(buffer.drained_at(WRITE_BUFFER_LOW), lambda: self._drained(key))
            return
        buffer.waking = False
        if self.node.alive and key in self.links:
            self.swarm.flushed(key, buffer.size, now)
            self.settle()

    def _linked_to(self, address: Address) -> bool:
        return any(other.address == address for other, _key in self.links.values())


class SimNetwork:
    """Nodes, links between them and one event queue for everything that happens."""

    def __init__(
        self,
        torrent: Torrent | None = None,
        content: bytes = b"",
        seed: int = 1,
        latency: float = LATENCY,
        upload: float | None = None,
        loss: float = 0.0,
    ) -> None:
        self.torrent = torrent  # what add() runs unless told otherwise
        self.content = content
        self.latency = latency  # one way, from any node to any other
        self.upload = upload  # bytes per second each node sends; None: unlimited
        self.loss = loss  # the share of datagrams each node's link loses
        self.events = EventQueue(start=1000.0)
        self.nodes: list[SimNode] = []
        self.by_address: dict[Address, SimNode] = {}
        self.rng = random.Random(seed)
        self.incomplete = 0  # torrents on live nodes still missing pieces
        self.arrivals_pending = 0  # nodes yet to join (see arrive_at)
        self.bytes_moved = 0
        self.datagrams_lost = 0
        self.peak_connections = 0  # the most connections one torrent held at once
        # What a tracker would answer a torrent that asks for peers (set by scenarios).
        self.tracker: Callable[[SimPeer], list[Address]] | None = None
        self._swarms = 0

    @property
    def now(self) -> float:
        """The virtual time."""
        return self.events.now

    def add_node(
        self,
        name: str,
        *,
        latency: float | None = None,
        upload: float | None = None,
        loss: float | None = None,
    ) -> SimNode:
        """A host with its own address and access link: the network's defaults unless given
        (latency is one way to any node with the same link; half of it is on each end)."""
        number = len(self.nodes)
        address = (f"10.{number // 62500}.{number // 250 % 250}.{number % 250 + 1}", PORT)
        uplink = Link(
            (self.latency if latency is None else latency) / 2,
            self.upload if upload is None else upload,
            self.loss if loss is None else loss,
        )
        node = SimNode(name, address, uplink, joined_at=self.now)
        self.nodes.append(node)
        self.by_address[address] = node
        return node

    def add(
        self,
        name: str,
        *,
        complete: bool,
        node: SimNode | None = None,
        torrent: Torrent | None = None,
        content: bytes | None = None,
        with_metadata: bool = True,
        corrupt: bool = False,
        upload_limit: int | None = None,
        download_limit: int | None = None,
        keep_data: bool = True,
    ) -> SimPeer:
        """A torrent, with all pieces or none, on a new node (or on `node`); a corrupt one
        serves flipped bits."""
        torrent = torrent or self.torrent
        content = self.content if content is None else content
        assert torrent is not None, "no torrent to add"
        node = node or self.add_node(name)
        num = torrent.num_pieces
        have = bytearray(b"\x01" * num if complete else num)
        data = None
        if keep_data or corrupt:
            data = bytearray(content if complete else len(content))
            if corrupt:
                data = bytearray(b ^ 0xFF for b in data)
        swarm = core.Swarm(
            torrent.info_hash,
            f"-SIM000-{self._swarms:012d}".encode(),
            torrent if with_metadata else None,
            have if with_metadata else None,
            config=core.SwarmConfig(listen_port=PORT),
            upload_limits=Limits(TokenBucket(upload_limit), TokenBucket(None)),
            download_limits=Limits(TokenBucket(download_limit), TokenBucket(None)),
            rng=random.Random(self.rng.random()),
        )
        self._swarms += 1
        peer = SimPeer(self, node, swarm, content, data)
        node.torrents[torrent.info_hash] = peer
        if not swarm.complete:
            self.incomplete += 1
        peer.tick()
        return peer

    def arrive_at(self, when: float, join: Callable[[], None]) -> None:
        """Schedule a node's arrival; runs wait for every scheduled one."""
        self.arrivals_pending += 1

        def arrive() -> None:
            self.arrivals_pending -= 1
            join()

        self.events.at(when, arrive)

    def connect(self, a: SimPeer, b: SimPeer, dialled: Address | None = None) -> None:
        """Open a connection from a to b (dialled: the ConnectTo it answers); a may refuse at
        once, b when a's handshake reaches it."""
        wire = PeerWire(a.swarm.info_hash, a.swarm.peer_id)
        key = a.swarm.add_peer(wire, b.address, True, self.now, dialled=dialled)
        if key is not None:
            a.links[key] = (b, None)
            self.peak_connections = max(self.peak_connections, len(a.links))
        a.settle()

    def leave(self, node: SimNode) -> None:
        """The node goes away: every connection of each of its torrents closes."""
        if not node.alive:
            return
        node.alive = False
        del self.by_address[node.address]
        for peer in node.torrents.values():
            if not peer.swarm.complete:
                self.incomplete -= 1
            for key, (other, other_key) in list(peer.links.items()):
                peer.swarm.remove_peer(key, self.now)
                if other_key is not None:
                    other.unlink(other_key)
            peer.links.clear()

    def listen(self, node: SimNode, handler: DatagramHandler) -> None:
        """Datagrams to node's address go to handler(data, sender)."""
        node.on_datagram = handler

    def send_datagram(self, node: SimNode, address: Address, data: bytes) -> None:
        """Send a datagram from node; either end's link may lose it, as UDP would."""
        target = self.by_address.get(address)
        lost = self.rng.random() < node.uplink.loss or (
            target is not None and self.rng.random() < target.uplink.loss
        )
        self.bytes_moved += len(data)
        if target is None or lost:
            self.datagrams_lost += 1
            return
        arrival = node.uplink.send(len(data), self.now) + target.uplink.latency

        def deliver() -> None:
            if target.alive and target.on_datagram is not None:
                target.on_datagram(data, node.address)

        self.events.at(arrival, deliver)

    def serve(
        self,
        node: SimNode,
        core: DatagramCore[object],
        events: Callable[[object], None] | None = None,
    ) -> Callable[[], None]:
        """Give node's UDP port to a datagram core, as the node does: datagrams in, its
        datagrams sent and its other outputs to events, its timer honoured. Returns the
        function to call after commanding the core from outside."""
        wake: list[float] = []  # the time of the timer event queued, if any

        def pump() -> None:
            for output in core.take_outputs():
                if isinstance(output, Datagram):
                    self.send_datagram(node, output.address, output.data)
                elif events is not None:
                    events(output)
            when = core.get_timer()
            if when is not None and (not wake or when < wake[0]):
                wake[:] = [when]
                self.events.at(when, lambda: timer(when))

        def timer(when: float) -> None:
            if wake != [when] or not node.alive:
                return  # superseded by an earlier wake-up, which re-armed
            wake.clear()
            core.handle_timer(self.now)
            pump()

        def on_datagram(data: bytes, sender: Address) -> None:
            core.receive(data, sender, self.now)
            pump()

        self.listen(node, on_datagram)
        pump()
        return pump

    def run(self, until: float = 600.0) -> float:
        """Run until every live node is complete or until seconds pass; returns elapsed seconds."""
        start = self.now
        self.events.run(start + until, lambda: self.incomplete == 0 and not self.arrivals_pending)
        return self.now - start
