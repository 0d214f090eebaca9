"""`shoal demo --ledger`: three ledger nodes on loopback mine and pay each other; one is cut
off and mines a shorter fork with a payment in it; when the partition heals, the chain with
the most work wins, and the losing fork's payment returns to the mempool and is mined again."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .errors import ShoalError
from .ledger.params import LOCAL
from .ledger.primitives import COIN, hash_hex, parse_hash
from .node import Node
from .node.ledger import LedgerOptions
from .node.ledger_rpc import LedgerMethods
from .progress import wide_console

LOOPBACK = "127.0.0.1"
NAMES = ("alice", "bob", "carol")
STEP_TIMEOUT = 60.0


class DemoNode:
    """One node of the demo and its wallet, called as the RPC would."""

    def __init__(self, name: str, node: Node) -> None:
        self.name = name
        self.node = node
        assert node.ledger is not None
        self.ledger = node.ledger
        self.rpc = LedgerMethods(node.ledger)

    async def call(self, method: str, **params: object) -> object:
        """The result of an RPC method."""
        return await self.rpc.methods()[method](dict(params))

    def tip(self) -> bytes:
        """The tip's hash."""
        assert self.ledger.chain is not None
        return self.ledger.chain.tip.hash

    def height(self) -> int:
        """The tip's height."""
        return self.ledger.height()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for condition, polling, with a deadline."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise ShoalError(f"the ledger demo timed out waiting for {what}")
        await asyncio.sleep(0.05)


def agree(nodes: list[DemoNode]) -> bool:
    """Whether the nodes share one tip."""
    return len({node.tip() for node in nodes}) == 1


async def run_ledger_demo() -> None:
    """Run the three nodes through payments, a partition and its healing; check the end."""
    console = wide_console()
    with tempfile.TemporaryDirectory(prefix="shoal-ledger-demo-") as scratch:
        nodes: list[DemoNode] = []
        try:
            for name in NAMES:
                peers = tuple((LOOPBACK, other.node.port) for other in nodes)
                node = Node(
                    port=0,
                    host=LOOPBACK,
                    state=Path(scratch) / name,
                    ledger=LedgerOptions(LOCAL, peers),
                )
                await node.start()
                nodes.append(DemoNode(name, node))
            await _play(console, nodes)
        finally:
            for demo_node in nodes:
                demo_node.rpc.close()
                await demo_node.node.stop()


async def _play(console: Console, nodes: list[DemoNode]) -> None:
    alice, bob, carol = nodes
    console.print(
        "[bold]shoal demo --ledger[/]: alice, bob and carol run ledger nodes of the local"
        " chain on loopback, each dialling those before it"
    )
    for miner in nodes:
        await miner.call("generate", count=2)
    await alice.call("generate", count=LOCAL.coinbase_maturity)
    await until(lambda: agree(nodes), "the first blocks to reach everyone")
    console.print(
        f"each mined 2 blocks, alice {LOCAL.coinbase_maturity} more so that coinbases mature"
        f" (after {LOCAL.coinbase_maturity} blocks): height {alice.height()}"
    )
    await _show(console, nodes, "balances")

    to_bob = str(await bob.call("wallet.new"))
    paid = await alice.call("wallet.send", address=to_bob, amount=5 * COIN)
    assert isinstance(paid, dict)
    await until(lambda: all(len(n.ledger.mempool) == 1 for n in nodes), "the payment to spread")
    console.print(f"alice pays bob 5 coins: {paid['txid']} is in every mempool")
    await bob.call("generate", count=1)
    await until(lambda: agree(nodes), "bob's block")
    console.print("bob mines it into a block, which reaches everyone")

    console.print("[bold]partition[/]: carol is cut off from alice and bob")
    carol.ledger.set_network_active(False)
    to_alice = str(await alice.call("wallet.new"))
    fork_paid = await carol.call("wallet.send", address=to_alice, amount=2 * COIN)
    assert isinstance(fork_paid, dict)
    await carol.call("generate", count=2)
    await alice.call("generate", count=3)
    await until(lambda: agree([alice, bob]), "alice's blocks to reach bob")
    console.print(
        f"carol pays alice 2 coins ({fork_paid['txid']}) and mines it on her own fork of"
        f" 2 blocks; alice mines 3 blocks on the majority's side"
    )
    await _show(console, nodes, "during the partition")

    console.print("[bold]the partition heals[/]: carol dials alice and bob again")
    carol.ledger.set_network_active(True)
    await until(lambda: agree(nodes), "carol to take the chain with the most work")
    txid = str(fork_paid["txid"])
    await until(
        lambda: all(parse_hash(txid) in n.ledger.mempool for n in nodes),
        "carol's payment to return to the mempools",
    )
    console.print(
        f"carol's 2 blocks lost (less work): her payment {txid[:16]}… is back in the mempool"
        " and relayed to alice and bob"
    )
    await alice.call("generate", count=1)
    await until(lambda: agree(nodes), "the last block")
    found = await alice.call("tx", txid=txid)
    assert isinstance(found, dict)
    if found["confirmations"] != 1:
        raise ShoalError("carol's payment was not mined again")
    console.print(f"alice mines it again: confirmed in {found['block']}")
    await _show(console, nodes, "at the end")
    console.print(f"[green]all three agree on tip {hash_hex(alice.tip())}[/]")


async def _show(console: Console, nodes: list[DemoNode], title: str) -> None:
    table = Table(title=title)
    for column in ("node", "height", "tip", "spendable", "immature", "mempool"):
        table.add_column(column, justify="right" if column != "node" else "left")
    for node in nodes:
        balance = await node.call("wallet.balance")
        assert isinstance(balance, dict)
        table.add_row(
            node.name,
            str(node.height()),
            hash_hex(node.tip())[:16] + "…",
            f"{balance['spendable'] / COIN:.8f}",
            f"{balance['immature'] / COIN:.8f}",
            str(len(node.ledger.mempool)),
        )
    console.print(table)
