"""The shoal command: create, inspect, share, seed and get torrents."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .errors import ShoalError, inert
from .hub.urls import announce_url, base_url
from .metainfo import MetainfoError, Torrent, create_torrent, is_magnet, load_torrent, parse_magnet
from .metainfo.magnet import parse_peer
from .node import Node
from .progress import Progress, human_size, results_table, wide_console
from .storage.files import RecheckStopped
from .storage.resume import state_dir
from .swarm.sources import ENCRYPTION_POLICIES

if TYPE_CHECKING:
    from .hub.client import SearchResult
    from .node.dht import DhtService

T = TypeVar("T")
INTERRUPTED = 130
INFO_HASH = re.compile(r"[0-9a-fA-F]{40}")
HUB_PORT = 6969
# Listings live an hour on the hub unless refreshed, and are refreshed every half hour.
LISTING_TTL = 3600
LISTING_REFRESH = 1800
# A DHT search gives up after this long (a lookup ends in 30 s at most, and counts follow).
SEARCH_TIMEOUT = 60.0
PORT_HELP = "TCP port to listen on (default: 6881, or any free port if that is taken)."


def fail(message: str, code: int = 1) -> None:
    """Print one plain sentence and exit."""
    # Messages quote names and paths from torrents and peers: never let them drive the terminal.
    click.echo(f"shoal: {inert(message)}", err=True)
    sys.exit(code)


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on uvloop when available, turning shoal errors into one-line exits."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        result: T = runner(main())
        return result
    except RecheckStopped:
        fail(STOPPED, INTERRUPTED)  # a signal during the start-up check
    except ShoalError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
    raise AssertionError("unreachable")


def peer_addresses(values: tuple[str, ...]) -> list[tuple[str, int]]:
    """Parse --peer HOST:PORT options."""
    try:
        return [parse_peer(value) for value in values]
    except MetainfoError as exc:
        raise click.BadParameter(str(exc), param_hint="--peer") from None


def until_signal(node: Node | None = None) -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, which also halts the node's start-up work."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def halt() -> None:
        stop.set()
        if node is not None:
            node.halt.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, halt)
    return stop


STOPPED = "stopped; run the same command again to resume"


async def first_of(*events: asyncio.Event) -> None:
    """Wait until any of the events is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    _done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in pending:
        wait.cancel()


def rate_option(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A KiB/s rate-limit option."""
    return click.option(
        f"--{name}-limit",
        type=click.IntRange(min=1),
        default=None,
        metavar="KIB/S",
        help=f"Limit the {name}load rate of this node, in KiB/s.",
    )


def kib(value: int | None) -> int | None:
    """KiB/s to bytes/s."""
    return None if value is None else value * 1024


@click.group()
@click.option("-v", "--verbose", count=True, help="Log more (-vv for debugging).")
@click.version_option(package_name="shoal")
def main(verbose: int) -> None:
    """shoal: a peer-to-peer network that speaks BitTorrent."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


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


@dataclass
class Sources:
    """Where peers come from: addresses given, and tracker tiers (the hub's tracker included)."""

    peers: list[tuple[str, int]] = field(default_factory=list)
    tiers: list[list[str]] = field(default_factory=list)
    hub: str | None = None
    dht_routers: list[tuple[str, int]] | None = None  # None: no DHT
    dht_read_only: bool = False

    @classmethod
    def from_options(
        cls,
        peers: tuple[str, ...],
        trackers: tuple[str, ...],
        hub: str | None,
        dht: DhtChoice,
    ) -> Sources:
        """Build from --peer, --tracker, --hub and the DHT options."""
        sources = cls(peer_addresses(peers), [[url] for url in trackers])
        sources.dht_routers = dht.routers()
        sources.dht_read_only = dht.read_only
        if hub:
            try:
                sources.hub = base_url(hub)
            except ShoalError as exc:
                raise click.BadParameter(str(exc), param_hint="--hub") from None
            sources.add_tiers([[announce_url(hub)]])
        return sources

    def add_tiers(self, tiers: Sequence[Sequence[str]]) -> None:
        """Add tracker tiers, skipping URLs already known."""
        known = {url for tier in self.tiers for url in tier}
        for tier in tiers:
            fresh = [url for url in tier if url not in known]
            if fresh:
                self.tiers.append(fresh)
                known.update(fresh)


@dataclass(frozen=True)
class DhtChoice:
    """--dht-bootstrap HOST:PORT (repeatable), --no-dht and --dht-read-only."""

    bootstrap: tuple[str, ...] = ()
    off: bool = False
    read_only: bool = False

    def routers(self) -> list[tuple[str, int]] | None:
        """Where to join the DHT: the nodes given, else the public routers; None if off."""
        if self.off:
            for given, option in (
                (self.bootstrap, "--dht-bootstrap"),
                (self.read_only, "--dht-read-only"),
            ):
                if given:
                    raise click.UsageError(f"--no-dht and {option} contradict each other")
            return None
        if not self.bootstrap:
            from .node.dht import PUBLIC_ROUTERS

            return list(PUBLIC_ROUTERS)
        try:
            return [parse_peer(value) for value in self.bootstrap]
        except MetainfoError as exc:
            raise click.BadParameter(str(exc), param_hint="--dht-bootstrap") from None


def dht_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--dht-bootstrap HOST:PORT (repeatable), --no-dht and --dht-read-only."""
    command = click.option(
        "--dht-read-only",
        is_flag=True,
        help="Ask the DHT but never answer it, staying out of other nodes' tables (BEP 43).",
    )(command)
    command = click.option("--no-dht", is_flag=True, help="Do not use the DHT (BEP 5).")(command)
    return click.option(
        "--dht-bootstrap",
        multiple=True,
        metavar="HOST:PORT",
        help="A DHT node to join through (repeatable; default: the public routers).",
    )(command)


def peer_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--peer HOST:PORT (repeatable)."""
    return click.option(
        "--peer", "peers", multiple=True, metavar="HOST:PORT", help="A peer to connect to."
    )(command)


def tracker_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--tracker URL (repeatable)."""
    return click.option(
        "--tracker", "trackers", multiple=True, metavar="URL", help="A tracker URL (repeatable)."
    )(command)


def encryption_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--encryption prefer|require|off."""
    return click.option(
        "--encryption",
        type=click.Choice(ENCRYPTION_POLICIES),
        default="prefer",
        show_default=True,
        help="Protocol encryption (MSE/PE): prefer accepts both and dials plaintext first, then"
        " encrypted; require speaks only RC4; off only plaintext.",
    )(command)


def hub_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--hub URL."""
    return click.option("--hub", metavar="URL", help="A shoal hub, e.g. http://host:6969.")(command)


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
    node = Node(
        port=port,
        upload_limit=upload_limit,
        encryption=encryption,
        dht_routers=sources.dht_routers,
        dht_read_only=sources.dht_read_only,
        state=state_dir(),
    )
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
    from .hub import client as hub_client
    from .identity import Identity

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
    from .dht.listings import REPUBLISH_INTERVAL, sign_listing
    from .identity import Identity

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
    from .hub import client as hub_client
    from .identity import Identity

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
    up_limit: int | None,
    encryption: str,
) -> None:
    """Seed TORRENT_FILE from DATA_DIR until interrupted."""
    try:
        torrent = load_torrent(torrent_file)
    except ShoalError as exc:
        fail(str(exc))
    sources = Sources.from_options(
        peers, trackers, hub, DhtChoice(dht_bootstrap, no_dht, dht_read_only)
    )
    run(lambda: serve(torrent, data_dir, port, sources, kib(up_limit), encryption))


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=None, help=PORT_HELP)
@tracker_option
@hub_option
@dht_options
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
    up_limit: int | None,
    encryption: str,
) -> None:
    """Make a torrent of PATH, print its magnet link and seed it (and list it on a hub)."""
    sources = Sources.from_options(
        (), trackers, hub, DhtChoice(dht_bootstrap, no_dht, dht_read_only)
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
    port: int | None,
    keep_seeding: bool,
    up_limit: int | None,
    down_limit: int | None,
    encryption: str,
) -> None:
    """Download SOURCE (a .torrent file, a magnet link or an info-hash) into the output folder."""
    sources = Sources.from_options(
        peers, trackers, hub, DhtChoice(dht_bootstrap, no_dht, dht_read_only)
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
    if not sources.peers and not sources.tiers and sources.dht_routers is None:
        fail(
            "no way to find peers: give --peer HOST:PORT, --tracker URL or --hub URL,"
            " or leave the DHT on"
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
    node = Node(
        port=port,
        upload_limit=upload_limit,
        download_limit=download_limit,
        encryption=encryption,
        dht_routers=sources.dht_routers,
        dht_read_only=sources.dht_read_only,
        state=state_dir(),
    )
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


@main.command()
@click.argument("words", nargs=-1, required=True)
@click.option("--hub", metavar="URL", help="The hub to search, e.g. http://host:6969.")
@click.option(
    "--via",
    type=click.Choice(["hub", "dht"]),
    help="Where to search (default: the hub if --hub is given, else the DHT).",
)
@dht_options
@click.option("--limit", type=click.IntRange(1, 200), default=50, help="At most this many results.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def search(
    words: tuple[str, ...],
    hub: str | None,
    via: str | None,
    dht_bootstrap: tuple[str, ...],
    no_dht: bool,
    dht_read_only: bool,
    limit: int,
    as_json: bool,
) -> None:
    """Search a hub's index or the DHT for WORDS; prints name, size, seeders and info-hash."""
    from .hub import client as hub_client

    via = via or ("hub" if hub else "dht")
    query = " ".join(words)
    if via == "hub":
        if not hub:
            raise click.UsageError("--via hub needs --hub URL")
        results = run(lambda: hub_client.search(hub, query, limit=limit))
    else:
        routers = DhtChoice(dht_bootstrap, no_dht, dht_read_only).routers()
        if routers is None:
            raise click.UsageError("--via dht needs the DHT: drop --no-dht")
        results = run(lambda: search_dht(query, routers, limit, read_only=dht_read_only))
    if as_json:
        rows = [{**dataclasses.asdict(r), "info_hash": r.info_hash.hex()} for r in results]
        click.echo(json.dumps(rows, indent=2))
        return
    if not results:
        click.echo("no results", err=True)
        return
    wide_console().print(results_table(results))


async def search_dht(
    query: str, routers: list[tuple[str, int]], limit: int, *, read_only: bool = False
) -> list[SearchResult]:
    """Search the DHT's keyword index; seeders are the peers the DHT knows of each result."""
    from .hub.client import SearchResult

    # No state: a search leaves nothing behind.
    node = Node(port=0, dht_routers=routers, dht_read_only=read_only)
    await node.start()
    try:
        assert node.dht is not None
        try:
            found = (await asyncio.wait_for(node.dht.search(query), SEARCH_TIMEOUT))[:limit]
        except TimeoutError:
            raise ShoalError(
                f"no answer from the DHT in {SEARCH_TIMEOUT:.0f} s: are its bootstrap nodes up?"
            ) from None
        publishers: dict[bytes, set[bytes]] = {}
        for listing in found:
            publishers.setdefault(listing.info_hash, set()).add(listing.public_key)
        unique = list({listing.info_hash: listing for listing in found}.values())
        counts = await asyncio.gather(*(node.dht.count_peers(item.info_hash) for item in unique))
        return [
            SearchResult(
                listing.info_hash,
                listing.name,
                listing.size,
                len(listing.files),
                peers,
                0,
                len(publishers[listing.info_hash]),
            )
            for listing, peers in zip(unique, counts, strict=True)
        ]
    finally:
        await node.stop()


@main.command()
@click.option("--host", default="::", help="Address to listen on (default: all, IPv4 and IPv6).")
@click.option("--port", type=click.IntRange(1, 65535), default=HUB_PORT, help="TCP and UDP port.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="Index database.")
@click.option(
    "--allow",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Only track the info-hashes listed in this file (40 hex digits a line).",
)
def hub(host: str, port: int, db: Path | None, allow: Path | None) -> None:
    """Run a hub: a BitTorrent tracker and a keyword index, until interrupted."""
    from .hub.server import Hub, run_hub

    db_path = db or state_dir() / "hub.db"

    def ready(hub: Hub) -> None:
        # What to paste into another command: a wildcard address is reached on loopback.
        shown = hub.url.replace("[::]", "127.0.0.1").replace("0.0.0.0", "127.0.0.1")
        click.echo(
            f"hub at {shown} (tracker {shown}/announce and"
            f" {shown.replace('http', 'udp', 1)}/announce; index in {db_path})",
            err=True,
        )

    async def serve_hub() -> None:
        await run_hub(host, port, db_path, allow=allow, stop=until_signal(), ready=ready)

    run(serve_hub)


@main.command()
@click.option("--port", type=click.IntRange(0, 65535), default=None, help=PORT_HELP)
@click.option(
    "--dht-bootstrap",
    multiple=True,
    metavar="HOST:PORT",
    help="A DHT node to join through (repeatable; none: this node starts a network).",
)
def dht(port: int | None, dht_bootstrap: tuple[str, ...]) -> None:
    """Run a DHT node and nothing else (a bootstrap node for a private network) until
    interrupted."""
    routers = DhtChoice(dht_bootstrap).routers() if dht_bootstrap else []

    async def serve_dht() -> None:
        # A table of its own: one saved by a seed or get on this port may hold public nodes.
        node = Node(port=port, dht_routers=routers, state=state_dir() / "dht-node")
        stop = until_signal(node)
        await node.start()
        try:
            assert node.dht is not None and node.dht.core is not None
            click.echo(
                f"DHT node on port {node.port} (UDP), id {node.dht.core.node_id.hex()}", err=True
            )
            await stop.wait()
        finally:
            await node.stop()

    run(serve_dht)


@main.command()
@click.option("--leechers", type=click.IntRange(1, 20), default=4, help="How many leechers.")
@click.option("--size-mib", type=click.IntRange(1, 4096), default=24, help="Size of the file.")
def demo(leechers: int, size_mib: int) -> None:
    """Run a swarm on loopback: one seeder, several leechers trading pieces."""
    from .demo import run_demo

    run(lambda: run_demo(leechers=leechers, size=size_mib * 1024 * 1024))


@main.group()
def sim() -> None:
    """Run the real cores by the thousand on a simulated network and clock."""


class FiniteRange(click.FloatRange):
    """A number in a range; nan, which compares false with every bound, is refused."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The number, or a usage error."""
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a number", param, ctx)
        return number


def scenario_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--session-shape, --seed and --json, which every simulated scenario takes."""
    command = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(
        command
    )
    command = click.option(
        "--seed", type=click.IntRange(0, 2**63), default=1, help="Seed of every random choice."
    )(command)
    return click.option(
        "--session-shape",
        type=FiniteRange(0.1, 10),
        default=1.0,
        help="Weibull shape of session lengths (1: exponential; measured P2P traces: 0.3-0.6).",
    )(command)


@sim.command("swarm")
@click.option(
    "--nodes",
    type=click.IntRange(2, 5000),
    default=100,
    help="Nodes, the seeder too (1,000 take about a minute, 5,000 several and 4 GiB).",
)
@click.option("--size-mib", type=click.IntRange(1, 256), default=4, help="Size of the torrent.")
@click.option(
    "--churn",
    type=FiniteRange(0, 100),
    default=0.0,
    help="Departures per leecher per simulated second (0: nobody leaves).",
)
@scenario_options
def sim_swarm(
    nodes: int, size_mib: int, churn: float, session_shape: float, seed: int, as_json: bool
) -> None:
    """One seeder and NODES - 1 leechers joining within 10 s, until every live leecher is done."""
    from .sim.scenario import run_swarm

    report = run_swarm(
        nodes, size_mib * 1024 * 1024, churn=churn, seed=seed, session_shape=session_shape
    )
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    spread = report.completion_seconds
    click.echo(
        f"{report.nodes} nodes, {human_size(report.size_bytes)}, churn {report.churn:g}/s,"
        f" seed {report.seed}"
    )
    click.echo(
        f"simulated {report.simulated_seconds:.1f} s in {report.wall_seconds:.1f} s of wall time;"
        f" {report.events} events, {human_size(report.bytes_moved)} moved"
    )
    click.echo(
        f"completed {report.completed}, left early {report.departed},"
        f" unfinished {report.unfinished}"
    )
    if spread:
        click.echo(
            "completion times (s): "
            + ", ".join(f"{name} {value:.1f}" for name, value in spread.items())
        )


@sim.command("dht")
@click.option("--nodes", type=click.IntRange(2, 20_000), default=1000, help="DHT nodes.")
@click.option(
    "--churn",
    type=FiniteRange(0, 1),
    default=0.0,
    help="Share of the nodes that leave, each replaced by a newcomer, during the lookups.",
)
@click.option("--lookups", type=click.IntRange(1, 100_000), default=100, help="Lookups to run.")
@scenario_options
def sim_dht(
    nodes: int, churn: float, lookups: int, session_shape: float, seed: int, as_json: bool
) -> None:
    """A DHT of NODES nodes joining, settling, then random lookups while nodes come and go."""
    from .sim.dht import run_dht

    report = run_dht(nodes, churn, lookups, seed, session_shape)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    click.echo(
        f"{report.nodes} DHT nodes, churn {report.churn:g} ({report.departed} replaced),"
        f" seed {report.seed}"
    )
    click.echo(
        f"simulated {report.simulated_seconds:.1f} s in {report.wall_seconds:.1f} s of wall time;"
        f" {report.events} events, {report.datagrams} datagrams"
    )
    click.echo(
        f"lookups: {report.completed} of {report.lookups} completed,"
        f" {report.success_rate:.1%} reached the closest live node,"
        f" {report.timed_out} ran out of time"
    )
    for label, figures in (
        ("hops", report.hops),
        ("messages per lookup", report.messages_per_lookup),
        ("latency (s)", report.latency_seconds),
    ):
        click.echo(f"{label}: " + ", ".join(f"{k} {v:g}" for k, v in figures.items()))
