"""The ledger's peer-to-peer core, several wired together in memory (a tiny hub carries each
Send to the other end's receive, and each Dial to the node listening there), or one fed by
hand by a stranger: headers-first sync from two peers at once, inv relay, bans for invalid
data, caps on addresses, outbound groups, links to ourselves, stalls and pacing."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable

import pytest
from ledger_blocks import coinbase, lock_of, mine, next_block, private_key, spend, unsolved

from shoal.addresses import Address
from shoal.ledger import core as core_module
from shoal.ledger import headers as headers_module
from shoal.ledger import messages as lm
from shoal.ledger import relay, sync
from shoal.ledger.addrman import network_group
from shoal.ledger.blockindex import BlockIndex
from shoal.ledger.chain import Chain
from shoal.ledger.core import ChainChanged, Close, Dial, LedgerNode, Send, TransactionAccepted
from shoal.ledger.mempool import Mempool
from shoal.ledger.messages import (
    Addr,
    BlockMessage,
    Framer,
    GetData,
    GetHeaders,
    Headers,
    InvItem,
    InvType,
    NetAddress,
    Verack,
    Version,
    encode,
)
from shoal.ledger.mining import block_template, solve
from shoal.ledger.params import LOCAL
from shoal.ledger.primitives import Block, BlockHeader, OutPoint, TxOut
from shoal.ledger.store import MemoryStore

MAGIC = LOCAL.magic
NOW = float(LOCAL.genesis_time + 100_000)
KEY = private_key(7)


@dataclasses.dataclass(eq=False)
class Node:
    """One core with its chain and mempool, and what it put out."""

    address: Address
    core: LedgerNode
    chain: Chain
    mempool: Mempool
    events: list[object] = dataclasses.field(default_factory=list)
    sent: Counter[bytes] = dataclasses.field(default_factory=Counter)
    getdata_sizes: list[int] = dataclasses.field(default_factory=list)


def new_node(address: Address, seed: int, chain: Chain | None = None, **options: int) -> Node:
    chain = Chain(LOCAL, MemoryStore()) if chain is None else chain
    mempool = Mempool(LOCAL)
    core = LedgerNode(
        LOCAL, chain, mempool, random.Random(seed), listen_port=address[1], now=NOW, **options
    )
    return Node(address, core, chain, mempool)


class Net:
    """Cores linked in memory, on one simulated clock."""

    def __init__(self) -> None:
        self.now = NOW
        self.nodes: dict[Address, Node] = {}
        self.links: dict[tuple[Node, int], tuple[Node, int]] = {}
        self._numbers = 0
        self._ports = 40000

    def add(
        self, host: str = "127.0.0.1", port: int = 0, chain: Chain | None = None, **options: int
    ) -> Node:
        address = (host, port or 9000 + len(self.nodes))
        node = self.nodes[address] = new_node(address, len(self.nodes), chain, **options)
        return node

    def pump(self) -> None:
        """Carry out every output until none is left."""
        busy = True
        while busy:
            busy = False
            for node in list(self.nodes.values()):
                for output in node.core.take_outputs():
                    busy = True
                    self._carry(node, output)

    def _carry(self, node: Node, output: object) -> None:
        if isinstance(output, Send):
            command = output.data[4:16].rstrip(b"\x00")
            node.sent[command] += 1
            if command == b"getdata":
                message = lm.decode(command, output.data[lm.HEADER.size :])
                assert isinstance(message, GetData)
                node.getdata_sizes.append(len(message.items))
            other = self.links.get((node, output.link))
            if other is not None:
                other[0].core.receive(other[1], output.data, self.now)
            return
        node.events.append(output)
        if isinstance(output, Dial):
            target = self.nodes.get(output.address)
            if target is None:
                node.core.dial_failed(output.address, self.now)
                return
            self._numbers += 2
            self._ports += 1
            ours, theirs = self._numbers, self._numbers + 1
            self.links[(node, ours)] = (target, theirs)
            self.links[(target, theirs)] = (node, ours)
            target.core.accept(theirs, (node.address[0], self._ports), self.now)
            node.core.connected(ours, output.address, self.now)
        elif isinstance(output, Close):
            other = self.links.pop((node, output.link), None)
            if other is not None:
                del self.links[other]
                other[0].core.closed(other[1], self.now)

    def run(self, until: Callable[[], bool], seconds: float = 120.0) -> None:
        """Pump and advance the clock to the next timer until `until` holds."""
        end = self.now + seconds
        for _ in range(100_000):
            self.pump()
            if until():
                return
            timers = [t for n in self.nodes.values() if (t := n.core.get_timer()) is not None]
            self.now = max(self.now, min(timers))
            assert self.now <= end, "the condition did not come in time"
            for node in self.nodes.values():
                timer = node.core.get_timer()
                if timer is not None and timer <= self.now:
                    node.core.handle_timer(self.now)
        raise AssertionError("too many steps")


def mine_on(node: Node, count: int, now: float, lock: bytes = lock_of(KEY)) -> list[Block]:
    """count blocks mined on node's tip and submitted to its core."""
    blocks = []
    for _ in range(count):
        template = block_template(node.chain, node.mempool, lock, now)
        nonce = solve(template.header, 0, 1 << 32)
        assert nonce is not None
        block = Block(dataclasses.replace(template.header, nonce=nonce), template.transactions)
        node.core.submit_block(block, now)
        blocks.append(block)
    return blocks


@pytest.mark.parametrize("batch", [lm.MAX_HEADERS, 64])
def test_a_new_node_syncs_300_blocks_headers_first_from_two_peers_at_once(batch, monkeypatch):
    monkeypatch.setattr(headers_module, "MAX_HEADERS", batch)  # 64: five batches of headers
    net = Net()
    first, second = net.add(max_outbound=0), net.add(max_outbound=0)
    blocks = mine_on(first, 300, net.now)
    for block in blocks:
        second.chain.accept_block(block, net.now)
    newcomer = net.add(max_outbound=0)
    newcomer.core.add_peers([first.address, second.address], net.now)
    net.run(lambda: newcomer.chain.tip.hash == blocks[-1].hash)
    # Headers first, as many batches as it takes (from each peer, as both are ahead).
    assert newcomer.sent[b"getheaders"] >= 2 * (300 // batch + 1)
    assert first.sent[b"block"] > 0 and second.sent[b"block"] > 0
    assert first.sent[b"block"] + second.sent[b"block"] == 300
    assert max(newcomer.getdata_sizes) <= sync.BLOCKS_PER_PEER
    changed = [e for e in newcomer.events if isinstance(e, ChainChanged)]
    assert sum(len(e.update.connected) for e in changed) == 300
    assert {peer.height for peer in newcomer.core.peers()} == {300}


def test_a_transaction_and_a_block_are_relayed_by_inv_along_a_line():
    net = Net()
    a, b, c = (net.add(max_outbound=0) for _ in range(3))
    b.core.add_peers([a.address], net.now)
    c.core.add_peers([b.address], net.now)
    blocks = mine_on(a, LOCAL.coinbase_maturity + 1, net.now)
    net.run(lambda: c.chain.tip.hash == blocks[-1].hash)
    assert not any(peer.address == a.address for peer in c.core.peers())

    outpoint = OutPoint(blocks[0].transactions[0].txid, 0)
    coin = a.chain.coin(outpoint)
    assert coin is not None
    tx = spend([(outpoint, coin)], [TxOut(coin.output.amount - 10_000, lock_of(KEY))], KEY, LOCAL)
    a.core.submit_transaction(tx, net.now)
    net.run(lambda: tx.txid in c.mempool)
    assert any(isinstance(e, TransactionAccepted) and e.tx == tx for e in c.events)
    assert b.sent[b"tx"] == 1  # b asked a for it once, and c asked b

    [block] = mine_on(a, 1, net.now)
    assert tx in block.transactions
    net.run(lambda: c.chain.tip.hash == block.hash)
    assert tx.txid not in c.mempool and tx.txid not in b.mempool


def test_a_new_block_is_announced_by_its_header_and_fetched_at_once():
    net = Net()
    a, b = net.add(max_outbound=0), net.add(max_outbound=0)
    b.core.add_peers([a.address], net.now)
    mine_on(a, 3, net.now)
    net.run(lambda: b.chain.tip.hash == a.chain.tip.hash)
    before_a, before_b = dict(a.sent), dict(b.sent)
    [block] = mine_on(a, 1, net.now)
    net.run(lambda: b.chain.tip.hash == block.hash)
    assert a.sent[b"headers"] == before_a.get(b"headers", 0) + 1  # BIP 130's way
    assert a.sent.get(b"inv", 0) == before_a.get(b"inv", 0)
    assert b.sent.get(b"getheaders", 0) == before_b.get(b"getheaders", 0)  # no round trip
    assert b.sent[b"getdata"] == before_b[b"getdata"] + 1


def test_a_peer_that_joins_later_hears_of_what_waits_in_the_mempool():
    net = Net()
    a, b = net.add(max_outbound=0), net.add(max_outbound=0)
    blocks = mine_on(a, LOCAL.coinbase_maturity + 1, net.now)
    outpoint = OutPoint(blocks[0].transactions[0].txid, 0)
    coin = a.chain.coin(outpoint)
    assert coin is not None
    tx = spend([(outpoint, coin)], [TxOut(coin.output.amount - 10_000, lock_of(KEY))], KEY, LOCAL)
    a.core.submit_transaction(tx, net.now)  # no peer yet: announced to nobody
    b.core.add_peers([a.address], net.now)
    net.run(lambda: tx.txid in b.mempool)


class Stranger:
    """A peer driven by hand: bytes to one core, its answers read back."""

    def __init__(self, node: Node, link: int, *, port: int = 50000, listen_port: int = 7000):
        self.node = node
        self.link = link
        self.framer = Framer(MAGIC)
        self.closed: str | None = None
        node.core.accept(link, ("127.0.0.1", port), NOW)
        self.listen_port = listen_port

    def handshake(self, height: int = 0, now: float = NOW) -> None:
        version = Version(1, 1, int(now), 99, self.listen_port, height, "/stranger/")
        self.send(version, Verack(), now=now)

    def send(self, *messages: lm.Message, now: float = NOW) -> None:
        data = b"".join(encode(message, MAGIC) for message in messages)
        self.node.core.receive(self.link, data, now)

    def read(self) -> list[lm.Message]:
        """What the core sent this stranger since the last read."""
        got: list[lm.Message] = []
        for output in self.node.core.take_outputs():
            if isinstance(output, Send) and output.link == self.link:
                got += self.framer.feed(output.data)
            elif isinstance(output, Close) and output.link == self.link:
                self.closed = output.reason
        return got


def test_a_transaction_never_announced_to_a_peer_is_not_served_to_it():
    node = new_node(("127.0.0.1", 9000), 1)
    blocks = mine_on(node, LOCAL.coinbase_maturity + 1, NOW)
    outpoint = OutPoint(blocks[0].transactions[0].txid, 0)
    coin = node.chain.coin(outpoint)
    assert coin is not None
    tx = spend([(outpoint, coin)], [TxOut(coin.output.amount - 10_000, lock_of(KEY))], KEY, LOCAL)
    node.core.submit_transaction(tx, NOW)
    prober = Stranger(node, 1)
    prober.handshake()  # a peer without our tip: not told of our mempool yet
    prober.read()
    prober.send(GetData((InvItem(InvType.TX, tx.txid),)))
    answers = prober.read()
    assert not any(isinstance(message, lm.TxMessage) for message in answers)
    assert any(isinstance(message, lm.NotFound) for message in answers)


def fork_headers(parent: BlockIndex, count: int) -> list[BlockHeader]:
    """count headers of a new branch on parent (proof of work met, coinbases to KEY)."""
    headers = []
    previous, time = parent.hash, parent.header.time
    for height in range(parent.height + 1, parent.height + 1 + count):
        time += 1
        block = mine(
            previous,
            [coinbase(height, [TxOut(1, lock_of(KEY))], b"fork")],
            time,
            LOCAL.pow_limit_bits,
        )
        headers.append(block.header)
        previous = block.hash
    return headers


def test_headers_of_a_branch_far_behind_ours_are_not_kept_and_their_sender_not_banned():
    node = new_node(("127.0.0.1", 9000), 1)
    mine_on(node, headers_module.LOW_WORK_MARGIN + 20, NOW)
    genesis = node.chain.at_height(0)
    assert genesis is not None
    spammer = Stranger(node, 1)
    spammer.handshake()
    spammer.read()
    cheap = fork_headers(genesis, 10)  # 16 hashes each on this chain: spam costs nothing
    spammer.send(Headers(tuple(cheap)))
    spammer.read()
    assert all(node.chain.get(header.hash) is None for header in cheap)
    assert spammer.closed is None and not node.core.banned()
    # A branch close behind our tip is kept: it may yet overtake ours.
    near = node.chain.at_height(node.chain.tip.height - 5)
    assert near is not None
    rival = fork_headers(near, 3)
    spammer.send(Headers(tuple(rival)))
    spammer.read()
    assert all(node.chain.get(header.hash) is not None for header in rival)


def test_a_peer_sending_an_invalid_block_is_dropped_and_banned_with_the_reason():
    node = new_node(("127.0.0.1", 9000), 1)
    stranger = Stranger(node, 1)
    stranger.handshake()
    stranger.read()
    bad = unsolved(block_template(node.chain, node.mempool, lock_of(KEY), NOW))
    stranger.send(BlockMessage(bad))
    stranger.read()
    assert stranger.closed is not None and "bad-pow" in stranger.closed
    [ban] = node.core.banned()
    assert ban.address == ("127.0.0.1", 7000) and "bad-pow" in ban.reason
    # Back from another port but listening on the same one: refused at its version.
    again = Stranger(node, 2, port=50001)
    again.handshake()
    again.read()
    assert again.closed == "banned"
    # Another node on the same loopback IP is someone else.
    other = Stranger(node, 3, port=50002, listen_port=7001)
    other.handshake()
    assert other.read() and other.closed is None


def test_a_block_found_invalid_on_connecting_gets_its_sender_banned():
    node = new_node(("127.0.0.1", 9000), 1)
    stranger = Stranger(node, 1)
    stranger.handshake()
    stranger.read()
    template = block_template(node.chain, node.mempool, lock_of(KEY), NOW)
    [coinbase] = template.transactions
    greedy = dataclasses.replace(
        coinbase, outputs=(TxOut(coinbase.outputs[0].amount + 1, lock_of(KEY)),)
    )
    tip = node.chain.tip
    block = mine(tip.hash, [greedy], template.header.time, template.header.bits)
    stranger.send(BlockMessage(block))
    stranger.read()
    assert stranger.closed is not None and "bad-cb-amount" in stranger.closed
    assert node.chain.tip is tip
    assert [ban.address for ban in node.core.banned()] == [("127.0.0.1", 7000)]


def test_headers_that_break_the_rules_get_their_sender_banned():
    node = new_node(("10.0.0.9", 9000), 1)
    stranger = Stranger(node, 1)
    stranger.handshake(height=5)
    assert any(isinstance(m, GetHeaders) for m in stranger.read())
    bad = unsolved(block_template(node.chain, node.mempool, lock_of(KEY), NOW))
    stranger.send(Headers((bad.header,)))
    stranger.read()
    assert stranger.closed is not None and "bad-pow" in stranger.closed


def test_a_peer_flooding_addresses_gets_few_in():
    node = new_node(("127.0.0.1", 9000), 1)
    stranger = Stranger(node, 1)
    stranger.handshake()
    for round_ in range(5):
        entries = tuple(
            NetAddress.of((f"10.{round_}.{n // 250}.{n % 250 + 1}", 8333), int(NOW))
            for n in range(1000)
        )
        stranger.send(Addr(entries), now=NOW + round_)
    # One token to start with; none more within 4 seconds (one a ten seconds).
    assert len(node.core.addresses) <= 2  # the stranger's own listen address, and one
    assert node.core.addr_dropped >= 4998
    assert stranger.closed is None


def test_outbound_dials_go_each_to_a_group_of_its_own():
    node = new_node(("127.0.0.1", 9000), 1)
    heard = [(f"127.{g}.0.{h + 1}", 8333) for g in range(1, 21) for h in range(5)]
    node.core.addresses.heard(heard, ("10.0.0.1", 1), NOW)
    node.core.add_peers([("127.0.0.1", 9100)], NOW)
    node.core.handle_timer(NOW)
    dials = [o.address for o in node.core.take_outputs() if isinstance(o, Dial)]
    assert ("127.0.0.1", 9100) in dials  # the given peer, whatever its group
    automatic = [a for a in dials if a != ("127.0.0.1", 9100)]
    assert len(automatic) == 8
    assert len({network_group(address) for address in automatic}) == 8


def test_a_node_that_dials_itself_drops_the_link():
    net = Net()
    node = net.add()
    node.core.add_peers([node.address], net.now)
    net.run(lambda: any(isinstance(e, Close) for e in node.events))
    reasons = {e.reason for e in node.events if isinstance(e, Close)}
    assert "a link to ourselves" in reasons
    assert node.core.peers() == []


def test_a_peer_that_stalls_the_download_is_dropped_and_another_takes_over():
    source = new_node(("127.0.0.1", 9001), 2)
    blocks = mine_on(source, 20, NOW)
    headers = Headers(tuple(block.header for block in blocks))
    node = new_node(("127.0.0.1", 9000), 1)
    staller = Stranger(node, 1)
    staller.handshake(height=20)
    staller.read()
    staller.send(headers)
    asked = [item.hash for m in staller.read() if isinstance(m, GetData) for item in m.items]
    assert asked == [block.hash for block in blocks[: sync.BLOCKS_PER_PEER]]
    helper = Stranger(node, 2, port=50001, listen_port=7001)
    helper.handshake(height=20)
    helper.read()
    helper.send(headers)
    rest = [item.hash for m in helper.read() if isinstance(m, GetData) for item in m.items]
    assert rest == [block.hash for block in blocks[sync.BLOCKS_PER_PEER :]]
    helper.send(*(BlockMessage(block) for block in blocks[sync.BLOCKS_PER_PEER :]))
    node.core.handle_timer(NOW + sync.STALL_TIMEOUT / 2)
    staller.read()
    assert staller.closed is None
    node.core.handle_timer(NOW + sync.STALL_TIMEOUT + 1)
    outputs = node.core.take_outputs()
    closes = [o.reason for o in outputs if isinstance(o, Close) and o.link == 1]
    assert closes == ["stalling the block download"]
    framer = Framer(MAGIC)
    taken = [
        item.hash
        for o in outputs
        if isinstance(o, Send) and o.link == 2
        for m in framer.feed(o.data)
        if isinstance(m, GetData)
        for item in m.items
    ]
    assert taken == asked
    assert not node.core.banned()  # slow is not malicious


def test_a_lone_slow_peer_is_dropped_only_after_the_block_timeout():
    source = new_node(("127.0.0.1", 9001), 2)
    blocks = mine_on(source, 3, NOW)
    node = new_node(("127.0.0.1", 9000), 1)
    stranger = Stranger(node, 1)
    stranger.handshake(height=3)
    stranger.read()
    stranger.send(Headers(tuple(block.header for block in blocks)))
    stranger.read()
    node.core.handle_timer(NOW + sync.STALL_TIMEOUT + 1)
    stranger.read()
    assert stranger.closed is None  # no one else could send the blocks
    node.core.handle_timer(NOW + sync.BLOCK_TIMEOUT + 1)
    stranger.read()
    assert stranger.closed == "stalling the block download"


def test_a_silent_connection_is_dropped_after_the_handshake_timeout():
    node = new_node(("127.0.0.1", 9000), 1)
    stranger = Stranger(node, 1)
    node.core.handle_timer(NOW + 5)
    stranger.read()
    assert stranger.closed is None
    node.core.handle_timer(NOW + 60)
    stranger.read()
    assert stranger.closed == "no handshake"


def test_blocks_asked_for_go_out_as_the_peer_reads():
    node = new_node(("127.0.0.1", 9000), 1)
    blocks = mine_on(node, 30, NOW)
    stranger = Stranger(node, 1)
    stranger.handshake()
    stranger.read()
    node.core.set_paused(1, True, NOW)
    stranger.send(GetData(tuple(InvItem(InvType.BLOCK, block.hash) for block in blocks)))
    assert stranger.read() == []  # paused: nothing written
    node.core.set_paused(1, False, NOW)
    got = [m for m in stranger.read() if isinstance(m, BlockMessage)]
    while node.core.get_timer() == NOW and len(got) < 30:
        node.core.handle_timer(NOW)
        got += [m for m in stranger.read() if isinstance(m, BlockMessage)]
    assert [m.block.hash for m in got] == [block.hash for block in blocks]


def test_a_block_on_an_unknown_parent_waits_for_its_headers():
    source = new_node(("127.0.0.1", 9001), 2)
    blocks = mine_on(source, 3, NOW)
    node = new_node(("127.0.0.1", 9000), 1)
    stranger = Stranger(node, 1)
    stranger.handshake()
    stranger.read()
    stranger.send(BlockMessage(blocks[2]))  # its parent unknown
    assert any(isinstance(m, GetHeaders) for m in stranger.read())
    assert stranger.closed is None and node.chain.tip.height == 0
    stranger.send(Headers(tuple(block.header for block in blocks)))
    asked = [m for m in stranger.read() if isinstance(m, GetData)]
    # Only the two it lacks are asked for; the kept one is not fetched again.
    assert [item.hash for m in asked for item in m.items] == [blocks[0].hash, blocks[1].hash]
    stranger.send(BlockMessage(blocks[0]), BlockMessage(blocks[1]))
    assert node.chain.tip.hash == blocks[2].hash


def test_a_partitioned_node_reorganises_to_the_longer_chain_when_it_joins_again():
    net = Net()
    a, b = net.add(max_outbound=0), net.add(max_outbound=0)
    b.core.add_peers([a.address], net.now)
    common = mine_on(a, LOCAL.coinbase_maturity + 1, net.now)
    net.run(lambda: b.chain.tip.hash == common[-1].hash)
    b.core.set_network_active(False, net.now)
    net.run(lambda: not a.core.peers() and not b.core.peers())
    # The minority (b) pays from a coin of the common history and mines it on its fork.
    outpoint = OutPoint(common[0].transactions[0].txid, 0)
    coin = b.chain.coin(outpoint)
    assert coin is not None
    payment = spend(
        [(outpoint, coin)], [TxOut(coin.output.amount - 10_000, lock_of(KEY))], KEY, LOCAL
    )
    b.core.submit_transaction(payment, net.now)
    shorter = mine_on(b, 2, net.now, lock=lock_of(private_key(8)))
    assert payment in shorter[0].transactions
    longer = mine_on(a, 3, net.now)
    net.run(lambda: net.now > NOW + 30)
    assert not b.core.peers()  # off: it dialled no one, took no one
    assert b.chain.tip.hash == shorter[-1].hash
    b.core.set_network_active(True, net.now)
    net.run(lambda: b.chain.tip.hash == longer[-1].hash)
    [reorg] = [e.update for e in b.events if isinstance(e, ChainChanged) and e.update.disconnected]
    assert [blk.hash for blk in reorg.disconnected] == [blk.hash for blk in reversed(shorter)]
    assert [blk.hash for blk in reorg.connected] == [blk.hash for blk in longer]
    assert a.chain.tip.hash == longer[-1].hash
    # The losing branch's payment is back in b's mempool, and relayed to a, which never had it.
    net.run(lambda: payment.txid in a.mempool)
    assert payment.txid in b.mempool
    [info] = b.core.peers()
    assert info.as_json()["address"] == "127.0.0.1:9000" and info.as_json()["given"] is True


def test_a_peer_announcing_junk_holds_up_only_its_own_requests():
    node = new_node(("127.0.0.1", 9000), 1)
    junk = [bytes([n % 256, n // 256]) * 16 for n in range(1000)]
    spammer = Stranger(node, 1)
    spammer.handshake()
    spammer.read()
    spammer.send(lm.Inv(tuple(InvItem(InvType.TX, txid) for txid in junk)))
    asked = [item.hash for m in spammer.read() if isinstance(m, GetData) for item in m.items]
    assert asked == junk[: relay.TXS_PER_PEER]
    honest = Stranger(node, 2, port=50001, listen_port=7001)
    honest.handshake()
    honest.read()
    fresh = bytes(range(32))
    honest.send(lm.Inv((InvItem(InvType.TX, junk[0]), InvItem(InvType.TX, fresh))))
    asked = [item.hash for m in honest.read() if isinstance(m, GetData) for item in m.items]
    assert asked == [fresh]  # junk[0] is in flight from the spammer
    node.core.closed(1, NOW)
    honest.send(lm.Inv((InvItem(InvType.TX, junk[0]),)))
    asked = [item.hash for m in honest.read() if isinstance(m, GetData) for item in m.items]
    assert asked == [junk[0]]


def test_a_block_resent_unasked_drops_its_sender_and_one_of_a_lesser_chain_is_not_kept():
    node = new_node(("127.0.0.1", 9000), 1)
    blocks = mine_on(node, 3, NOW)
    stranger = Stranger(node, 1)
    stranger.handshake()
    stranger.read()
    # A branch off the genesis, with less work than our tip: ignored, its sender kept.
    stale = next_block(node.chain, parent=node.chain.get(LOCAL.genesis.hash), extra=b"stale")
    stranger.send(BlockMessage(stale))
    stranger.read()
    assert node.chain.get(stale.hash) is None and stranger.closed is None
    # A block we hold, sent again unasked (junk a peer could resend forever): the link goes.
    stranger.send(BlockMessage(blocks[1]))
    stranger.read()
    assert stranger.closed == "a block we have, sent unasked"
    assert node.core.banned() == []  # wasteful, not invalid


def test_a_block_asked_of_a_peer_is_taken_from_it_even_if_another_sent_it_first():
    source = new_node(("127.0.0.1", 9001), 2)
    [block] = mine_on(source, 1, NOW)
    node = new_node(("127.0.0.1", 9000), 1)
    asked = Stranger(node, 1)
    asked.handshake(height=1)
    asked.read()
    asked.send(Headers((block.header,)))
    assert any(isinstance(m, GetData) for m in asked.read())
    eager = Stranger(node, 2, port=50001, listen_port=7001)
    eager.handshake(height=1)
    eager.send(BlockMessage(block))  # unasked, but on more work than our tip: taken
    eager.read()
    assert node.chain.tip.hash == block.hash and eager.closed is None
    asked.send(BlockMessage(block))
    asked.read()
    assert asked.closed is None


def test_a_block_message_over_the_chains_block_size_is_refused_from_its_header():
    node = new_node(("127.0.0.1", 9000), 1)
    stranger = Stranger(node, 1)
    stranger.handshake()
    stranger.read()
    length = LOCAL.max_block_size + lm.BLOCK_SLACK + 1
    node.core.receive(1, lm.HEADER.pack(MAGIC, b"block", length, bytes(4)), NOW)
    stranger.read()
    assert stranger.closed is not None and stranger.closed.startswith("malformed")
    assert [ban.address for ban in node.core.banned()] == [("127.0.0.1", 7000)]


def test_an_orphan_block_without_its_proof_of_work_is_not_kept_and_its_sender_banned():
    source = new_node(("127.0.0.1", 9001), 2)
    blocks = mine_on(source, 2, NOW)
    node = new_node(("127.0.0.1", 9000), 1)
    stranger = Stranger(node, 1)
    stranger.handshake()
    stranger.read()
    stranger.send(BlockMessage(unsolved(blocks[1])))  # its parent unknown here
    stranger.read()
    assert stranger.closed is not None and "bad-pow" in stranger.closed
    assert [ban.address for ban in node.core.banned()] == [("127.0.0.1", 7000)]


def test_a_long_move_of_the_chain_goes_a_step_per_timer(monkeypatch):
    monkeypatch.setattr(core_module, "ACTIVATE_STEP", 4)
    source = new_node(("127.0.0.1", 9001), 2)
    blocks = mine_on(source, 10, NOW)
    node = new_node(("127.0.0.1", 9000), 1)
    stranger = Stranger(node, 1)
    stranger.handshake(height=10)
    stranger.read()
    stranger.send(Headers(tuple(block.header for block in blocks)))
    stranger.read()
    # The first block last: its coming makes all ten connectable at once.
    stranger.send(*(BlockMessage(block) for block in [*blocks[1:], blocks[0]]))
    heights = [node.chain.tip.height]
    while node.core.get_timer() == NOW:
        node.core.handle_timer(NOW)
        heights.append(node.chain.tip.height)
    assert heights == [4, 8, 10]
    assert not node.chain.activation_pending and node.core.get_timer() > NOW
    changed = [o.update for o in node.core.take_outputs() if isinstance(o, ChainChanged)]
    assert [[block.hash for block in update.connected] for update in changed] == [
        [block.hash for block in blocks[start : start + 4]] for start in (0, 4, 8)
    ]


def block_rounds(node: Node, link: int) -> list[list[int]]:
    """The sizes of the block messages the core writes to link, round by round (the one
    of the input that asked, then one per timer while answers wait)."""
    rounds = []
    while True:
        outputs = node.core.take_outputs()
        rounds.append(
            [
                len(o.data)
                for o in outputs
                if isinstance(o, Send) and o.link == link and o.data[4:16].rstrip(b"\0") == b"block"
            ]
        )
        if node.core.get_timer() != NOW:
            return rounds
        node.core.handle_timer(NOW)


@pytest.mark.parametrize("blocks_a_round", [1, 3])
def test_a_round_of_answers_stops_before_a_message_would_cross_send_round(
    blocks_a_round, monkeypatch
):
    node = new_node(("127.0.0.1", 9000), 1)
    blocks = mine_on(node, 10, NOW)
    size = len(encode(BlockMessage(blocks[-1]), MAGIC))
    # 1: a round smaller than a block still sends one.
    monkeypatch.setattr(core_module, "SEND_ROUND", blocks_a_round * size + size // 2 - size)
    # Blocks are served as stored, never decoded and encoded again.
    monkeypatch.setattr(node.chain, "block", lambda _: pytest.fail("a block decoded to serve"))
    stranger = Stranger(node, 1)
    stranger.handshake()
    stranger.read()
    items = tuple(InvItem(InvType.BLOCK, block.hash) for block in blocks)
    stranger.send(GetData(items), GetData(items[:5]))  # asked twice in one read: answered once
    rounds = block_rounds(node, 1)
    assert sum(len(sizes) for sizes in rounds) == len(blocks)
    assert all(len(sizes) <= blocks_a_round for sizes in rounds)
    assert all(len(sizes) == 1 or sum(sizes) <= core_module.SEND_ROUND for sizes in rounds)
    # Items asked again while queued (the link paused) are queued once.
    node.core.set_paused(1, True, NOW)
    stranger.send(GetData(items[:2]))
    stranger.send(GetData(items[:2]), GetData(items[:1]))
    node.core.set_paused(1, False, NOW)
    got = [m for m in stranger.read() if isinstance(m, BlockMessage)]
    while node.core.get_timer() == NOW:
        node.core.handle_timer(NOW)
        got += [m for m in stranger.read() if isinstance(m, BlockMessage)]
    assert [m.block.hash for m in got] == [blocks[0].hash, blocks[1].hash]


def test_payments_of_the_branch_a_kill_cut_off_return_to_the_mempool_and_reach_peers():
    store = MemoryStore()
    chain = Chain(LOCAL, store)
    common = mine_chain(chain, LOCAL.coinbase_maturity + 1)
    outpoint = OutPoint(common[0].transactions[0].txid, 0)
    coin = chain.coin(outpoint)
    assert coin is not None
    payment = spend(
        [(outpoint, coin)], [TxOut(coin.output.amount - 10_000, lock_of(KEY))], KEY, LOCAL
    )
    losing = next_block(chain, [payment])
    chain.accept_block(losing, NOW)
    fork = chain.get(common[-1].hash)
    assert fork is not None
    first = next_block(chain, parent=fork, extra=b"winning")
    chain.accept_block(first, NOW)
    parent = chain.get(first.hash)
    assert parent is not None
    second = next_block(chain, parent=parent)
    chain.accept_block(second, NOW, max_connects=1)
    assert chain.activation_pending  # killed here: the losing block is off, one block on
    reopened = Chain(LOCAL, store)
    assert reopened.resumed.disconnected == [losing]
    net = Net()
    node = net.add(chain=reopened, max_outbound=0)
    assert payment.txid in node.mempool
    peer = net.add(max_outbound=0)
    peer.core.add_peers([node.address], net.now)
    net.run(lambda: payment.txid in peer.mempool)
    assert peer.chain.tip.hash == second.hash


def mine_chain(chain: Chain, count: int) -> list[Block]:
    """count blocks paying KEY, mined on chain's tip and connected."""
    blocks = []
    for _ in range(count):
        block = next_block(chain, lock=lock_of(KEY))
        assert chain.accept_block(block, NOW).connected == [block]
        blocks.append(block)
    return blocks


def test_getheaders_are_answered_in_rounds_and_a_peer_piling_them_up_is_dropped(monkeypatch):
    monkeypatch.setattr(core_module, "SEND_ROUND", 1)  # one answer a round
    node = new_node(("127.0.0.1", 9000), 1)
    blocks = mine_on(node, 10, NOW)
    stranger = Stranger(node, 1)
    stranger.handshake()
    stranger.read()
    genesis = (LOCAL.genesis.hash,)
    asked = [GetHeaders(genesis, block.hash) for block in blocks[:5]]
    stranger.send(*asked)
    answers = [[m for m in stranger.read() if isinstance(m, Headers)]]
    while node.core.get_timer() == NOW:
        node.core.handle_timer(NOW)
        answers.append([m for m in stranger.read() if isinstance(m, Headers)])
    assert [len(got) for got in answers] == [1] * 5
    assert [got[0].headers[-1].hash for got in answers] == [block.hash for block in blocks[:5]]
    # Many in one read (each asking for every header we have): the link goes, unanswered.
    stranger.send(
        *[GetHeaders(genesis, bytes([n]) * 32) for n in range(core_module.HEADERS_WANTED + 1)]
    )
    assert not any(isinstance(m, Headers) for m in stranger.read())
    assert stranger.closed == "too many getheaders unanswered" and node.core.banned() == []
