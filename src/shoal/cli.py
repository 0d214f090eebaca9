"""The shoal command: create, inspect, share, seed and get torrents."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .errors import ShoalError
from .metainfo import MetainfoError, Torrent, create_torrent, is_magnet, load_torrent, parse_magnet
from .metainfo.magnet import parse_peer
from .node import Node
from .progress import Progress

T = TypeVar("T")
INTERRUPTED = 130
PORT_HELP = "TCP port to listen on (default: 6881, or any free port if that is taken)."


def fail(message: str, code: int = 1) -> None:
    """Print one plain sentence and exit."""
    click.echo(f"shoal: {message}", err=True)
    sys.exit(code)


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on uvloop when available, turning shoal errors into one-line exits."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return runner(main())
    except ShoalError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
    raise AssertionError("unreachable")


def peer_addresses(values: tuple[str, ...]) -> list[tuple[str, int]]:
    """Parse --peer HOST:PORT options."""
    try:
        return [parse_peer(value) for value in values]
    except MetainfoError:
        raise click.BadParameter("expected HOST:PORT", param_hint="--peer") from None


def until_signal() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


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
    click.echo(f"{output}  {torrent.info_hash_hex}")


@main.command()
@click.argument("torrent_file", type=click.Path(path_type=Path))
def info(torrent_file: Path) -> None:
    """Show a .torrent file's name, size, files, info-hash and magnet link."""
    try:
        torrent = load_torrent(torrent_file)
    except ShoalError as exc:
        fail(str(exc))
    click.echo(f"name:       {torrent.name}")
    click.echo(f"size:       {human_size(torrent.total_length)} ({torrent.total_length} bytes)")
    click.echo(f"pieces:     {torrent.num_pieces} x {human_size(torrent.piece_length)}")
    click.echo(f"info-hash:  {torrent.info_hash_hex}")
    click.echo(f"private:    {'yes' if torrent.private else 'no'}")
    for tier in torrent.trackers:
        click.echo(f"tracker:    {' '.join(tier)}")
    click.echo(f"magnet:     {torrent.magnet()}")
    click.echo("files:")
    for entry in torrent.files:
        if not entry.padding:
            click.echo(f"  {human_size(entry.length):>10}  {'/'.join(entry.path)}")


def human_size(size: float) -> str:
    """Bytes in a unit a person reads easily."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


async def serve(
    torrent: Torrent,
    data_dir: Path,
    port: int | None,
    peers: list[tuple[str, int]],
    upload_limit: int | None,
    announce: Callable[[Node], None] | None = None,
) -> None:
    """Seed a torrent until SIGINT or SIGTERM."""
    stop = until_signal()
    node = Node(port=port, upload_limit=upload_limit)
    await node.start()
    try:
        task = await node.add(torrent.info_hash, torrent, data_dir, peers)
        if not task.swarm or not task.swarm.complete:
            missing = torrent.num_pieces - (task.swarm.have_count if task.swarm else 0)
            raise ShoalError(
                f"{data_dir} does not hold all of {torrent.name}: {missing} of"
                f" {torrent.num_pieces} pieces are missing or damaged"
            )
        if announce is not None:
            announce(node)
        click.echo(f"seeding {torrent.name} on port {node.port}", err=True)
        await first_of(stop, task.stopped)
        if task.failed is not None:
            raise task.failed
    finally:
        await node.stop()


@main.command()
@click.argument("torrent_file", type=click.Path(path_type=Path))
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=None, help=PORT_HELP)
@click.option("--peer", "peers", multiple=True, metavar="HOST:PORT", help="A peer to connect to.")
@rate_option("up")
def seed(
    torrent_file: Path,
    data_dir: Path,
    port: int | None,
    peers: tuple[str, ...],
    up_limit: int | None,
) -> None:
    """Seed TORRENT_FILE from DATA_DIR until interrupted."""
    try:
        torrent = load_torrent(torrent_file)
    except ShoalError as exc:
        fail(str(exc))
    addresses = peer_addresses(peers)
    run(lambda: serve(torrent, data_dir, port, addresses, kib(up_limit)))


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=None, help=PORT_HELP)
@click.option(
    "--tracker", "trackers", multiple=True, metavar="URL", help="Announce URL (repeatable)."
)
@rate_option("up")
def share(path: Path, port: int | None, trackers: tuple[str, ...], up_limit: int | None) -> None:
    """Make a torrent of PATH, print its magnet link and seed it."""
    try:
        torrent = create_torrent(path, trackers=trackers)
    except ShoalError as exc:
        fail(str(exc))

    def announce(node: Node) -> None:
        click.echo(torrent.magnet(peers=[("127.0.0.1", node.port)]))
        sys.stdout.flush()

    run(lambda: serve(torrent, path.resolve().parent, port, [], kib(up_limit), announce))


@main.command()
@click.argument("source")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    help="Download folder (default: the current folder).",
)
@click.option("--peer", "peers", multiple=True, metavar="HOST:PORT", help="A peer to connect to.")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help=PORT_HELP)
@click.option("--seed", "keep_seeding", is_flag=True, help="Keep seeding after the download.")
@rate_option("up")
@rate_option("down")
def get(
    source: str,
    output: Path,
    peers: tuple[str, ...],
    port: int | None,
    keep_seeding: bool,
    up_limit: int | None,
    down_limit: int | None,
) -> None:
    """Download SOURCE (a .torrent file or a magnet link) into the output folder."""
    addresses = peer_addresses(peers)
    try:
        if is_magnet(source):
            magnet = parse_magnet(source)
            info_hash, torrent, name = magnet.info_hash, None, magnet.display_name
            addresses += [a for a in magnet.peers if a not in addresses]
        else:
            torrent = load_torrent(Path(source))
            info_hash, name = torrent.info_hash, torrent.name
    except ShoalError as exc:
        fail(str(exc))
    if not addresses:
        fail("no peers to download from: give --peer HOST:PORT or a magnet link with x.pe")
    output.mkdir(parents=True, exist_ok=True)
    code = run(
        lambda: download(
            info_hash,
            torrent,
            name,
            output,
            addresses,
            port,
            keep_seeding,
            kib(up_limit),
            kib(down_limit),
        )
    )
    sys.exit(code)


async def download(
    info_hash: bytes,
    torrent: Torrent | None,
    name: str | None,
    output: Path,
    peers: list[tuple[str, int]],
    port: int | None,
    keep_seeding: bool,
    upload_limit: int | None,
    download_limit: int | None,
) -> int:
    """Download until every piece is verified; returns the exit status."""
    stop = until_signal()
    node = Node(port=port, upload_limit=upload_limit, download_limit=download_limit)
    await node.start()
    try:
        task = await node.add(info_hash, torrent, output, peers)
        with Progress(task, name or info_hash.hex()) as progress:
            await first_of(stop, task.completed, task.stopped)
            progress.finish()
        if task.failed is not None:
            raise task.failed
        if not task.completed.is_set():
            click.echo("shoal: stopped; run the same command again to resume", err=True)
            return INTERRUPTED
        assert task.torrent is not None
        fetched = task.swarm.downloaded if task.swarm else 0
        click.echo(
            f"done: {task.torrent.name} ({human_size(task.torrent.total_length)}) in {output};"
            f" fetched {fetched} bytes from peers this run"
        )
        if keep_seeding:
            click.echo(f"seeding {task.torrent.name} on port {node.port}", err=True)
            await first_of(stop, task.stopped)
            if task.failed is not None:
                raise task.failed
        return 0
    finally:
        await node.stop()


@main.command()
@click.option("--leechers", type=click.IntRange(1, 20), default=4, help="How many leechers.")
@click.option("--size-mib", type=click.IntRange(1, 4096), default=24, help="Size of the file.")
def demo(leechers: int, size_mib: int) -> None:
    """Run a swarm on loopback: one seeder, several leechers trading pieces."""
    from .demo import run_demo

    run(lambda: run_demo(leechers=leechers, size=size_mib * 1024 * 1024))
