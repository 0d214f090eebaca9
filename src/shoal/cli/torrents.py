"""create, info, seed, share and get: making torrents and trading them."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import ShoalError, inert
from ..metainfo import Torrent, create_torrent, is_magnet, load_torrent, parse_magnet
from ..node import Node
from ..progress import Progress, human_size

if TYPE_CHECKING:
    from ..node.dht import DhtService

from .common import (
    INFO_HASH,
    INTERRUPTED,
    LISTING_REFRESH,
    LISTING_TTL,
    PORT_HELP,
    STOPPED,
    DhtChoice,
    OverlayChoice,
    Sources,
    dht_options,
    encryption_option,
    fail,
    first_of,
    hub_option,
    kib,
    main,
    overlay_options,
    peer_option,
    rate_option,
    run,
    tracker_option,
    until_signal,
)


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Where to write the .torrent."
)
@click.option(
    "--tracker", "trackers", multiple=True, metavar="URL", help="Announce URL (repeatable)."
)
@click.option(
    "--piece-size", type=int, default=None, metavar="BYTES", help="A power of two >= 16384."
)
@click.option("--private", is_flag=True, help="Set the private flag (BEP 27).")
def create(
    path: Path,
    output: Path | None,
    trackers: tuple[str, ...],
    piece_size: int | None,
    private: bool,
) -> None:
    """Create a .torrent file for PATH (a file or a folder)."""
    try:
        torrent = create_torrent(path, trackers=trackers, piece_length=piece_size, private=private)
        output = output or Path(f"{torrent.name}.torrent")
        output.write_bytes(torrent.to_bytes())
    except ShoalError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}")
    click.echo(f"{inert(str(output))}  {torrent.info_hash_hex}")


@main.command()
@click.argument("torrent_file", type=click.Path(path_type=Path))
def info(torrent_file: Path) -> None:
    """Show a .torrent file's name, size, files, info-hash and magnet link."""
    try:
        torrent = load_torrent(torrent_file)
    except ShoalError as exc:
        fail(str(exc))
    click.echo(f"name:       {inert(torrent.name)}")
    click.echo(f"size:       {human_size(torrent.total_length)} ({torrent.total_length} bytes)")
    click.echo(f"pieces:     {torrent.num_pieces} x {human_size(torrent.piece_length)}")
    click.echo(f"info-hash:  {torrent.info_hash_hex}")
    click.echo(f"private:    {'yes' if torrent.private else 'no'}")
    for tier in torrent.trackers:
        click.echo(f"tracker:    {inert(' '.join(tier))}")
    click.echo(f"magnet:     {torrent.magnet()}")
    click.echo("files:")
    for entry in torrent.files:
        if not entry.padding:
            click.echo(f"  {human_size(entry.length):>10}  {inert('/'.join(entry.path))}")


async def serve(
    torrent: Torrent,
    data_dir: Path,
    port: int | None,
    sources: Sources,
    upload_limit: int | None,
    encryption: str,
    announce: Callable[[Node], None] | None = None,
    list_in_dht: bool = False,
) -> None:
    """Seed a torrent until SIGINT or SIGTERM; with a hub, keep its listing published there,
    and with list_in_dht in the DHT's keyword index."""
    node = sources.node(port, encryption, upload_limit)
    stop = until_signal(node)
    await node.start()
    sources.add_tiers(torrent.trackers)
    listing: asyncio.Task[None] | None = None
    dht_listing: asyncio.Future[None] | None = None
    try:
        task = await node.add(
            torrent.info_hash, torrent, data_dir, sources.peers, trackers=sources.tiers
        )
        if not task.swarm or not task.swarm.complete:
            missing = torrent.num_pieces - (task.swarm.have_count if task.swarm else 0)
            raise ShoalError(
                f"{data_dir} does not hold all of {torrent.name}: {missing} of"
                f" {torrent.num_pieces} pieces are missing or damaged"
            )
        if sources.hub:
            listing = asyncio.ensure_future(keep_published(sources.hub, torrent))
            listing.add_done_callback(report_listing_failure)
        if announce is not None:
            announce(node)
        if list_in_dht and node.dht is not None and not torrent.private:
            dht_listing = asyncio.ensure_future(keep_listed_in_dht(node.dht, torrent))
            dht_listing.add_done_callback(report_listing_failure)
        click.echo(f"seeding {inert(torrent.name)} on port {node.port}", err=True)
        await first_of(stop, task.stopped)
        if task.failed is not None:
            raise task.failed
    finally:
        if dht_listing is not None:
            dht_listing.cancel()  # a DHT listing cannot be withdrawn: it expires in an hour
        if listing is not None:
            listing.cancel()
            await withdraw_quietly(sources.hub, torrent)
        await node.stop()


async def keep_published(hub: str, torrent: Torrent) -> None:
    """Publish the torrent's listing on the hub and refresh it before it expires."""
    # The hub's client stack (aiohttp, cryptography) is imported only by commands that use it.
    from ..hub import client as hub_client
    from ..identity import Identity

    identity = Identity.load_or_create()
    failures = 0
    while True:
        try:
            await hub_client.publish(hub, identity, torrent, ttl=LISTING_TTL)
            click.echo(f"listed {inert(torrent.name)} on {hub}", err=True)
            failures = 0
        except ShoalError as exc:
            # The swarm goes on without the hub; try again soon, then less and less often.
            click.echo(f"shoal: {inert(str(exc))}", err=True)
            failures += 1
        delay = LISTING_REFRESH if not failures else min(LISTING_REFRESH, 15 * 2**failures)
        await asyncio.sleep(delay)


async def keep_listed_in_dht(dht: DhtService, torrent: Torrent) -> None:
    """List the torrent in the DHT's keyword index under its name's words, signed by this
    node's identity, and again before the listing expires."""
    from ..dht.listings import REPUBLISH_INTERVAL, sign_listing
    from ..identity import Identity

    identity = Identity.load_or_create()
    files = ["/".join(entry.path) for entry in torrent.files if not entry.padding]
    while True:
        published = int(time.time())
        size = torrent.total_length
        dht.publish(sign_listing(identity, torrent.info_hash, torrent.name, size, files, published))
        await asyncio.sleep(REPUBLISH_INTERVAL)


def report_listing_failure(listing: asyncio.Task[None]) -> None:
    """Say why publishing stopped for good (a broken identity file, say)."""
    if not listing.cancelled() and listing.exception() is not None:
        click.echo(f"shoal: not listed: {inert(str(listing.exception()))}", err=True)


async def withdraw_quietly(hub: str | None, torrent: Torrent) -> None:
    """Take the listing off the hub, as a user logging off; failure only means it expires."""
    if hub is None:
        return
    from ..hub import client as hub_client
    from ..identity import Identity

    with contextlib.suppress(ShoalError, asyncio.TimeoutError):
        await asyncio.wait_for(
            hub_client.withdraw(hub, Identity.load_or_create(), torrent.info_hash), 3.0
        )


@main.command()
@click.argument("torrent_file", type=click.Path(path_type=Path))
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=None, help=PORT_HELP)
@peer_option
@tracker_option
@hub_option
@dht_options
@overlay_options
@rate_option("up")
@encryption_option
def seed(
    torrent_file: Path,
    data_dir: Path,
    port: int | None,
    peers: tuple[str, ...],
    trackers: tuple[str, ...],
    hub: str | None,
    dht_bootstrap: tuple[str, ...],
    no_dht: bool,
    dht_read_only: bool,
    overlay_peers: tuple[str, ...],
    overlay_leaf: bool,
    no_overlay: bool,
    up_limit: int | None,
    encryption: str,
) -> None:
    """Seed TORRENT_FILE from DATA_DIR until interrupted."""
    try:
        torrent = load_torrent(torrent_file)
    except ShoalError as exc:
        fail(str(exc))
    sources = Sources.from_options(
        peers,
        trackers,
        hub,
        DhtChoice(dht_bootstrap, no_dht, dht_read_only),
        OverlayChoice(overlay_peers, overlay_leaf, no_overlay),
    )
    run(lambda: serve(torrent, data_dir, port, sources, kib(up_limit), encryption))


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=None, help=PORT_HELP)
@tracker_option
@hub_option
@dht_options
@overlay_options
@rate_option("up")
@encryption_option
def share(
    path: Path,
    port: int | None,
    trackers: tuple[str, ...],
    hub: str | None,
    dht_bootstrap: tuple[str, ...],
    no_dht: bool,
    dht_read_only: bool,
    overlay_peers: tuple[str, ...],
    overlay_leaf: bool,
    no_overlay: bool,
    up_limit: int | None,
    encryption: str,
) -> None:
    """Make a torrent of PATH, print its magnet link and seed it (and list it on a hub)."""
    sources = Sources.from_options(
        (),
        trackers,
        hub,
        DhtChoice(dht_bootstrap, no_dht, dht_read_only),
        OverlayChoice(overlay_peers, overlay_leaf, no_overlay),
    )
    try:
        torrent = create_torrent(path, trackers=[url for tier in sources.tiers for url in tier])
    except ShoalError as exc:
        fail(str(exc))

    def announce(node: Node) -> None:
        click.echo(torrent.magnet(peers=[("127.0.0.1", node.port)]))
        sys.stdout.flush()

    folder = path.resolve().parent
    run(
        lambda: serve(
            torrent, folder, port, sources, kib(up_limit), encryption, announce, list_in_dht=True
        )
    )


@main.command()
@click.argument("source")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    help="Download folder (default: the current folder).",
)
@peer_option
@tracker_option
@hub_option
@dht_options
@overlay_options
@click.option("--port", type=click.IntRange(0, 65535), default=None, help=PORT_HELP)
@click.option("--seed", "keep_seeding", is_flag=True, help="Keep seeding after the download.")
@rate_option("up")
@rate_option("down")
@encryption_option
def get(
    source: str,
    output: Path,
    peers: tuple[str, ...],
    trackers: tuple[str, ...],
    hub: str | None,
    dht_bootstrap: tuple[str, ...],
    no_dht: bool,
    dht_read_only: bool,
    overlay_peers: tuple[str, ...],
    overlay_leaf: bool,
    no_overlay: bool,
    port: int | None,
    keep_seeding: bool,
    up_limit: int | None,
    down_limit: int | None,
    encryption: str,
) -> None:
    """Download SOURCE (a .torrent file, a magnet link or an info-hash) into the output folder."""
    sources = Sources.from_options(
        peers,
        trackers,
        hub,
        DhtChoice(dht_bootstrap, no_dht, dht_read_only),
        OverlayChoice(overlay_peers, overlay_leaf, no_overlay),
    )
    torrent: Torrent | None = None
    name: str | None = None
    try:
        if is_magnet(source):
            magnet = parse_magnet(source)
            info_hash, name = magnet.info_hash, magnet.display_name
            sources.peers += [a for a in magnet.peers if a not in sources.peers]
            sources.add_tiers([[url] for url in magnet.trackers])
        elif INFO_HASH.fullmatch(source):
            info_hash = bytes.fromhex(source)
        else:
            torrent = load_torrent(Path(source))
            info_hash, name = torrent.info_hash, torrent.name
            sources.add_tiers(torrent.trackers)
    except ShoalError as exc:
        fail(str(exc))
    overlay_peers_given = sources.overlay is not None and sources.overlay.peers
    if not (sources.peers or sources.tiers or sources.dht_routers or overlay_peers_given):
        fail(
            "no way to find peers: give --peer HOST:PORT, --tracker URL, --hub URL or"
            " --overlay-peer HOST:PORT, or leave the DHT on"
        )
    output.mkdir(parents=True, exist_ok=True)
    code = run(
        lambda: download(
            info_hash,
            torrent,
            name,
            output,
            sources,
            port,
            keep_seeding,
            kib(up_limit),
            kib(down_limit),
            encryption,
        )
    )
    sys.exit(code)


async def download(
    info_hash: bytes,
    torrent: Torrent | None,
    name: str | None,
    output: Path,
    sources: Sources,
    port: int | None,
    keep_seeding: bool,
    upload_limit: int | None,
    download_limit: int | None,
    encryption: str,
) -> int:
    """Download until every piece is verified; returns the exit status."""
    node = sources.node(port, encryption, upload_limit, download_limit)
    stop = until_signal(node)
    await node.start()
    try:
        task = await node.add(info_hash, torrent, output, sources.peers, trackers=sources.tiers)
        with Progress(task, name or info_hash.hex()) as progress:
            await first_of(stop, task.completed, task.stopped)
            progress.finish()
        if task.failed is not None:
            raise task.failed
        if not task.completed.is_set():
            click.echo(f"shoal: {STOPPED}", err=True)
            return INTERRUPTED
        assert task.torrent is not None
        fetched = task.swarm.downloaded if task.swarm else 0
        click.echo(
            f"done: {inert(task.torrent.name)} ({human_size(task.torrent.total_length)})"
            f" in {inert(str(output))};"
            f" fetched {fetched} bytes from peers this run"
        )
        if keep_seeding:
            click.echo(f"seeding {inert(task.torrent.name)} on port {node.port}", err=True)
            await first_of(stop, task.stopped)
            if task.failed is not None:
                raise task.failed
        return 0
    finally:
        await node.stop()
