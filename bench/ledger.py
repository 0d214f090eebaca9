"""Benchmark: shoal's ledger against the machine's Ed25519 verification rate.

    .venv/bin/python bench/ledger.py                      # the full run (a few minutes)
    .venv/bin/python bench/ledger.py --blocks 1000 --txs 20 --skip-sync --json ledger.json

Ed25519 signature checks are what a node validating payments cannot avoid, so the physical
limit here is `Ed25519PublicKey.verify` of the `cryptography` package run in a tight loop, on
this machine, in this run, over the very signatures and messages shoal checks:

  validation   validation.check_transaction + check_inputs with the coins spent, on freshly
               decoded transactions (as they come off the wire; decoding is not timed) of one
               input and of two, each input signed by a key of its own (as wallets use a new
               address for each payment, so shoal's cache of parsed keys seldom helps; the raw
               loop's keys are parsed beforehand); signatures per second against the raw rate
               (the goal: at least 0.70 of it)
  connect      Chain.accept_block into a SqliteStore of a chain of N blocks of T signed
               payments each (after the first blocks, whose coinbases pay the coins spent
               later, mature): blocks and payments per second, and payments against the
               raw loop's rate over as many signatures, timed in turns with it block by block
  sync         a fresh node (shoal.node.Node on 127.0.0.1) dialling a node whose state folder
               holds that chain, from the fresh node's start until its tip is the source's:
               seconds, blocks per second, and that rate against connect's (what the network
               and the node around the chain cost). Both nodes run in this process on one
               event loop, so the source's serving shares a core with the fresh node's
               checking: the ratio errs low

Shoal's work and the raw loop are timed in turns, a few milliseconds each, so that drift in
the machine's load (others' work on a shared machine) hits both alike; quote ratios.
Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from revision import commit

from shoal.ledger.chain import Chain
from shoal.ledger.coins import Coin
from shoal.ledger.params import LOCAL, ChainParams
from shoal.ledger.pow import meets_target
from shoal.ledger.primitives import (
    COIN,
    ZERO_HASH,
    Block,
    BlockHeader,
    OutPoint,
    Transaction,
    TxOut,
    block_merkle_root,
    decode_block,
    decode_transaction,
    key_lock,
    signature_messages,
)
from shoal.ledger.store import SqliteStore
from shoal.ledger.validation import check_inputs, check_transaction
from shoal.node import Node
from shoal.node.ledger import CHAIN_FILE, LedgerOptions, ledger_dir

LOOPBACK = "127.0.0.1"
GOAL = 0.70  # of the raw verification rate, as issue 10 asks
CHUNK = 50  # payments validated at a go, shoal's checks and the raw loop taking turns
PAYMENT_FEE = 1_000  # base units each benchmark payment leaves to its miner
# The chain's payments go to this many keys: more than validation's cache of parsed keys
# holds, as a chain whose wallets use a new address for each payment.
CHAIN_KEYS = 5_000
SMALLEST_HALF = 10_000  # a payment splits its coin in two while each half is at least this


class BenchError(Exception):
    """The bench cannot go on; the message says why, in one sentence."""


def log(message: str) -> None:
    """Progress goes to stderr so that stdout stays the result."""
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Key:
    """A signing key and the lock it may spend."""

    private: Ed25519PrivateKey
    lock: bytes

    @classmethod
    def generate(cls) -> Key:
        """A new random key."""
        private = Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(private, key_lock(public))


@dataclass(frozen=True)
class Spendable:
    """An output the bench can spend: where it is, the coin, and the key that unlocks it."""

    outpoint: OutPoint
    coin: Coin
    key: Key


def sign_payment(
    spent: Sequence[Spendable], outputs: tuple[TxOut, ...], params: ChainParams
) -> Transaction:
    """A transaction spending every coin of spent to outputs, each input signed by its key."""
    unsigned = Transaction(1, tuple(coin.outpoint for coin in spent), outputs, 0, ())
    outputs_spent = [coin.coin.output for coin in spent]
    messages = signature_messages(unsigned, outputs_spent, params.chain_id)
    witnesses = tuple(
        coin.key.private.sign(message) for coin, message in zip(spent, messages, strict=True)
    )
    return Transaction(1, unsigned.inputs, outputs, 0, witnesses)


# Part 1: signed transactions validated per second against raw verification.


@dataclass
class ValidationCase:
    """Signed transactions of one shape, serialised, with the coins they spend and the raw
    (key, signature, message) triples their checks verify."""

    inputs: int
    encoded: list[bytes]
    coins: list[list[Coin]]
    triples: list[tuple[Ed25519PublicKey, bytes, bytes]]


def validation_case(count: int, inputs: int, params: ChainParams) -> ValidationCase:
    """count payments of inputs inputs each, every input a coin of a key of its own."""
    case = ValidationCase(inputs, [], [], [])
    height = 1
    for _ in range(count):
        spent = []
        for _ in range(inputs):
            key = Key.generate()
            outpoint = OutPoint(os.urandom(32), 0)
            spent.append(Spendable(outpoint, Coin(TxOut(COIN, key.lock), height, False), key))
        change = inputs * COIN - PAYMENT_FEE - COIN // 2
        outputs = (TxOut(COIN // 2, Key.generate().lock), TxOut(change, spent[0].key.lock))
        tx = sign_payment(spent, outputs, params)
        case.encoded.append(tx.serialized)
        case.coins.append([coin.coin for coin in spent])
        messages = signature_messages(tx, [coin.coin.output for coin in spent], params.chain_id)
        for coin, witness, message in zip(spent, tx.witnesses, messages, strict=True):
            case.triples.append((coin.key.private.public_key(), witness, message))
    return case


def raw_verify(triples: Sequence[tuple[Ed25519PublicKey, bytes, bytes]]) -> int:
    """Verify every signature with keys already loaded: the physical limit."""
    for public, signature, message in triples:
        public.verify(signature, message)
    return len(triples)


@dataclass(frozen=True)
class ValidationRate:
    """Signatures per second of shoal's checks and of the raw loop over the same ones."""

    inputs: int
    shoal: float
    raw: float

    @property
    def ratio(self) -> float:
        """shoal's rate as a share of the raw one."""
        return self.shoal / self.raw


def validation_rate(case: ValidationCase, rounds: int, params: ChainParams) -> ValidationRate:
    """Time shoal's checks and the raw loop in turns, CHUNK transactions at a time, so that
    the machine's load (other work on a shared machine) weighs on both alike. Each round
    checks fresh copies of the transactions (decoded before the clock starts, so that
    nothing cached by an earlier round helps)."""
    height = 1 + params.coinbase_maturity
    shoal_seconds = raw_seconds = 0.0
    for _ in range(rounds):
        transactions = [decode_transaction(data) for data in case.encoded]
        for first in range(0, len(transactions), CHUNK):
            chunk = zip(
                transactions[first : first + CHUNK], case.coins[first : first + CHUNK], strict=True
            )
            triples = case.triples[first * case.inputs : (first + CHUNK) * case.inputs]
            start = time.perf_counter()
            for tx, coins in chunk:
                check_transaction(tx)
                check_inputs(tx, coins, height, params)
            middle = time.perf_counter()
            raw_verify(triples)
            shoal_seconds += middle - start
            raw_seconds += time.perf_counter() - middle
    signatures = rounds * len(case.triples)
    return ValidationRate(case.inputs, signatures / shoal_seconds, signatures / raw_seconds)


# Part 2: blocks of signed payments connected per second.


@dataclass
class BuiltChain:
    """A chain of blocks, serialised (heights 1 on), and how many payments they carry."""

    blocks: list[bytes]
    payments: int

    @property
    def last_time(self) -> int:
        """The time of the last block's header."""
        return decode_block(self.blocks[-1]).header.time


def mine(previous: bytes, transactions: list[Transaction], when: int, params: ChainParams) -> Block:
    """A block on previous at the chain's easiest target (about 16 hashes on the local chain)."""
    root = block_merkle_root(transactions)
    header = BlockHeader(1, previous, root, when, params.pow_limit_bits, 0)
    while not meets_target(header.hash, params.pow_limit_target):
        header = BlockHeader(1, previous, root, when, header.bits, header.nonce + 1)
    return Block(header, tuple(transactions))


def pay(
    coin: Spendable, keys: Sequence[Key], rng: random.Random, params: ChainParams
) -> Transaction:
    """A payment of coin to two random keys (one payee, one change) or, once the coin is
    small, to one."""
    rest = coin.coin.output.amount - PAYMENT_FEE
    if rest < SMALLEST_HALF:
        raise BenchError("the bench's coins ran out: fewer blocks or payments per block")
    halves = (rest // 2, rest - rest // 2) if rest >= 2 * SMALLEST_HALF else (rest,)
    outputs = tuple(TxOut(amount, rng.choice(keys).lock) for amount in halves)
    return sign_payment([coin], outputs, params)


def spendables(tx: Transaction, height: int, keys: dict[bytes, Key]) -> list[Spendable]:
    """The outputs of tx (mined at height) as the bench may spend them."""
    return [
        Spendable(OutPoint(tx.txid, index), Coin(output, height, tx.is_coinbase), keys[output.lock])
        for index, output in enumerate(tx.outputs)
    ]


def build_chain(blocks: int, payments: int, params: ChainParams) -> BuiltChain:
    """coinbase_maturity blocks whose coinbases each pay 2 x payments coins to the bench's
    keys, then blocks of payments each spending an output of an earlier block."""
    keys = [Key.generate() for _ in range(CHAIN_KEYS)]
    by_lock = {key.lock: key for key in keys}
    rng = random.Random(10)
    ready: deque[Spendable] = deque()  # spendable in the next block, oldest first
    maturing: dict[int, list[Spendable]] = {}  # by the height they may be spent at
    lead = params.coinbase_maturity
    built = BuiltChain([], 0)
    previous = params.genesis.hash
    for height in range(1, lead + blocks + 1):
        ready.extend(maturing.pop(height, ()))
        spent = [ready.popleft() for _ in range(payments if height > lead else 0)]
        transactions = [pay(coin, keys, rng, params) for coin in spent]
        claim = params.subsidy(height) + PAYMENT_FEE * len(transactions)
        parts = 2 * payments if height <= lead else 1
        coinbase_outputs = tuple(
            TxOut(claim // parts, keys[(height + part) % len(keys)].lock) for part in range(parts)
        )
        coinbase = Transaction(1, (OutPoint(ZERO_HASH, height),), coinbase_outputs, 0, (b"bench",))
        block = mine(previous, [coinbase, *transactions], params.genesis_time + height, params)
        built.blocks.append(block.serialized)
        built.payments += len(transactions)
        previous = block.hash
        for tx in transactions:
            ready.extend(spendables(tx, height, by_lock))
        if height <= lead:
            maturing[height + params.coinbase_maturity] = spendables(coinbase, height, by_lock)
        if height % 1000 == 0:
            log(f"  built {height} blocks")
    return built


@dataclass
class ConnectResult:
    """Seconds spent in Chain.accept_block over a chain, what it connected, and the seconds
    the raw loop took over as many signatures, timed in turns with it."""

    seconds: float
    blocks: int
    payments: int
    raw_seconds: float

    @property
    def blocks_per_second(self) -> float:
        """Blocks connected per second."""
        return self.blocks / self.seconds

    @property
    def payments_per_second(self) -> float:
        """Payments (one signature each) connected per second."""
        return self.payments / self.seconds

    @property
    def raw_per_second(self) -> float:
        """Raw verifications per second alongside."""
        return self.payments / self.raw_seconds

    @property
    def ratio(self) -> float:
        """Payments connected per second as a share of the raw verification rate."""
        return self.payments_per_second / self.raw_per_second


def connect_chain(
    built: BuiltChain,
    path: Path,
    triples: Sequence[tuple[Ed25519PublicKey, bytes, bytes]],
    params: ChainParams,
) -> ConnectResult:
    """Time Chain.accept_block of every block, decoded just before (as from the wire; the
    decoding is not timed), into a new SqliteStore at path; after each block, time the raw
    loop over as many signatures of triples (in turn), so that both share the load."""
    chain = Chain(params, SqliteStore(path))
    now = float(built.last_time)
    seconds = raw_seconds = 0.0
    signatures = itertools.cycle(triples)
    try:
        for number, data in enumerate(built.blocks, 1):
            block = decode_block(data)
            batch = list(itertools.islice(signatures, len(block.transactions) - 1))
            start = time.perf_counter()
            chain.accept_block(block, now)
            middle = time.perf_counter()
            raw_verify(batch)
            seconds += middle - start
            raw_seconds += time.perf_counter() - middle
            if chain.tip.hash != block.hash:
                raise BenchError(f"block {number} did not become the tip")
            if number % 1000 == 0:
                log(f"  connected {number} blocks")
    finally:
        chain.close()
    return ConnectResult(seconds, len(built.blocks), built.payments, raw_seconds)


# Part 3: a fresh node syncing that chain from a peer on loopback.

SYNC_STALL = 60.0  # seconds without a new block before the bench gives up on a sync


async def wait_for_height(node: Node, height: int) -> None:
    """Wait until node's tip is at height; BenchError once it has not moved for SYNC_STALL."""
    assert node.ledger is not None
    loop = asyncio.get_running_loop()
    reached, moved = node.ledger.height(), loop.time()
    while reached < height:
        await asyncio.sleep(0.02)
        now = loop.time()
        if node.ledger.height() != reached:
            reached, moved = node.ledger.height(), now
            if reached // 1000 != (reached - 1) // 1000:
                log(f"  synced {reached} blocks")
        elif now - moved > SYNC_STALL:
            raise BenchError(f"the fresh node stalled at height {reached} of {height}")


async def sync_from_peer(
    source_state: Path, fresh_state: Path, params: ChainParams
) -> tuple[int, float]:
    """Start a node on source_state (its chain already there), then a fresh node dialling it
    on loopback; return the height synced and the seconds from the fresh node's start to its
    tip being the source's."""
    source = Node(port=0, host=LOOPBACK, state=source_state, ledger=LedgerOptions(params))
    await source.start()
    try:
        assert source.ledger is not None
        height = source.ledger.height()
        peers = ((LOOPBACK, source.port),)
        fresh = Node(
            port=0, host=LOOPBACK, state=fresh_state, ledger=LedgerOptions(params, peers=peers)
        )
        start = time.perf_counter()
        await fresh.start()
        try:
            await wait_for_height(fresh, height)
            seconds = time.perf_counter() - start
        finally:
            await fresh.stop()
    finally:
        await source.stop()
    return height, seconds


def main() -> int:
    """Run the bench; a one-sentence error and exit status 1 if it cannot finish."""
    try:
        return measure()
    except BenchError as error:
        log(f"bench/ledger.py: {error}")
        return 1


def measure() -> int:
    """Measure, print the figures and ratios, save them with --json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="transactions per validation round")
    parser.add_argument("--rounds", type=int, default=3, help="passes over those transactions")
    parser.add_argument("--blocks", type=int, default=10_000, help="blocks of payments to connect")
    parser.add_argument("--txs", type=int, default=20, help="payments per block")
    parser.add_argument("--skip-sync", action="store_true", help="leave out the sync")
    parser.add_argument("--json", type=Path, metavar="FILE", help="save the figures to FILE")
    args = parser.parse_args()
    params = LOCAL
    figures: dict[str, object] = {"commit": commit()}

    log(f"validation: {args.count} payments of 1 and of 2 inputs, {args.rounds} rounds")
    cases = [validation_case(args.count, inputs, params) for inputs in (1, 2)]
    rates = [validation_rate(case, args.rounds, params) for case in cases]
    for rate in rates:
        print(
            f"{f'{rate.inputs}-input payments':>26}: shoal {rate.shoal:.0f} signatures/s"
            f" ({rate.shoal / rate.inputs:.0f} tx/s), raw Ed25519 verify {rate.raw:.0f}/s"
            f" on the same signatures: {rate.ratio:.2f} of raw (goal {GOAL:.2f})"
        )
    figures["validation"] = [
        {"inputs": rate.inputs, "shoal": rate.shoal, "raw": rate.raw, "ratio": rate.ratio}
        for rate in rates
    ]

    with tempfile.TemporaryDirectory(prefix="shoal-bench-ledger-") as folder:
        log(f"building {args.blocks} blocks of {args.txs} payments")
        start = time.perf_counter()
        built = build_chain(args.blocks, args.txs, params)
        log(f"  built in {time.perf_counter() - start:.0f} s")
        log("connecting them into a SqliteStore")
        # Written where a node on the folder source finds its chain, for the sync.
        source = Path(folder) / "source"
        chain_file = ledger_dir(source, params) / CHAIN_FILE
        chain_file.parent.mkdir(parents=True)
        triples = [triple for case in cases for triple in case.triples]
        connected = connect_chain(built, chain_file, triples, params)
        print(
            f"{'connect':>26}: {connected.blocks} blocks in {connected.seconds:.1f} s,"
            f" {connected.blocks_per_second:.0f} blocks/s,"
            f" {connected.payments_per_second:.0f} payments/s,"
            f" raw Ed25519 verify alongside {connected.raw_per_second:.0f}/s:"
            f" {connected.ratio:.2f} of raw"
        )
        figures["connect"] = {
            "blocks": connected.blocks,
            "payments": connected.payments,
            "seconds": connected.seconds,
            "blocks_per_second": connected.blocks_per_second,
            "payments_per_second": connected.payments_per_second,
            "raw_per_second": connected.raw_per_second,
            "ratio": connected.ratio,
        }
        if not args.skip_sync:
            log("a fresh node syncing them from a node on loopback")
            height, seconds = asyncio.run(sync_from_peer(source, Path(folder) / "fresh", params))
            synced = height / seconds
            print(
                f"{'sync':>26}: {height} blocks in {seconds:.1f} s, {synced:.0f} blocks/s,"
                f" {synced / connected.blocks_per_second:.2f} of connect"
            )
            figures["sync"] = {
                "blocks": height,
                "seconds": seconds,
                "blocks_per_second": synced,
                "of_connect": synced / connected.blocks_per_second,
            }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
