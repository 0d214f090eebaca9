"""search: one query to a hub's index, the keyword index in the DHT, the overlay, or all of
them at once, their results merged by info-hash."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from ..dht.listings import keywords
from ..errors import ShoalError, inert
from ..node import Node
from ..overlay.search import Strategy
from ..progress import human_size, results_table, wide_console
from ..words import name_matches, words

if TYPE_CHECKING:
    from ..hub.client import SearchResult
    from ..node.dht import DhtService
    from ..node.overlay import OverlayService

from .common import (
    SEARCH_TIMEOUT,
    DhtChoice,
    OverlayChoice,
    dht_options,
    fail,
    joined,
    main,
    overlay_peer_option,
    run,
)

ARCHITECTURES = ("hub", "dht", "overlay")
Address = tuple[str, int]


@dataclass
class Merged:
    """One torrent found, and the architectures that found it, in the order they did."""

    result: SearchResult
    via: list[str]


@dataclass
class Plan:
    """What a search asks, and where."""

    query: str
    chosen: list[str]
    hub: str | None = None
    routers: list[Address] | None = None
    overlay_peers: list[Address] = dataclasses.field(default_factory=list)
    strategy: Strategy = Strategy.FLOOD
    limit: int = 50


@main.command()
@click.argument("words_", metavar="WORDS...", nargs=-1, required=True)
@click.option("--hub", metavar="URL", help="The hub to search, e.g. http://host:6969.")
@click.option(
    "--via",
    type=click.Choice([*ARCHITECTURES, "all"]),
    help="Where to search: all asks at once every architecture --hub, --dht-bootstrap and"
    " --overlay-peer name (the default when they name more than one); without any, the DHT.",
)
@click.option(
    "--strategy",
    type=click.Choice([strategy.value for strategy in Strategy]),
    default=Strategy.FLOOD.value,
    show_default=True,
    help="How an overlay search spreads: a flood, random walkers, or dynamic querying.",
)
@dht_options
@overlay_peer_option
@click.option("--limit", type=click.IntRange(1, 200), default=50, help="At most this many results.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def search(
    words_: tuple[str, ...],
    hub: str | None,
    via: str | None,
    strategy: str,
    dht_bootstrap: tuple[str, ...],
    no_dht: bool,
    dht_read_only: bool,
    overlay_peers: tuple[str, ...],
    limit: int,
    as_json: bool,
) -> None:
    """Search a hub's index, the DHT, the overlay, or all at once for WORDS; prints name,
    size, seeders and info-hash (and which architectures found each)."""
    dht = DhtChoice(dht_bootstrap, no_dht, dht_read_only)
    plan = Plan(" ".join(words_), [], hub, dht.routers(), strategy=Strategy(strategy))
    plan.overlay_peers = OverlayChoice(overlay_peers).addresses()
    plan.limit = limit
    plan.chosen = choose(via, plan, dht)
    stream = not as_json and (len(plan.chosen) > 1 or plan.chosen == ["overlay"])

    def show(via: str, result: SearchResult) -> None:
        size = human_size(result.size)
        click.echo(f"{via:<7}  {result.info_hash.hex()}  {size:>10}  {inert(result.name)}")

    merged, failures = run(lambda: search_all(plan, show if stream else None))
    if len(failures) == len(plan.chosen):
        if len(failures) == 1:
            fail(next(iter(failures.values())))
        fail("every search failed: " + "; ".join(f"{k}: {v}" for k, v in failures.items()))
    if failures:
        asked = [name for name in plan.chosen if name not in failures]
        reasons = "; ".join(f"{name}: {reason}" for name, reason in failures.items())
        click.echo(f"shoal: {inert(reasons)} (results from {', '.join(asked)})", err=True)
    found = list(merged.values())[:limit]
    if as_json:
        rows = [
            {**dataclasses.asdict(f.result), "info_hash": f.result.info_hash.hex(), "via": f.via}
            for f in found
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    if not found:
        click.echo("no results", err=True)
        return
    via_column = [",".join(f.via) for f in found] if len(plan.chosen) > 1 else None
    wide_console().print(results_table([f.result for f in found], via=via_column))


def choose(via: str | None, plan: Plan, dht: DhtChoice) -> list[str]:
    """The architectures to ask: the one named, or with --via all (or by default) every one
    the options configure; usage errors for what cannot be asked."""
    configured = [
        name
        for name, given in (
            ("hub", plan.hub),
            ("dht", dht.bootstrap and plan.routers is not None),
            ("overlay", plan.overlay_peers),
        )
        if given
    ]
    via = via or ("all" if len(configured) > 1 else (configured or ["dht"])[0])
    chosen = (configured or ["dht"]) if via == "all" else [via]
    if "hub" in chosen and not plan.hub:
        raise click.UsageError("--via hub needs --hub URL")
    if "overlay" in chosen and not plan.overlay_peers:
        raise click.UsageError("--via overlay needs --overlay-peer HOST:PORT")
    if "overlay" in chosen and not words(plan.query):
        raise click.UsageError("an overlay search needs a word of letters or digits")
    if "dht" in chosen:
        if plan.routers is None:
            raise click.UsageError("--via dht needs the DHT: drop --no-dht")
        if not keywords(plan.query):
            if chosen == ["dht"]:
                raise click.UsageError(
                    "a DHT search needs a word of three letters or more that is not among the"
                    " commonest (the, and, mp3 ...)"
                )
            click.echo("shoal: the DHT is not asked: no word of three letters or more", err=True)
            chosen.remove("dht")
    return chosen


async def search_all(
    plan: Plan, show: Callable[[str, SearchResult], None] | None
) -> tuple[dict[bytes, Merged], dict[str, str]]:
    """Ask every chosen architecture at once through one short-lived node (a read-only DHT
    node, an overlay leaf); the results merged by info-hash, and why each that failed did."""
    merged: dict[bytes, Merged] = {}
    failures: dict[str, str] = {}

    def add(via: str, result: SearchResult) -> None:
        entry = merged.get(result.info_hash)
        if entry is None:
            merged[result.info_hash] = Merged(result, [via])
        else:
            entry.result = combined(entry.result, result)
            if via in entry.via:
                return
            entry.via.append(via)
        if show is not None:
            show(via, result)

    node = await search_node(plan)
    try:
        jobs: dict[str, Coroutine[Any, Any, None]] = {}
        if "hub" in plan.chosen:
            jobs["hub"] = ask_hub(plan, add)
        if node is not None and node.dht is not None:
            jobs["dht"] = ask_dht(node.dht, plan, add)
        if node is not None and node.overlay is not None:
            jobs["overlay"] = ask_overlay(node.overlay, plan, add)

        async def guarded(via: str, job: Coroutine[Any, Any, None]) -> None:
            try:
                await asyncio.wait_for(job, SEARCH_TIMEOUT)
            except TimeoutError:
                failures[via] = f"no answer in {SEARCH_TIMEOUT:.0f} s"
            except (ShoalError, OSError) as exc:
                failures[via] = str(exc)

        await asyncio.gather(*(guarded(via, job) for via, job in jobs.items()))
    finally:
        if node is not None:
            await node.stop()
    return merged, failures


async def search_node(plan: Plan) -> Node | None:
    """One node for the DHT and the overlay, as the plan needs them; no state is kept."""
    from ..node.overlay import OverlayOptions

    dht = "dht" in plan.chosen
    overlay = "overlay" in plan.chosen
    if not dht and not overlay:
        return None
    node = Node(
        port=0,
        dht_routers=plan.routers if dht else None,
        dht_read_only=dht,
        overlay=OverlayOptions(tuple(plan.overlay_peers), leaf=True) if overlay else None,
    )
    await node.start()
    return node


def combined(first: SearchResult, other: SearchResult) -> SearchResult:
    """One torrent as two architectures saw it: the first's name, the larger counts."""
    return dataclasses.replace(
        first,
        files=max(first.files, other.files),
        seeders=max(first.seeders, other.seeders),
        leechers=max(first.leechers, other.leechers),
        publishers=max(first.publishers, other.publishers),
    )


async def ask_hub(plan: Plan, add: Callable[[str, SearchResult], None]) -> None:
    from ..hub import client as hub_client

    assert plan.hub is not None
    for result in await hub_client.search(plan.hub, plan.query, limit=plan.limit):
        add("hub", result)


async def ask_dht(dht: DhtService, plan: Plan, add: Callable[[str, SearchResult], None]) -> None:
    assert plan.routers is not None
    await joined(dht.joined(), "DHT node", plan.routers)
    for result in await _search(dht, plan.query, plan.limit):
        add("dht", result)


async def ask_overlay(
    overlay: OverlayService, plan: Plan, add: Callable[[str, SearchResult], None]
) -> None:
    """Each hit as it comes; its seeders are the holders that answered."""
    from ..hub.client import SearchResult

    await joined(overlay.wait_joined(), "overlay peer", plan.overlay_peers)
    wanted = words(plan.query)
    holders: dict[bytes, set[Address]] = {}
    async for hit in overlay.search(plan.query, plan.strategy, wanted=plan.limit):
        result = hit.result
        if not name_matches(result.name, wanted):
            continue  # a node that answers what was not asked is not believed
        held = holders.setdefault(result.info_hash, set())
        held.add(hit.holder)
        add("overlay", SearchResult(result.info_hash, result.name, result.size, 0, len(held), 0, 0))


async def _search(dht: DhtService, query: str, limit: int) -> list[SearchResult]:
    """The listings found for query, with the peers the DHT knows of each as its seeders."""
    from ..hub.client import SearchResult

    found = (await dht.search(query))[:limit]
    publishers: dict[bytes, set[bytes]] = {}
    for listing in found:
        publishers.setdefault(listing.info_hash, set()).add(listing.public_key)
    unique = list({listing.info_hash: listing for listing in found}.values())
    counts = await asyncio.gather(*(dht.count_peers(item.info_hash) for item in unique))
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
