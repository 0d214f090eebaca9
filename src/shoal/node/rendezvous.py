"""First overlay neighbours from the DHT and the hub: ultrapeers announce themselves under one
well-known info-hash, and a node short of links asks for the peers of that hash."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import TYPE_CHECKING

from ..addresses import Address
from ..errors import ShoalError
from ..overlay.messages import Role
from .torrent import DHT_ANNOUNCE_INTERVAL

if TYPE_CHECKING:
    from ..tracker.client import AnnounceStats, TrackerClient
    from .node import Node
    from .overlay import OverlayService

log = logging.getLogger(__name__)

# Announced in the DHT and on the hub's tracker as if it were a torrent's info-hash.
RENDEZVOUS_KEY = hashlib.sha1(b"shoal overlay ultrapeers").digest()
# How often a node looks at its links; a node short of them asks the DHT (and a leaf the
# hub) at most every LOOKUP_INTERVAL, an ultrapeer the hub's tracker at its min interval.
CHECK_INTERVAL = 5.0
LOOKUP_INTERVAL = 60.0
# Addresses taken from one answer, at most (the host cache is bounded too).
MAX_ADDRESSES = 50


class Rendezvous:
    """Announces an ultrapeer under RENDEZVOUS_KEY (in the DHT, and on the hub's tracker if
    the node has a hub) and, while its overlay is short of ultrapeer links, hands the
    addresses found under the key to the overlay. Leaves and read-only DHT nodes only ask
    (the hub without an announce)."""

    def __init__(self, node: Node, overlay: OverlayService, hub: str | None = None) -> None:
        """hub: the base URL of a hub to meet ultrapeers at."""
        self.node = node
        self.overlay = overlay
        self.hub = hub
        # A node that only searches (a leaf, or a read-only DHT node) is never announced.
        read_only = node.dht is not None and node.dht.read_only
        self.announces = overlay.role == Role.ULTRAPEER and not read_only
        self.tracker: TrackerClient | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._asking: asyncio.Task[None] | None = None  # a leaf's question to the hub
        self._last_dht_lookup = float("-inf")
        self._last_dht_announce = float("-inf")
        self._last_hub_lookup = float("-inf")

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop."""
        return asyncio.get_running_loop()

    def start(self) -> None:
        """Announce (an ultrapeer) and ask at once, then look again every CHECK_INTERVAL."""
        if self.hub is not None and self.announces:
            from ..hub.urls import announce_url
            from ..tracker.client import TrackerClient

            self.tracker = TrackerClient(
                RENDEZVOUS_KEY,
                self.node.peer_id,
                self.node.port,
                [[announce_url(self.hub)]],
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
        if self._asking is not None:
            self._asking.cancel()
            self._asking = None
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
        self._use_dht(now)
        if self.short():
            self._use_hub(now)
        self._timer = self.loop.call_later(CHECK_INTERVAL, self._check)

    def _use_dht(self, now: float) -> None:
        """Announce an ultrapeer again when due (the lookup finds the peers too), else ask
        when short of links."""
        dht = self.node.dht
        if dht is None or dht.core is None:
            return
        if self.announces and now - self._last_dht_announce >= DHT_ANNOUNCE_INTERVAL:
            self._last_dht_announce = self._last_dht_lookup = now
            dht.find_peers(RENDEZVOUS_KEY, self._found, announce_port=self.node.port)
        elif self.short() and now - self._last_dht_lookup >= LOOKUP_INTERVAL:
            self._last_dht_lookup = now
            dht.find_peers(RENDEZVOUS_KEY, self._found)

    def _use_hub(self, now: float) -> None:
        """Short of links: announce on the hub's tracker again (an ultrapeer), or ask it."""
        if self.tracker is not None:
            self.tracker.reannounce()  # no sooner than the tracker's min interval
            return
        idle = self._asking is None and now - self._last_hub_lookup >= LOOKUP_INTERVAL
        if self.hub is not None and idle:
            self._last_hub_lookup = now
            self._asking = self.loop.create_task(self._ask_hub(self.hub))

    async def _ask_hub(self, hub: str) -> None:
        """The hub's peers of the key, asked without announcing."""
        from ..hub import client as hub_client

        try:
            self._found(await hub_client.peers(hub, RENDEZVOUS_KEY, MAX_ADDRESSES))
        except ShoalError as exc:
            log.info("cannot ask the hub for ultrapeers: %s", exc)
        finally:
            self._asking = None

    def _found(self, peers: list[Address]) -> None:
        fresh = [peer for peer in peers[:MAX_ADDRESSES] if not self.node.is_self(peer)]
        if fresh:
            log.debug("ultrapeers met through the rendezvous: %s", fresh)
            self.overlay.add_hosts(fresh)


def _seeding() -> AnnounceStats:
    """What an ultrapeer tells the tracker: nothing moved, nothing left (a seeder)."""
    from ..tracker.client import AnnounceStats

    return AnnounceStats(uploaded=0, downloaded=0, left=0)
