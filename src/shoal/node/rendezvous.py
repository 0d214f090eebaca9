"""First overlay neighbours from the DHT and the hub: ultrapeers announce themselves under one
well-known info-hash, and a node short of links asks for the peers of that hash."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..addresses import Address
from ..overlay.messages import Role
from .torrent import DHT_ANNOUNCE_INTERVAL

if TYPE_CHECKING:
    from ..tracker.client import AnnounceStats, TrackerClient
    from .node import Node
    from .overlay import OverlayService

log = logging.getLogger(__name__)

# Announced in the DHT and on the hub's tracker as if it were a torrent's info-hash.
RENDEZVOUS_KEY = hashlib.sha1(b"shoal overlay ultrapeers").digest()
# How often a node looks at its links; a node short of them asks the DHT at most every
# LOOKUP_INTERVAL (the tracker at most at its min interval).
CHECK_INTERVAL = 5.0
LOOKUP_INTERVAL = 60.0
# Addresses taken from one answer, at most (the host cache is bounded too).
MAX_ADDRESSES = 50


class Rendezvous:
    """Announces an ultrapeer under RENDEZVOUS_KEY (in the DHT unless it is read-only, on the
    hub's tracker if the node has one) and, while its overlay is short of ultrapeer links,
    hands the addresses found under the key to the overlay. Leaves only ask."""

    def __init__(self, node: Node, overlay: OverlayService, trackers: Sequence[str] = ()) -> None:
        """trackers: announce URLs (the hub's) to meet ultrapeers at."""
        self.node = node
        self.overlay = overlay
        self.trackers = list(trackers)
        self.announces = overlay.role == Role.ULTRAPEER
        self.tracker: TrackerClient | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_dht_lookup = float("-inf")
        self._last_dht_announce = float("-inf")

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop."""
        return asyncio.get_running_loop()

    def start(self) -> None:
        """Announce (an ultrapeer) and ask at once, then look again every CHECK_INTERVAL."""
        if self.trackers and self.announces:
            from ..tracker.client import TrackerClient

            self.tracker = TrackerClient(
                RENDEZVOUS_KEY,
                self.node.peer_id,
                self.node.port,
                [self.trackers],
                _seeding,
                self._found,
                datagrams=self.node.datagrams,
            )
            self.tracker.start()
        self._check()

    async def stop(self) -> None:
        """Stop looking, and leave the hub's tracker (a DHT announce expires by itself)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.tracker is not None:
            await self.tracker.stop()
            self.tracker = None

    def short(self) -> bool:
        """Whether the overlay has fewer than half the ultrapeer links it aims at."""
        core = self.overlay.core
        if core is None:
            return False
        linked = sum(1 for link in core.links() if link.is_ultrapeer())
        return linked < max(1, core.degree // 2)

    def _check(self) -> None:
        self._timer = None
        if self.overlay.core is None:
            return
        now = self.loop.time()
        dht = self.node.dht
        if dht is not None and dht.core is not None:
            announce = self.announces and not dht.read_only
            if announce and now - self._last_dht_announce >= DHT_ANNOUNCE_INTERVAL:
                # A lookup that announces finds the peers too.
                self._last_dht_announce = self._last_dht_lookup = now
                dht.find_peers(RENDEZVOUS_KEY, self._found, announce_port=self.node.port)
            elif self.short() and now - self._last_dht_lookup >= LOOKUP_INTERVAL:
                self._last_dht_lookup = now
                dht.find_peers(RENDEZVOUS_KEY, self._found)
        if self.tracker is not None and self.short():
            self.tracker.reannounce()  # no sooner than the tracker's min interval
        self._timer = self.loop.call_later(CHECK_INTERVAL, self._check)

    def _found(self, peers: list[Address]) -> None:
        fresh = [peer for peer in peers[:MAX_ADDRESSES] if not self.node.is_self(peer)]
        if fresh:
            log.debug("ultrapeers met through the rendezvous: %s", fresh)
            self.overlay.add_hosts(fresh)


def _seeding() -> AnnounceStats:
    """What an ultrapeer tells the tracker: nothing moved, nothing left (a seeder)."""
    from ..tracker.client import AnnounceStats

    return AnnounceStats(uploaded=0, downloaded=0, left=0)
