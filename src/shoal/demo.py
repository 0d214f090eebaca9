"""`shoal demo`: a hub, a seeder and several leechers on loopback.

The seeder lists its file on the hub; each leecher searches the hub, downloads the result by
info-hash (metadata from peers, peers from the hub's tracker) and trades pieces with the others.
"""

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
from .hub import client as hub_client
from .hub.server import Hub
from .hub.urls import announce_url
from .identity import Identity
from .metainfo import create_torrent
from .node import Node, TorrentTask
from .progress import results_table, wide_console

LOOPBACK = "127.0.0.1"
DEMO_NAME = "shoal-demo-holiday-video.bin"
DEMO_PIECE_LENGTH = 256 * 1024
# The seeder is slowed so that leechers must fetch most pieces from each other.
SEEDER_UPLOAD_LIMIT = 4 * 1024 * 1024
DEMO_TIMEOUT = 300.0


async def run_demo(leechers: int, size: int) -> None:
    """Run the hub and the swarm, show who sent what to whom, and check every copy."""
    console = wide_console()
    with tempfile.TemporaryDirectory(prefix="shoal-demo-") as scratch:
        root = Path(scratch)
        source = root / "seeder" / DEMO_NAME
        source.parent.mkdir()
        source.write_bytes(random.Random(7).randbytes(size))
        torrent = create_torrent(source, piece_length=DEMO_PIECE_LENGTH)
        hub = Hub(LOOPBACK, 0, root / "hub.db")
        await hub.start()
        announce = announce_url(hub.url)
        console.print(f"[bold]shoal demo[/]: a hub at {hub.url}, 1 seeder, {leechers} leechers")

        nodes: list[Node] = []
        tasks: list[TorrentTask] = []
        try:
            seeder = Node(port=0, host=LOOPBACK, upload_limit=SEEDER_UPLOAD_LIMIT)
            await seeder.start()
            nodes.append(seeder)
            tasks.append(
                await seeder.add(torrent.info_hash, torrent, source.parent, trackers=[[announce]])
            )
            identity = Identity.load_or_create(root / "identity.key")
            await hub_client.publish(hub.url, identity, torrent)
            console.print(
                f"seeder: shares {DEMO_NAME} ({size // 2**20} MiB, {torrent.num_pieces} pieces)"
                f" and lists it on the hub"
            )
            results = await hub_client.search(hub.url, "holiday video")
            console.print(results_table(results, "search the hub for 'holiday video'"))
            if not results:
                raise ShoalError("the hub found nothing for 'holiday video'")
            found = results[0].info_hash
            for number in range(1, leechers + 1):
                node = Node(port=0, host=LOOPBACK)
                await node.start()
                nodes.append(node)
                # Only the info-hash and the hub: metadata and peers come from the network.
                task = await node.add(found, None, root / f"leecher{number}", trackers=[[announce]])
                tasks.append(task)
            console.print(f"{leechers} leechers: get {found.hex()} --hub {hub.url}")
            started = time.monotonic()
            await _wait_all(tasks[1:], console)
            elapsed = time.monotonic() - started
            _show_flows(console, nodes, tasks)
            expected = hashlib.sha1(source.read_bytes()).hexdigest()
            for number in range(1, leechers + 1):
                copy = root / f"leecher{number}" / DEMO_NAME
                if hashlib.sha1(copy.read_bytes()).hexdigest() != expected:
                    raise ShoalError(f"leecher {number}'s copy differs from the original")
            console.print(
                f"[green]all {leechers} copies verified[/] in {elapsed:.1f} s;"
                f" the seeder uploaded {_seeder_share(tasks):.0%} of what leechers received"
            )
        finally:
            for node in nodes:
                await node.stop()
            await hub.stop()


async def _wait_all(tasks: list[TorrentTask], console: Console) -> None:
    deadline = time.monotonic() + DEMO_TIMEOUT
    while not all(task.completed.is_set() for task in tasks):
        for task in tasks:
            if task.failed is not None:
                raise task.failed
        if time.monotonic() > deadline:
            raise ShoalError("the demo swarm did not finish in time")
        done = sum(task.progress()[0] for task in tasks)
        total = sum(task.progress()[1] for task in tasks)
        if total:
            console.print(f"  leechers hold {done / total:.0%} of their data", highlight=False)
        await asyncio.wait([asyncio.ensure_future(t.completed.wait()) for t in tasks], timeout=1.0)


def _show_flows(console: Console, nodes: list[Node], tasks: list[TorrentTask]) -> None:
    names = {node.port: ("seeder" if i == 0 else f"leecher{i}") for i, node in enumerate(nodes)}
    table = Table(title="payload received, by source")
    table.add_column("node")
    for node in nodes:
        table.add_column(names[node.port], justify="right")
    for node, task in zip(nodes[1:], tasks[1:], strict=True):
        assert task.swarm is not None
        received = {
            names.get(address[1]): down
            for address, (down, _up) in task.swarm.transfer_totals().items()
        }
        row = [f"{received.get(names[n.port], 0) / 2**20:.1f} MiB" for n in nodes]
        table.add_row(names[node.port], *row)
    console.print(table)


def _seeder_share(tasks: list[TorrentTask]) -> float:
    seeder = tasks[0].swarm
    received = sum(
        down
        for task in tasks[1:]
        if task.swarm
        for down, _ in task.swarm.transfer_totals().values()
    )
    uploaded = seeder.uploaded if seeder else 0
    return uploaded / received if received else 0.0
