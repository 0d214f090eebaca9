"""One torrent on a node: its swarm core, storage, resume data, trackers and connections."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .. import __version__
from ..addresses import Address
from ..errors import ShoalError
from ..metainfo import Torrent, parse_info
from ..storage.files import PieceStorage, RecheckStopped, StorageError
from ..storage.resume import ResumeFile
from ..swarm import core
from ..swarm.ratelimit import Limits, TokenBucket
from ..swarm.runner import run_outputs
from ..wire import messages as m
from .connection import PeerConnection

if TYPE_CHECKING:
    from ..tracker.client import AnnounceStats, TrackerClient
    from .node import Node

log = logging.getLogger(__name__)
T = TypeVar("T")

CONNECT_TIMEOUT = 10.0
# Each verified piece goes to the resume journal at once; the record absorbs it this often.
RESUME_SAVE_INTERVAL = 60.0
CLIENT_NAME = f"shoal {__version__}"
# DHT lookups: again this often to renew our announce, and at most this often when starving.
DHT_ANNOUNCE_INTERVAL = 15 * 60.0
DHT_RETRY = 30.0


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
        self._last_dht_lookup = float("-inf")

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
            from ..tracker.client import TrackerClient

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
        if torrent is None or swarm is None:
            return 0, 0
        return swarm.verified_bytes(), torrent.total_length

    def tracker_problem(self) -> str | None:
        """The last error of the trackers, if every one of them is failing."""
        if self.tracker is None:
            return None
        statuses = self.tracker.status()
        if statuses and all(status.last_error for status in statuses):
            return statuses[0].last_error
        return None

    def _announce_stats(self) -> AnnounceStats:
        from ..tracker.client import AnnounceStats

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
        self.node.listings_changed()
        if self.tracker is not None:
            self.tracker.completed()

    def _verify(self, index: int, data: bytearray) -> bool:
        """In a worker thread: hash, write, and journal the piece, so kill -9 loses nothing."""
        assert self.storage is not None
        ok = self.storage.verify_and_write(index, data)
        if ok:
            self.resume.record_piece(index)
        return ok

    def find_peers(self) -> None:
        """Ask the trackers again now rather than at their next interval (the schedule
        still honours each tracker's min interval), and the DHT if its last lookup is old."""
        if self.tracker is not None:
            self.tracker.reannounce()
        if self.loop.time() - self._last_dht_lookup >= DHT_RETRY:
            self._ask_dht()

    def _ask_dht(self) -> None:
        """Look up peers in the DHT and announce ourselves there, and ask the overlay who
        holds the torrent (never for a private torrent, BEP 27)."""
        dht = self.node.dht
        if self.torrent is not None and self.torrent.private:
            return
        self._last_dht_lookup = self.loop.time()
        if dht is not None:
            dht.find_peers(
                self.info_hash,
                lambda peers: self.add_peers(peers, learned=True),
                announce_port=self.node.port,
            )
        if self.node.overlay is not None:
            self.node.overlay.find_peers(
                self.info_hash, lambda peers: self.add_peers(peers, learned=True)
            )

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
        pieces = self.swarm.verified_pieces() if self.swarm is not None else None
        if pieces is None or self.storage is None:
            return
        if self._saving is not None and not self._saving.done():
            return  # the next tick or stop() saves again
        self._saving = self.node.io_pool.submit(self.resume.save, pieces)
        self._saving.add_done_callback(lambda f: self.loop.call_soon_threadsafe(self._outcome, f))
        self._resume_dirty = False
        self._last_resume_save = self.loop.time()

    async def _saved(self) -> None:
        """Wait for the resume save in flight, if any."""
        if self._saving is not None:
            await asyncio.gather(asyncio.wrap_future(self._saving), return_exceptions=True)

    def _schedule_tick(self, when: float) -> None:
        self._timer = self.loop.call_at(when, self._tick)

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
        if self._resume_dirty and now - self._last_resume_save >= RESUME_SAVE_INTERVAL:
            self._save_resume()
        if now - self._last_dht_lookup >= DHT_ANNOUNCE_INTERVAL:
            self._ask_dht()  # announces expire after 30 minutes: renew them well before
        try:
            self.pump()
        finally:
            self._schedule_tick(wake)  # one failed action must not stop the torrent's clock
