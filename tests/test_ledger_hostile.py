"""Hostile peers against a real `shoal node` on loopback: each invalid block is refused with
its reason and its sender dropped and banned (a ban on loopback holds the IP and the port it
listens on); the node's chain is unmoved."""

from __future__ import annotations

import itertools
import socket
import time

import pytest
from conftest import wait_for
from ledger_blocks import MINER, grow, lock_of, mine, next_block, private_key, spend, unsolved
from ledgernode import LedgerProcess

from shoal.ledger.chain import Chain
from shoal.ledger.messages import PROTOCOL_VERSION, BlockMessage, Framer, Verack, Version, encode
from shoal.ledger.params import LOCAL
from shoal.ledger.primitives import COIN, Block, OutPoint, TxOut
from shoal.ledger.store import MemoryStore

HONEST_BLOCKS = 14
listen_ports = itertools.count(40_000)


class RawPeer:
    """A peer speaking the ledger's wire by hand over a blocking socket."""

    def __init__(self, node: LedgerProcess) -> None:
        self.sock = socket.create_connection(("127.0.0.1", node.port), timeout=10)
        self.framer = Framer(LOCAL.magic)
        self.listen_port = next(listen_ports)
        self.send(Version(PROTOCOL_VERSION, 1, int(time.time()), 7, self.listen_port, 0, "/raw/"))
        self.send(Verack())
        self.read_until(lambda message: isinstance(message, Verack))

    def send(self, message: object) -> None:
        self.sock.sendall(encode(message, LOCAL.magic))  # type: ignore[arg-type]

    def read_until(self, wanted: object) -> None:
        """Read messages until one satisfies wanted (a predicate)."""
        while True:
            data = self.sock.recv(65536)
            assert data, "the node closed the link"
            if any(wanted(message) for message in self.framer.feed(data)):  # type: ignore[operator]
                return

    def closed_by_node(self) -> bool:
        """Whether the node closes the link (reading what it still sends), within 10 s."""
        try:
            while self.sock.recv(65536):
                pass
        except (TimeoutError, ConnectionResetError):
            return False
        return True


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    node = LedgerProcess(folder)
    node.start()
    yield node
    node.kill()


@pytest.fixture(scope="module")
def mirror(node):
    """The node's chain, built here and handed to it by an honest peer: 14 blocks whose first
    coinbases (to MINER) have matured."""
    chain = Chain(LOCAL, MemoryStore())
    blocks = grow(chain, HONEST_BLOCKS)
    honest = RawPeer(node)
    for block in blocks:
        honest.send(BlockMessage(block))
    wait_for(lambda: node.height() == HONEST_BLOCKS, 30, 0.05, "the honest blocks")
    return chain


def mature_coin(chain: Chain, height: int) -> tuple[OutPoint, object]:
    """The coinbase output of the block at height, and its coin."""
    index = chain.at_height(height)
    assert index is not None
    block = chain.block(index.hash)
    assert block is not None
    outpoint = OutPoint(block.transactions[0].txid, 0)
    coin = chain.coin(outpoint)
    assert coin is not None
    return outpoint, coin


def payment(chain: Chain, height: int, amount: int, key=MINER):
    """A payment of amount from the coinbase at height, signed by key."""
    return spend([mature_coin(chain, height)], [TxOut(amount, lock_of(MINER))], key, LOCAL)


def invalid_block(chain: Chain, case: str) -> Block:
    """A block on the tip that breaks one rule."""
    tip = chain.tip
    if case == "bad-pow":
        return unsolved(next_block(chain))
    if case == "bad-merkle":
        good = next_block(chain)
        header = good.header
        return mine(
            header.previous, good.transactions, header.time, header.bits, merkle_root=bytes(32)
        )
    if case == "bad-txns-inputs-missingorspent":  # one coin spent twice in the block
        return next_block(chain, [payment(chain, 1, 10 * COIN), payment(chain, 1, 20 * COIN)])
    if case == "bad-txns-overspend":
        return next_block(chain, [payment(chain, 2, 51 * COIN)])
    if case == "bad-signature":
        return next_block(chain, [payment(chain, 3, 10 * COIN, key=private_key(5))])
    if case == "bad-cb-amount":
        return next_block(chain, amount=LOCAL.subsidy(tip.height + 1) + 1)
    if case == "immature-coinbase":
        return next_block(chain, [payment(chain, tip.height, 10 * COIN)])
    if case == "time-too-new":
        # Two days ahead: no honest clock is that far off (hours ahead is refused unbanned).
        return next_block(chain, time=int(time.time()) + 2 * 24 * 60 * 60)
    if case == "time-too-old":
        return next_block(chain, time=chain.median_time_past(tip))
    if case == "bad-diffbits":
        return next_block(chain, bits=0x1F0FFFFF)  # harder than the chain's: still wrong
    raise AssertionError(case)


CASES = [
    "bad-pow",
    "bad-merkle",
    "bad-txns-inputs-missingorspent",
    "bad-txns-overspend",
    "bad-signature",
    "bad-cb-amount",
    "immature-coinbase",
    "time-too-new",
    "time-too-old",
    "bad-diffbits",
]


@pytest.mark.parametrize("case", CASES)
def test_an_invalid_block_is_refused_and_its_sender_banned(node, mirror, case):
    tip = node.tip()
    peer = RawPeer(node)
    peer.send(BlockMessage(invalid_block(mirror, case)))
    assert peer.closed_by_node()
    bans = {ban["address"]: ban["reason"] for ban in node.rpc("banned")}
    assert case in bans[f"127.0.0.1:{peer.listen_port}"]
    assert node.tip() == tip
    # Banned: the same peer (its IP and listening port, on loopback) is refused at once.
    with pytest.raises(AssertionError, match="closed"):
        _reconnect(node, peer.listen_port)


def _reconnect(node: LedgerProcess, listen_port: int) -> None:
    """Connect again as the banned peer; the node closes the link before any verack."""
    again = RawPeer.__new__(RawPeer)
    again.sock = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    again.framer = Framer(LOCAL.magic)
    again.listen_port = listen_port
    again.send(Version(PROTOCOL_VERSION, 1, int(time.time()), 8, listen_port, 0, "/raw/"))
    again.read_until(lambda message: isinstance(message, Verack))
