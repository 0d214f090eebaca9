"""The overlay's host cache: addresses of ultrapeers heard of, which a node dials to keep its
degree, hands out in pongs, and saves across restarts."""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass

from ..addresses import Address, is_loopback_ip, pack_ip

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
        # The same addresses in a list, to draw random ones without walking them all.
        self._drawable: list[Address] = []
        self._slot: dict[Address, int] = {}
        self._banned: dict[str, float] = {}  # IP -> until when

    def __len__(self) -> int:
        return len(self._hosts)

    def __contains__(self, address: object) -> bool:
        return address in self._hosts

    def heard(self, address: Address, now: float) -> None:
        """Someone named address as an ultrapeer."""
        if self._banned and self.banned(address[0], now):
            return
        host = self._hosts.get(address)
        if host is None:
            while len(self._hosts) >= self.capacity:
                self._remove(next(iter(self._hosts)))
            self._hosts[address] = Host(now)
            self._slot[address] = len(self._drawable)
            self._drawable.append(address)
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
            self._remove(address)
            return
        host.retry_at = now + min(MAX_RETRY, RETRY_AFTER * 2 ** (host.failures - 1))

    def forget(self, address: Address) -> None:
        """Drop address (it is not an ultrapeer, or it is us)."""
        if address in self._hosts:
            self._remove(address)

    def _remove(self, address: Address) -> None:
        del self._hosts[address]
        slot = self._slot.pop(address)
        last = self._drawable.pop()
        if last != address:
            self._drawable[slot] = last
            self._slot[last] = slot

    def ban(self, ip: str, now: float) -> None:
        """Neither dial nor accept ip for a while; it broke the protocol. Not a loopback IP:
        every local node shares it (tests, the demo), so only the link is dropped."""
        try:
            if is_loopback_ip(pack_ip(ip)):
                return
        except ValueError:
            return
        if len(self._banned) >= self.capacity:
            self._banned = {k: v for k, v in self._banned.items() if v > now}
            while len(self._banned) >= self.capacity:
                del self._banned[next(iter(self._banned))]
        self._banned[ip] = now + BAN_FOR
        for address in [a for a in self._hosts if a[0] == ip]:
            self._remove(address)

    def banned(self, ip: str, now: float) -> bool:
        """Whether ip is banned at now."""
        until = self._banned.get(ip)
        return until is not None and until > now

    def candidates(self, count: int, now: float, skip: set[Address]) -> list[Address]:
        """Up to count addresses to dial now, not in skip, a random choice (a random graph
        is what flooding and walks are measured on), those that answered before first."""
        hosts = self._hosts
        drawn = [a for a in self._draw(4 * count) if hosts[a].retry_at <= now and a not in skip]
        return self._answered_first(drawn)[:count]

    def sample(self, count: int, skip: set[Address]) -> list[Address]:
        """Up to count addresses to hand out, not in skip, those that answered first."""
        drawn = [a for a in self._draw(4 * count) if a not in skip]
        return self._answered_first(drawn)[:count]

    def _draw(self, count: int) -> list[Address]:
        """Up to count addresses at random: a bounded cost, however many are held."""
        drawable = self._drawable
        return self._rng.sample(drawable, min(count, len(drawable)))

    def _answered_first(self, addresses: list[Address]) -> list[Address]:
        hosts = self._hosts
        return sorted(addresses, key=lambda a: hosts[a].linked_at is None)

    def addresses(self) -> list[Address]:
        """Every address held, those that answered first (what a node saves at exit)."""
        hosts = self._hosts
        return sorted(hosts, key=lambda a: hosts[a].linked_at is None)
