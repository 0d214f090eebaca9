"""Our external IP by vote: distinct voters, a clear majority, bounded memory, liars outvoted."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.dht.external_ip import MAX_AGE, MAX_VOTERS, MIN_VOTES, ExternalIpVote
from shoal.dht.secure_id import is_secure, secure_node_id


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


OURS = ip("198.51.100.7")
OTHER = ip("203.0.113.9")
OURS_V6 = ip("2001:db8:5::7")


def voter(index: int) -> bytes:
    """A distinct IPv4 voter."""
    return bytes([192, 0]) + index.to_bytes(2, "big")


def cast(votes: ExternalIpVote, voters: range, reported: bytes, now: float = 0.0) -> None:
    """A vote for reported from voter(index) for each index in voters."""
    for index in voters:
        votes.vote(voter(index), reported, now)


def test_an_ip_is_ours_once_ten_distinct_voters_agree():
    votes = ExternalIpVote()
    insecure = bytes(20)
    assert not is_secure(insecure, OURS)
    cast(votes, range(MIN_VOTES - 1), OURS)
    cast(votes, range(MIN_VOTES - 1), OURS, 1.0)  # again: still one vote each
    assert votes.external_ip() is None and not votes.needs_new_id(insecure)
    votes.vote(voter(MIN_VOTES), OURS, 2.0)
    assert votes.external_ip() == votes.external_ip(ipv6=False) == OURS
    assert votes.external_ip(ipv6=True) is None
    assert votes.needs_new_id(insecure)
    assert not votes.needs_new_id(secure_node_id(OURS, random.Random(1)))
    votes.check()


def test_one_ipv6_subscriber_votes_once_and_local_ips_are_ignored():
    votes = ExternalIpVote()
    for index in range(20):
        votes.vote(ip(f"2001:db8:1::{index + 1:x}"), OURS, 0.0)  # one /64
        votes.vote(voter(index), ip("192.168.1.20"), 0.0)  # what a LAN neighbour sees
        votes.vote(voter(100 + index), ip("127.0.0.1"), 0.0)
    assert votes.external_ip() is None
    votes.check()


def test_the_most_voters_are_not_enough_without_a_majority():
    votes = ExternalIpVote()
    cast(votes, range(100, 109), OTHER)
    cast(votes, range(200, 209), ip("203.0.113.10"))
    cast(votes, range(18), OURS)
    assert votes.external_ip() is None  # 18 of 36
    votes.vote(voter(18), OURS, 0.0)
    assert votes.external_ip() == OURS
    votes.check()


def test_a_new_ip_takes_over_when_a_majority_names_it():
    votes = ExternalIpVote()
    cast(votes, range(10), OURS)
    cast(votes, range(100, 110), OTHER, 1.0)
    assert votes.external_ip() == OURS  # ten against ten: no majority, the last result stands
    votes.vote(voter(110), OTHER, 2.0)
    assert votes.external_ip() == OTHER
    votes.vote(voter(100), OTHER, 3.0)  # once more: still 11 against 10
    assert votes.external_ip() == OTHER
    # A voter that changes its mind counts for its new IP only: 11 against 10 the other way.
    votes.vote(voter(100), OURS, 4.0)
    assert votes.external_ip() == OURS
    votes.check()


def test_old_votes_lapse():
    votes = ExternalIpVote()
    cast(votes, range(10), OURS)
    cast(votes, range(100, 110), OTHER, MAX_AGE + 1)
    assert votes.external_ip() == OTHER
    votes.check()


def test_each_family_votes_apart_and_ipv4_decides_the_id():
    votes = ExternalIpVote()
    for index in range(10):
        votes.vote(ip(f"2001:db8:{index + 1}::1"), OURS_V6, 0.0)
    assert votes.external_ip() == votes.external_ip(ipv6=True) == OURS_V6
    assert not votes.needs_new_id(secure_node_id(OURS_V6, random.Random(2)))
    cast(votes, range(10), OURS)
    assert votes.external_ip() == OURS and votes.external_ip(ipv6=True) == OURS_V6
    assert votes.needs_new_id(secure_node_id(OURS_V6, random.Random(2)))
    votes.check()


def test_the_oldest_voters_go_first():
    votes = ExternalIpVote(max_voters=20)
    cast(votes, range(15), OTHER)
    assert votes.external_ip() == OTHER
    cast(votes, range(100, 115), OURS, 1.0)  # 15 against the 5 newest of the 15
    assert votes.external_ip() == OURS
    votes.check()


def test_malformed_ips_and_settings_are_refused():
    votes = ExternalIpVote()
    with pytest.raises(ValueError):
        votes.vote(b"\x01\x02\x03", OURS, 0.0)
    with pytest.raises(ValueError):
        votes.vote(voter(1), b"\x01" * 6, 0.0)
    with pytest.raises(ValueError):
        ExternalIpVote(min_votes=0)
    with pytest.raises(ValueError):
        ExternalIpVote(min_votes=11, max_voters=10)


packed_ips = st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16))


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 12),
    st.integers(1, 30),
    st.lists(
        st.tuples(
            # Few voters and IPs, so that voters vote again and IPs gather votes.
            st.one_of(st.sampled_from([voter(i) for i in range(40)]), packed_ips),
            st.one_of(st.sampled_from([OURS, OTHER, OURS_V6]), packed_ips),
            st.floats(0, 3 * MAX_AGE),
        ),
        max_size=300,
    ),
)
def test_memory_stays_bounded_whatever_the_votes(min_votes, max_voters, votes_cast):
    votes = ExternalIpVote(min_votes=min(min_votes, max_voters), max_voters=max_voters)
    for voter_ip, reported, now in votes_cast:
        votes.vote(voter_ip, reported, now)
        votes.check()
        assert len(votes._tally) <= max_voters  # the check() counts the votes themselves
        found = votes.external_ip()
        assert found is None or len(found) in (4, 16)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_minority_of_liars_cannot_change_the_result(data):
    honest = data.draw(st.integers(MIN_VOTES, MAX_VOTERS // 2), label="honest voters")
    liars = data.draw(st.integers(0, honest - 1), label="liars")
    truth = data.draw(st.sampled_from([OURS, OURS_V6]), label="our IP")
    # Distinct voters: liars are IPv4 addresses or each in an IPv6 /64 of its own.
    liar_ips = [
        voter(1000 + i) if data.draw(st.booleans()) else ip(f"2001:db8:{i + 1:x}::1")
        for i in range(liars)
    ]
    casts = [(voter(i), truth) for i in range(honest)]
    for liar in liar_ips:
        for lie in data.draw(
            st.lists(st.one_of(packed_ips, st.just(OTHER)), min_size=1, max_size=3)
        ):
            casts.append((liar, lie))
    order = data.draw(st.permutations(casts), label="order")
    votes = ExternalIpVote()
    for now, (voter_ip, reported) in enumerate(order):
        votes.vote(voter_ip, reported, float(now))
    assert votes.external_ip(ipv6=len(truth) == 16) == truth
    votes.check()
