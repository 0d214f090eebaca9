"""The Kademlia routing table of the Mainline DHT (BEP 5): k-buckets over the 160-bit id space.

Sans-IO: no socket and no clock. The table says which node to ping (a newcomer that only queried
us, or a questionable node when a bucket is full); the caller pings it and reports the answer or
the timeout. Only nodes that answered us at their address are handed out, and nodes whose ids
BEP 42 binds to their IPs are preferred over those whose ids are not.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from shoal import addresses, bencode
from shoal.addresses import Address
from shoal.swarm.admission import address_group, is_loopback

from .secure_id import is_secure

K = 8  # bucket size
GOOD_FOR = 15 * 60.0  # a node is good if it answered us within this long, or ever and queried us
REFRESH_AFTER = 15 * 60.0  # a bucket untouched this long is refreshed
MAX_FAILURES = 2  # consecutive timeouts after which a node is bad
# Nodes that queried us and wait to answer the ping that confirms them: a ping is answered or
# times out within seconds, and a node dropped from here still comes in if it answers.
MAX_UNCONFIRMED = 64

ID_LENGTH = 20
ID_SPACE = 1 << (8 * ID_LENGTH)
IPV4_NODE = ID_LENGTH + addresses.IPV4_ENTRY
IPV6_NODE = ID_LENGTH + addresses.IPV6_ENTRY
# Nodes read from a saved table: a full table holds far fewer, and the file may be hostile.
MAX_LOADED_NODES = 1000
_NEVER = float("-inf")


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node as the DHT knows it: its 20-byte id and its address."""

    id: bytes
    address: Address
    number: int = field(init=False, repr=False, compare=False)  # id as an int, for XOR

    def __post_init__(self) -> None:
        object.__setattr__(self, "number", int.from_bytes(self.id, "big"))


def is_compliant(node: NodeInfo) -> bool:
    """Whether BEP 42 accepts the node's 20-byte id for its IP (always on local networks, never
    for a host that is not an IP)."""
    try:
        ip = addresses.pack_ip(node.address[0])
    except ValueError:
        return False
    return is_secure(node.id, ip)


@dataclass(slots=True)
class Entry:
    """A node in the table (or in a replacement cache, or waiting to be confirmed), with its
    standing."""

    node: NodeInfo
    last_seen: float  # last query from it or response to us
    last_response: float | None  # last response to one of our queries (None: unconfirmed)
    failures: int = 0  # consecutive timeouts of our queries
    compliant: bool = field(init=False, compare=False)  # is_compliant(node)

    def __post_init__(self) -> None:
        self.compliant = is_compliant(self.node)

    def status(self, now: float) -> str:
        """Whether the node is "good", "questionable" or "bad", as BEP 5 defines them."""
        if self.failures >= MAX_FAILURES:
            return "bad"
        # Only a node that has answered us counts: one that only queries may be unreachable.
        if (
            self.failures == 0
            and self.last_response is not None
            and now - self.last_seen < GOOD_FOR
        ):
            return "good"
        return "questionable"


@dataclass(slots=True)
class _Bucket:
    """The nodes whose ids lie in [lo, hi), a power-of-two range aligned on its size."""

    lo: int
    hi: int
    touched: float  # when a node was last added, replaced or answered in it
    entries: dict[bytes, Entry] = field(default_factory=dict)
    # Nodes waiting for a place, oldest first.
    replacements: dict[bytes, Entry] = field(default_factory=dict)


class RoutingTable:
    """k-buckets around own_id; the bucket holding own_id splits when full, others do not.

    With enforce, nodes whose ids BEP 42 does not accept for their IPs are refused (as
    libtorrent's enforce_node_id); without, they only give way to compliant ones.
    """

    def __init__(
        self,
        own_id: bytes,
        *,
        rng: random.Random | None = None,
        k: int = K,
        enforce: bool = False,
    ) -> None:
        _check_id(own_id)
        self.own_id = own_id
        self._own = int.from_bytes(own_id, "big")
        self._rng = rng or random.Random()
        self.k = k
        self.enforce = enforce
        # Never touched: the first refresh_targets() asks for the whole space.
        self._buckets = [_Bucket(0, ID_SPACE, _NEVER)]
        self._starts = [0]  # each bucket's lo, for bisect
        # Who holds each address (an IP group, or a loopback address and port), in buckets
        # and caches alike: one node per IP, and no id may take over another's address.
        self._holders: dict[str | Address, bytes] = {}
        # Nodes that only queried us, oldest first, and the addresses they claim: kept out of
        # the buckets, so that a query from a spoofed address can neither split a bucket nor
        # take a place or an address from a node that answers.
        self._unconfirmed: dict[bytes, Entry] = {}
        self._claims: dict[str | Address, bytes] = {}

    def heard_from(self, node: NodeInfo, now: float, *, responded: bool) -> NodeInfo | None:
        """Note a query from node (responded=False) or its answer to one of ours; return a node
        to ping, or None.

        A newcomer that only queried us is unconfirmed: it waits aside, out of closest() and
        dump(), and is returned itself, for a ping whose answer (responded=True) brings it in
        and whose timeout (failed()) drops it. A node that answered and waits for a place in
        a full bucket returns the questionable node seen least recently, whose silence would
        make room.
        """
        _check_id(node.id)
        if node.number == self._own:
            return None
        bucket = self._bucket(node.number)
        entry = bucket.entries.get(node.id)
        if entry is not None:
            if entry.node == node:
                _refresh(entry, now, responded)
                if responded:
                    bucket.touched = now
            return None
        entry = bucket.replacements.get(node.id)
        if entry is not None:
            if entry.node != node:
                return None
            # Taken out and put back through _insert: it may now find room or go last.
            del bucket.replacements[node.id]
            _refresh(entry, now, responded)
            return self._insert(entry, now)
        if self.enforce and not is_compliant(node):
            return None
        if not responded:
            return self._await(node, now)
        return self._admit(node, now, now)

    def restore(self, node: NodeInfo, now: float) -> None:
        """Put back a node of a saved table (see load()): it answered us in an earlier run, so
        it is confirmed, but questionable (as if it last answered GOOD_FOR ago)."""
        _check_id(node.id)
        bucket = self._bucket(node.number)
        if node.number == self._own or node.id in bucket.entries or node.id in bucket.replacements:
            return
        if not self.enforce or is_compliant(node):
            self._admit(node, now - GOOD_FOR, now)

    def failed(self, node_id: bytes, now: float) -> None:
        """A query to the node timed out; an unconfirmed node is dropped, a node in the table
        at MAX_FAILURES in a row gives way to a replacement, or stays as bad if there is none
        (an outage must not empty the table)."""
        if self._unconfirm(node_id):
            return
        bucket = self._bucket(int.from_bytes(node_id, "big"))
        cached = bucket.replacements.get(node_id)
        if cached is not None:
            cached.failures += 1
            if cached.failures >= MAX_FAILURES:
                self._forget(bucket.replacements.pop(node_id))
            return
        entry = bucket.entries.get(node_id)
        if entry is None:
            return
        entry.failures += 1
        if entry.failures >= MAX_FAILURES and self._promote(bucket, node_id):
            bucket.touched = now

    def remove(self, node_id: bytes) -> None:
        """Drop the node from its bucket (a replacement takes its place), its cache or the
        unconfirmed nodes."""
        if self._unconfirm(node_id):
            return
        bucket = self._bucket(int.from_bytes(node_id, "big"))
        cached = bucket.replacements.pop(node_id, None)
        if cached is not None:
            self._forget(cached)
        elif node_id in bucket.entries and not self._promote(bucket, node_id):
            self._forget(bucket.entries.pop(node_id))

    def closest(
        self, target: bytes, count: int = K, *, include_bad: bool = False
    ) -> list[NodeInfo]:
        """The count nodes closest to target by XOR distance, closest first: nodes that
        answered us and have not stopped; with include_bad, also those that stopped and the
        unconfirmed ones (addresses to ask for a way back in, never to hand out)."""
        goal = int.from_bytes(target, "big")
        # Buckets are aligned power-of-two ranges, so their distances to the target form
        # disjoint intervals: visiting them by the interval's start visits the entries in
        # order, and only the buckets needed are sorted.
        buckets = sorted(
            self._buckets, key=lambda bucket: (bucket.lo ^ goal) & -(bucket.hi - bucket.lo)
        )
        found: list[Entry] = []
        for bucket in buckets:
            if len(found) >= count:
                break
            candidates = [
                entry
                for entry in bucket.entries.values()
                if include_bad or entry.failures < MAX_FAILURES
            ]
            candidates.sort(key=lambda entry: entry.node.number ^ goal)
            found += candidates
        if include_bad and self._unconfirmed:
            found += self._unconfirmed.values()
            found.sort(key=lambda entry: entry.node.number ^ goal)
        return [entry.node for entry in found[:count]]

    def get(self, node_id: bytes) -> Entry | None:
        """The node's entry if it is in a bucket (not if it waits in a cache or unconfirmed)."""
        return self._bucket(int.from_bytes(node_id, "big")).entries.get(node_id)

    def unconfirmed(self) -> list[NodeInfo]:
        """The nodes that queried us and have yet to answer us, oldest first."""
        return [entry.node for entry in self._unconfirmed.values()]

    def __len__(self) -> int:
        return sum(len(bucket.entries) for bucket in self._buckets)

    def entries(self) -> Iterator[Entry]:
        """Every entry in the buckets, from the lowest ids to the highest."""
        for bucket in self._buckets:
            yield from bucket.entries.values()

    def refresh_targets(self, now: float) -> list[bytes]:
        """A random id in each bucket untouched for REFRESH_AFTER, to look up; those buckets
        count as touched now."""
        targets = []
        for bucket in self._buckets:
            if now - bucket.touched >= REFRESH_AFTER:
                bucket.touched = now
                targets.append(self._rng.randrange(bucket.lo, bucket.hi).to_bytes(ID_LENGTH, "big"))
        return targets

    def dump(self) -> bytes:
        """The own id and the good and questionable nodes (all confirmed), bencoded, to save
        across runs."""
        v4 = bytearray()
        v6 = bytearray()
        for entry in self.entries():
            if entry.failures < MAX_FAILURES:
                compact = entry.node.id + addresses.pack(entry.node.address)
                (v4 if len(compact) == IPV4_NODE else v6).extend(compact)
        return bencode.encode({"id": self.own_id, "nodes": bytes(v4), "nodes6": bytes(v6)})

    @classmethod
    def load(cls, data: bytes, *, rng: random.Random | None = None) -> tuple[bytes, list[NodeInfo]]:
        """The own id and the nodes of a dump() (at most MAX_LOADED_NODES, shuffled by rng
        if given); ValueError if data is not one."""
        try:
            saved: Any = bencode.decode(data, max_depth=2)
        except bencode.BencodeError as error:
            raise ValueError(f"the saved routing table is not bencode: {error}") from None
        if not isinstance(saved, dict):
            raise ValueError("the saved routing table is not a dictionary")
        own_id = saved.get(b"id")
        if not isinstance(own_id, bytes) or len(own_id) != ID_LENGTH:
            raise ValueError(f"the saved routing table has no 20-byte id: {own_id!r:.60}")
        nodes: list[NodeInfo] = []
        for key, step, ipv6 in ((b"nodes", IPV4_NODE, False), (b"nodes6", IPV6_NODE, True)):
            compact = saved.get(key, b"")
            if not isinstance(compact, bytes) or len(compact) % step:
                raise ValueError(f"the saved routing table has a malformed {key.decode()} list")
            end = min(len(compact), (MAX_LOADED_NODES - len(nodes)) * step)
            for start in range(0, end, step):
                found = addresses.unpack(compact[start + ID_LENGTH : start + step], ipv6=ipv6)
                if found:
                    nodes.append(NodeInfo(compact[start : start + ID_LENGTH], found[0]))
        if rng is not None:
            rng.shuffle(nodes)
        return own_id, nodes

    def check(self) -> None:
        """Assert the table's invariants (for tests)."""
        assert self._buckets[0].lo == 0 and self._buckets[-1].hi == ID_SPACE
        assert self._starts == [bucket.lo for bucket in self._buckets]
        seen: set[bytes] = set()
        holders: dict[str | Address, bytes] = {}
        for before, after in itertools.pairwise(self._buckets):
            assert before.hi == after.lo, (before, after)
        for bucket in self._buckets:
            size = bucket.hi - bucket.lo
            assert size > 0 and size & (size - 1) == 0 and bucket.lo % size == 0, bucket
            assert len(bucket.entries) <= self.k and len(bucket.replacements) <= self.k
            if bucket.lo <= self._own < bucket.hi:
                # Newcomers to the own bucket split it rather than wait.
                assert not bucket.replacements, bucket
            for store in (bucket.entries, bucket.replacements):
                for node_id, entry in store.items():
                    self._check_entry(node_id, entry, seen)
                    assert entry.last_response is not None, entry
                    assert bucket.lo <= entry.node.number < bucket.hi, (entry, bucket)
                    key = _address_key(entry.node.address)
                    assert key not in holders, (entry, holders.get(key))
                    holders[key] = node_id
            # A cached node that has not failed waits only for a place no entry would give up.
            for entry in bucket.replacements.values():
                if entry.failures == 0:
                    assert len(bucket.entries) == self.k, bucket
                    assert self._victim(bucket, entry) is None, (entry, bucket)
        assert holders == self._holders
        assert len(self._unconfirmed) <= MAX_UNCONFIRMED
        claims: dict[str | Address, bytes] = {}
        for node_id, entry in self._unconfirmed.items():
            self._check_entry(node_id, entry, seen)
            assert entry.last_response is None and entry.failures == 0, entry
            key = _address_key(entry.node.address)
            assert key not in holders and key not in claims, entry
            claims[key] = node_id
        assert claims == self._claims

    def _check_entry(self, node_id: bytes, entry: Entry, seen: set[bytes]) -> None:
        """Assert what holds for every entry: its id, unique, and its standing under BEP 42."""
        assert entry.node.id == node_id and node_id not in seen, entry
        assert node_id != self.own_id and len(node_id) == ID_LENGTH, entry
        assert entry.compliant == is_compliant(entry.node), entry
        assert entry.compliant or not self.enforce, entry
        seen.add(node_id)

    def region_targets(self, enough: int) -> list[tuple[bytes, int]]:
        """Kademlia's join refresh: for each region of the id space farther from us than our
        closest node (the ids sharing exactly d leading bits with ours) where the table holds
        fewer than enough nodes, a random id in it and the region's size."""
        closest = self.closest(self.own_id, 1)
        if not closest:
            return []
        bits = ID_LENGTH * 8
        depth = bits - (closest[0].number ^ self._own).bit_length()
        held = [0] * bits
        for entry in self.entries():
            held[bits - (entry.node.number ^ self._own).bit_length()] += 1
        targets = []
        for shared in (d for d in range(depth) if held[d] < enough):
            size = 1 << (ID_LENGTH * 8 - shared - 1)
            region = (self._own ^ size) & ~(size - 1)  # bit d flipped, the rest below it free
            target = region | self._rng.randrange(size)
            targets.append((target.to_bytes(ID_LENGTH, "big"), size))
        return targets

    def span(self, target: bytes) -> int:
        """The size of the range of the bucket that holds target."""
        bucket = self._bucket(int.from_bytes(target, "big"))
        return bucket.hi - bucket.lo

    def _bucket(self, number: int) -> _Bucket:
        """The bucket whose range holds number."""
        return self._buckets[bisect.bisect_right(self._starts, number) - 1]

    def _insert(self, entry: Entry, now: float) -> NodeInfo | None:
        """Place a node not in any bucket: in its bucket, or else in that bucket's cache."""
        number = entry.node.number
        bucket = self._bucket(number)
        while len(bucket.entries) >= self.k and bucket.lo <= self._own < bucket.hi:
            self._split(bucket)
            bucket = self._bucket(number)
        if len(bucket.entries) >= self.k:
            victim = self._victim(bucket, entry)
            if victim is None:
                return self._wait(bucket, entry, now)
            self._forget(bucket.entries.pop(victim.node.id))
        bucket.entries[entry.node.id] = entry
        bucket.touched = now
        return None

    def _victim(self, bucket: _Bucket, newcomer: Entry) -> Entry | None:
        """The entry of the full bucket whose place newcomer takes: a bad one, or if newcomer
        is compliant, a non-compliant one; bad ones first, then non-compliant ones, then the
        one seen least recently."""
        victims = [
            entry
            for entry in bucket.entries.values()
            if entry.failures >= MAX_FAILURES or (newcomer.compliant and not entry.compliant)
        ]
        if not victims:
            return None
        return min(victims, key=lambda e: (e.failures < MAX_FAILURES, e.compliant, e.last_seen))

    def _admit(self, node: NodeInfo, answered: float, now: float) -> NodeInfo | None:
        """Place a confirmed newcomer, last heard from at answered, unless another node holds
        its address; it outweighs any unconfirmed claim to its id or its address."""
        self._unconfirm(node.id)
        key = _address_key(node.address)
        self._unconfirm(self._claims.get(key, b""))
        holder = self._holders.get(key)
        if holder is not None:
            bucket = self._bucket(int.from_bytes(holder, "big"))
            held = bucket.entries.get(holder) or bucket.replacements.get(holder)
            if held is None or not held.failures:
                return None
            # The node there stopped answering, and another answers from its address: a
            # restart with a new id (as BEP 42 asks of a node whose IP changed). It goes.
            self.remove(holder)
        self._holders[key] = node.id
        return self._insert(Entry(node, answered, answered), now)

    def _await(self, node: NodeInfo, now: float) -> NodeInfo | None:
        """Keep aside a newcomer that only queried us, until it answers; name it to ping. The
        first claim to an id or an address stands until it is confirmed or dropped."""
        waiting = self._unconfirmed.get(node.id)
        if waiting is not None:
            if waiting.node != node:
                return None
            waiting.last_seen = now
            return node
        key = _address_key(node.address)
        if key in self._holders or key in self._claims:
            return None
        if not self._has_room(node, now):
            return None  # as libtorrent does: a ping would only fill a cache we do not need
        if len(self._unconfirmed) >= MAX_UNCONFIRMED:
            self._unconfirm(next(iter(self._unconfirmed)))
        self._unconfirmed[node.id] = Entry(node, now, None)
        self._claims[key] = node.id
        return node

    def _has_room(self, node: NodeInfo, now: float) -> bool:
        """Whether node, once confirmed, could take a place: its bucket has room or can split,
        or holds a node that is not good, or one it would replace (BEP 42)."""
        bucket = self._bucket(node.number)
        if len(bucket.entries) < self.k or bucket.lo <= self._own < bucket.hi:
            return True
        compliant = is_compliant(node)
        return any(
            entry.status(now) != "good" or (compliant and not entry.compliant)
            for entry in bucket.entries.values()
        )

    def _unconfirm(self, node_id: bytes) -> bool:
        """Drop node_id from the unconfirmed nodes; False if it is not one."""
        entry = self._unconfirmed.pop(node_id, None)
        if entry is None:
            return False
        del self._claims[_address_key(entry.node.address)]
        return True

    def _wait(self, bucket: _Bucket, entry: Entry, now: float) -> NodeInfo | None:
        """Put entry last in the full bucket's cache (which drops its oldest non-compliant
        node, or else its oldest, when over k); name the questionable node seen least
        recently, whose silence would make room."""
        bucket.replacements[entry.node.id] = entry
        if len(bucket.replacements) > self.k:
            cached = bucket.replacements.values()
            dropped = next((e for e in cached if not e.compliant), next(iter(cached)))
            self._forget(bucket.replacements.pop(dropped.node.id))
        questionable = [e for e in bucket.entries.values() if e.status(now) != "good"]
        if not questionable:
            return None
        return min(questionable, key=lambda e: e.last_seen).node

    def _promote(self, bucket: _Bucket, node_id: bytes) -> bool:
        """Replace the entry node_id with the newest cached node that has not failed, a
        compliant one if any; False if the cache holds none."""
        ready = [e for e in reversed(bucket.replacements.values()) if e.failures == 0]
        if not ready:
            return False
        replacement = next((e for e in ready if e.compliant), ready[0])
        self._forget(bucket.entries.pop(node_id))
        del bucket.replacements[replacement.node.id]
        bucket.entries[replacement.node.id] = replacement
        return True

    def _split(self, bucket: _Bucket) -> None:
        """Split the own bucket in two halves (its cache is empty: see check())."""
        middle = (bucket.lo + bucket.hi) // 2
        upper = _Bucket(middle, bucket.hi, bucket.touched)
        for node_id in [i for i, e in bucket.entries.items() if e.node.number >= middle]:
            upper.entries[node_id] = bucket.entries.pop(node_id)
        bucket.hi = middle
        # Each half was touched when a node of its own was last seen: an empty half never
        # was, and the next refresh looks it up (else a far half the join never reached
        # would wait 15 minutes, and lookups there end far from their target).
        for half in (bucket, upper):
            half.touched = max((e.last_seen for e in half.entries.values()), default=_NEVER)
        index = self._buckets.index(bucket) + 1
        self._buckets.insert(index, upper)
        self._starts.insert(index, middle)

    def _forget(self, entry: Entry) -> None:
        """Release the address of an entry that leaves the table."""
        del self._holders[_address_key(entry.node.address)]


def _check_id(node_id: bytes) -> None:
    """ValueError unless node_id is 20 bytes."""
    if len(node_id) != ID_LENGTH:
        raise ValueError(f"a node id is 20 bytes, not {len(node_id)}: {node_id.hex()}")


def _refresh(entry: Entry, now: float, responded: bool) -> None:
    """Note that a known node queried us or answered."""
    entry.last_seen = now
    if responded:
        entry.last_response = now
        entry.failures = 0


def _address_key(address: Address) -> str | Address:
    """What may hold one place in the table: an IP (or IPv6 /64), or for loopback, where
    tests run many nodes, the address and port."""
    host = address[0]
    return address if is_loopback(host) else address_group(host)
