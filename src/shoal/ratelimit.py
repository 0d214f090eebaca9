"""A token bucket per key (a source address), for rates asked of this node from outside."""

from __future__ import annotations


class RateLimiter:
    """A token bucket per key (a source address): rate per second, bursts up to burst."""

    def __init__(self, rate: float | None, burst: float, max_keys: int) -> None:
        self.rate = rate or None
        self.burst = max(1.0, burst)
        self.max_keys = max_keys
        # key -> [tokens, time of last update]; a list, to update in place without allocating.
        self._buckets: dict[bytes, list[float]] = {}

    def allow(self, key: bytes, now: float) -> bool:
        """Spend one token of key's bucket if it has one."""
        rate = self.rate
        if rate is None:
            return True
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            self._buckets[key] = [self.burst - 1.0, now]
            return True
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def _prune(self, now: float) -> None:
        """Drop full buckets (the same as no bucket); if that is not enough, the oldest half."""
        assert self.rate is not None
        rate, burst = self.rate, self.burst
        full = [
            key
            for key, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * rate >= burst
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            # Dicts keep insertion order, so these are the addresses first seen longest ago.
            for key in list(self._buckets)[: len(self._buckets) // 2 + 1]:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
