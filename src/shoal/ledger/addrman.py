"""The addresses a ledger node knows of, whom it dials, and whom it refuses (after Bitcoin
Core's addrman and ban list, simplified).

Addresses heard of wait in a bounded "new" table; one we linked to moves to the "tried"
table. Both are spread over network groups (an IPv4 /16, an IPv6 /32): one group may hold
only a small share of either table, one source only a share of the new table, and the
outbound links dialled from them are each in a group of their own, so a neighbour with many
addresses in one network can neither fill what we know nor take every outbound slot (the
basics of eclipse resistance). Peers the user named (--peer) are kept apart, always, and
dialled whatever their group. Loopback addresses 127.x.y.z fall in distinct groups by x,
which lets tests stand for many networks on one machine.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from ..addresses import Address, is_loopback_ip, pack_ip, source_key, text

NEW_CAPACITY = 1024
TRIED_CAPACITY = 1024
PER_GROUP = 64  # entries one network group may hold in a table
PER_SOURCE = 256  # entries of the new table that one source's network group may have added
# A dial that failed is not tried again before RETRY_AFTER * 2**(failures - 1) seconds;
# an address failing MAX_FAILURES times in a row is forgotten (never a given peer, which
# is retried at least every GIVEN_RETRY seconds).
RETRY_AFTER = 10.0
MAX_RETRY = 3600.0
GIVEN_RETRY = 30.0
MAX_FAILURES = 5
# Addresses taken from one peer: a token a second every ADDR_EVERY seconds, up to ADDR_BURST
# held; asking a peer for addresses grants it ADDR_BURST more (Bitcoin Core's bucket).
ADDR_EVERY = 10.0
ADDR_BURST = 1000.0
# Addresses handed out in answer to getaddr: at most this share of those known.
SHARE_PERCENT = 23
MAX_SHARE = 1000
BAN_FOR = 24 * 60 * 60.0
MAX_BANS = 1000


def network_group(address: Address) -> bytes:
    """The network group of address: family and /16 of an IPv4 address, /32 of an IPv6 one;
    ValueError if its host is not an IP."""
    packed = pack_ip(address[0])
    return b"\x04" + packed[:2] if len(packed) == 4 else b"\x06" + packed[:4]


def ban_key(address: Address) -> bytes:
    """What a ban (and a per-source limit) holds against: the IP, an IPv6 address's /64
    (one host commonly has a whole /64 to hop around in), or on loopback the IP and the port
    the peer listens on (addresses.source_key)."""
    packed = pack_ip(address[0])
    if len(packed) == 16 and not is_loopback_ip(packed):
        return packed[:8]
    return source_key(packed, address[1])


@dataclass(slots=True, eq=False)
class KnownAddress:
    """What the manager knows of one address."""

    address: Address
    group: bytes
    source: bytes  # the network group of whoever told us of it
    heard_at: float
    tried: bool = False
    given: bool = False
    failures: int = 0
    retry_at: float = 0.0
    linked_at: float | None = None


class _Table:
    """A bounded set of known addresses that a random one can be drawn from at a bounded
    cost, counted by network group (and by source, for the new table)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: list[KnownAddress] = []
        self._slot: dict[Address, int] = {}
        self.by_group: dict[bytes, int] = {}
        self.by_source: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, known: KnownAddress) -> None:
        self._slot[known.address] = len(self.entries)
        self.entries.append(known)
        self.by_group[known.group] = self.by_group.get(known.group, 0) + 1
        self.by_source[known.source] = self.by_source.get(known.source, 0) + 1

    def remove(self, known: KnownAddress) -> None:
        slot = self._slot.pop(known.address)
        last = self.entries.pop()
        if last is not known:
            self.entries[slot] = last
            self._slot[last.address] = slot
        _decrement(self.by_group, known.group)
        _decrement(self.by_source, known.source)

    def draw(self, rng: random.Random, count: int) -> list[KnownAddress]:
        return rng.sample(self.entries, min(count, len(self.entries)))


def _decrement(counts: dict[bytes, int], key: bytes) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


class AddressManager:
    """Known addresses in new and tried tables, the given peers, and their dial back-off."""

    def __init__(
        self,
        rng: random.Random,
        *,
        new_capacity: int = NEW_CAPACITY,
        tried_capacity: int = TRIED_CAPACITY,
    ) -> None:
        self.rng = rng
        self._known: dict[Address, KnownAddress] = {}
        self._new = _Table(new_capacity)
        self._tried = _Table(tried_capacity)
        self._given: dict[Address, KnownAddress] = {}

    def __len__(self) -> int:
        return len(self._new) + len(self._tried)

    def __contains__(self, address: object) -> bool:
        return address in self._known or address in self._given

    @property
    def new_count(self) -> int:
        """Addresses heard of, not yet linked to."""
        return len(self._new)

    @property
    def tried_count(self) -> int:
        """Addresses linked to before."""
        return len(self._tried)

    def group_counts(self) -> tuple[dict[bytes, int], dict[bytes, int]]:
        """Entries by network group in the new and the tried table (for tests and status)."""
        return dict(self._new.by_group), dict(self._tried.by_group)

    def add_given(self, addresses: Iterable[Address], now: float) -> None:
        """Peers the user named: kept for good, dialled whatever their group."""
        for address in addresses:
            if address not in self._given:
                self._given[address] = KnownAddress(address, b"", b"", now, given=True)

    def given(self) -> list[Address]:
        """The peers the user named."""
        return list(self._given)

    def heard(self, addresses: Iterable[Address], source: Address | None, now: float) -> int:
        """Addresses a peer at source told us of (None: we found them ourselves); how many
        were new to us."""
        source_group = b"" if source is None else _group_or_none(source) or b""
        added = 0
        for address in addresses:
            if address in self._given or address[1] == 0:
                continue
            known = self._known.get(address)
            if known is not None:
                known.heard_at = max(known.heard_at, now)
                continue
            group = _group_or_none(address)
            if group is not None and self._add_new(address, group, source_group, now):
                added += 1
        return added

    def _add_new(self, address: Address, group: bytes, source: bytes, now: float) -> bool:
        new = self._new
        if new.by_group.get(group, 0) >= PER_GROUP or new.by_source.get(source, 0) >= PER_SOURCE:
            return False
        if len(new) >= new.capacity:
            self._remove(self._worst(new.draw(self.rng, 8)))
        known = KnownAddress(address, group, source, now)
        self._known[address] = known
        new.add(known)
        return True

    def linked(self, address: Address, now: float) -> None:
        """A link we dialled to address opened (its handshake is done): move it to tried."""
        known = self._given.get(address) or self._known.get(address)
        if known is None:
            group = _group_or_none(address)
            if group is None or not self._add_new(address, group, b"", now):
                return
            known = self._known[address]
        known.failures = 0
        known.retry_at = 0.0
        known.linked_at = now
        if known.given or known.tried:
            return
        tried = self._tried
        if tried.by_group.get(known.group, 0) >= PER_GROUP:
            self._demote(self._worst([e for e in tried.entries if e.group == known.group]))
        elif len(tried) >= tried.capacity:
            self._demote(self._worst(tried.draw(self.rng, 8)))
        self._new.remove(known)
        known.tried = True
        tried.add(known)

    def _demote(self, known: KnownAddress) -> None:
        """Move a tried address back to new to make room (Bitcoin keeps it rather than
        forget a node that answered); forgotten if new has no room for it either."""
        self._tried.remove(known)
        known.tried = False
        new = self._new
        if len(new) < new.capacity and new.by_group.get(known.group, 0) < PER_GROUP:
            new.add(known)
        else:
            del self._known[known.address]

    def failed(self, address: Address, now: float) -> None:
        """A dial to address failed, or its link closed before the handshake."""
        known = self._given.get(address) or self._known.get(address)
        if known is None:
            return
        known.failures += 1
        wait = min(MAX_RETRY, RETRY_AFTER * 2 ** min(known.failures - 1, 20))
        if known.given:
            wait = min(wait, GIVEN_RETRY)
        elif known.failures >= MAX_FAILURES:
            self._remove(known)
            return
        known.retry_at = now + wait

    def forget(self, address: Address) -> None:
        """Drop address (it is us, or banned); a given peer stays."""
        known = self._known.get(address)
        if known is not None:
            self._remove(known)

    def _remove(self, known: KnownAddress) -> None:
        (self._tried if known.tried else self._new).remove(known)
        del self._known[known.address]

    @staticmethod
    def _worst(entries: list[KnownAddress]) -> KnownAddress:
        """Of entries, the one to give up first: most failures, then heard of longest ago."""
        return max(entries, key=lambda e: (e.failures, -(e.linked_at or e.heard_at)))

    def given_due(self, now: float, busy: set[Address]) -> list[Address]:
        """Given peers to dial now: not linked (busy) and not waiting out a failure."""
        return [a for a, known in self._given.items() if a not in busy and known.retry_at <= now]

    def select(
        self, count: int, now: float, *, used_groups: set[bytes], busy: set[Address]
    ) -> list[Address]:
        """Up to count addresses to dial now, each in a network group of its own and of none
        in used_groups (those of our outbound links), not busy, not waiting out a failure;
        drawn from tried and new alike."""
        groups = set(used_groups)
        chosen: list[Address] = []
        tables = [table for table in (self._tried, self._new) if len(table)]
        for _ in range(32 * count if tables else 0):
            if len(chosen) >= count:
                break
            [known] = self.rng.choice(tables).draw(self.rng, 1)
            if known.group in groups or known.retry_at > now or known.address in busy:
                continue
            chosen.append(known.address)
            groups.add(known.group)
        return chosen

    def sample(self, now: float) -> list[Address]:
        """Addresses to answer a getaddr with: a random share of those known, at most
        MAX_SHARE, none that is failing."""
        count = min(MAX_SHARE, max(1, len(self) * SHARE_PERCENT // 100))
        drawn = self._tried.draw(self.rng, count) + self._new.draw(self.rng, count)
        self.rng.shuffle(drawn)
        return [known.address for known in drawn if not known.failures][:count]


def _group_or_none(address: Address) -> bytes | None:
    try:
        return network_group(address)
    except ValueError:
        return None


class AddrBudget:
    """How many addresses one peer may still hand us: a token bucket refilled by one every
    ADDR_EVERY seconds up to ADDR_BURST, starting at one; asking for addresses grants a full
    answer's worth. Addresses past the budget are dropped, so a peer sending thousands gets
    a few in."""

    __slots__ = ("tokens", "updated")

    def __init__(self, now: float) -> None:
        self.tokens = 1.0
        self.updated = now

    def grant(self, count: float) -> None:
        """We asked for count addresses."""
        self.tokens += count

    def take(self, count: int, now: float) -> int:
        """How many of count addresses received at now to take in."""
        if self.tokens < ADDR_BURST:
            self.tokens = min(ADDR_BURST, self.tokens + (now - self.updated) / ADDR_EVERY)
        self.updated = now
        taken = min(count, int(self.tokens))
        self.tokens -= taken
        return taken


@dataclass(frozen=True, slots=True)
class Ban:
    """An address that broke the rules: neither dialled nor accepted until until."""

    address: Address
    reason: str
    since: float
    until: float

    def as_json(self) -> dict[str, object]:
        """The fields as JSON values (the address as HOST:PORT)."""
        return {
            "address": text(self.address),
            "reason": self.reason,
            "since": self.since,
            "until": self.until,
        }


class BanList:
    """Banned addresses by ban_key, bounded (the ones ending soonest make way)."""

    def __init__(self, capacity: int = MAX_BANS) -> None:
        self.capacity = capacity
        self._bans: dict[bytes, Ban] = {}

    def ban(self, address: Address, reason: str, now: float, duration: float = BAN_FOR) -> None:
        """Ban address for duration seconds, saying why."""
        key = ban_key(address)
        if key not in self._bans and len(self._bans) >= self.capacity:
            self._expire(now)
            if len(self._bans) >= self.capacity:
                del self._bans[min(self._bans, key=lambda k: self._bans[k].until)]
        self._bans[key] = Ban(address, reason, now, now + duration)

    def is_banned(self, address: Address, now: float) -> bool:
        """Whether address is banned at now."""
        try:
            ban = self._bans.get(ban_key(address))
        except ValueError:
            return False
        return ban is not None and ban.until > now

    def entries(self, now: float) -> list[Ban]:
        """The bans in force, the latest first."""
        self._expire(now)
        return sorted(self._bans.values(), key=lambda ban: -ban.since)

    def _expire(self, now: float) -> None:
        for key in [k for k, ban in self._bans.items() if ban.until <= now]:
            del self._bans[key]
