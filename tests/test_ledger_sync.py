"""The block download's policy alone: whom each block is asked of, what is in flight, who
stalls; and the bounded sets of what peers have."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shoal.ledger import sync
from shoal.ledger.blockindex import BlockIndex
from shoal.ledger.primitives import BlockHeader
from shoal.ledger.sync import BlockDownload, BoundedSet, Supplier


def chain_of(length: int, fork_at: int | None = None) -> list[BlockIndex]:
    """Indexes of a chain of length blocks (a distinct one per fork_at, if given)."""
    indexes: list[BlockIndex] = []
    parent = None
    for height in range(length):
        salt = 0 if fork_at is None or height < fork_at else 1
        header = BlockHeader(1, parent.hash if parent else bytes(32), bytes(32), height, 0, salt)
        index = BlockIndex(header.hash, header, height, height, parent, False, False)
        index.link()
        indexes.append(index)
        parent = index
    return indexes


def test_neighbouring_blocks_go_to_different_peers():
    blocks = chain_of(40)
    download = BlockDownload()
    suppliers = [Supplier(n, blocks[-1], BoundedSet(10)) for n in (1, 2)]
    plan = download.plan(suppliers, blocks[1:])
    assert [b.height for b in plan[1]] == list(range(1, 33, 2))
    assert [b.height for b in plan[2]] == list(range(2, 33, 2))


@given(
    st.lists(st.tuples(st.integers(0, 59), st.booleans(), st.integers(0, 5)), max_size=5),
    st.integers(0, 60),
)
def test_a_plan_asks_only_what_a_peer_has_and_has_room_for(peers, asked_before):
    main = chain_of(60)
    fork = chain_of(60, fork_at=30)
    download = BlockDownload()
    download.asked(99, [index.hash for index in main[1 : asked_before + 1]], now=0)
    suppliers = []
    for number, (height, on_fork, busy) in enumerate(peers):
        best = (fork if on_fork else main)[height]
        lacks = BoundedSet(10)
        lacks.add(main[height // 2].hash)
        download.asked(number, [bytes([number, n]) * 16 for n in range(busy)], now=0)
        suppliers.append(Supplier(number, best, lacks))
    plan = download.plan(suppliers, main[1:])
    planned = [index for indexes in plan.values() for index in indexes]
    assert len(planned) == len({index.hash for index in planned})
    for supplier, (height, on_fork, _busy) in zip(suppliers, peers, strict=True):
        mine = plan.get(supplier.peer, [])
        assert len(mine) <= download.free(supplier.peer)
        limit = min(height, 29) if on_fork else height
        assert all(index.height <= limit for index in mine)
        assert all(
            index.hash not in supplier.lacks and index.hash not in download for index in mine
        )


def test_requests_in_flight_released_with_their_peer():
    blocks = chain_of(5)
    download = BlockDownload()
    download.asked(1, [b.hash for b in blocks[1:3]], now=0)
    download.asked(2, [blocks[3].hash], now=5)
    assert download.received(blocks[1].hash) == 1
    assert download.received(blocks[1].hash) is None  # once only
    assert download.stalling(blocks[2].hash, now=sync.STALL_TIMEOUT) is None
    assert download.stalling(blocks[2].hash, now=sync.STALL_TIMEOUT + 1) == 1
    assert download.timed_out(now=sync.BLOCK_TIMEOUT + 1) == {1}
    download.release(1)
    assert blocks[2].hash not in download and download.free(1) == sync.BLOCKS_PER_PEER
    assert download.in_flight(2) == 1


def test_a_bounded_set_forgets_the_oldest():
    seen = BoundedSet(3)
    for item in (b"a", b"b", b"c", b"a", b"d"):
        seen.add(item)
    assert b"b" not in seen and all(x in seen for x in (b"a", b"c", b"d")) and len(seen) == 3
