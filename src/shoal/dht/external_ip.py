"""Our external IP, by a vote of the nodes that answer us (BEP 42's `ip` in each response).

Sans-IO: the caller feeds in each response's `ip` with the responder's IP and the time. No one
node is trusted: a voter IP counts once, whatever it says and however often, and an IP is our
external IP only once at least min_votes voters, more than half of those heard from in its
family, name it. When it changes and our id is not secure for it (needs_new_id()), the node
should pick a new id, as libtorrent restarts its DHT.
"""

from __future__ import annotations

from .secure_id import is_exempt, is_secure

MIN_VOTES = 10  # voters that must agree before an IP is taken as ours
MAX_VOTERS = 100  # voters remembered; the oldest vote goes first
MAX_AGE = 60 * 60.0  # a vote older than this no longer counts


class ExternalIpVote:
    """The external IPv4 and IPv6 addresses that most of the last voters report."""

    def __init__(
        self,
        *,
        min_votes: int = MIN_VOTES,
        max_voters: int = MAX_VOTERS,
        max_age: float = MAX_AGE,
    ) -> None:
        if not 0 < min_votes <= max_voters:
            raise ValueError(f"min_votes must be from 1 to max_voters, not {min_votes}")
        self.min_votes = min_votes
        self.max_voters = max_voters
        self.max_age = max_age
        # Each voter's last vote, oldest first: the voter (an IPv4 address or IPv6 /64), the IP
        # it reported and when.
        self._votes: dict[bytes, tuple[bytes, float]] = {}
        self._tally: dict[bytes, int] = {}  # reported IP -> voters naming it
        self._family_votes = {4: 0, 16: 0}  # IP length -> votes for IPs of that length
        self._decided: dict[int, bytes] = {}  # IP length -> the IP the vote settled on last

    def vote(self, voter_ip: bytes, reported_ip: bytes, now: float) -> None:
        """Count that the node at voter_ip saw us at reported_ip (both packed, 4 or 16 bytes);
        it replaces that voter's last vote. Local reported IPs are ignored."""
        if len(voter_ip) not in (4, 16):
            raise ValueError(f"a packed IP is 4 or 16 bytes, not {len(voter_ip)}: {voter_ip.hex()}")
        if is_exempt(reported_ip):  # ValueError too if it is not 4 or 16 bytes
            return
        self._expire(now)
        # One vote per IPv6 /64: one subscriber holds all of its addresses.
        voter = voter_ip if len(voter_ip) == 4 else voter_ip[:8]
        if voter in self._votes:
            self._withdraw(voter)
        elif len(self._votes) >= self.max_voters:
            self._withdraw(next(iter(self._votes)))
        self._votes[voter] = (reported_ip, now)
        self._tally[reported_ip] = self._tally.get(reported_ip, 0) + 1
        self._family_votes[len(reported_ip)] += 1
        self._decide()

    def external_ip(self, *, ipv6: bool | None = None) -> bytes | None:
        """The IP (packed) the vote settled on last, of the family asked; by default the IPv4
        one if there is one, else the IPv6 one. None before any vote settles."""
        if ipv6 is None:
            return self._decided.get(4) or self._decided.get(16)
        return self._decided.get(16 if ipv6 else 4)

    def needs_new_id(self, node_id: bytes) -> bool:
        """Whether BEP 42 does not accept node_id for the external IP voted (the IPv4 one if
        known); False while none is."""
        ip = self.external_ip()
        return ip is not None and not is_secure(node_id, ip)

    def check(self) -> None:
        """Assert the invariants (for tests): bounded, and the tallies match the votes."""
        assert len(self._votes) <= self.max_voters
        tally: dict[bytes, int] = {}
        for reported, _at in self._votes.values():
            tally[reported] = tally.get(reported, 0) + 1
        assert tally == self._tally, (tally, self._tally)
        for length, votes in self._family_votes.items():
            assert votes == sum(n for ip, n in tally.items() if len(ip) == length)

    def _decide(self) -> None:
        """In each family, settle on the leading IP if enough voters, and a majority, name it."""
        for length, total in self._family_votes.items():
            named = [ip for ip in self._tally if len(ip) == length]
            if not named:
                continue
            leader = max(named, key=self._tally.__getitem__)
            votes = self._tally[leader]
            if votes >= self.min_votes and 2 * votes > total:
                self._decided[length] = leader

    def _expire(self, now: float) -> None:
        """Withdraw the votes older than max_age (the oldest come first)."""
        while self._votes:
            voter, (_ip, at) = next(iter(self._votes.items()))
            if now - at <= self.max_age:
                return
            self._withdraw(voter)

    def _withdraw(self, voter: bytes) -> None:
        reported, _at = self._votes.pop(voter)
        self._family_votes[len(reported)] -= 1
        if self._tally[reported] == 1:
            del self._tally[reported]
        else:
            self._tally[reported] -= 1
