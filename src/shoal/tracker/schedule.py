"""When to announce to which tracker, with which event (BEP 12 tiers), sans-IO."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from .messages import AnnounceResponse, Event, tracker_kind

__all__ = ["Announce", "AnnounceSchedule", "TrackerStatus", "backoff"]

DEFAULT_INTERVAL = 1800
# Bounds on what a tracker may ask of us: not more often than a minute, at least every 6 h.
MIN_INTERVAL = 60
MAX_INTERVAL = 6 * 3600
# Early re-announces (`reannounce`) wait at least this long after the last one.
MIN_REANNOUNCE = 30
BACKOFF_FIRST = 30.0
BACKOFF_MAX = 1800.0
# Trackers kept per torrent: a metainfo file could list thousands.
MAX_TRACKERS = 200


def backoff(failures: int) -> float:
    """Seconds to wait after `failures` rounds in a row in which no tracker of a tier answered."""
    return min(BACKOFF_FIRST * 2.0 ** min(failures - 1, 16), BACKOFF_MAX)


@dataclass(frozen=True)
class Announce:
    """An announce the adapter should make now; report back with succeeded() or failed()."""

    tier: int
    url: str
    event: Event
    tracker_id: bytes | None = None
    # Whether the tracker learns of our completion from this announce.
    completes: bool = False


@dataclass(frozen=True)
class TrackerStatus:
    """What one tracker last did, for display."""

    url: str
    tier: int
    last_error: str | None
    peers: int
    next_announce: float | None
    seeders: int | None = None
    leechers: int | None = None
    warning: str | None = None


@dataclass
class _Tracker:
    url: str
    last_error: str | None = None
    peers: int = 0
    seeders: int | None = None
    leechers: int | None = None
    warning: str | None = None
    tracker_id: bytes | None = None
    # Whether it has accepted a `started` from us, so it is owed a `stopped`.
    started: bool = False


@dataclass
class _Tier:
    trackers: list[_Tracker]
    unusable: list[_Tracker]
    # The tracker being tried in this round; a round ends when one answers or all failed.
    position: int = 0
    next_time: float | None = None
    in_flight: Announce | None = None
    interval: int = DEFAULT_INTERVAL
    min_interval: int = MIN_REANNOUNCE
    last_success: float | None = None
    failures: int = 0
    completed_pending: bool = False


class AnnounceSchedule:
    """Announces to every tier, one tracker per tier at a time, retrying down the tier."""

    def __init__(self, tiers: Sequence[Sequence[str]], *, rng: random.Random | None = None):
        self._rng = rng if rng is not None else random.Random()
        self._tiers: list[_Tier] = []
        self._known: set[str] = set()
        self._started = False
        self._stopped = False
        self._completed = False
        self._outputs: list[Announce] = []
        for urls in tiers:
            self.add_tier(urls)

    def add_tier(self, urls: Sequence[str], now: float | None = None) -> None:
        """Add a tier of announce URLs (known URLs are skipped); once started, it is due now."""
        tier = _Tier([], [])
        for url in urls:
            if url in self._known or len(self._known) >= MAX_TRACKERS:
                continue
            self._known.add(url)
            tracker = _Tracker(url)
            if tracker_kind(url) is None:
                tracker.last_error = "the URL is not that of an http, https or udp tracker"
                tier.unusable.append(tracker)
            else:
                tier.trackers.append(tracker)
        if not tier.trackers and not tier.unusable:
            return
        # BEP 12: shuffle each tier once; after that the order changes only by success.
        self._rng.shuffle(tier.trackers)
        tier.completed_pending = self._completed
        self._tiers.append(tier)
        if self._started and not self._stopped and now is not None:
            tier.next_time = now

    def start(self, now: float) -> None:
        """Announce `started` to every tier now."""
        if self._started:
            return
        self._started = True
        for tier in self._tiers:
            tier.next_time = now

    def completed(self, now: float) -> None:
        """Tell every tier the download completed (once), unless it is backing off."""
        if self._completed:
            return
        self._completed = True
        for tier in self._tiers:
            tier.completed_pending = True
            if tier.next_time is not None and tier.failures == 0:
                tier.next_time = now

    def reannounce(self, now: float) -> None:
        """Announce early to get more peers, but not sooner than each tier's min interval."""
        for tier in self._tiers:
            if tier.next_time is None or tier.last_success is None or tier.failures:
                continue
            earliest = max(now, tier.last_success + tier.min_interval)
            tier.next_time = min(tier.next_time, earliest)

    def stop(self, now: float) -> None:
        """End the schedule; queue the `stopped` announces owed to trackers told `started`."""
        if self._stopped:
            return
        self._stopped = True
        self._outputs.clear()  # announces queued and not yet taken are moot now
        finals = self._outputs
        for index, tier in enumerate(self._tiers):
            flight = tier.in_flight
            # A `started` still in flight may have reached its tracker: it gets a stopped too.
            starting = flight.url if flight and flight.event is Event.STARTED else None
            for tracker in tier.trackers:
                if tracker.started or tracker.url == starting:
                    finals.append(Announce(index, tracker.url, Event.STOPPED, tracker.tracker_id))
            tier.next_time = None
            tier.in_flight = None

    def get_timer(self) -> float | None:
        """When handle_timer next has an announce to queue; None if nothing is scheduled."""
        times = [
            tier.next_time
            for tier in self._tiers
            if tier.next_time is not None and tier.in_flight is None and tier.trackers
        ]
        return min(times, default=None)

    def take_outputs(self) -> list[Announce]:
        """The announces to make, in order; each is in flight until reported."""
        outputs, self._outputs = self._outputs, []
        return outputs

    def handle_timer(self, now: float) -> None:
        """Queue the announces due now, at most one per tier."""
        if not self._started or self._stopped:
            return
        announces = self._outputs
        for index, tier in enumerate(self._tiers):
            if tier.in_flight is not None or not tier.trackers:
                continue
            if tier.next_time is None or tier.next_time > now:
                continue
            tracker = tier.trackers[tier.position]
            if not tracker.started:
                event = Event.STARTED
            elif tier.completed_pending:
                event = Event.COMPLETED
            else:
                event = Event.NONE
            announce = Announce(
                index, tracker.url, event, tracker.tracker_id, tier.completed_pending
            )
            tier.in_flight = announce
            tier.next_time = None
            announces.append(announce)

    def succeeded(self, announce: Announce, response: AnnounceResponse, now: float) -> None:
        """Record a reply: its tracker moves to the front of its tier; schedule the next one."""
        tier = self._tiers[announce.tier]
        tracker = self._find(tier, announce.url)
        tracker.last_error = None
        tracker.peers = len(response.peers)
        tracker.seeders = response.seeders
        tracker.leechers = response.leechers
        tracker.warning = response.warning
        if response.tracker_id is not None:
            tracker.tracker_id = response.tracker_id
        if announce.event is Event.STOPPED:
            tracker.started = False
        if self._stopped or tier.in_flight is not announce:
            return
        tracker.started = True
        tier.in_flight = None
        tier.trackers.remove(tracker)
        tier.trackers.insert(0, tracker)
        tier.position = 0
        tier.failures = 0
        tier.last_success = now
        if announce.completes:
            tier.completed_pending = False
        min_interval = response.min_interval or 0
        tier.min_interval = min(max(min_interval, MIN_REANNOUNCE), MAX_INTERVAL)
        interval = response.interval if response.interval is not None else DEFAULT_INTERVAL
        tier.interval = min(max(interval, tier.min_interval, MIN_INTERVAL), MAX_INTERVAL)
        # A completion that happened while this announce was in flight is told at once.
        tier.next_time = now if tier.completed_pending else now + tier.interval

    def failed(self, announce: Announce, error: str, now: float) -> None:
        """Record a failure: try the tier's next tracker now, or back off after the last one."""
        tier = self._tiers[announce.tier]
        self._find(tier, announce.url).last_error = error
        if self._stopped or tier.in_flight is not announce:
            return
        tier.in_flight = None
        tier.position += 1
        if tier.position < len(tier.trackers):
            tier.next_time = now
            return
        tier.position = 0
        tier.failures += 1
        tier.next_time = now + backoff(tier.failures)

    def status(self) -> list[TrackerStatus]:
        """Every tracker, tier by tier in the order they are tried."""
        statuses = []
        for index, tier in enumerate(self._tiers):
            for position, tracker in enumerate(tier.trackers + tier.unusable):
                next_time = tier.next_time if position == tier.position else None
                statuses.append(
                    TrackerStatus(
                        url=tracker.url,
                        tier=index,
                        last_error=tracker.last_error,
                        peers=tracker.peers,
                        next_announce=next_time,
                        seeders=tracker.seeders,
                        leechers=tracker.leechers,
                        warning=tracker.warning,
                    )
                )
        return statuses

    @staticmethod
    def _find(tier: _Tier, url: str) -> _Tracker:
        return next(tracker for tracker in tier.trackers if tracker.url == url)
