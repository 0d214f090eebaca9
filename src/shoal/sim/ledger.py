"""Ledger cores wired together in memory on a virtual clock: how often blocks go stale.

Each simulated node is a real `LedgerNode` with its own `Chain` (in a `MemoryStore`) and
`Mempool`. A `Dial` reaches the node at that address one link latency later (its `accept`
decides), and the dialler hears `connected` a latency after that; bytes written to a link
arrive in order a latency later (after the bytes before them left at the link's bandwidth, if
one is set); a closed link's other end hears so a latency later.

Mining is a Poisson process: the whole network finds a block every `block_time` seconds on
average, the finder drawn in proportion to its hash share. The finder builds its block on its
own tip with the miner's template and submits it to its core, which announces it; blocks found
while an earlier one is still on its way build on the older tip and race it. The chain's own
proof of work (LOCAL's, sixteen hashes) is solved for real but sets no pace.

The cores' clock is Unix time (block times are checked against it), so the virtual clock
starts at START.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..addresses import Address
from ..ledger.chain import Chain, ChainUpdate
from ..ledger.core import ChainChanged, Close, Dial, LedgerNode, Send
from ..ledger.mempool import Mempool
from ..ledger.messages import BlockMessage
from ..ledger.mining import NONCES, block_template, solve
from ..ledger.params import LOCAL, ChainParams
from ..ledger.primitives import Block, key_lock
from ..ledger.store import MemoryStore
from .kernel import EventQueue, Link

START = float(LOCAL.genesis_time + 1000)
PORT = 8333
LATENCY = 0.1  # one-way, seconds
JITTER = 0.5  # each link's latency is drawn from LATENCY * (1 ± JITTER)
OUTBOUND = 4  # peers each node dials (given peers), so about twice as many links a node
WARM_UP = 10.0  # seconds for the links to open before the first block is found
SETTLE = 120.0  # seconds after the last block for every node to reach one tip
MAX_TIE_BREAKS = 20  # blocks mined after the last one when the network ends split in a tie
MAX_NODES = 10_000
MAX_TICK = 30.0  # a core's upkeep must run well within its 60 s ping and 180 s idle limit


@dataclass(slots=True, eq=False)
class _Pipe:
    """One direction of a link: where its bytes go, and the link that carries them."""

    far: LedgerHost
    far_link: int
    wire: Link


@dataclass(slots=True, eq=False)
class LedgerHost:
    """A simulated node: its core, chain and mempool, and its links."""

    number: int
    address: Address
    core: LedgerNode
    chain: Chain
    mempool: Mempool
    lock: bytes  # what its blocks pay
    tip: bytes  # as last counted in LedgerNetwork.tips
    pipes: dict[int, _Pipe] = field(default_factory=dict, repr=False)
    next_link: int = 0
    busy_until: float = -math.inf  # when it is done with the blocks it took in
    timer_at: float | None = None
    last_timer: float = -math.inf


@dataclass(slots=True)
class MinedBlock:
    """A block found in the simulation: by whom and when."""

    finder: int
    at: float
    reached: dict[int, float] = field(default_factory=dict)  # node -> when it became active


class LedgerNetwork:
    """Ledger nodes on one virtual clock, mining at a Poisson rate."""

    def __init__(
        self,
        nodes: int,
        *,
        block_time: float,
        seed: int = 0,
        latency: float = LATENCY,
        jitter: float = JITTER,
        bandwidth: float | None = None,
        block_delay: float = 0.0,
        outbound: int = OUTBOUND,
        shares: Sequence[float] | None = None,
        tick: float = 1.0,
        params: ChainParams = LOCAL,
    ) -> None:
        if not 2 <= nodes <= MAX_NODES:
            raise ValueError(f"a ledger network has 2 to {MAX_NODES} nodes, not {nodes}")
        if not 0 < block_time < math.inf:
            raise ValueError(f"the block time must be a positive number, not {block_time}")
        if not 0 <= latency < math.inf or not 0 <= jitter <= 1:
            raise ValueError(f"latency {latency} or jitter {jitter} is out of range")
        if not 1 <= outbound < nodes:
            raise ValueError(f"each node dials 1 to {nodes - 1} others, not {outbound}")
        if shares is not None and (
            len(shares) != nodes or not all(0 <= s < math.inf for s in shares) or not sum(shares)
        ):
            raise ValueError("hash shares must be one finite number per node, 0 or more, not all 0")
        if not 0 <= block_delay < math.inf:
            raise ValueError(f"the block delay must be 0 or more seconds, not {block_delay}")
        if not 0 < tick <= MAX_TICK:
            raise ValueError(f"the timer tick is from 0 to {MAX_TICK} s, not {tick}")
        self.queue = EventQueue(START)
        self.rng = random.Random(seed)
        self.block_time = block_time
        self.latency = latency
        self.jitter = jitter
        self.bandwidth = bandwidth
        self.block_delay = block_delay
        self.tick = tick
        self.params = params
        self.hosts = [self._new_host(number) for number in range(nodes)]
        self._by_address = {host.address: host for host in self.hosts}
        self._cumulative_shares = list(itertools.accumulate(shares or [1.0] * nodes))
        self.mined: dict[bytes, MinedBlock] = {}
        self.reorgs: Counter[int] = Counter()  # depth (blocks disconnected) -> times seen
        self.tips: Counter[bytes] = Counter({params.genesis.hash: nodes})  # tip -> nodes on it
        self.in_flight = 0  # bytes, dials and closes on their way
        self.messages = 0
        self.closes: Counter[str] = Counter()  # links a core closed, by its reason
        self.mining = False
        self._extra_nonce = 0
        for host in self.hosts:
            # outbound others drawn at random: numbers past host's own step over it.
            drawn = self.rng.sample(range(nodes - 1), outbound)
            peers = [self.hosts[n + (n >= host.number)].address for n in drawn]
            host.core.add_peers(peers, self.now)
            self._pump(host)

    @property
    def now(self) -> float:
        return self.queue.now

    def _new_host(self, number: int) -> LedgerHost:
        # Every node an IP, and a /16 network group, of its own.
        address = (f"10.{number >> 8 & 255}.{number & 255}.1", PORT)
        chain = Chain(self.params, MemoryStore())
        mempool = Mempool(self.params)
        core = LedgerNode(
            self.params,
            chain,
            mempool,
            random.Random(self.rng.random()),
            listen_port=PORT,
            max_outbound=0,  # only the given peers: the graph is the simulation's to draw
            max_inbound=MAX_NODES,  # and every dial drawn is taken
        )
        lock = key_lock(self.rng.randbytes(32))
        return LedgerHost(number, address, core, chain, mempool, lock, chain.tip.hash)

    # Running.

    def run(self, until: float, done: Callable[[], bool] = lambda: False) -> None:
        """Run the clock to until (or until done says so)."""
        self.queue.run(until, done)

    def start_mining(self) -> None:
        """Find blocks from now on, one every block_time on average."""
        if not self.mining:
            self.mining = True
            self._schedule_block()

    def stop_mining(self) -> None:
        """Find no more blocks (the one already due is not found either)."""
        self.mining = False

    def agreed(self) -> bool:
        """Whether every node has the same tip."""
        return len(self.tips) == 1

    def tied(self) -> bool:
        """Whether the nodes are split between tips of equal work (only a block breaks it)."""
        works = {host.chain.tip.work for host in self.hosts}
        return len(self.tips) > 1 and len(works) == 1

    def _schedule_block(self) -> None:
        def find() -> None:
            if self.mining:
                self.mine(self._draw_finder())
                self._schedule_block()

        self.queue.at(self.now + self.rng.expovariate(1 / self.block_time), find)

    def _draw_finder(self) -> LedgerHost:
        [host] = self.rng.choices(self.hosts, cum_weights=self._cumulative_shares, k=1)
        return host

    def mine(self, host: LedgerHost) -> Block:
        """host finds a block on its tip now and hands it to its core."""
        self._extra_nonce += 1
        template = block_template(host.chain, host.mempool, host.lock, self.now, self._extra_nonce)
        nonce = solve(template.header, 0, NONCES)
        if nonce is None:
            raise RuntimeError("no nonce meets the chain's target; use an easy chain")
        block = Block(dataclasses.replace(template.header, nonce=nonce), template.transactions)
        self.mined[block.hash] = MinedBlock(host.number, self.now)
        host.core.submit_block(block, self.now)
        self._pump(host)
        return block

    # Carrying outputs out.

    def _pump(self, host: LedgerHost) -> None:
        for output in host.core.take_outputs():
            if isinstance(output, Send):
                self._carry(host, output)
            elif isinstance(output, Dial):
                self._dial(host, output)
            elif isinstance(output, Close):
                self.closes[output.reason] += 1
                self._close(host, output.link)
            elif isinstance(output, ChainChanged):
                self._chain_changed(host, output.update)
        tip = host.chain.tip.hash
        if tip != host.tip:
            self.tips[host.tip] -= 1
            if not self.tips[host.tip]:
                del self.tips[host.tip]
            self.tips[tip] += 1
            host.tip = tip
        self._schedule_timer(host)

    def _chain_changed(self, host: LedgerHost, update: ChainUpdate) -> None:
        if update.disconnected:
            self.reorgs[len(update.disconnected)] += 1
        for block in update.connected:
            mined = self.mined.get(block.hash)
            if mined is not None and host.number not in mined.reached:
                mined.reached[host.number] = self.now

    def _later(self, when: float, action: Callable[[], None]) -> None:
        """Run action at when: it carries something, so the network is busy till then."""
        self.in_flight += 1

        def run() -> None:
            self.in_flight -= 1
            action()

        self.queue.at(when, run)

    def _carry(self, host: LedgerHost, send: Send) -> None:
        pipe = host.pipes.get(send.link)
        if pipe is None:
            return
        far, far_link, data = pipe.far, pipe.far_link, send.data
        self.messages += 1
        # A block holds up what comes after it for block_delay (its checks, and the transfer
        # of a full one), as a node takes in its bytes one after another.
        delay = self.block_delay if data[4:16].rstrip(b"\0") == BlockMessage.command else 0.0

        def take_in() -> None:
            far.core.receive(far_link, data, self.now)
            self._pump(far)

        self._later(pipe.wire.send(len(data), self.now), lambda: self._take_in(far, take_in, delay))

    def _take_in(self, host: LedgerHost, action: Callable[[], None], delay: float = 0.0) -> None:
        """Run action on host now, or once host is done with the blocks before it, and take
        delay for it."""
        if not delay and host.busy_until < self.now:
            action()
            return
        host.busy_until = max(self.now, host.busy_until) + delay
        self._later(host.busy_until, action)

    def _dial(self, host: LedgerHost, dial: Dial) -> None:
        far = self._by_address.get(dial.address)
        latency = self.latency * self.rng.uniform(1 - self.jitter, 1 + self.jitter)

        def arrive() -> None:
            if far is None:
                self._later(self.now + latency, lambda: self._failed(host, dial.address))
                return
            link, far_link = host.next_link, far.next_link
            host.next_link += 1
            far.next_link += 1
            host.pipes[link] = _Pipe(far, far_link, Link(latency, self.bandwidth))
            far.pipes[far_link] = _Pipe(host, link, Link(latency, self.bandwidth))
            # Seen from far, the dial comes from the dialler's IP and a port of the moment.
            far.core.accept(far_link, (host.address[0], 40_000 + link), self.now)
            # The dialler hears it is connected before any byte the far end sends arrives.
            self._later(self.now + latency, lambda: self._connected(host, link, dial.address))
            self._pump(far)

        self._later(self.now + latency, arrive)

    def _connected(self, host: LedgerHost, link: int, address: Address) -> None:
        host.core.connected(link, address, self.now)
        self._pump(host)

    def _failed(self, host: LedgerHost, address: Address) -> None:
        host.core.dial_failed(address, self.now)
        self._pump(host)

    def _close(self, host: LedgerHost, link: int) -> None:
        """Close host's end of link; the other end hears it once the bytes before it came."""
        pipe = host.pipes.pop(link, None)
        if pipe is None:
            return
        far, far_link = pipe.far, pipe.far_link
        far.pipes.pop(far_link, None)

        def hang_up() -> None:
            far.core.closed(far_link, self.now)
            self._pump(far)

        self._later(pipe.wire.send(0, self.now), lambda: self._take_in(far, hang_up))

    def _schedule_timer(self, host: LedgerHost) -> None:
        """Call the core's timer when it asks, but its upkeep no more often than every tick
        (a timer due at once, answers waiting their turn, runs at once)."""
        wanted = host.core.get_timer()
        if wanted is None:
            return
        when = wanted if wanted <= self.now else max(wanted, host.last_timer + self.tick)
        if host.timer_at is not None and host.timer_at <= when:
            return
        host.timer_at = when

        def fire() -> None:
            if host.timer_at != when:
                return
            host.timer_at = None
            host.last_timer = self.now
            host.core.handle_timer(self.now)
            self._pump(host)

        self.queue.at(when, fire)

    # Measuring.

    def best_chain(self) -> set[bytes]:
        """The hashes of the active chain of the node with the most work."""
        chain = max(self.hosts, key=lambda host: host.chain.tip.work).chain
        hashes = set()
        for height in range(chain.tip.height + 1):
            index = chain.at_height(height)
            assert index is not None
            hashes.add(index.hash)
        return hashes


def default_tick(block_time: float) -> float:
    """The least time between two upkeeps of a core: a second (as the core asks) for short
    block times, up to MAX_TICK for long ones, whose hours of quiet would otherwise cost
    millions of timer calls; the upkeep pings, dials and times out, and relays nothing."""
    return min(MAX_TICK, max(1.0, block_time / 20))


@dataclass(slots=True)
class LedgerRun:
    """What one run at one block time measured."""

    block_time: float
    blocks: int  # mined in all, tie breakers too
    in_best_chain: int
    stale: int  # mined and not in the final best chain
    fork_rate: float  # stale / blocks
    tie_breaks: int  # blocks mined after the last one to end a tie
    converged: bool  # every node ended on the same tip
    propagation_seconds: dict[str, float]  # median over best-chain blocks: to 50% and 90%
    reorgs: dict[int, int]  # depth -> how many nodes' reorganisations were that deep
    max_reorg_depth: int
    links_closed: dict[str, int]  # by the closing core's reason (none expected)
    simulated_seconds: float
    wall_seconds: float
    events: int
    messages: int


@dataclass(slots=True)
class LedgerReport:
    """What `run_ledger` measured: one run per block time, on the same network."""

    nodes: int
    latency: float
    block_delay: float
    outbound: int
    seed: int
    runs: list[LedgerRun]

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON values."""
        return dataclasses.asdict(self)


def run_ledger(
    nodes: int = 100,
    block_times: Sequence[float] = (600, 60, 10, 2, 0.5),
    blocks: int = 200,
    *,
    latency: float = LATENCY,
    block_delay: float = 0.0,
    outbound: int = OUTBOUND,
    seed: int = 1,
    on_run: Callable[[LedgerRun], None] = lambda run: None,
) -> LedgerReport:
    """The same network (same seed) at each block time, mining `blocks` blocks each; on_run
    hears of each run as it ends."""
    report = LedgerReport(nodes, latency, block_delay, outbound, seed, [])
    for block_time in block_times:
        net = LedgerNetwork(
            nodes,
            block_time=block_time,
            seed=seed,
            latency=latency,
            block_delay=block_delay,
            outbound=outbound,
            tick=default_tick(block_time),
        )
        report.runs.append(simulate(net, blocks))
        on_run(report.runs[-1])
    return report


def simulate(net: LedgerNetwork, blocks: int) -> LedgerRun:
    """Open net's links, mine `blocks` blocks at its rate, then let it settle on one tip
    (mining one more block at a time while it stays split in a tie); what it measured."""
    if blocks < 1:
        raise ValueError(f"a run mines at least one block, not {blocks}")
    began = time.perf_counter()
    net.run(START + WARM_UP)
    _mine_until(net, blocks)
    tie_breaks = 0
    while True:
        net.run(net.now + SETTLE, lambda: net.in_flight == 0 and (net.agreed() or net.tied()))
        if not net.tied() or tie_breaks >= MAX_TIE_BREAKS:
            break
        tie_breaks += 1
        _mine_until(net, len(net.mined) + 1)
    best = net.best_chain()
    in_best = [mined for block_hash, mined in net.mined.items() if block_hash in best]
    mined = len(net.mined)
    return LedgerRun(
        block_time=net.block_time,
        blocks=mined,
        in_best_chain=len(in_best),
        stale=mined - len(in_best),
        fork_rate=round((mined - len(in_best)) / mined, 4),
        tie_breaks=tie_breaks,
        converged=net.agreed(),
        propagation_seconds=_propagation(in_best, len(net.hosts)),
        reorgs=dict(sorted(net.reorgs.items())),
        max_reorg_depth=max(net.reorgs, default=0),
        links_closed=dict(net.closes),
        simulated_seconds=round(net.now - START, 1),
        wall_seconds=round(time.perf_counter() - began, 2),
        events=net.queue.processed,
        messages=net.messages,
    )


def _mine_until(net: LedgerNetwork, count: int) -> None:
    """Mine at the network's rate until count blocks were found in all."""
    net.start_mining()
    net.run(math.inf, lambda: len(net.mined) >= count)
    net.stop_mining()


def _propagation(blocks: list[MinedBlock], nodes: int) -> dict[str, float]:
    """The median time, over blocks, from a block's finding until it was on the active chain
    of half the nodes, and of 90% of them."""
    found: dict[str, float] = {}
    for name, fraction in (("p50", 0.5), ("p90", 0.9)):
        rank = max(1, math.ceil(fraction * nodes))
        delays = [
            sorted(block.reached.values())[rank - 1] - block.at
            for block in blocks
            if len(block.reached) >= rank
        ]
        if delays:
            found[name] = round(statistics.median(delays), 3)
    return found
