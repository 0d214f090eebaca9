"""The overlay's host cache: addresses of ultrapeers heard of, which a node dials to keep its
degree, hands out in pongs, and saves across restarts."""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass

from ..addresses import Address

CAPACITY = 1000
# A host that failed is not dialled again before RETRY_AFTER * 2**(failures - 1) seconds,
# and forgotten after MAX_FAILURES failures in a row.
RETRY_AFTER = 30.0
MAX_RETRY = 3600.0
MAX_FAILURES = 5
# A host that misbehaved is neither dialled nor accepted for this long.
BAN_FOR = 600.0


@dataclass(slots=True)
class Host:
    """What the cache knows of one address."""

    heard_at: float
    linked_at: float | None = None  # when a link to it last opened
    failures: int = 0
    retry_at: float = 0.0


class HostCache:
    """Ultrapeer addresses, most recently heard of last; bounded, with back-off on failure."""

    def __init__(self, rng: random.Random, capacity: int = CAPACITY) -> None:
        self._rng = rng
        self.capacity = capacity
        self._hosts: OrderedDict[Address, Host] = OrderedDict()
        self._banned: dict[str, float] = {}  # IP -> until when

    def __len__(self) -> int:
        return len(self._hosts)

    def __contains__(self, address: object) -> bool:
        return address in self._hosts

    def heard(self, address: Address, now: float) -> None:
        """Someone named address as an ultrapeer."""
        if self.banned(address[0], now):
            return
        host = self._hosts.get(address)
        if host is None:
            while len(self._hosts) >= self.capacity:
                self._hosts.popitem(last=False)
            self._hosts[address] = Host(now)
        else:
            host.heard_at = now
            self._hosts.move_to_end(address)

    def linked(self, address: Address, now: float) -> None:
        """A link to address opened: it is an ultrapeer that answers."""
        self.heard(address, now)
        host = self._hosts.get(address)
        if host is not None:
            host.linked_at = now
            host.failures = 0
            host.retry_at = 0.0

    def failed(self, address: Address, now: float) -> None:
        """A dial to address failed, or it is not an ultrapeer we can link to."""
        host = self._hosts.get(address)
        if host is None:
            return
        host.failures += 1
        if host.failures >= MAX_FAILURES:
            del self._hosts[address]
            return
        host.retry_at = now + min(MAX_RETRY, RETRY_AFTER * 2 ** (host.failures - 1))

    def forget(self, address: Address) -> None:
        """Drop address (it is not an ultrapeer, or it is us)."""
        self._hosts.pop(address, None)

    def ban(self, ip: str, now: float) -> None:
        """Neither dial nor accept ip for a while; it broke the protocol."""
        if len(self._banned) >= self.capacity:
            self._banned = {k: v for k, v in self._banned.items() if v > now}
            while len(self._banned) >= self.capacity:
                del self._banned[next(iter(self._banned))]
        self._banned[ip] = now + BAN_FOR
        for address in [a for a in self._hosts if a[0] == ip]:
            del self._hosts[address]

    def banned(self, ip: str, now: float) -> bool:
        """Whether ip is banned at now."""
        until = self._banned.get(ip)
        return until is not None and until > now

    def candidates(self, count: int, now: float, skip: set[Address]) -> list[Address]:
        """Up to count addresses to dial now, not in skip, a random choice (a random graph
        is what flooding and walks are measured on), those that answered before first."""
        ready = [a for a, h in self._hosts.items() if h.retry_at <= now and a not in skip]
        proven = [a for a in ready if self._hosts[a].linked_at is not None]
        fresh = [a for a in ready if self._hosts[a].linked_at is None]
        self._rng.shuffle(proven)
        self._rng.shuffle(fresh)
        return (proven + fresh)[:count]

    def sample(self, count: int, skip: set[Address]) -> list[Address]:
        """Up to count addresses to hand out, not in skip, those that answered first."""
        proven = [a for a, h in self._hosts.items() if h.linked_at is not None and a not in skip]
        others = [a for a, h in self._hosts.items() if h.linked_at is None and a not in skip]
        picked = self._rng.sample(proven, min(count, len(proven)))
        picked += self._rng.sample(others, min(count - len(picked), len(others)))
        return picked

    def addresses(self) -> list[Address]:
        """Every address held, those that answered first (what a node saves at exit)."""
        hosts = self._hosts
        return sorted(hosts, key=lambda a: hosts[a].linked_at is None)
