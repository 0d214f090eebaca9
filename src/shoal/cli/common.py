"""What every shoal command shares: the group, one-sentence failures, the event loop, and the
options that say where peers come from."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import ShoalError, inert
from ..hub.urls import announce_url, base_url
from ..metainfo import MetainfoError
from ..metainfo.magnet import parse_peer
from ..node import Node
from ..search import SEARCH_TIMEOUT, joined
from ..storage.files import RecheckStopped
from ..storage.resume import state_dir
from ..swarm.sources import ENCRYPTION_POLICIES

if TYPE_CHECKING:
    from ..node.dht import DhtService
    from ..node.overlay import OverlayOptions


T = TypeVar("T")
INTERRUPTED = 130
INFO_HASH = re.compile(r"[0-9a-fA-F]{40}")
HUB_PORT = 6969
# Listings live an hour on the hub unless refreshed, and are refreshed every half hour.
LISTING_TTL = 3600
LISTING_REFRESH = 1800
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


@dataclass
class Sources:
    """Where peers come from: addresses given, and tracker tiers (the hub's tracker included)."""

    peers: list[tuple[str, int]] = field(default_factory=list)
    tiers: list[list[str]] = field(default_factory=list)
    hub: str | None = None
    dht_routers: list[tuple[str, int]] | None = None  # None: no DHT
    dht_read_only: bool = False
    overlay: OverlayOptions | None = None  # None: no overlay

    @classmethod
    def from_options(
        cls,
        peers: tuple[str, ...],
        trackers: tuple[str, ...],
        hub: str | None,
        dht: DhtChoice,
        overlay: OverlayChoice,
    ) -> Sources:
        """Build from --peer, --tracker, --hub and the DHT and overlay options."""
        sources = cls(peer_addresses(peers), [[url] for url in trackers])
        sources.dht_routers = dht.routers()
        sources.dht_read_only = dht.read_only
        sources.overlay = overlay.options()
        if hub:
            sources.hub = checked_hub(hub)
            sources.add_tiers([[announce_url(hub)]])
            if sources.overlay is not None:
                # Ultrapeers meet on the hub's tracker (see node/rendezvous).
                sources.overlay = replace(sources.overlay, hub=sources.hub)
        return sources

    def add_tiers(self, tiers: Sequence[Sequence[str]]) -> None:
        """Add tracker tiers, skipping URLs already known."""
        known = {url for tier in self.tiers for url in tier}
        for tier in tiers:
            fresh = [url for url in tier if url not in known]
            if fresh:
                self.tiers.append(fresh)
                known.update(fresh)

    def node(
        self,
        port: int | None,
        encryption: str,
        upload_limit: int | None,
        download_limit: int | None = None,
    ) -> Node:
        """A node with these sources' DHT and overlay settings and the state folder."""
        return Node(
            port=port,
            upload_limit=upload_limit,
            download_limit=download_limit,
            encryption=encryption,
            dht_routers=self.dht_routers,
            dht_read_only=self.dht_read_only,
            state=state_dir(),
            overlay=self.overlay,
        )


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
            from ..node.dht import PUBLIC_ROUTERS

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


@dataclass(frozen=True)
class OverlayChoice:
    """--overlay-peer HOST:PORT (repeatable), --overlay-leaf and --no-overlay."""

    peers: tuple[str, ...] = ()
    leaf: bool = False
    off: bool = False

    def addresses(self) -> list[tuple[str, int]]:
        """The --overlay-peer addresses."""
        try:
            return [parse_peer(value) for value in self.peers]
        except MetainfoError as exc:
            raise click.BadParameter(str(exc), param_hint="--overlay-peer") from None

    def options(self) -> OverlayOptions | None:
        """How the node joins the overlay; None if it is off."""
        from ..node.overlay import OverlayOptions

        if self.off:
            for given, option in ((self.peers, "--overlay-peer"), (self.leaf, "--overlay-leaf")):
                if given:
                    raise click.UsageError(f"--no-overlay and {option} contradict each other")
            return None
        return OverlayOptions(tuple(self.addresses()), self.leaf)


def overlay_peer_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--overlay-peer HOST:PORT (repeatable)."""
    return click.option(
        "--overlay-peer",
        "overlay_peers",
        multiple=True,
        metavar="HOST:PORT",
        help="An overlay ultrapeer to link to first (repeatable).",
    )(command)


def overlay_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--overlay-peer HOST:PORT (repeatable), --overlay-leaf and --no-overlay."""
    command = click.option(
        "--no-overlay", is_flag=True, help="Do not join the Gnutella-style overlay."
    )(command)
    command = click.option(
        "--overlay-leaf",
        is_flag=True,
        help="Join the overlay as a leaf (linked to a few ultrapeers, never forwarding).",
    )(command)
    return overlay_peer_option(command)


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


async def with_dht(routers: list[tuple[str, int]], use: Callable[[DhtService], Awaitable[T]]) -> T:
    """Join the DHT with a node of no state, use it, and stop it. The node is read-only
    (BEP 43): a node that lives for one request should stay out of others' tables."""
    node = Node(port=0, dht_routers=routers, dht_read_only=True)
    await node.start()
    try:
        assert node.dht is not None
        await joined(node.dht.joined(), "DHT node", routers)
        try:
            return await asyncio.wait_for(use(node.dht), SEARCH_TIMEOUT)
        except TimeoutError:
            raise ShoalError(f"no answer from the DHT in {SEARCH_TIMEOUT:.0f} s") from None
    finally:
        await node.stop()


def checked_hub(hub: str) -> str:
    """The hub's base URL from --hub as typed; a usage error if it cannot be one."""
    try:
        return base_url(hub)
    except ShoalError as exc:
        raise click.BadParameter(str(exc), param_hint="--hub") from None
