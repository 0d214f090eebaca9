"""Token buckets for upload and download rate limits; time is passed in, never read."""

from __future__ import annotations


class TokenBucket:
    """Allows up to `rate` bytes per second with a burst of one second's worth."""

    def __init__(self, rate: int | None) -> None:
        # None or 0 means unlimited.
        self.rate = rate or None
        self._tokens = float(rate or 0)
        self._updated: float | None = None

    def _refill(self, now: float) -> None:
        if self.rate is None:
            return
        if self._updated is not None:
            self._tokens = min(float(self.rate), self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def available(self, now: float) -> bool:
        """Whether any bytes may pass now."""
        self._refill(now)
        return self.rate is None or self._tokens > 0

    def allowance(self, now: float) -> float:
        """Bytes that may pass now (infinite when unlimited)."""
        self._refill(now)
        return float("inf") if self.rate is None else max(0.0, self._tokens)

    def consume(self, amount: int, now: float) -> None:
        """Spend tokens; the balance may go negative so a large block still passes once."""
        self._refill(now)
        if self.rate is not None:
            self._tokens -= amount

    def wake_time(self, now: float) -> float | None:
        """When tokens will be available again, or None if they are now."""
        if self.rate is None or self._tokens > 0:
            return None
        return now + (-self._tokens + 1) / self.rate


class Limits:
    """A torrent's own bucket plus the node-wide one, both of which must allow a transfer."""

    def __init__(self, own: TokenBucket, shared: TokenBucket) -> None:
        # Only limited buckets are consulted: with no limit set, the checks cost nothing.
        self.buckets = tuple(bucket for bucket in (own, shared) if bucket.rate is not None)

    def available(self, now: float) -> bool:
        """Whether every bucket allows bytes now."""
        return all(bucket.available(now) for bucket in self.buckets) if self.buckets else True

    def allowance(self, now: float) -> float:
        """Bytes every bucket lets pass now."""
        return min((bucket.allowance(now) for bucket in self.buckets), default=float("inf"))

    def consume(self, amount: int, now: float) -> None:
        """Spend from every bucket."""
        for bucket in self.buckets:
            bucket.consume(amount, now)

    def wake_time(self, now: float) -> float | None:
        """The latest time any bucket needs before it allows bytes again."""
        times = [t for bucket in self.buckets if (t := bucket.wake_time(now)) is not None]
        return max(times) if times else None
