"""A TCP connection to one peer: its first bytes, its handshake (MSE too), then its bytes
to and from the swarm core of its torrent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, cast

from .. import streams
from ..addresses import Address
from ..streams import StreamKind
from ..swarm.budget import WRITE_BUFFER_HIGH, WRITE_BUFFER_LOW
from ..wire import messages as m
from ..wire import mse
from ..wire.connection import PeerWire
from . import adapter

if TYPE_CHECKING:
    from .node import Node
    from .torrent import TorrentTask

log = logging.getLogger(__name__)


class PeerConnection(asyncio.Protocol):
    """A TCP connection to one peer; its bytes go to the swarm core of its torrent."""

    def __init__(
        self,
        node: Node,
        task: TorrentTask | None = None,
        dialled: Address | None = None,
        *,
        encrypted: bool = False,
    ):
        self.node = node
        self.task = task
        self.outgoing = task is not None
        # The address we dialled, as given (maybe a host name); the key of its peer source.
        self.dialled = dialled
        self.wire = PeerWire(task.info_hash if task else None, node.peer_id)
        self.transport: asyncio.Transport | None = None
        self.address: Address | None = None
        self.key: int | None = None
        # Bytes of blocks being read from disk for this peer, not yet in the send buffer.
        self.reading = 0
        # Protocol encryption: the handshake while it runs, then the stream cipher (if RC4).
        self.encrypted = encrypted
        self.mse: mse.MseInitiator | mse.MseReceiver | None = None
        self.cipher: mse.Rc4Cipher | None = None
        # An incoming connection's first bytes, until we know their kind (then None).
        self._first: bytes | None = b""
        self.attached = False  # handed to the core (which may have refused it)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the handshake on outgoing connections; time-limit it on incoming ones."""
        # uvloop's transports do not subclass asyncio.Transport, but have the same methods.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        # Past the high mark, resume_writing tells us when the peer has read most of it.
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH, low=WRITE_BUFFER_LOW)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.address = (peer[0], peer[1]) if peer is not None else ("?", 0)
        local = transport.get_extra_info("sockname")
        if local is not None:
            self.node.local_hosts.add(local[0])
        if self.task is None:
            self.node.handshaking(self)
        elif self.encrypted:
            self.mse = mse.MseInitiator(self.task.info_hash, methods=self.node.mse_methods)
            transport.write(self.mse.data_to_send())
            self.node.handshaking(self)  # the MSE handshake is time-limited like any other
        else:
            self.task.attach(self, [])

    def data_received(self, data: bytes) -> None:
        """Feed bytes to the core; an incoming connection first names its torrent."""
        if self.cipher is not None:
            data = self.cipher.decrypt(data)
        elif self.mse is not None:
            self._negotiate(data)
            return
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        """Plaintext stream bytes: to the core, or for an incoming one, its first bytes."""
        task = self.task
        if task is not None and self.key is not None:
            assert task.swarm is not None
            task.swarm.receive(self.key, data, task.loop.time())
            task.pump()
        elif task is None:
            self._sniff(data)
        # else: closed by the core; bytes still in flight are dropped

    def _sniff(self, data: bytes) -> None:
        """An incoming connection: its first bytes say what it speaks."""
        if self.wire.remote is not None or self._first is None:
            self._read_handshake(data)
            return
        data = self._first + data
        kind = streams.classify(data)
        if kind is None:
            self._first = data
            return
        self._first = None
        if kind in (StreamKind.OVERLAY, StreamKind.LEDGER):
            self._hand_over(kind, data)
            return
        plaintext = kind is StreamKind.BITTORRENT
        if self.node.encryption == ("require" if plaintext else "off"):
            log.info("dropped %s: its handshake is not allowed by --encryption", self.address)
            self.close()
        elif plaintext:
            self._read_handshake(data)
        else:
            self.mse = mse.MseReceiver(self.node.torrent_by_skey, methods=self.node.mse_methods)
            self._negotiate(data)

    def _hand_over(self, kind: StreamKind, data: bytes) -> None:
        """Hand the socket, and the bytes read so far, to the service of a stream core (the
        overlay or the ledger), if the node runs it."""
        service = self.node.overlay if kind is StreamKind.OVERLAY else self.node.ledger
        if service is None or self.transport is None or self.address is None:
            log.info("dropped %s: it opened with %s, not served here", self.address, kind.value)
            self.close()
            return
        self.node.handshaken(self)
        transport, self.transport = self.transport, None
        service.adopt(transport, self.address, data)

    def _negotiate(self, data: bytes) -> None:
        """Carry the MSE handshake on; once done, the BitTorrent stream starts."""
        handshake = self.mse
        assert handshake is not None and self.transport is not None
        try:
            handshake.receive(data)
        except m.ProtocolError as exc:
            log.info("dropped %s: %s", self.address, exc)
            self.close()
            return
        self.transport.write(handshake.data_to_send())
        result = handshake.result
        if result is None:
            return
        self.mse = None
        self.cipher = result.cipher
        if self.task is None:
            self.wire.info_hash = result.info_hash  # the plaintext handshake must agree
            self._read_handshake(result.payload)
            return
        self.node.handshaken(self)
        self.task.attach(self, [])
        if result.payload:
            self._deliver(result.payload)

    def _read_handshake(self, data: bytes) -> None:
        try:
            events = self.wire.receive(data)
        except m.ProtocolError as exc:
            log.info("dropped %s: %s", self.address, exc)
            self.close()
            return
        if self.wire.remote is None:
            return
        self.node.handshaken(self)
        task = self.node.torrents.get(self.wire.remote.info_hash)
        assert self.address is not None
        if task is None or task.swarm is None or task.swarm.is_banned(self.address):
            self.close()
            return
        self.task = task
        task.attach(self, events)

    def send(self, buffers: list[bytes]) -> None:
        """Write buffers to the socket, through the stream cipher if there is one."""
        if self.transport is None or not buffers:
            return
        if self.cipher is not None:
            self.transport.write(self.cipher.encrypt_many(buffers))
        else:
            self.transport.writelines(buffers)

    def unsent(self) -> int:
        """Bytes queued for the peer that it has not read yet, reads in progress included."""
        buffered = self.transport.get_write_buffer_size() if self.transport is not None else 0
        return buffered + self.reading

    def resume_writing(self) -> None:
        """The peer read most of what we sent: tell the core, which serves it again."""
        task = self.task
        if task is not None and task.swarm is not None and self.key is not None:
            task.swarm.flushed(self.key, self.unsent(), task.loop.time())
            task.pump()

    def connection_lost(self, exc: Exception | None) -> None:
        """Tell the core the peer is gone."""
        self.node.handshaken(self)
        if self.task is not None:
            self.task.detach(self)
        self.transport = None

    def close(self) -> None:
        """Close the socket (dropping what is unsent if it is much)."""
        adapter.close(self.transport)
