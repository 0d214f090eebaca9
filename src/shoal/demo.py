"""`shoal demo`: a hub, a seeder and several leechers on loopback, the three architectures
side by side.

Every node is a DHT node (the seeder is the one the others bootstrap from: never the public
routers) and an overlay ultrapeer linked to the seeder. The seeder lists its file on the hub,
in the DHT's keyword index and in the overlay (it answers queries for it); one search asks all
three at once (as `shoal search --via all`) and shows which found it; then each leecher
downloads it by info-hash, with peers from the hub's tracker, the DHT and the overlay, and
trades pieces with the others.
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

from .addresses import Address
from .dht.listings import sign_listing
from .errors import ShoalError, inert
from .hub import client as hub_client
from .hub.client import SearchResult
from .hub.server import Hub
from .hub.urls import announce_url
from .identity import Identity
from .metainfo import Torrent, create_torrent
from .node import Node, TorrentTask
from .node.overlay import OverlayOptions
from .progress import results_table, wide_console
from .search import ARCHITECTURES, Plan, search_all

LOOPBACK = "127.0.0.1"
DEMO_NAME = "shoal-demo-holiday-video.bin"
DEMO_QUERY = "holiday video"
DEMO_PIECE_LENGTH = 256 * 1024
# The seeder is slowed so that leechers must fetch most pieces from each other.
SEEDER_UPLOAD_LIMIT = 4 * 1024 * 1024
DEMO_TIMEOUT = 300.0


async def run_demo(leechers: int, size: int) -> None:
    """Run the hub and the nodes, search three ways, show who sent what to whom, and check
    every copy."""
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
        nodes: list[Node] = []
        tasks: list[TorrentTask] = []
        try:
            seeder = Node(
                port=0,
                host=LOOPBACK,
                upload_limit=SEEDER_UPLOAD_LIMIT,
                dht_routers=[],
                overlay=OverlayOptions(hub=hub.url),
            )
            await seeder.start()
            nodes.append(seeder)
            local: list[Address] = [(LOOPBACK, seeder.port)]
            for _ in range(leechers):
                node = Node(
                    port=0,
                    host=LOOPBACK,
                    dht_routers=local,
                    overlay=OverlayOptions(tuple(local), hub=hub.url),
                )
                await node.start()
                nodes.append(node)
            console.print(
                f"[bold]shoal demo[/]: a hub at {hub.url}, 1 seeder and {leechers} leechers,"
                f" each a DHT node (joined through the seeder's) and an overlay ultrapeer"
            )
            tasks.append(
                await seeder.add(torrent.info_hash, torrent, source.parent, trackers=[[announce]])
            )
            stored = await _list_everywhere(seeder, hub.url, torrent, Identity.generate())
            console.print(
                f"seeder: shares {DEMO_NAME} ({size // 2**20} MiB, {torrent.num_pieces} pieces)"
                f" and lists it on the hub, in the DHT ({stored} copies under its name's words)"
                " and in the overlay (it answers queries)"
            )
            found = await _search_three_ways(console, hub.url, local)
            for number, node in enumerate(nodes[1:], start=1):
                # Only the info-hash: metadata and peers come from the network.
                task = await node.add(found, None, root / f"leecher{number}", trackers=[[announce]])
                tasks.append(task)
            console.print(
                f"{leechers} leechers: get {found.hex()}, with peers from the hub's tracker,"
                " the DHT and the overlay"
            )
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


async def _list_everywhere(seeder: Node, hub: str, torrent: Torrent, identity: Identity) -> int:
    """List the torrent on the hub and in the DHT (the overlay answers from the seeder's
    complete torrents by itself); how many stores the DHT's nodes took."""
    assert seeder.dht is not None
    await hub_client.publish(hub, identity, torrent)
    files = ["/".join(entry.path) for entry in torrent.files if not entry.padding]
    listing = sign_listing(
        identity, torrent.info_hash, torrent.name, torrent.total_length, files, int(time.time())
    )
    stored = await asyncio.wait_for(seeder.dht.publish_stored(listing), DEMO_TIMEOUT)
    if not stored:
        raise ShoalError("no DHT node took the seeder's listing")
    return stored


async def _search_three_ways(console: Console, hub: str, local: list[Address]) -> bytes:
    """One search of the hub, the DHT and the overlay at once, as `shoal search --via all`;
    the info-hash that all three found."""
    console.print(f"search '{DEMO_QUERY}' on the hub, in the DHT and in the overlay at once:")
    began = time.monotonic()

    def show(via: str, result: SearchResult) -> None:
        console.print(
            f"  {via:<7} found {inert(result.name)} after {time.monotonic() - began:.2f} s",
            highlight=False,
            markup=False,
        )

    plan = Plan(DEMO_QUERY, list(ARCHITECTURES), hub, local, list(local), host=LOOPBACK)
    merged, failures = await search_all(plan, show)
    for name, reason in failures.items():
        console.print(f"  {name}: {inert(reason)}", highlight=False, markup=False)
    found = list(merged.values())
    labels = [",".join(sorted(entry.via, key=ARCHITECTURES.index)) for entry in found]
    console.print(results_table([entry.result for entry in found], "found, merged", via=labels))
    everywhere = [entry for entry in found if len(entry.via) == len(ARCHITECTURES)]
    if not everywhere:
        missing = sorted(set(ARCHITECTURES) - {v for entry in found for v in entry.via})
        raise ShoalError(f"the search for '{DEMO_QUERY}' found nothing in {', '.join(missing)}")
    return everywhere[0].result.info_hash


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
