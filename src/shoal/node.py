"""One node: the asyncio adapter that connects swarm cores to sockets, disk and the clock."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import socket
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from . import __version__, streams
from .addresses import Address
from .datagrams import DatagramPort
from .errors import ShoalError
from .metainfo import Torrent, parse_info
from .storage.files import PieceStorage, RecheckStopped, StorageError
from .storage.resume import ResumeFile
from .streams import StreamKind
from .swarm import core
from .swarm.admission import HandshakeGate
from .swarm.budget import WRITE_BUFFER_HIGH, WRITE_BUFFER_LOW, ReplyBudget
from .swarm.ratelimit import Limits, TokenBucket
from .swarm.runner import run_outputs
from .swarm.sources import ENCRYPTION_POLICIES
from .wire import messages as m
from .wire import mse
from .wire.connection import PeerWire

if TYPE_CHECKING:
    from .tracker.client import AnnounceStats, TrackerClient

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_PORT = 6881
CONNECT_TIMEOUT = 10.0
# Ports the system hands out that are free for TCP may be taken for UDP: try a few.
FREE_PORT_TRIES = 8
# What binding to "::" fails with on a host without IPv6.
NO_IPV6_ERRORS = {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT}
HANDSHAKE_TIMEOUT = 20.0
# Each verified piece goes to the resume journal at once; the record absorbs it this often.
RESUME_SAVE_INTERVAL = 60.0
# A closing connection sends what it has queued only up to this much; more is dropped.
CLOSE_FLUSH_LIMIT = 64 * 1024
CLIENT_NAME = f"shoal {__version__}"


def new_peer_id() -> bytes:
    """An Azureus-style peer id naming shoal and its version."""
    major, minor, patch = [*__version__.split("."), "0", "0"][:3]
    return f"-SH{major}{minor}{patch}0-".encode()[:8] + os.urandom(12)


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
        plaintext = kind is StreamKind.BITTORRENT
        if self.node.encryption == ("require" if plaintext else "off"):
            log.info("dropped %s: its handshake is not allowed by --encryption", self.address)
            self.close()
        elif plaintext:
            self._read_handshake(data)
        else:
            self.mse = mse.MseReceiver(self.node.torrent_by_skey, methods=self.node.mse_methods)
            self._negotiate(data)

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
        """Close the socket; with much unsent, drop it: a peer that never reads would keep a
        closing socket, and what it holds, open for ever."""
        transport = self.transport
        if transport is None:
            return
        if transport.get_write_buffer_size() > CLOSE_FLUSH_LIMIT:
            transport.abort()
        else:
            transport.close()


class TorrentTask:
    """One torrent on a node: its swarm core, storage, resume data and connections."""

    def __init__(
        self,
        node: Node,
        info_hash: bytes,
        torrent: Torrent | None,
        root: Path,
        *,
        upload_limit: int | None = None,
        download_limit: int | None = None,
        trackers: Sequence[Sequence[str]] = (),
    ) -> None:
        self.node = node
        self.loop = node.loop
        self.tracker_tiers = [list(tier) for tier in trackers if tier]
        self.tracker: TrackerClient | None = None
        self.info_hash = info_hash
        self.torrent = torrent
        self.root = root
        self.storage: PieceStorage | None = None
        self.resume = ResumeFile(info_hash, root)
        self.swarm: core.Swarm | None = None
        self.connections: dict[int, PeerConnection] = {}
        # Peers named before the core exists; handed to it at start.
        self._initial_peers: list[tuple[Address, bool]] = []
        self.completed = asyncio.Event()
        self.failed: ShoalError | None = None
        self.stopped = asyncio.Event()
        self._upload = TokenBucket(upload_limit)
        self._download = TokenBucket(download_limit)
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._verifying: set[Future[bool]] = set()
        self._reads: dict[int, list[tuple[PeerConnection, core.ReadBlock]]] = {}
        self._saving: Future[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._resume_dirty = False
        self._last_resume_save = 0.0

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Check what is already on disk, then join the swarm."""
        have = await self._open_storage() if self.torrent is not None else None
        private = bool(self.torrent and self.torrent.private)
        config = core.SwarmConfig(
            client=CLIENT_NAME,
            listen_port=self.node.port,
            private=private,
            max_peers=60,
            encryption=self.node.encryption,
        )
        self.swarm = core.Swarm(
            self.info_hash,
            self.node.peer_id,
            self.torrent,
            have,
            config=config,
            upload_limits=Limits(self._upload, self.node.upload_bucket),
            download_limits=Limits(self._download, self.node.download_bucket),
            reply_budget=self.node.reply_budget,
            own_addresses=self.node.own_addresses,
            rng=random.Random(),
        )
        if self.swarm.complete:
            self.completed.set()
        self._schedule_tick(self.loop.time())
        for learned in (False, True):
            self.add_peers(
                [a for a, kind in self._initial_peers if kind == learned], learned=learned
            )
        self._initial_peers.clear()
        if self.tracker_tiers:
            # Imported here: the HTTP client stack costs a fifth of a second at start-up, and
            # torrents without trackers never need it.
            from .tracker.client import TrackerClient

            self.tracker = TrackerClient(
                self.info_hash,
                self.node.peer_id,
                self.node.port,
                self.tracker_tiers,
                self._announce_stats,
                lambda peers: self.add_peers(peers, learned=True),
                datagrams=self.node.datagrams,
            )
            self.tracker.start()

    def progress(self) -> tuple[int, int]:
        """Verified bytes and total bytes (0, 0 while the metadata is unknown)."""
        torrent = self.torrent
        swarm = self.swarm
        if torrent is None or swarm is None or swarm.picker is None:
            return 0, 0
        have = swarm.picker.have
        done = sum(have) * torrent.piece_length
        if have and have[-1]:
            done -= torrent.piece_length - torrent.piece_size(len(have) - 1)
        return done, torrent.total_length

    def tracker_problem(self) -> str | None:
        """The last error of the trackers, if every one of them is failing."""
        if self.tracker is None:
            return None
        statuses = self.tracker.status()
        if statuses and all(status.last_error for status in statuses):
            return statuses[0].last_error
        return None

    def _announce_stats(self) -> AnnounceStats:
        from .tracker.client import AnnounceStats

        done, total = self.progress()
        swarm = self.swarm
        # Before the metadata arrives the size is unknown; any positive `left` says "leecher".
        left = total - done if total else 1
        uploaded = swarm.uploaded if swarm else 0
        downloaded = swarm.downloaded if swarm else 0
        return AnnounceStats(uploaded=uploaded, downloaded=downloaded, left=left)

    async def _open_storage(self) -> bytearray:
        assert self.torrent is not None
        storage = PieceStorage(self.torrent, self.root)
        have = await self.loop.run_in_executor(self.node.io_pool, self.resume.load, storage)
        if have is None:
            # No usable resume record: hash whatever is already there (seeding, or a re-run
            # into a folder that holds the data), in worker threads; a signal stops it.
            try:
                have = await self.loop.run_in_executor(
                    None, lambda: storage.recheck(stop=self.node.halt)
                )
            except RecheckStopped:
                # No record of a partial check: the next start checks again rather than
                # fetching pieces that are on disk already.
                storage.close()
                raise
        await self.loop.run_in_executor(self.node.io_pool, storage.allocate)
        self.storage = storage
        await self.loop.run_in_executor(self.node.io_pool, self.resume.save, have)
        self._last_resume_save = self.loop.time()
        return have

    def add_peers(self, addresses: list[Address], *, learned: bool = False) -> None:
        """Addresses to connect to; given ones are retried, with back-off, while we run."""
        addresses = [address for address in addresses if not self.node.is_self(address)]
        if self.swarm is None:
            self._initial_peers.extend((address, learned) for address in addresses)
            return
        self.swarm.add_sources(addresses, given=not learned, now=self.loop.time())
        self.pump()

    def fail(self, error: ShoalError) -> None:
        """Stop the torrent with an error meant for the user."""
        if self.failed is None:
            self.failed = error
            log.info("torrent %s stopped: %s", self.info_hash.hex(), error)
        self.stopped.set()

    async def stop(self) -> None:
        """Finish the pieces being written, save resume data and close every connection."""
        self._closing = True
        if self.tracker is not None:
            await self.tracker.stop()
        if self._timer is not None:
            self._timer.cancel()
        for background in self._background:
            background.cancel()
        for connection in list(self.connections.values()):
            connection.close()
        if self._verifying:
            # Let hash jobs in flight finish, so their pieces are recorded and no write
            # races the closing of the files.
            waits = [asyncio.wrap_future(future) for future in self._verifying]
            await asyncio.gather(*waits, return_exceptions=True)
            await asyncio.sleep(0)
        await self._saved()  # a periodic save in flight would make the last one a no-op
        self._save_resume()
        await self._saved()
        self.resume.close()
        if self.storage is not None:
            self.storage.close()
        self.stopped.set()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- connections ------------------------------------------------------------------------------

    async def _dial(self, address: Address, encrypted: bool) -> None:
        try:
            await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: PeerConnection(self.node, self, address, encrypted=encrypted),
                    *address,
                ),
                CONNECT_TIMEOUT,
            )
        except (TimeoutError, OSError, ValueError) as exc:
            # ValueError: a host name no resolver takes (a label over 63 characters, say).
            log.info("cannot connect to %s:%s: %s", *address, exc)
            if self.swarm is not None and not self._closing:
                self.swarm.dial_failed(address, self.loop.time())
                self.pump()

    def attach(self, connection: PeerConnection, events: list[m.Event]) -> None:
        """Hand a connection to the swarm core, which may refuse it."""
        assert self.swarm is not None and connection.address is not None
        if self._closing:
            connection.close()
            return
        now = self.loop.time()
        connection.attached = True
        key = self.swarm.add_peer(
            connection.wire,
            connection.address,
            connection.outgoing,
            now,
            dialled=connection.dialled,
        )
        if key is None:
            connection.close()
            self.pump()
            return
        connection.key = key
        self.connections[key] = connection
        self.swarm.handle_events(key, events, now)
        self.pump()

    def detach(self, connection: PeerConnection) -> None:
        """A connection closed, by either side."""
        if connection.key is not None and self.swarm is not None:
            self.connections.pop(connection.key, None)
            self.swarm.remove_peer(connection.key, self.loop.time())
            connection.key = None
            self.pump()
        elif connection.dialled is not None and not connection.attached and self.swarm:
            # It closed during the MSE handshake: the peer may speak only plaintext.
            self.swarm.dial_failed(connection.dialled, self.loop.time(), connected=True)
            self.pump()

    # -- running the core's actions ---------------------------------------------------------------

    def pump(self) -> None:
        """Carry out what the core asks for (the shared runner calls the methods below)."""
        if self.swarm is not None:
            run_outputs(self.swarm, self, self.loop.time())

    def send(self, peer: int, data: list[bytes]) -> int | None:
        """Write to a peer's socket; the bytes it has not read yet."""
        connection = self.connections.get(peer)
        if connection is None or connection.transport is None:
            return None
        connection.send(data)
        return connection.unsent()

    def verify_piece(self, index: int, data: bytearray) -> None:
        """Hash, write and journal the piece in a worker thread."""
        future = self.node.hash_pool.submit(self._verify, index, data)
        self._verifying.add(future)
        self._on_done(future, self._checked, index)

    def close_peer(self, peer: int, reason: str) -> None:
        """Close the socket of a peer the core dropped."""
        connection = self.connections.pop(peer, None)
        if connection is not None:
            log.info("dropped %s: %s", connection.address, reason)
            connection.key = None  # the core has forgotten it already
            connection.close()

    def connect_to(self, address: Address, encrypted: bool) -> None:
        """Dial in the background."""
        if not self._closing:
            self._spawn(self._dial(address, encrypted))

    def use_metadata(self, info_bytes: bytes) -> None:
        """Open the storage the fetched info dict describes."""
        self._spawn(self._metadata_ready(info_bytes))

    def finish(self) -> None:
        """Every piece is verified: save, wake `shoal get`, tell the trackers."""
        self._save_resume()
        self.completed.set()
        if self.tracker is not None:
            self.tracker.completed()

    def _verify(self, index: int, data: bytearray) -> bool:
        """In a worker thread: hash, write, and journal the piece, so kill -9 loses nothing."""
        assert self.storage is not None
        ok = self.storage.verify_and_write(index, data)
        if ok:
            self.resume.record_piece(index)
        return ok

    def read_block(self, action: core.ReadBlock) -> None:
        """Send a block from the read cache, or read its piece in a thread first."""
        connection = self.connections.get(action.peer)
        if connection is None or self.storage is None:
            return
        try:
            block = self.storage.cached_block(action.index, action.begin, action.length)
        except StorageError as exc:
            self.fail(exc)
            return
        if block is not None:
            self._send_block(action, block)
            return
        # Not in memory: the piece is read in a thread, so a slow disk never stalls the loop,
        # and once for every peer waiting on it.
        connection.reading += action.length
        waiting = self._reads.get(action.index)
        if waiting is not None:
            waiting.append((connection, action))
            return
        self._reads[action.index] = [(connection, action)]
        size = self.storage.torrent.piece_size(action.index)
        future = self.node.io_pool.submit(self.storage.read_block, action.index, 0, size)
        self._on_done(future, self._piece_read, action.index)

    def _on_done(
        self, future: Future[T], callback: Callable[[int, Future[T]], None], index: int
    ) -> None:
        """Run callback(index, future) on the event loop once a worker thread finishes."""
        future.add_done_callback(lambda f: self.loop.call_soon_threadsafe(callback, index, f))

    def _outcome(self, future: Future[T]) -> T | None:
        """A worker's result; None if it was cancelled or failed with a user-facing error."""
        if future.cancelled():
            return None  # shutting down
        error = future.exception()
        if isinstance(error, ShoalError):
            self.fail(error)
            return None
        if error is not None:
            raise error
        return future.result()

    def _piece_read(self, index: int, future: Future[memoryview]) -> None:
        waiting = self._reads.pop(index, [])
        for connection, action in waiting:
            connection.reading -= action.length
        piece = self._outcome(future)
        if piece is None or self._closing:
            return
        for _connection, action in waiting:
            self._send_block(action, piece[action.begin : action.begin + action.length])
        self.pump()

    def _send_block(self, action: core.ReadBlock, block: memoryview) -> None:
        assert self.swarm is not None
        # A copy: a view would keep the whole piece alive while the block waits to be sent.
        self.swarm.send_block(action.peer, action.index, action.begin, bytes(block))

    def _checked(self, index: int, future: Future[bool]) -> None:
        self._verifying.discard(future)
        # Cancelled when shutting down: the piece is not recorded and is fetched next time.
        ok = self._outcome(future)
        if ok is None or self.swarm is None:
            return
        if not ok:
            log.info("piece %d failed verification", index)
        self.swarm.piece_checked(index, ok, self.loop.time())
        self._resume_dirty = True
        self.pump()

    async def _metadata_ready(self, info_bytes: bytes) -> None:
        if self.torrent is not None:
            return
        try:
            self.torrent = parse_info(info_bytes)
            have = await self._open_storage()
        except ShoalError as exc:
            self.fail(exc)
            return
        assert self.swarm is not None
        self.swarm.attach_metadata(self.torrent, have, self.loop.time())
        if self.swarm.complete:
            self.completed.set()
        self.pump()

    def _save_resume(self) -> None:
        """Fold the journal into the record, in a thread; one save at a time, in order."""
        swarm = self.swarm
        if swarm is None or swarm.picker is None or self.storage is None:
            return
        if self._saving is not None and not self._saving.done():
            return  # the next tick or stop() saves again
        self._saving = self.node.io_pool.submit(self.resume.save, bytearray(swarm.picker.have))
        self._saving.add_done_callback(lambda f: self.loop.call_soon_threadsafe(self._outcome, f))
        self._resume_dirty = False
        self._last_resume_save = self.loop.time()

    async def _saved(self) -> None:
        """Wait for the resume save in flight, if any."""
        if self._saving is not None:
            await asyncio.gather(asyncio.wrap_future(self._saving), return_exceptions=True)

    def _schedule_tick(self, when: float) -> None:
        self._timer = self.loop.call_at(when, self._tick)

    def _starving(self) -> bool:
        """Pieces missing, and no peer connected or being dialled."""
        assert self.swarm is not None
        if self.swarm.complete or self.connections:
            return False
        return not self.swarm.sources.dialling()

    def _tick(self) -> None:
        if self.swarm is None or self._closing:
            return
        now = self.loop.time()
        # Send buffers drain without telling us (only a full one reports when it empties):
        # fresh figures keep the node's reply budget from holding bytes long gone.
        for key, connection in list(self.connections.items()):
            self.swarm.flushed(key, connection.unsent(), now)
        self.swarm.handle_timer(now)
        wake = self.swarm.get_timer()
        if self.tracker is not None and self._starving():
            # Ask the trackers again now rather than at their next interval (the schedule
            # still honours each tracker's min interval).
            self.tracker.reannounce()
        if self._resume_dirty and now - self._last_resume_save >= RESUME_SAVE_INTERVAL:
            self._save_resume()
        try:
            self.pump()
        finally:
            self._schedule_tick(wake)  # one failed action must not stop the torrent's clock


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
    ) -> None:
        if encryption not in ENCRYPTION_POLICIES:
            raise ShoalError(f"unknown encryption policy {encryption!r}")
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

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop."""
        return asyncio.get_running_loop()

    async def start(self) -> None:
        """Listen on one port number for TCP and UDP; without a port asked for, take 6881 or
        else any port free for both."""
        if self.requested_port is not None:
            candidates = [self.requested_port]
        else:
            candidates = [DEFAULT_PORT] + [0] * FREE_PORT_TRIES
        for attempt, port in enumerate(candidates):
            try:
                self.port = await self._listen(port)
                return
            except OSError as exc:
                for server in self._servers:
                    server.close()
                self._servers.clear()
                self.datagrams.close()
                if attempt == len(candidates) - 1:
                    raise ShoalError(f"cannot listen on port {port}: {exc.strerror}") from None

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
        if self.host != "0.0.0.0":
            return port
        try:
            # asyncio makes the IPv6 listener IPv6-only, so it and the IPv4 one share the port.
            server6 = await self.loop.create_server(
                lambda: PeerConnection(self), "::", port, reuse_address=True
            )
        except OSError as exc:
            if exc.errno in NO_IPV6_ERRORS:
                return port  # the host has no IPv6
            raise
        self._servers.append(server6)
        udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            udp6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            udp6.bind(("::", port))
            udp6.setblocking(False)
        except OSError:
            udp6.close()
            raise
        await self.loop.create_datagram_endpoint(lambda: self.datagrams, sock=udp6)
        return port

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
        return task

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
        self.datagrams.close()
        for connection, _timer in list(self._handshaking.values()):
            connection.close()
        for task in self.torrents.values():
            await task.stop()
        self.hash_pool.shutdown(wait=True, cancel_futures=True)
        self.io_pool.shutdown(wait=True, cancel_futures=True)
