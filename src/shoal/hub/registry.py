"""The tracker's swarms (sans-IO): who announced which torrent, and whom to tell about whom."""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

from shoal import addresses
from shoal.errors import ShoalError
from shoal.ratelimit import RateLimiter
from shoal.tracker.messages import Event

__all__ = [
    "AnnounceRequest",
    "AnnounceResult",
    "Event",
    "MalformedRequest",
    "Peer",
    "RateLimiter",
    "Registry",
    "SwarmStats",
    "TrackerConfig",
    "TrackerRefusal",
]

IPV4_LENGTH = 4


class TrackerRefusal(ShoalError):
    """The tracker will not serve this request; the message is the failure reason."""


class MalformedRequest(TrackerRefusal):
    """The request cannot be parsed; it costs its sender the same rate as a served one."""


# Tuples rather than dataclasses: one is made per announce, and tuples are made fastest.
class AnnounceRequest(NamedTuple):
    """One announce, already parsed; ip is the sender's packed address (4 or 16 bytes)."""

    info_hash: bytes
    peer_id: bytes
    ip: bytes
    port: int
    uploaded: int = 0
    downloaded: int = 0
    # None when the client did not say; only left == 0 makes a seeder.
    left: int | None = None
    event: Event = Event.NONE
    numwant: int | None = None


class Peer:
    """A peer in a swarm, known by its compact address (address then port)."""

    __slots__ = ("compact", "finished", "last_seen", "peer_id", "seeder", "slot")

    def __init__(self, compact: bytes, peer_id: bytes, now: float) -> None:
        self.compact = compact
        self.peer_id = peer_id
        self.seeder = False
        # Whether this peer was already counted in the swarm's completed downloads.
        self.finished = False
        self.last_seen = now
        # Position in its swarm's list of peers of the same address family.
        self.slot = 0


class AnnounceResult(NamedTuple):
    """What an announce earns: when to come back, the swarm's size and some peers."""

    interval: int
    min_interval: int
    seeders: int
    leechers: int
    # Compact addresses (BEP 23), ready to join into a reply.
    peers: list[bytes]
    # The peers' ids in the same order, when asked for (non-compact HTTP replies).
    peer_ids: list[bytes] | None = None


class SwarmStats(NamedTuple):
    """A swarm's scrape counts."""

    seeders: int = 0
    completed: int = 0
    leechers: int = 0


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker policy; the defaults suit a public hub."""

    interval: int = 1800
    min_interval: int = 60
    numwant: int = 50
    max_numwant: int = 200
    max_swarms: int = 100_000
    max_peers_per_swarm: int = 10_000
    max_peers_per_ip: int = 32
    max_peers: int = 1_000_000
    # Announces and scrapes per second per source address; None or 0 means no limit.
    announce_rate: float | None = 20.0
    announce_burst: float = 100.0
    max_rate_limited_addresses: int = 100_000
    # Info-hashes this tracker serves; None serves any.
    allowed: frozenset[bytes] | None = None

    @property
    def peer_timeout(self) -> float:
        """Seconds after its last announce that a peer is forgotten."""
        return 2.0 * self.interval


_COMPACT_V4 = IPV4_LENGTH + 2


class _Swarm:
    """One torrent's peers, in order of last announce, plus a list per family to sample from.

    The family lists hold compact addresses rather than Peer objects, so that a run of them
    is a reply's peer list as it is, joined in C.
    """

    __slots__ = ("by_address", "completed", "per_ip", "seeders", "v4", "v6")

    def __init__(self) -> None:
        self.by_address: OrderedDict[bytes, Peer] = OrderedDict()
        self.per_ip: dict[bytes, int] = {}  # packed IP -> how many of its ports are here
        self.v4: list[bytes] = []
        self.v6: list[bytes] = []
        self.seeders = 0
        self.completed = 0

    def family(self, compact: bytes) -> list[bytes]:
        """The list that holds peers of compact's address family."""
        return self.v4 if len(compact) == _COMPACT_V4 else self.v6

    def add(self, peer: Peer) -> None:
        """Insert a new peer as the most recent."""
        self.by_address[peer.compact] = peer
        ip = peer.compact[:-2]
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        family = self.family(peer.compact)
        peer.slot = len(family)
        family.append(peer.compact)

    def remove(self, peer: Peer) -> None:
        """Drop a peer: swap the last of its family into its slot, so removal is O(1)."""
        del self.by_address[peer.compact]
        ip = peer.compact[:-2]
        if self.per_ip[ip] > 1:
            self.per_ip[ip] -= 1
        else:
            del self.per_ip[ip]
        family = self.family(peer.compact)
        last = family.pop()
        if last != peer.compact:
            family[peer.slot] = last
            self.by_address[last].slot = peer.slot
        if peer.seeder:
            self.seeders -= 1

    def oldest(self) -> Peer | None:
        """The peer whose last announce is the longest ago."""
        return next(iter(self.by_address.values()), None)

    def stats(self) -> SwarmStats:
        """The scrape counts."""
        return SwarmStats(self.seeders, self.completed, len(self.by_address) - self.seeders)


def _window(family: list[bytes], count: int, rng: random.Random) -> list[bytes]:
    """count peers of family from a random starting point, wrapping around."""
    size = len(family)
    if count >= size:
        return family[:]
    # A run from a random start costs O(count), where a true sample of a large list costs
    # much more; arrival order is shuffled by swap-removal, and each announce gets a new run.
    start = int(rng.random() * size)
    stop = start + count
    if stop <= size:
        return family[start:stop]
    return family[start:] + family[: stop - size]


class Registry:
    """All swarms, keyed by info-hash; takes announces and scrapes plus the current time."""

    def __init__(
        self, config: TrackerConfig | None = None, rng: random.Random | None = None
    ) -> None:
        self.config = config or TrackerConfig()
        self._rng = rng or random.Random()
        # Least recently announced first: the end to evict from when the tracker is full.
        self._swarms: OrderedDict[bytes, _Swarm] = OrderedDict()
        self._limiter = RateLimiter(
            self.config.announce_rate,
            self.config.announce_burst,
            self.config.max_rate_limited_addresses,
        )
        self.peer_count = 0
        self.announces = 0

    @property
    def swarm_count(self) -> int:
        """How many torrents have peers (or had them within a peer timeout)."""
        return len(self._swarms)

    def check_rate(self, ip: bytes, now: float) -> None:
        """Raise TrackerRefusal if ip has made too many requests lately."""
        if not self._limiter.allow(ip, now):
            raise TrackerRefusal("too many requests from this address; slow down")

    def refuse_malformed(self, problem: MalformedRequest, ip: bytes, now: float) -> str:
        """The failure reason for a malformed request from ip (a proven sender), rate counted."""
        # Else requests that fail to parse would cost work and replies without limit.
        try:
            self.check_rate(ip, now)
        except TrackerRefusal as limited:
            return str(limited)
        return str(problem)

    def announce(
        self,
        request: AnnounceRequest,
        now: float,
        *,
        mixed_families: bool = True,
        peer_ids: bool = False,
    ) -> AnnounceResult:
        """Record an announce and pick peers for it.

        With mixed_families peers of both address families are returned (HTTP: peers and
        peers6); without, only the announcer's own family (UDP replies hold one size).
        With peer_ids the result also names each peer's id.
        """
        self.check_rate(request.ip, now)
        config = self.config
        info_hash = request.info_hash
        if config.allowed is not None and info_hash not in config.allowed:
            raise TrackerRefusal("this tracker does not serve that torrent")
        self.announces += 1
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            if request.event == Event.STOPPED:
                return AnnounceResult(config.interval, config.min_interval, 0, 0, [])
            swarm = self._new_swarm(info_hash)
        else:
            self._swarms.move_to_end(info_hash)
            self._expire_swarm(swarm, now)

        compact = addresses.join(request.ip, request.port)
        peer = swarm.by_address.get(compact)
        if request.event == Event.STOPPED:
            if peer is not None:
                # A leecher that leaves with nothing left to fetch completed on its way out
                # (aria2 stops this way when it is not to seed).
                if request.left == 0 and not peer.seeder and not peer.finished:
                    swarm.completed += 1
                swarm.remove(peer)
                self.peer_count -= 1
            return self._result(swarm, [])

        if peer is None:
            ip = compact[:-2]
            crowded = swarm.per_ip.get(ip, 0) >= config.max_peers_per_ip
            if crowded and not addresses.is_loopback_ip(ip):
                # Else one address could fill a swarm with port variants and push real peers
                # out. Loopback is exempt: peers on this very machine share it by nature.
                raise TrackerRefusal("too many peers from this address in this swarm")
            self._make_room(swarm)
            peer = Peer(compact, request.peer_id, now)
            swarm.add(peer)
            self.peer_count += 1
            was_leecher = False
        else:
            swarm.by_address.move_to_end(compact)
            peer.peer_id = request.peer_id
            peer.last_seen = now
            was_leecher = not peer.seeder

        seeder = request.left == 0
        if seeder != peer.seeder:
            swarm.seeders += 1 if seeder else -1
            peer.seeder = seeder
        # Some clients never send "completed"; a leecher turning seeder has completed too.
        if not peer.finished and (request.event == Event.COMPLETED or (seeder and was_leecher)):
            peer.finished = True
            swarm.completed += 1

        wanted = request.numwant
        if wanted is None or wanted < 0:
            wanted = config.numwant
        wanted = min(wanted, config.max_numwant)
        picked = self._pick(swarm, compact, wanted, mixed_families)
        ids = [swarm.by_address[entry].peer_id for entry in picked] if peer_ids else None
        return self._result(swarm, picked, ids)

    def peers(self, info_hash: bytes, wanted: int, ip: bytes, now: float) -> list[bytes]:
        """Up to wanted peers of info_hash (compact, both families) for one who only asks:
        ip is not recorded, only rate counted."""
        self.check_rate(ip, now)
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            return []
        self._expire_swarm(swarm, now)
        return self._pick(swarm, b"", min(wanted, self.config.max_numwant), True)

    def _result(
        self, swarm: _Swarm, peers: list[bytes], peer_ids: list[bytes] | None = None
    ) -> AnnounceResult:
        config = self.config
        leechers = len(swarm.by_address) - swarm.seeders
        return AnnounceResult(
            config.interval, config.min_interval, swarm.seeders, leechers, peers, peer_ids
        )

    def _pick(self, swarm: _Swarm, asker: bytes, wanted: int, mixed_families: bool) -> list[bytes]:
        """Up to wanted peers other than asker, from a random place in the swarm."""
        if wanted <= 0:
            return []
        rng = self._rng
        # One extra, in case the asker itself is among them.
        if not mixed_families:
            picked = _window(swarm.family(asker), wanted + 1, rng)
        else:
            total = len(swarm.by_address)
            if total <= wanted + 1:
                picked = swarm.v4 + swarm.v6
            else:
                # Share the places between the families in proportion to their sizes.
                from_v6 = (wanted + 1) * len(swarm.v6) // total
                picked = _window(swarm.v4, wanted + 1 - from_v6, rng)
                if from_v6:
                    picked += _window(swarm.v6, from_v6, rng)
        if asker in picked:
            picked.remove(asker)
        del picked[wanted:]
        return picked

    def _new_swarm(self, info_hash: bytes) -> _Swarm:
        """Create a swarm, evicting the least recently announced one if the tracker is full."""
        while len(self._swarms) >= self.config.max_swarms:
            _, evicted = self._swarms.popitem(last=False)
            self.peer_count -= len(evicted.by_address)
        swarm = self._swarms[info_hash] = _Swarm()
        return swarm

    def _make_room(self, swarm: _Swarm) -> None:
        """Before adding a peer to swarm, evict the oldest peers over the caps."""
        if len(swarm.by_address) >= self.config.max_peers_per_swarm:
            oldest = swarm.oldest()
            assert oldest is not None
            swarm.remove(oldest)
            self.peer_count -= 1
        while self.peer_count >= self.config.max_peers:
            # The oldest peer of the least recently announced swarm (swarm itself is the most
            # recent, so it is reached last).
            info_hash, victim_swarm = next(iter(self._swarms.items()))
            victim = victim_swarm.oldest()
            if victim is None:
                if victim_swarm is swarm:
                    return
                del self._swarms[info_hash]
                continue
            victim_swarm.remove(victim)
            self.peer_count -= 1

    def _expire_swarm(self, swarm: _Swarm, now: float) -> int:
        """Forget swarm's peers that have not announced within the peer timeout."""
        deadline = now - self.config.peer_timeout
        removed = 0
        while (oldest := swarm.oldest()) is not None and oldest.last_seen < deadline:
            swarm.remove(oldest)
            removed += 1
        self.peer_count -= removed
        return removed

    def expire(self, now: float) -> int:
        """Forget silent peers and empty swarms everywhere; return how many peers went."""
        removed = 0
        for info_hash, swarm in list(self._swarms.items()):
            removed += self._expire_swarm(swarm, now)
            if not swarm.by_address:
                del self._swarms[info_hash]
        return removed

    def scrape(self, info_hashes: list[bytes], ip: bytes, now: float) -> list[SwarmStats]:
        """Counts for each info-hash (zeros for an unknown one), rate limited like announces."""
        self.check_rate(ip, now)
        empty = SwarmStats()
        swarms = self._swarms
        return [
            swarm.stats() if (swarm := swarms.get(info_hash)) is not None else empty
            for info_hash in info_hashes
        ]

    def stats(self, info_hash: bytes) -> SwarmStats:
        """Counts for one info-hash, with no rate limit (for the hub's own search results)."""
        swarm = self._swarms.get(info_hash)
        return swarm.stats() if swarm is not None else SwarmStats()
