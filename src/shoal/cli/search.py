"""search: one query to a hub's index or to the keyword index in the DHT."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import TYPE_CHECKING

import click

from ..dht.listings import keywords
from ..progress import results_table, wide_console

if TYPE_CHECKING:
    from ..hub.client import SearchResult
    from ..node.dht import DhtService

from .common import (
    DhtChoice,
    dht_options,
    main,
    run,
    with_dht,
)


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
    from ..hub import client as hub_client

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
        if not keywords(query):
            raise click.UsageError(
                "a DHT search needs a word of three letters or more that is not among the"
                " commonest (the, and, mp3 ...)"
            )
        results = run(lambda: search_dht(query, routers, limit))
    if as_json:
        rows = [{**dataclasses.asdict(r), "info_hash": r.info_hash.hex()} for r in results]
        click.echo(json.dumps(rows, indent=2))
        return
    if not results:
        click.echo("no results", err=True)
        return
    wide_console().print(results_table(results))


async def search_dht(query: str, routers: list[tuple[str, int]], limit: int) -> list[SearchResult]:
    """Search the DHT's keyword index; seeders are the peers the DHT knows of each result."""
    # No state: a search leaves nothing behind.
    return await with_dht(routers, lambda dht: _search(dht, query, limit))


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
