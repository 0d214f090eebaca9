"""The DHT on the node's UDP port: the sans-IO `DhtNode` run on the event loop's clock, its
routing table kept in the state folder between runs."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import random
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

from ..addresses import Address
from ..contract import Datagram
from ..datagrams import DatagramPort
from ..dht.core import DhtNode, ItemFound, ListingsFound, LookupDone, PeersFound, SamplesFound
from ..dht.items import Item, mutable, mutable_target
from ..dht.listings import DhtListing, keyword_key, keywords, matches
from ..dht.routing import NodeInfo, RoutingTable
from ..errors import ShoalError
from ..identity import Identity
from ..words import words
from .adapter import CoreClock, resolve

log = logging.getLogger(__name__)

# The well-known routers, for real use only: tests and the demo always name local nodes.
PUBLIC_ROUTERS: tuple[Address, ...] = (
    ("router.bittorrent.com", 6881),
    ("dht.transmissionbt.com", 6881),
    ("router.utorrent.com", 6881),
    ("dht.libtorrent.org", 25401),
)
# One table per port: two shoal processes on one machine are two nodes, with two ids.
TABLE_FILE = "dht-{port}.dat"
# A port the system picks changes every run: such nodes keep their tables in a few slots, each
# held (flock on its lock file) by one running process, so no two share an id and the files
# stay as few as the processes run at once; with every slot held, a table is not saved.
SLOT_FILE = "dht-slot-{slot}.dat"
SLOT_LOCK = "dht-slot-{slot}.lock"
TABLE_SLOTS = 8

PeersCallback = Callable[[list[Address]], None]


class DhtService(CoreClock[DhtNode]):
    """One DHT node on the node's datagram port."""

    def __init__(
        self, datagrams: DatagramPort, state: Path | None, *, read_only: bool = False
    ) -> None:
        """read_only: ask but never answer, and so stay out of others' tables (BEP 43)."""
        super().__init__()
        self.datagrams = datagrams
        self.state = state
        self.read_only = read_only
        self.table_path: Path | None = None
        self._slot_lock: int | None = None  # the descriptor holding a slot's lock
        self._on_peers: dict[int, PeersCallback] = {}
        self._finished: dict[int, asyncio.Future[LookupDone]] = {}
        self._deferred: dict[bytes, tuple[PeersCallback, int | None]] = {}
        self._deferred_publish: dict[bytes, DhtListing] = {}
        self._join_waiters: list[asyncio.Future[None]] = []  # see joined()
        self._on_listings: dict[int, Callable[[list[DhtListing]], None]] = {}
        self._on_item: dict[int, Callable[[Item], None]] = {}
        self._samples: dict[int, asyncio.Future[SamplesFound]] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop."""
        return asyncio.get_running_loop()

    async def start(self, routers: Sequence[Address], port: int, *, port_fixed: bool) -> None:
        """Load the table saved last time on this port (on a port the system picked, in a free
        slot), or pick a new id; take the port's KRPC datagrams, and join through the routers
        and the nodes remembered."""
        if self.state is not None:
            if port_fixed:
                self.table_path = self.state / TABLE_FILE.format(port=port)
            else:
                self.table_path = self._take_slot(self.state)
        now = self.loop.time()
        rng = random.Random()
        node_id, remembered = self._load()
        table = RoutingTable(node_id or rng.randbytes(20), rng=rng)
        for node in remembered:
            with contextlib.suppress(ValueError):
                table.restore(node, now)
        both = self.datagrams.serves(socket.AF_INET) and self.datagrams.serves(socket.AF_INET6)
        self.core = DhtNode(
            table.own_id, now, rng=rng, table=table, read_only=self.read_only, both_families=both
        )
        self.datagrams.serve(b"d", self._receive)
        resolved = await self._resolve(routers)
        self.core.bootstrap(resolved, self.loop.time())
        self._last_save = self.loop.time()
        self._pump()

    def find_peers(
        self, info_hash: bytes, on_peers: PeersCallback, *, announce_port: int | None = None
    ) -> None:
        """Look up peers of info_hash, handing each batch to on_peers; with announce_port,
        announce ourselves at the end (0: our UDP port)."""
        if self.core is None:
            return
        if not self.core.usable():
            # Still joining (or cut off): a lookup now would have nobody to ask. It starts
            # once a node answers (a router's answer puts one in the table); one per torrent.
            self._deferred[info_hash] = (on_peers, announce_port)
            return
        number = self.core.get_peers(info_hash, self.loop.time(), announce_port=announce_port)
        self._on_peers[number] = on_peers
        self._pump()

    def publish(self, listing: DhtListing) -> None:
        """Store a signed listing under each of its words' keys (again before it expires)."""
        if self.core is None:
            return
        if not self.core.usable():
            self._deferred_publish[listing.info_hash] = listing
            return
        self.core.publish_listing(listing, self.loop.time())
        self._pump()

    async def publish_stored(self, listing: DhtListing) -> int:
        """Store a signed listing under each of its words' keys once the node has joined, and
        wait until it is stored: how many stores nodes took, for all the words."""
        await self.joined()
        assert self.core is not None
        numbers = self.core.publish_listing(listing, self.loop.time(), report=True)
        done = await asyncio.gather(*(self._wait(number) for number in numbers))
        return sum(lookup.stored for lookup in done)

    async def search(self, query: str) -> list[DhtListing]:
        """Listings whose names hold every word of query: the nodes closest to the key of
        its longest keyword are asked, and what they hold is filtered by all the words. The
        last word matches as a prefix, so its own key would miss longer words: another is
        asked for if there is one."""
        given = words(query)
        chosen = keywords(" ".join(given[:-1])) or keywords(query)
        if not chosen or self.core is None:
            return []
        await self.joined()
        longest = max(chosen, key=len)
        number = self.core.search_listings(keyword_key(longest), self.loop.time())
        found: list[DhtListing] = []
        self._on_listings[number] = found.extend
        await self._wait(number)
        wanted = words(query)
        return [listing for listing in found if matches(listing, wanted)]

    async def count_peers(self, info_hash: bytes) -> int:
        """How many peers of info_hash the DHT knows."""
        await self.joined()
        assert self.core is not None
        peers: set[Address] = set()
        number = self.core.get_peers(info_hash, self.loop.time())
        self._on_peers[number] = peers.update
        await self._wait(number)
        return len(peers)

    async def get_item(self, target: bytes, salt: bytes = b"") -> Item | None:
        """The BEP 44 item under target (for a mutable one, made with salt; the newest
        found), or None."""
        await self.joined()
        assert self.core is not None
        found: list[Item] = []
        number = self.core.get_item(target, self.loop.time(), salt=salt)
        self._on_item[number] = found.append  # each newer than the one before
        await self._wait(number)
        return found[-1] if found else None

    async def put_item(self, item: Item) -> int:
        """Store a BEP 44 item on the nodes closest to its target; how many took it."""
        await self.joined()
        assert self.core is not None
        done = await self._wait(self.core.put_item(item, self.loop.time()))
        return done.stored

    async def put_mutable(
        self, identity: Identity, value: object, salt: bytes = b""
    ) -> tuple[Item, int]:
        """Sign value as the next version of identity's item under salt and store it; the
        item, and how many nodes took it."""
        key = bytes.fromhex(identity.public_key_hex)
        held = await self.get_item(mutable_target(key, salt), salt)
        item = mutable(identity, value, held.seq + 1 if held is not None else 1, salt)
        return item, await self.put_item(item)

    async def sample(self, address: Address) -> SamplesFound:
        """Ask the node at address (a host name is resolved) for a sample of the info-hashes
        it holds (BEP 51)."""
        resolved = await self._resolve([address])
        if not resolved:
            raise ShoalError(f"{address[0]} is not an address this node can reach")
        assert self.core is not None
        answer: asyncio.Future[SamplesFound] = self.loop.create_future()
        self._samples[self.core.sample_infohashes(resolved[0], self.loop.time())] = answer
        self._pump()
        return await answer

    async def joined(self) -> None:
        """Wait until the table holds a node (a lookup before would have nobody to ask)."""
        if self.core is None or self.core.usable():
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._join_waiters.append(waiter)
        await waiter

    async def _wait(self, number: int) -> LookupDone:
        done: asyncio.Future[LookupDone] = self.loop.create_future()
        self._finished[number] = done
        self._pump()
        return await done

    async def find_node(self, target: bytes) -> LookupDone:
        """Look up the nodes closest to target."""
        assert self.core is not None
        number = self.core.find_node(target, self.loop.time())
        return await self._wait(number)

    def stop(self) -> None:
        """Save the table and stop the timer."""
        self._stop_clock()
        self._save()
        if self._slot_lock is not None:
            os.close(self._slot_lock)  # the slot is free again
            self._slot_lock = None
        self.core = None
        for lookup in self._finished.values():
            lookup.cancel()
        for waiter in self._join_waiters:
            waiter.cancel()
        for sampled in self._samples.values():
            sampled.cancel()
        self._samples.clear()
        self._finished.clear()
        self._join_waiters.clear()

    # -- the core's loop ---------------------------------------------------------------------------

    def _receive(self, data: bytes, sender: Address) -> None:
        if self.core is not None:
            self.core.receive(data, sender, self.loop.time())
            self._pump()

    def _pump(self) -> None:
        core = self.core
        if core is None:
            return
        for output in core.take_outputs():
            if isinstance(output, Datagram):
                self.datagrams.send(output.data, output.address)
            elif isinstance(output, PeersFound):
                callback = self._on_peers.get(output.lookup)
                if callback is not None:
                    # Later, not here: a torrent's callback must not break this loop.
                    self.loop.call_soon(callback, output.peers)
            elif isinstance(output, ListingsFound):
                on_listings = self._on_listings.get(output.lookup)
                if on_listings is not None:
                    on_listings(output.listings)
            elif isinstance(output, SamplesFound):
                sampled = self._samples.pop(output.request, None)
                if sampled is not None and not sampled.done():
                    sampled.set_result(output)
            elif isinstance(output, ItemFound):
                on_item = self._on_item.get(output.lookup)
                if on_item is not None:
                    on_item(output.item)
            elif isinstance(output, LookupDone):
                self._on_peers.pop(output.lookup, None)
                self._on_listings.pop(output.lookup, None)
                self._on_item.pop(output.lookup, None)
                done = self._finished.pop(output.lookup, None)
                if done is not None and not done.done():
                    done.set_result(output)
        if (self._deferred or self._deferred_publish or self._join_waiters) and core.usable():
            waiters, self._join_waiters = self._join_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            deferred, self._deferred = self._deferred, {}
            publish, self._deferred_publish = self._deferred_publish, {}
            for info_hash, (on_peers, announce_port) in deferred.items():
                self.find_peers(info_hash, on_peers, announce_port=announce_port)
            for listing in publish.values():
                self.publish(listing)
            if self.core is not core:
                return  # stopped meanwhile
        self._rearm(core)

    # -- routers and the saved table ---------------------------------------------------------------

    async def _resolve(self, routers: Sequence[Address]) -> list[Address]:
        """Numeric addresses of the routers; names that do not resolve are skipped."""
        return await resolve(routers, socket.SOCK_DGRAM, self.datagrams.serves, "DHT router")

    def _take_slot(self, state: Path) -> Path | None:
        """The table file of the first slot no running node holds, now held by this one;
        None if every slot is held (or the folder cannot be written)."""
        try:
            state.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.info("cannot keep the DHT table in %s: %s", state, exc.strerror)
            return None
        for slot in range(TABLE_SLOTS):
            lock = state / SLOT_LOCK.format(slot=slot)
            try:
                descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                log.info("cannot open %s: %s", lock, exc.strerror)
                return None
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)  # another node holds it
                continue
            except OSError as exc:
                os.close(descriptor)  # a folder without locks: sharing a table is worse
                log.info("cannot lock %s: %s", lock, exc.strerror)
                return None
            self._slot_lock = descriptor
            return state / SLOT_FILE.format(slot=slot)
        log.info(
            "all %d DHT table slots in %s are held: this table is not saved", TABLE_SLOTS, state
        )
        return None

    def _load(self) -> tuple[bytes | None, list[NodeInfo]]:
        if self.table_path is None:
            return None, []
        try:
            data = self.table_path.read_bytes()
            return RoutingTable.load(data)
        except (OSError, ValueError):
            return None, []  # none yet, or unreadable: start afresh

    def _save(self) -> None:
        if self.table_path is None or self.core is None:
            return
        temporary = self.table_path.with_suffix(".tmp")
        try:
            self.table_path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(self.core.table.dump())
            os.replace(temporary, self.table_path)
        except OSError as exc:
            log.info("cannot save the DHT table in %s: %s", self.table_path, exc.strerror)
