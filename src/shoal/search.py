"""One search over the hub's index, the keyword index in the DHT and the overlay at once, its
results merged by info-hash and labelled with the architectures that found each; used by
`shoal search` and `shoal demo`."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import addresses
from .addresses import Address
from .errors import ShoalError
from .node import Node
from .overlay.search import Strategy
from .words import name_matches, words

if TYPE_CHECKING:
    from .hub.client import SearchResult
    from .node.dht import DhtService
    from .node.overlay import OverlayService

ARCHITECTURES = ("hub", "dht", "overlay")
# A search gives up after this long (a DHT lookup ends in 30 s at most, and counts follow).
SEARCH_TIMEOUT = 60.0
# A one-shot node gives up when no DHT node or overlay peer answers it this long (the DHT's
# routers are asked again after 15 s).
JOIN_TIMEOUT = 20.0


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
    host: str = "0.0.0.0"  # where the short-lived node listens


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
    from .node.overlay import OverlayOptions

    dht = "dht" in plan.chosen
    overlay = "overlay" in plan.chosen
    if not dht and not overlay:
        return None
    node = Node(
        port=0,
        host=plan.host,
        dht_routers=plan.routers if dht else None,
        dht_read_only=dht,
        overlay=OverlayOptions(tuple(plan.overlay_peers), leaf=True, hub=plan.hub)
        if overlay
        else None,
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
    from .hub import client as hub_client

    assert plan.hub is not None
    for result in await hub_client.search(plan.hub, plan.query, limit=plan.limit):
        add("hub", result)


async def ask_dht(dht: DhtService, plan: Plan, add: Callable[[str, SearchResult], None]) -> None:
    assert plan.routers is not None
    await joined(dht.joined(), "DHT node", plan.routers)
    for result in await dht_results(dht, plan.query, plan.limit):
        add("dht", result)


async def ask_overlay(
    overlay: OverlayService, plan: Plan, add: Callable[[str, SearchResult], None]
) -> None:
    """Each hit as it comes; its seeders are the holders that answered."""
    from .hub.client import SearchResult

    what = "overlay peer" if plan.overlay_peers else "overlay ultrapeer the hub knows"
    await joined(overlay.wait_joined(), what, plan.overlay_peers)
    wanted = words(plan.query)
    holders: dict[bytes, set[Address]] = {}
    async for hit in overlay.search(plan.query, plan.strategy, wanted=plan.limit):
        result = hit.result
        if not name_matches(result.name, wanted):
            continue  # a node that answers what was not asked is not believed
        held = holders.setdefault(result.info_hash, set())
        held.add(hit.holder)
        add("overlay", SearchResult(result.info_hash, result.name, result.size, 0, len(held), 0, 0))


async def dht_results(dht: DhtService, query: str, limit: int) -> list[SearchResult]:
    """The listings found for query, with the peers the DHT knows of each as its seeders."""
    from .hub.client import SearchResult

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


async def joined(join: Awaitable[None], what: str, asked: Sequence[tuple[str, int]]) -> None:
    """Wait for a one-shot node to join the DHT or the overlay; a plain error if no what
    answers within JOIN_TIMEOUT."""
    try:
        await asyncio.wait_for(join, JOIN_TIMEOUT)
    except TimeoutError:
        named = ", ".join(addresses.text(address) for address in asked)
        tried = f" (asked {named})" if named else ""
        raise ShoalError(f"no {what} answered in {JOIN_TIMEOUT:.0f} s{tried}: is it up?") from None
