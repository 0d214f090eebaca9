"""The ledger's address manager: bounded tables spread over network groups, outbound dials
in distinct groups, back-off, given peers kept, the per-peer addr budget, bans."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from shoal.ledger import addrman
from shoal.ledger.addrman import (
    AddrBudget,
    AddressManager,
    BanList,
    ban_key,
    network_group,
)


def manager(**sizes: int) -> AddressManager:
    return AddressManager(random.Random(1), **sizes)


def spread(groups: int, per_group: int, port: int = 8333) -> list[tuple[str, int]]:
    """Addresses in `groups` loopback /16s (127.g.0.0), per_group in each."""
    return [
        (f"127.{g}.{n // 250}.{n % 250 + 1}", port) for g in range(groups) for n in range(per_group)
    ]


def test_loopback_addresses_fall_in_distinct_groups_by_their_second_byte():
    assert network_group(("127.1.0.1", 1)) != network_group(("127.2.0.1", 1))
    assert network_group(("127.1.0.1", 1)) == network_group(("127.1.9.9", 2))
    assert network_group(("2001:db8::1", 1)) == network_group(("2001:db8:ffff::1", 1))
    assert network_group(("2001:db8::1", 1)) != network_group(("2001:db9::1", 1))


def test_one_group_cannot_fill_the_new_table():
    known = manager()
    added = known.heard(spread(1, 1000), ("10.0.0.1", 1), now=0)
    assert added == addrman.PER_GROUP
    new, _tried = known.group_counts()
    assert list(new.values()) == [addrman.PER_GROUP]


def test_one_source_adds_at_most_its_share():
    known = manager()
    added = known.heard(spread(100, 10), ("10.0.0.1", 1), now=0)
    assert added == addrman.PER_SOURCE
    assert known.heard(spread(100, 10, port=9), ("10.1.0.1", 1), now=0) == addrman.PER_SOURCE


@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 30)), max_size=400))
def test_the_tables_stay_within_their_bounds(heard):
    known = manager(new_capacity=50, tried_capacity=20)
    for n, (group, host) in enumerate(heard):
        address = (f"127.{group}.0.{host + 1}", 1)
        known.heard([address], (f"10.{n % 7}.0.1", 1), now=n)
        if n % 3 == 0:
            known.linked(address, now=n)
    assert known.new_count <= 50 and known.tried_count <= 20
    new, tried = known.group_counts()
    assert all(count <= addrman.PER_GROUP for count in [*new.values(), *tried.values()])
    assert sum(new.values()) == known.new_count and sum(tried.values()) == known.tried_count


def test_selection_picks_each_group_once_and_none_already_used():
    known = manager()
    for source in range(4):
        known.heard(spread(20, 10, port=1000 + source), (f"10.{source}.0.1", 1), now=0)
    used = {network_group(("127.0.0.1", 1))}
    chosen = known.select(8, now=0, used_groups=used, busy=set())
    groups = [network_group(address) for address in chosen]
    assert len(chosen) == 8
    assert len(set(groups)) == 8
    assert not used & set(groups)


def test_selection_stops_at_the_groups_there_are():
    known = manager()
    known.heard(spread(3, 30), None, now=0)
    assert len(known.select(8, now=0, used_groups=set(), busy=set())) == 3


def test_a_failing_address_waits_longer_each_time_then_is_forgotten():
    known = manager()
    address = ("127.5.0.1", 8333)
    known.heard([address], None, now=0)
    known.failed(address, now=0)
    assert known.select(1, now=addrman.RETRY_AFTER - 1, used_groups=set(), busy=set()) == []
    assert known.select(1, now=addrman.RETRY_AFTER, used_groups=set(), busy=set()) == [address]
    known.failed(address, now=100)
    assert (
        known.select(1, now=100 + 2 * addrman.RETRY_AFTER - 1, used_groups=set(), busy=set()) == []
    )
    for _ in range(addrman.MAX_FAILURES - 2):
        known.failed(address, now=100)
    assert address not in known


def test_given_peers_are_kept_and_retried_soon_whatever_fails():
    known = manager()
    peer = ("127.0.0.1", 9000)
    known.add_given([peer], now=0)
    for _ in range(50):
        known.failed(peer, now=0)
    assert peer in known
    assert known.given_due(now=1, busy=set()) == []
    assert known.given_due(now=addrman.GIVEN_RETRY, busy=set()) == [peer]
    assert known.given_due(now=addrman.GIVEN_RETRY, busy={peer}) == []
    known.linked(peer, now=40)
    assert known.given_due(now=40, busy=set()) == [peer]
    assert known.tried_count == 0  # given peers live apart from the tables


def test_a_linked_address_moves_to_tried_and_is_handed_out():
    known = manager()
    address = ("127.9.0.1", 8333)
    known.heard([address], None, now=0)
    known.linked(address, now=1)
    assert (known.new_count, known.tried_count) == (0, 1)
    assert known.sample(now=2) == [address]


def test_a_peer_flooding_addresses_gets_one_per_ten_seconds_in():
    budget = AddrBudget(now=0)
    assert budget.take(1000, now=0) == 1
    assert budget.take(1000, now=1) == 0
    assert budget.take(1000, now=101) == 10
    budget.grant(1000)
    assert budget.take(5000, now=101) == 1000
    assert budget.take(5000, now=1e9) == addrman.ADDR_BURST  # the bucket holds no more


def test_bans_hold_an_ip_but_on_loopback_an_ip_and_port():
    bans = BanList()
    bans.ban(("10.0.0.1", 1), "bad-pow", now=0)
    bans.ban(("127.0.0.1", 9000), "bad-merkle", now=5)
    assert bans.is_banned(("10.0.0.1", 2), now=1)
    assert bans.is_banned(("127.0.0.1", 9000), now=6)
    assert not bans.is_banned(("127.0.0.1", 9001), now=6)
    assert [ban.reason for ban in bans.entries(now=6)] == ["bad-merkle", "bad-pow"]
    assert ban_key(("127.0.0.1", 9000)) != ban_key(("127.0.0.1", 9001))
    assert not bans.is_banned(("10.0.0.1", 2), now=addrman.BAN_FOR)
    assert [ban.address for ban in bans.entries(now=addrman.BAN_FOR + 1)] == [("127.0.0.1", 9000)]


def test_an_ipv6_ban_holds_the_whole_64():
    bans = BanList()
    bans.ban(("2001:db8:1:2::5", 8333), "bad-signature", now=0)
    assert bans.is_banned(("2001:db8:1:2:ffff::1", 8333), now=1)  # same /64, another host
    assert not bans.is_banned(("2001:db8:1:3::5", 8333), now=1)
    assert ban_key(("::1", 1)) != ban_key(("::1", 2))  # loopback: by port, as IPv4's


def test_the_ban_list_is_bounded():
    bans = BanList(capacity=10)
    for n in range(50):
        bans.ban((f"10.0.0.{n + 1}", 1), "x", now=n)
    assert len(bans.entries(now=50)) == 10
    assert bans.is_banned(("10.0.0.50", 1), now=50)
