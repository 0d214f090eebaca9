"""When the chain commits: after every block in step with the best header, once per
COMMIT_BATCH blocks while catching up, and a kill at any moment of a catch-up reopens at the
last commit, consistent, and carries on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ledger_blocks import NOW
from test_ledger_chain import fed, paying_branch

from shoal.ledger.chain import COMMIT_BATCH, Chain, ChainUpdate
from shoal.ledger.params import LOCAL
from shoal.ledger.primitives import Block
from shoal.ledger.store import MemoryStore, SqliteStore

LENGTH = 3 * COMMIT_BATCH + 10  # long enough for batches, then blocks committed one by one
IN_STEP_FROM = LENGTH - COMMIT_BATCH  # from this tip on the chain is no longer catching up


@pytest.fixture(scope="module")
def blocks() -> list[Block]:
    """A chain of LENGTH blocks whose payments move coins."""
    return paying_branch(LENGTH, 1)


class CommitsStore(MemoryStore):
    """A store in memory that records the tip of each commit that moved it."""

    def __init__(self) -> None:
        super().__init__()
        self.committed: list[bytes] = []

    def commit(self) -> None:
        tip = self.tip()
        if tip is not None and tip not in self.committed[-1:]:
            self.committed.append(tip)


def committed_heights(chain: Chain, store: CommitsStore) -> list[int]:
    """The heights of the tips store committed, the genesis left out."""
    return [chain.get(tip).height for tip in store.committed[1:]]  # type: ignore[union-attr]


def test_a_chain_in_step_commits_every_block(blocks: list[Block]) -> None:
    store = CommitsStore()
    chain = Chain(LOCAL, store)
    for block in blocks[:20]:
        chain.accept_block(block, NOW)
        assert store.committed[-1] == block.hash and not chain.catching_up


def test_a_chain_catching_up_commits_once_a_batch(blocks: list[Block]) -> None:
    store = CommitsStore()
    chain = Chain(LOCAL, store)
    for block in blocks:
        chain.accept_header(block.header, NOW)
    assert chain.catching_up
    for block in blocks:
        chain.accept_block(block, NOW)
    batched = list(range(COMMIT_BATCH, IN_STEP_FROM, COMMIT_BATCH))
    assert committed_heights(chain, store) == batched + list(range(IN_STEP_FROM, LENGTH + 1))


def test_a_long_step_commits_once_a_batch(blocks: list[Block]) -> None:
    store = CommitsStore()
    chain = Chain(LOCAL, store)
    for block in blocks:
        chain.accept_header(block.header, NOW)
    for block in blocks[:0:-1]:  # none connects before the first arrives
        chain.accept_block(block, NOW)
    update = chain.accept_block(blocks[0], NOW, max_connects=COMMIT_BATCH + 10)
    assert update.connected == blocks[: COMMIT_BATCH + 10]
    assert committed_heights(chain, store) == [COMMIT_BATCH] and chain.catching_up
    chain.continue_activation(LENGTH)
    assert chain.tip.hash == blocks[-1].hash and not chain.catching_up
    assert committed_heights(chain, store)[1:] == [
        *range(2 * COMMIT_BATCH, IN_STEP_FROM, COMMIT_BATCH),
        *range(IN_STEP_FROM, LENGTH + 1),
    ]


def test_close_commits_a_pending_batch(blocks: list[Block], tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    chain = Chain(LOCAL, SqliteStore(path))
    for block in blocks:
        chain.accept_header(block.header, NOW)
    for block in blocks[:10]:
        chain.accept_block(block, NOW)
    assert chain.catching_up
    chain.close()
    again = Chain(LOCAL, SqliteStore(path))
    assert again.tip.hash == blocks[9].hash
    assert again.store.utxo() == fed(blocks[:10]).store.utxo()
    again.close()


CHILD = """
import os, sys
from shoal.ledger.chain import Chain
from shoal.ledger.params import LOCAL
from shoal.ledger.primitives import decode_block
from shoal.ledger.store import SqliteStore

path, now, exit_hash, mode, in_step, catch_up = sys.argv[1:]
now, exit_hash = float(now), bytes.fromhex(exit_hash)
in_step, catch_up = ([decode_block(bytes.fromhex(x)) for x in open(f)] for f in (in_step, catch_up))
chain = Chain(LOCAL, SqliteStore(path))
for block in in_step:
    chain.accept_block(block, now)
for block in catch_up:
    chain.accept_header(block.header, now)
apply = chain.store.apply

def apply_then_exit(change):
    apply(change)
    if change.block_hash == exit_hash:
        os._exit(0)  # its writes made, not committed

if mode == "during":
    chain.store.apply = apply_then_exit
for block in catch_up:
    chain.accept_block(block, now)
    if mode == "between" and chain.tip.hash == exit_hash:
        os._exit(0)  # nothing pending committed
"""


def killed_child(
    tmp_path: Path, exit_block: Block, mode: str, catch_up: list[Block], in_step: list[Block]
) -> Chain:
    """The chain a child process left: given in_step's blocks one by one, then catch_up's
    headers and blocks, it exits (with no commit, as a kill) after exit_block is connected
    ("between") or while it is written ("during")."""
    feeds = []
    for name, blocks in (("in_step", in_step), ("catch_up", catch_up)):
        feeds.append(tmp_path / f"{name}.hex")
        feeds[-1].write_text("".join(block.serialized.hex() + "\n" for block in blocks))
    path = tmp_path / "chain.sqlite"
    argv = [str(path), str(NOW), exit_block.hash.hex(), mode, *map(str, feeds)]
    subprocess.run([sys.executable, "-c", CHILD, *argv], timeout=60, check=True)
    return Chain(LOCAL, SqliteStore(path))


def last_commit(height: int) -> int:
    """The height of the last commit once the chain of LENGTH headers has connected height."""
    return height if height >= IN_STEP_FROM else height - height % COMMIT_BATCH


@pytest.mark.parametrize(
    ("exit_at", "mode"),
    [
        (COMMIT_BATCH - 1, "between"),
        (COMMIT_BATCH, "during"),
        (COMMIT_BATCH, "between"),
        (2 * COMMIT_BATCH + 5, "between"),
        (IN_STEP_FROM, "during"),
        (IN_STEP_FROM + 3, "between"),
    ],
)
def test_a_kill_in_a_catch_up_reopens_at_the_last_commit(
    blocks: list[Block], tmp_path: Path, exit_at: int, mode: str
) -> None:
    chain = killed_child(tmp_path, blocks[exit_at - 1], mode, blocks, [])
    connected = exit_at - 1 if mode == "during" else exit_at
    assert chain.tip.height == last_commit(connected)
    assert chain.resumed == ChainUpdate() and chain.store.reorg_start() is None
    assert chain.tip.hash == [LOCAL.genesis, *blocks][chain.tip.height].hash
    assert chain.best_header.hash == blocks[-1].hash  # the headers were committed each
    assert chain.store.utxo() == fed(blocks[: chain.tip.height]).store.utxo()
    for block in blocks[chain.tip.height :]:  # downloaded again
        chain.accept_block(block, NOW)
    assert chain.tip.hash == blocks[-1].hash
    assert chain.store.utxo() == fed(blocks).store.utxo()
    chain.close()


def test_a_kill_in_a_reorganisation_while_catching_up_reopens_mid_way(
    blocks: list[Block], tmp_path: Path
) -> None:
    losing = paying_branch(COMMIT_BATCH + 6, 2)
    # The winning branch overtakes with its block COMMIT_BATCH + 7: the chain disconnects
    # the losing branch (a batch of COMMIT_BATCH committed with the reorganisation's record),
    # then dies while it writes the connection of the winning branch's block 10.
    chain = killed_child(tmp_path, blocks[9], "during", blocks, losing)
    assert chain.resumed.disconnected == losing[::-1]
    assert chain.resumed.connected == blocks[: len(losing) + 1]  # bodies kept: carried on
    assert chain.store.reorg_start() is None and chain.tip.hash == blocks[len(losing)].hash
    assert chain.store.utxo() == fed(blocks[: len(losing) + 1]).store.utxo()
    chain.close()
