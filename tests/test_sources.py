"""Whom a torrent dials and when: back-off, given versus learned peers, our own address."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shoal.swarm.sources import (
    DIALS_PER_SECOND,
    FIRST_RETRY_DELAY,
    MAX_DIALS,
    MAX_OWN_ADDRESSES,
    MAX_RETRY_DELAY,
    PeerSources,
)

GIVEN = ("192.0.2.1", 6881)
LEARNED = ("192.0.2.2", 6881)


def test_a_given_peer_is_dialled_again_with_growing_back_off_even_when_seeding():
    sources = PeerSources()
    sources.add(GIVEN, given=True, now=0.0)
    now = 0.0
    waits = []
    for _ in range(10):
        assert sources.due(now, room=10, seeding=True) == [GIVEN]
        sources.connected(GIVEN)
        # It connects, then closes at once without trading: useless, so the back-off grows.
        sources.closed(GIVEN, now, useful=False, handshaken=True)
        wait = sources.sources[GIVEN].retry_at - now
        assert sources.due(now + wait - 0.01, room=10, seeding=True) == []
        waits.append(wait)
        now += wait
    assert waits[:3] == [FIRST_RETRY_DELAY, 2 * FIRST_RETRY_DELAY, 4 * FIRST_RETRY_DELAY]
    assert max(waits) == MAX_RETRY_DELAY


def test_a_useful_connection_resets_the_back_off():
    sources = PeerSources(encryption="off")
    sources.add(GIVEN, given=True, now=0.0)
    for now in (0.0, 10.0, 100.0):
        sources.due(now, room=1, seeding=False)
        sources.failed(GIVEN, now)
    sources.due(1000.0, room=1, seeding=False)
    sources.connected(GIVEN)
    sources.closed(GIVEN, 1000.0, useful=True, handshaken=True)
    assert sources.due(1000.0 + FIRST_RETRY_DELAY - 0.01, room=1, seeding=False) == []
    assert sources.due(1000.0 + FIRST_RETRY_DELAY, room=1, seeding=False) == [GIVEN]


def test_learned_peers_are_dropped_after_one_failure_and_not_dialled_by_a_seed():
    sources = PeerSources(encryption="off")
    sources.add(LEARNED, given=False, now=0.0)
    assert sources.due(0.0, room=5, seeding=True) == []
    assert sources.due(0.0, room=5, seeding=False) == [LEARNED]
    sources.failed(LEARNED, 0.0)
    assert LEARNED not in sources


def test_our_own_address_is_never_dialled_again():
    own: set[tuple[str, int]] = set()
    sources = PeerSources(own)
    sources.add(LEARNED, given=False, now=0.0)
    sources.due(0.0, room=5, seeding=False)
    sources.mark_self(LEARNED)
    sources.add(LEARNED, given=True, now=1.0)
    assert sources.due(100.0, room=5, seeding=False) == []
    # Another torrent of the node shares what was learned.
    other = PeerSources(own)
    other.add(LEARNED, given=False, now=0.0)
    assert other.due(0.0, room=5, seeding=False) == []


def test_dials_are_bounded_by_free_slots_dials_in_flight_and_a_rate():
    sources = PeerSources()
    for number in range(100):
        sources.add((f"198.51.100.{number}", 1), given=False, now=0.0)
    assert len(sources.due(0.0, room=3, seeding=False)) == 3
    assert len(sources.due(0.0, room=100, seeding=False)) == DIALS_PER_SECOND - 3
    assert len(sources.due(1.0, room=100, seeding=False)) == MAX_DIALS - DIALS_PER_SECOND
    assert sources.due(2.0, room=100, seeding=False) == []  # MAX_DIALS are in progress


def test_prefer_tries_plaintext_then_mse_at_once_then_plaintext_again():
    sources = PeerSources(encryption="prefer")
    sources.add(LEARNED, given=False, now=0.0)
    assert sources.due(0.0, room=1, seeding=False) == [LEARNED]
    assert not sources.encrypted(LEARNED)
    # The peer hung up before any BitTorrent handshake: it may insist on encryption.
    sources.connected(LEARNED)
    sources.closed(LEARNED, 0.0, useful=False, handshaken=False)
    assert sources.due(0.0, room=1, seeding=False) == [LEARNED]
    assert sources.encrypted(LEARNED)
    sources.closed(LEARNED, 0.0, useful=False, handshaken=False)
    assert LEARNED not in sources  # neither worked: a learned peer is let go


def test_require_always_dials_with_mse():
    sources = PeerSources(encryption="require")
    sources.add(GIVEN, given=True, now=0.0)
    sources.due(0.0, room=1, seeding=False)
    sources.failed(GIVEN, 0.0)
    assert sources.encrypted(GIVEN)


def test_a_dial_that_never_connected_does_not_switch_to_mse():
    sources = PeerSources(encryption="prefer")
    sources.add(GIVEN, given=True, now=0.0)
    sources.due(0.0, room=1, seeding=False)
    sources.failed(GIVEN, 0.0)  # refused or timed out: nothing said about encryption
    assert not sources.encrypted(GIVEN)
    assert sources.due(0.0, room=1, seeding=False) == []


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "give", "due", "connected", "failed", "closed", "self"]),
            st.integers(0, 7),
            st.booleans(),
        ),
        max_size=80,
    )
)
def test_the_counts_kept_match_the_sources(operations):
    sources = PeerSources()
    now = 0.0
    for operation, number, flag in operations:
        address = (f"192.0.2.{number}", 1)
        now += 0.5
        if operation in ("add", "give"):
            sources.add(address, given=operation == "give", now=now)
        elif operation == "due":
            sources.due(now, room=number, seeding=flag)
        elif operation == "connected":
            sources.connected(address)
        elif operation == "failed":
            sources.failed(address, now)
        elif operation == "closed":
            sources.closed(address, now, useful=flag, handshaken=not flag)
        else:
            sources.mark_self(address)
        kept = sources.sources.values()
        assert sources.dialling() == sum(source.dialling for source in kept)
        assert sources.learned_count() == sum(not source.given for source in kept)


def test_peers_echoing_our_peer_id_cannot_grow_the_own_set_without_bound():
    sources = PeerSources()
    for port in range(10_000):
        sources.mark_self(("10.0.0.1", port))
    assert len(sources.own) == MAX_OWN_ADDRESSES
    assert ("10.0.0.1", 9_999) in sources.own
