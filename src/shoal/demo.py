"""`shoal demo`: a seeder and several leechers on loopback, trading pieces of a generated file."""

from __future__ import annotations

import asyncio
import hashlib
import random
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .errors import ShoalError
from .metainfo import create_torrent
from .node import Node, TorrentTask

LOOPBACK = "127.0.0.1"
DEMO_PIECE_LENGTH = 256 * 1024
# The seeder is slowed so that leechers must fetch most pieces from each other.
SEEDER_UPLOAD_LIMIT = 4 * 1024 * 1024
DEMO_TIMEOUT = 300.0


async def run_demo(leechers: int, size: int) -> None:
    """Run the swarm, show who sent what to whom, and check every copy."""
    console = Console()
    with tempfile.TemporaryDirectory(prefix="shoal-demo-") as scratch:
        root = Path(scratch)
        source = root / "seeder" / "demo.bin"
        source.parent.mkdir()
        source.write_bytes(random.Random(7).randbytes(size))
        torrent = create_torrent(source, piece_length=DEMO_PIECE_LENGTH)
        console.print(
            f"[bold]shoal demo[/]: 1 seeder, {leechers} leechers, {size // 2**20} MiB in"
            f" {torrent.num_pieces} pieces; info-hash {torrent.info_hash_hex}"
        )
        console.print(f"magnet: {torrent.magnet()}")

        nodes: list[Node] = []
        tasks: list[TorrentTask] = []
        try:
            seeder = Node(port=0, host=LOOPBACK, upload_limit=SEEDER_UPLOAD_LIMIT)
            await seeder.start()
            nodes.append(seeder)
            tasks.append(await seeder.add(torrent.info_hash, torrent, source.parent))
            known = [(LOOPBACK, seeder.port)]
            for number in range(1, leechers + 1):
                node = Node(port=0, host=LOOPBACK)
                await node.start()
                nodes.append(node)
                # Each leecher knows the seeder and the leechers before it; links are two-way.
                task = await node.add(torrent.info_hash, torrent, root / f"leecher{number}", known)
                tasks.append(task)
                known = [*known, (LOOPBACK, node.port)]
            started = time.monotonic()
            await _wait_all(tasks[1:], console)
            elapsed = time.monotonic() - started
            _show_flows(console, nodes, tasks)
            expected = hashlib.sha1(source.read_bytes()).hexdigest()
            for number in range(1, leechers + 1):
                copy = root / f"leecher{number}" / "demo.bin"
                if hashlib.sha1(copy.read_bytes()).hexdigest() != expected:
                    raise ShoalError(f"leecher {number}'s copy differs from the original")
            console.print(
                f"[green]all {leechers} copies verified[/] in {elapsed:.1f} s;"
                f" the seeder uploaded {_seeder_share(tasks):.0%} of what leechers received"
            )
        finally:
            for node in nodes:
                await node.stop()


async def _wait_all(tasks: list[TorrentTask], console: Console) -> None:
    deadline = time.monotonic() + DEMO_TIMEOUT
    while not all(task.completed.is_set() for task in tasks):
        for task in tasks:
            if task.failed is not None:
                raise task.failed
        if time.monotonic() > deadline:
            raise ShoalError("the demo swarm did not finish in time")
        done = sum(task.swarm.have_count for task in tasks if task.swarm)
        total = sum(task.torrent.num_pieces for task in tasks if task.torrent)
        console.print(f"  pieces verified across leechers: {done}/{total}", highlight=False)
        await asyncio.wait([asyncio.ensure_future(t.completed.wait()) for t in tasks], timeout=1.0)


def _show_flows(console: Console, nodes: list[Node], tasks: list[TorrentTask]) -> None:
    names = {node.port: ("seeder" if i == 0 else f"leecher{i}") for i, node in enumerate(nodes)}
    table = Table(title="payload received, by source")
    table.add_column("node")
    for i in range(len(nodes)):
        table.add_column(names[nodes[i].port], justify="right")
    for node, task in zip(nodes[1:], tasks[1:], strict=True):
        assert task.swarm is not None
        received = {
            names.get(addr[1]): down for addr, (down, _up) in task.swarm.transfer_totals().items()
        }
        row = [f"{received.get(names[n.port], 0) / 2**20:.1f} MiB" for n in nodes]
        table.add_row(names[node.port], *row)
    console.print(table)


def _seeder_share(tasks: list[TorrentTask]) -> float:
    seeder = tasks[0].swarm
    leecher_total = sum(
        down
        for task in tasks[1:]
        if task.swarm
        for down, _ in task.swarm.transfer_totals().values()
    )
    uploaded = seeder.uploaded if seeder else 0
    return uploaded / leecher_total if leecher_total else 0.0
