"""search: one query to a hub's index, the keyword index in the DHT, the overlay, or all of
them at once, their results merged by info-hash."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

import click

from ..dht.listings import keywords
from ..errors import inert
from ..overlay.search import Strategy
from ..progress import human_size, results_table, wide_console
from ..search import ARCHITECTURES, Plan, search_all
from ..words import words
from .common import (
    DhtChoice,
    OverlayChoice,
    checked_hub,
    dht_options,
    fail,
    main,
    overlay_peer_option,
    run,
)

if TYPE_CHECKING:
    from ..hub.client import SearchResult


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
    hub_url = checked_hub(hub) if hub else None
    plan = Plan(" ".join(words_), [], hub_url, dht.routers(), strategy=Strategy(strategy))
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
    if "overlay" in chosen and not plan.overlay_peers and not plan.hub:
        raise click.UsageError(
            "--via overlay needs --overlay-peer HOST:PORT, or --hub URL to find ultrapeers at"
        )
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
