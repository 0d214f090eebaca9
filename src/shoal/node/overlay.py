"""The overlay on the node's TCP port: the sans-IO `OverlayNode` run on the event loop's clock,
each link an asyncio protocol, the host cache kept in the state folder between runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .. import addresses
from ..addresses import Address
from ..metainfo import MetainfoError
from ..metainfo.magnet import parse_peer
from ..overlay.core import Close, Dial, Found, OverlayNode, SearchEnded, Send
from ..overlay.messages import Result, Role
from ..overlay.search import WANTED, Strategy, hash_query
from .adapter import resolve
from .streamlink import StreamLink, StreamService

log = logging.getLogger(__name__)

HOSTS_FILE = "overlay-hosts.txt"
SAVED_HOSTS = 200  # addresses written at exit, those that answered first
LOADED_HOSTS = 1000  # lines read at start, at most
# Hits held for a search's reader (the oldest make way), and peer lookups waiting for a link.
SEARCH_BUFFER = 1024
MAX_DEFERRED = 256

PeersCallback = Callable[[list[Address]], None]


@dataclass(frozen=True)
class OverlayOptions:
    """How a node joins the overlay: the ultrapeers it dials first, its role, and the hub
    (its base URL) where ultrapeers meet (see node/rendezvous)."""

    peers: tuple[Address, ...] = ()
    leaf: bool = False
    hub: str | None = None


@dataclass(frozen=True, slots=True)
class OverlayHit:
    """One result of an overlay search, and who holds it (a BitTorrent peer too)."""

    result: Result
    holder: Address
    hops: int


@dataclass(eq=False)
class _Search:
    """Hits of one search waiting for its reader."""

    hits: deque[OverlayHit] = field(default_factory=lambda: deque(maxlen=SEARCH_BUFFER))
    ended: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class OverlayService(StreamService[OverlayNode]):
    """The overlay core on the node's TCP port number."""

    kind = "overlay"

    def __init__(self, options: OverlayOptions, state: Path | None) -> None:
        """state: where the host cache is kept between runs (None: nowhere)."""
        super().__init__()
        self.options = options
        self.role = Role.LEAF if options.leaf else Role.ULTRAPEER
        self.hosts_path = None if state is None else state / HOSTS_FILE
        self._searches: dict[bytes, _Search] = {}
        # Peer lookups by search id: the info-hash asked for, and whom to hand holders to.
        self._peer_lookups: dict[bytes, tuple[bytes, PeersCallback]] = {}
        self._deferred: dict[bytes, PeersCallback] = {}
        self._join_waiters: list[asyncio.Future[None]] = []
        self._listings: list[Result] = []

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop."""
        return asyncio.get_running_loop()

    async def start(self, port: int) -> None:
        """Start the core on port (the node's), with the hosts saved last time and the peers
        given, and dial."""
        now = self.loop.time()
        rng = random.Random()
        self.core = OverlayNode(rng.randbytes(20), port, self.role, rng, now=now)
        self.core.set_listings(self._listings)
        self.core.add_hosts(self._load(), now)
        given = await resolve(self.options.peers, socket.SOCK_STREAM, what="overlay peer")
        self.core.add_hosts(given, now)
        self._last_save = now
        self._pump()

    def stop(self) -> None:
        """Save the host cache, close every link and end every search."""
        self._stop_clock()
        self._save()
        self.core = None
        self._close_all()
        for search in self._searches.values():
            search.ended = True
            search.wake.set()
        for waiter in self._join_waiters:
            waiter.cancel()
        self._join_waiters.clear()

    # What the node offers and asks.

    def set_listings(self, listings: Iterable[Result]) -> None:
        """The torrents this node shares, which it answers queries with."""
        self._listings = list(listings)
        if self.core is not None:
            self.core.set_listings(self._listings)
            self._pump()

    def add_hosts(self, addresses: Iterable[Address]) -> None:
        """Ultrapeers to try (met through the DHT or the hub)."""
        if self.core is not None:
            self.core.add_hosts(addresses, self.loop.time())
            self._pump()

    def joined(self) -> bool:
        """Whether a link to an ultrapeer is open (a search before would reach nobody)."""
        core = self.core
        return core is not None and any(link.is_ultrapeer() for link in core.links())

    async def wait_joined(self) -> None:
        """Wait until a link to an ultrapeer is open."""
        if self.core is None or self.joined():
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._join_waiters.append(waiter)
        await waiter

    async def search(
        self,
        text: str,
        strategy: Strategy = Strategy.FLOOD,
        *,
        wanted: int = WANTED,
        ttl: int | None = None,
    ) -> AsyncIterator[OverlayHit]:
        """The hits of a search for the words of text, as they come, until it ends."""
        if self.core is None:
            return
        search_id = self.core.search(text, strategy, self.loop.time(), wanted=wanted, ttl=ttl)
        search = self._searches[search_id] = _Search()
        self._pump()
        try:
            while True:
                while search.hits:
                    yield search.hits.popleft()
                if search.ended:
                    return
                search.wake.clear()
                await search.wake.wait()
        finally:
            self._searches.pop(search_id, None)

    def find_peers(self, info_hash: bytes, on_peers: PeersCallback) -> None:
        """Ask the overlay who holds info_hash, handing each holder's address to on_peers."""
        if self.core is None:
            return
        if not self.joined():
            # No link yet: the query would reach nobody. It goes out at the first link.
            if info_hash in self._deferred or len(self._deferred) < MAX_DEFERRED:
                self._deferred[info_hash] = on_peers
            return
        now = self.loop.time()
        search_id = self.core.search(hash_query(info_hash), Strategy.FLOOD, now)
        self._peer_lookups[search_id] = (info_hash, on_peers)
        self._pump()

    # Links.

    def adopt(self, transport: asyncio.BaseTransport, address: Address, first: bytes) -> None:
        """An incoming connection that opened with the overlay's greeting (first: the bytes
        read so far, greeting included) becomes a link, if the core takes it."""
        core = self.core
        number = None if core is None else core.accept(address, self.loop.time())
        if core is None or number is None:
            transport.close()
            return
        self._adopt_link(transport, number)
        core.receive(number, first, self.loop.time())
        self._pump()

    def dialled(self, link: StreamLink) -> None:
        if self.core is None or link.number not in self._dials:
            link.close()  # stopped, or the core gave the link up while it was dialled
            return
        self._links[link.number] = link
        self.core.connected(link.number, self.loop.time())
        self._pump()

    # The core's loop.

    def _pump(self) -> None:
        core = self.core
        if core is None:
            return
        while outputs := core.take_outputs():
            for output in outputs:
                self._carry_out(core, output)
        if self.joined() and (self._join_waiters or self._deferred):
            waiters, self._join_waiters = self._join_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            deferred, self._deferred = self._deferred, {}
            for info_hash, on_peers in deferred.items():
                self.find_peers(info_hash, on_peers)
            if self.core is not core:
                return  # stopped meanwhile
        self._rearm(core)

    def _carry_out(self, core: OverlayNode, output: object) -> None:
        if isinstance(output, Send):
            self._write(core, output)
        elif isinstance(output, Dial):
            number = output.link
            self._dial(number, output.address, lambda: core.dial_failed(number, self.now()))
        elif isinstance(output, Close):
            self._close(output)
        elif isinstance(output, Found):
            self._found(output)
        elif isinstance(output, SearchEnded):
            self._peer_lookups.pop(output.search, None)
            search = self._searches.get(output.search)
            if search is not None:
                search.ended = True
                search.wake.set()

    def _found(self, found: Found) -> None:
        lookup = self._peer_lookups.get(found.search)
        if lookup is not None:
            info_hash, on_peers = lookup
            # Only a holder of the torrent asked for (a hit is a neighbour's word); and
            # later, not here: a torrent's callback must not break this loop.
            if any(result.info_hash == info_hash for result in found.hit.results):
                self.loop.call_soon(on_peers, [found.hit.holder])
            return
        search = self._searches.get(found.search)
        if search is not None:
            for result in found.hit.results:
                search.hits.append(OverlayHit(result, found.hit.holder, found.hops))
            search.wake.set()

    # The host cache in the state folder.

    def _load(self) -> list[Address]:
        if self.hosts_path is None:
            return []
        try:
            with self.hosts_path.open(encoding="utf-8", errors="replace") as lines:
                found = []
                for _number, line in zip(range(LOADED_HOSTS), lines, strict=False):
                    with contextlib.suppress(MetainfoError):
                        found.append(parse_peer(line.strip()))
                return found
        except OSError:
            return []  # none yet, or unreadable: start with the peers given

    def _save(self) -> None:
        if self.hosts_path is None or self.core is None:
            return
        hosts = self.core.hosts.addresses()[:SAVED_HOSTS]
        text = "".join(f"{addresses.text(host)}\n" for host in hosts)
        temporary = self.hosts_path.with_name(f".{HOSTS_FILE}.{os.getpid()}.{id(self)}")
        try:
            self.hosts_path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(text, encoding="utf-8")
            os.replace(temporary, self.hosts_path)
        except OSError as exc:
            log.info("cannot save the overlay hosts in %s: %s", self.hosts_path, exc.strerror)
