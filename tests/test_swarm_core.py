"""The swarm core on a simulated network: transfers, blame, metadata, limits, policies."""

from __future__ import annotations

import random

import pytest

from shoal.metainfo import create_torrent
from shoal.sim.swarm import SimNetwork
from shoal.swarm.choker import Candidate, Choker
from shoal.swarm.picker import END_GAME_AFTER, PiecePicker


def make_network(tmp_path, size: int) -> SimNetwork:
    """A torrent of random content with 64 KiB pieces on a fresh simulated network."""
    content = random.Random(3).randbytes(size)
    path = tmp_path / "payload.bin"
    path.write_bytes(content)
    return SimNetwork(create_torrent(path, piece_length=64 * 1024), content)


@pytest.fixture
def network(tmp_path):
    """A 2 MiB torrent (plus a short last piece)."""
    return make_network(tmp_path, 2 * 1024 * 1024 + 1234)


def test_leecher_gets_every_byte_from_one_seeder(network):
    seeder = network.add("seeder", complete=True)
    leecher = network.add("leecher", complete=False)
    network.connect(leecher, seeder)
    network.run(until=30)
    assert leecher.swarm.complete
    assert bytes(leecher.data) == network.content


def test_three_seeders_each_contribute(tmp_path):
    network = make_network(tmp_path, 8 * 1024 * 1024)
    seeders = [network.add(f"seed{i}", complete=True, upload_limit=1024 * 1024) for i in range(3)]
    leecher = network.add("leecher", complete=False)
    for seeder in seeders:
        network.connect(leecher, seeder)
    network.run(until=30)
    assert bytes(leecher.data) == network.content
    totals = leecher.swarm.transfer_totals()
    assert all(totals[s.address][0] > 0 for s in seeders), totals


def test_leechers_upload_to_each_other(tmp_path):
    network = make_network(tmp_path, 8 * 1024 * 1024)
    seeder = network.add("seeder", complete=True, upload_limit=256 * 1024)
    leechers = [network.add(f"leech{i}", complete=False) for i in range(3)]
    for i, leecher in enumerate(leechers):
        network.connect(leecher, seeder)
        for other in leechers[:i]:
            network.connect(leecher, other)
    network.run(until=120)
    assert all(bytes(peer.data) == network.content for peer in leechers)
    assert sum(peer.swarm.uploaded for peer in leechers) > 0
    # The slow seeder alone could not have sent three copies in the time taken.
    assert seeder.swarm.uploaded < 3 * len(network.content)


def test_corrupt_peer_is_banned_and_download_completes(tmp_path):
    network = make_network(tmp_path, 8 * 1024 * 1024)
    good = network.add("good", complete=True, upload_limit=512 * 1024)
    bad = network.add("bad", complete=True, corrupt=True, upload_limit=512 * 1024)
    leecher = network.add("leecher", complete=False)
    network.connect(leecher, bad)
    network.connect(leecher, good)
    network.run(until=60)
    assert bytes(leecher.data) == network.content
    assert leecher.swarm.is_banned(bad.address)
    assert not leecher.swarm.is_banned(good.address)


def test_magnet_leecher_fetches_metadata_then_pieces(network):
    seeder = network.add("seeder", complete=True)
    leecher = network.add("leecher", complete=False, with_metadata=False)
    network.connect(leecher, seeder)
    network.run(until=30)
    assert leecher.metadata_ready == network.torrent.info_bytes
    assert bytes(leecher.data) == network.content


def test_peer_exchange_introduces_peers(network):
    seeder = network.add("seeder", complete=True, upload_limit=64 * 1024)
    middle = network.add("middle", complete=False, upload_limit=64 * 1024)
    edge = network.add("edge", complete=False)
    network.connect(middle, seeder)
    network.connect(edge, middle)
    network.run(until=5)
    # The edge only knew the middle peer; PEX told it where the seeder listens.
    assert seeder.address in {p.address for p in edge.swarm.peers.values()}


def test_download_limit_is_respected(network):
    seeder = network.add("seeder", complete=True)
    leecher = network.add("leecher", complete=False, download_limit=512 * 1024)
    network.connect(leecher, seeder)
    elapsed = network.run(until=60)
    assert leecher.swarm.complete
    # 2 MiB at 512 KiB/s, minus the one-second burst the bucket starts with.
    assert elapsed >= 2.5


def test_upload_limit_is_respected(network):
    seeder = network.add("seeder", complete=True, upload_limit=1024 * 1024)
    leecher = network.add("leecher", complete=False)
    network.connect(leecher, seeder)
    elapsed = network.run(until=60)
    assert leecher.swarm.complete
    assert elapsed >= 1.0


def test_a_leecher_with_no_peer_asks_for_more_and_a_seed_does_not(network):
    asked = []

    def tracker(peer):
        asked.append(peer.swarm.complete)
        return [seeder.address]

    network.tracker = tracker
    seeder = network.add("seeder", complete=True)
    leecher = network.add("leecher", complete=False)
    network.run(until=30)
    assert leecher.swarm.complete
    assert asked and not any(asked)  # only the leecher asked, and only while it lacked peers
    assert len(asked) == 1


def test_picker_prefers_the_rarest_piece():
    have = bytearray(b"\x01" * 4 + b"\x00" * 4)  # past the random-first phase
    picker = PiecePicker([16384] * 8, have, random.Random(1))
    picker.add_peer_pieces(bytearray(b"\x00\x00\x00\x00\x01\x01\x01\x01"))
    picker.add_peer_pieces(bytearray(b"\x00\x00\x00\x00\x01\x01\x00\x01"))
    picker.add_peer_pieces(bytearray(b"\x00\x00\x00\x00\x01\x00\x00\x01"))
    [(index, _block)] = picker.next_blocks(bytearray(b"\x01" * 8), {}, 1, now=0.0)
    assert index == 6


def test_end_game_asks_a_second_peer_for_blocks_in_flight():
    picker = PiecePicker([16384 * 2], bytearray(1), random.Random(1))
    everything = bytearray(b"\x01")
    first = dict.fromkeys(picker.next_blocks(everything, {}, 10, now=0.0), 0.0)
    assert len(first) == 2
    # A second peer gets the same blocks again rather than nothing, but not twice over.
    assert set(picker.next_blocks(everything, {}, 10, now=0.0)) == set(first)
    assert picker.next_blocks(everything, first, 10, now=0.0) == []


def test_far_from_the_end_a_block_is_doubled_only_once_its_request_is_slow():
    picker = PiecePicker([16384 * 64], bytearray(1), random.Random(1))
    everything = bytearray(b"\x01")
    assert len(picker.next_blocks(everything, {}, 64, now=0.0)) == 64
    # 64 blocks still to come, all in flight and fresh: an idle peer waits.
    assert picker.next_blocks(everything, {}, 10, now=1.0) == []
    assert len(picker.next_blocks(everything, {}, 10, now=0.0 + END_GAME_AFTER)) == 10


def test_the_end_game_waits_for_the_end_of_the_download_not_of_a_peers_pieces():
    picker = PiecePicker([16384 * 16] * 20, bytearray(20), random.Random(1))
    only_first = bytearray(b"\x01" + b"\x00" * 19)
    assert len(picker.next_blocks(only_first, {}, 16, now=0.0)) == 16
    # All a second peer has is in flight, but 19 pieces have not even started: it waits
    # (doubling here once cost a simulated swarm a third of its bandwidth).
    assert picker.next_blocks(only_first, {}, 16, now=0.0) == []
    for index in range(1, 20):
        picker.verified(index, True)
    assert len(picker.next_blocks(only_first, {}, 16, now=0.0)) == 16


def test_a_short_last_piece_counts_its_own_blocks_towards_the_end_game():
    block = 16384
    picker = PiecePicker([16 * block, 16 * block, block], bytearray(3), random.Random(1))
    first_two = bytearray(b"\x01\x01\x00")
    asked = picker.next_blocks(first_two, {}, 32, now=0.0)
    for index, number in asked[:12]:
        picker.receive(index, number * block, bytes(block), peer=1)
    # 20 blocks in flight and a last piece of one block: 21 to go, the end game is on.
    assert picker.next_blocks(first_two, {}, 8, now=0.0)


def test_end_game_leaves_a_peer_that_is_busy_with_its_own_requests_alone():
    picker = PiecePicker([16384 * 4], bytearray(1), random.Random(1))
    everything = bytearray(b"\x01")
    mine = dict.fromkeys(picker.next_blocks(everything, {}, 2, now=0.0), 0.0)
    others = dict.fromkeys(picker.next_blocks(everything, {}, 2, now=0.0), 0.0)
    assert len(mine) == len(others) == 2
    assert picker.next_blocks(everything, mine, 10, now=0.0) == []


def test_seeding_choker_rotates_slots():
    choker = Choker(slots=1, rng=random.Random(1))
    a = Candidate(1, 0.0, unchoked_since=0.0, waiting_since=0.0, connected_at=0.0)
    b = Candidate(2, 0.0, unchoked_since=None, waiting_since=5.0, connected_at=0.0)
    assert choker.choose([a, b], seeding=True, now=10.0) == {1}
    assert choker.choose([a, b], seeding=True, now=40.0) == {2}


def test_leeching_choker_rewards_the_fastest_and_one_optimistic():
    choker = Choker(slots=2, rng=random.Random(1))
    peers = [Candidate(i, float(i * 100), None, 0.0, 0.0) for i in range(5)]
    chosen = choker.choose(peers, seeding=False, now=100.0)
    assert 4 in chosen and len(chosen) == 2


def test_leechers_that_complete_close_their_connections_to_each_other(network):
    seeder = network.add("seeder", complete=True, upload_limit=512 * 1024)
    leechers = [network.add(f"leech{i}", complete=False) for i in range(8)]
    for leecher in leechers:
        network.connect(leecher, seeder)
        for other in leechers:
            if other is not leecher and not leecher.links:
                network.connect(leecher, other)
    for leecher in leechers:
        leecher.swarm.add_sources([other.address for other in leechers], given=False, now=0)
    network.run(until=120)
    assert all(leecher.swarm.complete for leecher in leechers)
    network.events.run(network.now + 5, lambda: False)
    # Seeds have nothing to trade: every connection between two of them is gone.
    assert all(not peer.links for peer in [seeder, *leechers])
