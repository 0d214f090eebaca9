"""The node: one port number (TCP and UDP, IPv4 and IPv6) shared by every torrent it runs,
the handshake gate, and the threads that hash and read."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import __version__
from ..addresses import Address
from ..datagrams import DatagramPort
from ..errors import ShoalError
from ..metainfo import Torrent
from ..overlay.messages import Result
from ..swarm.admission import HandshakeGate
from ..swarm.budget import ReplyBudget
from ..swarm.ratelimit import TokenBucket
from ..swarm.sources import ENCRYPTION_POLICIES
from ..wire import mse
from .connection import PeerConnection
from .dht import DhtService
from .ledger import LedgerOptions, LedgerService
from .overlay import OverlayOptions, OverlayService
from .rendezvous import Rendezvous
from .torrent import TorrentTask

DEFAULT_PORT = 6881
# Ports the system hands out that are free for TCP may be taken for UDP: try a few.
FREE_PORT_TRIES = 8
# What binding to "::" fails with on a host without IPv6.
NO_IPV6_ERRORS = {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT}
HANDSHAKE_TIMEOUT = 20.0


def new_peer_id() -> bytes:
    """An Azureus-style peer id naming shoal and its version."""
    major, minor, patch = [*__version__.split("."), "0", "0"][:3]
    return f"-SH{major}{minor}{patch}0-".encode()[:8] + os.urandom(12)


class Node:
    """A listening port shared by every torrent this node downloads or seeds."""

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "0.0.0.0",
        upload_limit: int | None = None,
        download_limit: int | None = None,
        encryption: str = "prefer",
        dht_routers: Sequence[Address] | None = None,
        dht_read_only: bool = False,
        state: Path | None = None,
        overlay: OverlayOptions | None = None,
        ledger: LedgerOptions | None = None,
    ) -> None:
        """dht_routers: join the DHT through these (None: no DHT); dht_read_only: a DHT node
        that asks but never answers (BEP 43); state: where the DHT keeps its routing table
        and the overlay its host cache between runs (None: nowhere); overlay: join the
        overlay so (None: no overlay)."""
        if encryption not in ENCRYPTION_POLICIES:
            raise ShoalError(f"unknown encryption policy {encryption!r}")
        if dht_read_only and dht_routers is None:
            raise ShoalError("a read-only DHT node needs the DHT on (dht_routers is None)")
        self.encryption = encryption
        # What our MSE handshakes offer and accept: RC4 only, when encryption is required.
        self.mse_methods = mse.RC4 if encryption == "require" else mse.RC4 | mse.PLAINTEXT
        self._skeys: dict[bytes, bytes] = {}  # HASH('req2', info-hash) -> info-hash
        self.requested_port = port
        self.host = host
        self.port = port or 0
        self.peer_id = new_peer_id()
        self.torrents: dict[bytes, TorrentTask] = {}
        self.upload_bucket = TokenBucket(upload_limit)
        self.download_bucket = TokenBucket(download_limit)
        self._handshaking: dict[int, tuple[PeerConnection, asyncio.TimerHandle]] = {}
        self._gate = HandshakeGate()
        self.reply_budget = ReplyBudget()
        # Addresses that reached this node itself, and the IPs our sockets have locally.
        self.own_addresses: set[Address] = set()
        self.local_hosts: set[str] = {"127.0.0.1", "::1"}
        # Hashing releases the GIL, so two threads use both cores of a small machine.
        self.hash_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shoal-hash")
        # Disk reads for uploads and resume saves, apart so they never wait behind hashing.
        self.io_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shoal-io")
        # Set from a signal handler: long start-up work (checking data on disk) stops at once.
        self.halt = threading.Event()
        self._servers: list[asyncio.AbstractServer] = []
        self.datagrams = DatagramPort()  # the UDP socket on the same port number
        self._dht_routers = dht_routers
        self.dht = (
            DhtService(self.datagrams, state, read_only=dht_read_only)
            if dht_routers is not None
            else None
        )
        self.overlay: OverlayService | None = None
        self.ledger: LedgerService | None = None
        if ledger is not None:
            if state is None:
                raise ShoalError("a node that runs the ledger needs a state folder")
            self.ledger = LedgerService(ledger, state)
        self.rendezvous: Rendezvous | None = None
        if overlay is not None:
            self.overlay = OverlayService(overlay, state)
            # Where the overlay meets ultrapeers besides the peers given and those it heard
            # of: the DHT and the hub's tracker, when the node has them.
            if self.dht is not None or overlay.hub is not None:
                self.rendezvous = Rendezvous(self, self.overlay, overlay.hub)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop."""
        return asyncio.get_running_loop()

    async def start(self) -> None:
        """Listen on one port number for TCP and UDP (without a port asked for, 6881 or else
        any port free for both), then join the DHT if it is on."""
        if self.requested_port:
            candidates = [self.requested_port]
        elif self.requested_port == 0:
            candidates = [0] * FREE_PORT_TRIES  # any port: a few tries, each free for TCP
        else:
            candidates = [DEFAULT_PORT] + [0] * FREE_PORT_TRIES
        for attempt, port in enumerate(candidates):
            try:
                self.port = await self._listen(port)
                break
            except OSError as exc:
                for server in self._servers:
                    server.close()
                self._servers.clear()
                self.datagrams.close()
                if attempt == len(candidates) - 1:
                    what = f"port {port}" if port else "a port free for TCP and UDP"
                    # asyncio's message repeats the address; the system's reason is enough.
                    reason = os.strerror(exc.errno) if exc.errno else str(exc)
                    raise ShoalError(f"cannot listen on {what}: {reason.lower()}") from None
        if self.dht is not None and self._dht_routers is not None:
            # port is the number asked for, 0 if the system picked one (a new one every run).
            await self.dht.start(self._dht_routers, self.port, port_fixed=port != 0)
        if self.overlay is not None:
            await self.overlay.start(self.port)
        if self.rendezvous is not None:
            self.rendezvous.start()
        if self.ledger is not None:
            await self.ledger.start(self.port)

    async def _listen(self, port: int) -> int:
        """TCP and UDP on one port number (any free one for 0): IPv4 on the host asked for,
        and IPv6 too on the wildcard address where the host has it; the number bound."""
        server = await self.loop.create_server(
            lambda: PeerConnection(self), self.host, port, reuse_address=True
        )
        self._servers.append(server)
        port = server.sockets[0].getsockname()[1]
        await self.loop.create_datagram_endpoint(
            lambda: self.datagrams, local_addr=(self.host, port)
        )
        if self.host == "0.0.0.0":
            try:
                await self._listen_ipv6(port)
            except OSError as exc:
                if exc.errno not in NO_IPV6_ERRORS:
                    raise
        return port

    async def _listen_ipv6(self, port: int) -> None:
        """TCP and UDP on port over IPv6, both or neither."""
        # asyncio makes the IPv6 listener IPv6-only, so it and the IPv4 one share the port.
        server = await self.loop.create_server(
            lambda: PeerConnection(self), "::", port, reuse_address=True
        )
        udp = None
        try:
            if not server.sockets:  # asyncio skips an address family the host lacks
                raise OSError(errno.EAFNOSUPPORT, "the host has no IPv6")
            udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            udp.bind(("::", port))
            udp.setblocking(False)
            await self.loop.create_datagram_endpoint(lambda: self.datagrams, sock=udp)
        except OSError:
            server.close()
            if udp is not None:
                udp.close()
            raise
        self._servers.append(server)

    async def add(
        self,
        info_hash: bytes,
        torrent: Torrent | None,
        root: Path,
        peers: Sequence[Address] = (),
        *,
        trackers: Sequence[Sequence[str]] = (),
        upload_limit: int | None = None,
        download_limit: int | None = None,
    ) -> TorrentTask:
        """Start downloading or seeding a torrent into root; peers and trackers are sources."""
        if info_hash in self.torrents:
            raise ShoalError(f"the torrent {info_hash.hex()} is already running on this node")
        task = TorrentTask(
            self,
            info_hash,
            torrent,
            root,
            upload_limit=upload_limit,
            download_limit=download_limit,
            trackers=trackers,
        )
        self.torrents[info_hash] = task
        self._skeys[mse.skey_hash(info_hash)] = info_hash
        task.add_peers(list(peers))
        await task.start()
        self.listings_changed()
        return task

    def listings_changed(self) -> None:
        """Tell the overlay what this node shares: every complete torrent that is not
        private (BEP 27 keeps those out of the DHT and PEX, and so out of the overlay)."""
        if self.overlay is None:
            return
        self.overlay.set_listings(
            Result(task.info_hash, task.torrent.total_length, task.torrent.name)
            for task in self.torrents.values()
            if task.torrent is not None and task.completed.is_set() and not task.torrent.private
        )

    def torrent_by_skey(self, skey_hash: bytes) -> bytes | None:
        """The info-hash an MSE handshake names by its hash, if this node runs it."""
        return self._skeys.get(skey_hash)

    def is_self(self, address: Address) -> bool:
        """Whether an address (from a tracker, say) is this node's own listening socket."""
        if address in self.own_addresses:
            return True
        return address[1] == self.port and address[0] in (*self.local_hosts, self.host)

    def handshaking(self, connection: PeerConnection) -> None:
        """An incoming connection that has yet to name its torrent: time-limit and bound it."""
        assert connection.address is not None
        for evicted in self._gate.admit(id(connection), connection.address[0]):
            old, timer = self._handshaking.pop(evicted)
            timer.cancel()
            old.close()
        timer = self.loop.call_later(HANDSHAKE_TIMEOUT, connection.close)
        self._handshaking[id(connection)] = (connection, timer)

    def handshaken(self, connection: PeerConnection) -> None:
        """The connection named its torrent, or closed."""
        self._gate.done(id(connection))
        entry = self._handshaking.pop(id(connection), None)
        if entry is not None:
            entry[1].cancel()

    async def stop(self) -> None:
        """Close everything, saving resume data."""
        self.halt.set()
        for server in self._servers:
            server.close()
        if self.rendezvous is not None:
            await self.rendezvous.stop()
        if self.dht is not None:
            self.dht.stop()
        if self.overlay is not None:
            self.overlay.stop()
        if self.ledger is not None:
            self.ledger.stop()
        self.datagrams.close()
        for connection, _timer in list(self._handshaking.values()):
            connection.close()
        for task in self.torrents.values():
            await task.stop()
        self.hash_pool.shutdown(wait=True, cancel_futures=True)
        self.io_pool.shutdown(wait=True, cancel_futures=True)
