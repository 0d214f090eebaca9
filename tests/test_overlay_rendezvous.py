"""First overlay neighbours without --overlay-peer: ultrapeers announce themselves under one
well-known key in the DHT and on the hub's tracker, and newcomers ask for its peers
(loopback nodes, no saved host cache)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from conftest import LOOPBACK, free_port, until, wait_for

from shoal.addresses import Address
from shoal.hub.server import Hub
from shoal.node import Node
from shoal.node.overlay import OverlayOptions
from shoal.node.rendezvous import RENDEZVOUS_KEY


def address(node: Node) -> Address:
    return (LOOPBACK, node.port)


def linked(node: Node, other: Node) -> bool:
    """Whether node has an ultrapeer link to other's listening address."""
    core = node.overlay.core if node.overlay is not None else None
    return core is not None and any(
        link.is_ultrapeer() and link.listen == address(other) for link in core.links()
    )


def dht_holders(nodes: list[Node]) -> set[Address]:
    """The peers any of nodes' DHT stores under the rendezvous key."""
    now = asyncio.get_running_loop().time()
    held: set[Address] = set()
    for node in nodes:
        if node.dht is not None and node.dht.core is not None:
            held.update(node.dht.core.server.peers.peers(RENDEZVOUS_KEY, now))
    return held


def hub_holders(hub: Hub) -> int:
    """How many peers the hub's tracker holds under the rendezvous key."""
    stats = hub.registry.stats(RENDEZVOUS_KEY)
    return stats.seeders + stats.leechers


@asynccontextmanager
async def started(nodes: list[Node]) -> AsyncIterator[None]:
    """Stop every node in nodes (started or appended later) at the end."""
    try:
        yield
    finally:
        for node in nodes:
            await node.stop()


async def dht_router(nodes: list[Node]) -> list[Address]:
    """A DHT node (no overlay) for the others to join through."""
    router = Node(port=0, host=LOOPBACK, dht_routers=[])
    nodes.append(router)
    await router.start()
    return [address(router)]


async def start(nodes: list[Node], **options: object) -> Node:
    node = Node(port=0, host=LOOPBACK, **options)  # type: ignore[arg-type]
    nodes.append(node)
    await node.start()
    return node


def test_a_node_without_overlay_peers_joins_through_the_dht_alone() -> None:
    async def scenario() -> None:
        nodes: list[Node] = []
        async with started(nodes):
            routers = await dht_router(nodes)
            first = await start(nodes, dht_routers=routers, overlay=OverlayOptions())
            await until(lambda: address(first) in dht_holders(nodes), "the DHT announce")
            newcomer = await start(nodes, dht_routers=routers, overlay=OverlayOptions())
            await until(lambda: linked(newcomer, first), "a link found through the DHT")
            await until(lambda: linked(first, newcomer), "the link at the other end")
            # The newcomer, an ultrapeer, is announced too: the next one may find either.
            await until(lambda: address(newcomer) in dht_holders(nodes), "its announce")

    asyncio.run(scenario())


def test_ultrapeers_and_leaves_join_through_the_hub_alone(tmp_path: Path) -> None:
    async def scenario() -> None:
        hub = Hub(LOOPBACK, 0, tmp_path / "hub.db")
        await hub.start()
        overlay = OverlayOptions(hub=hub.url)
        nodes: list[Node] = []
        try:
            async with started(nodes):
                first = await start(nodes, overlay=overlay)
                assert first.dht is None
                await until(lambda: hub_holders(hub) == 1, "the announce on the hub")
                newcomer = await start(nodes, overlay=overlay)
                await until(lambda: linked(newcomer, first), "a link found through the hub")
                await until(lambda: hub_holders(hub) == 2, "the newcomer's announce")
                # A leaf asks the hub without announcing, and links to what it hears of.
                leaf = await start(nodes, overlay=OverlayOptions(leaf=True, hub=hub.url))
                await until(lambda: linked(leaf, first) or linked(leaf, newcomer), "the leaf")
                assert hub_holders(hub) == 2
            # Stopping leaves the hub's tracker at once.
            await until(lambda: hub_holders(hub) == 0, "the stopped announces")
        finally:
            await hub.stop()

    asyncio.run(scenario())


def test_leaves_and_search_nodes_ask_but_are_never_announced(tmp_path: Path) -> None:
    async def scenario() -> None:
        hub = Hub(LOOPBACK, 0, tmp_path / "hub.db")
        await hub.start()
        nodes: list[Node] = []
        try:
            async with started(nodes):
                routers = await dht_router(nodes)
                ultrapeer = await start(
                    nodes, dht_routers=routers, overlay=OverlayOptions(hub=hub.url)
                )
                await until(lambda: dht_holders(nodes) == {address(ultrapeer)}, "the announce")
                await until(lambda: hub_holders(hub) == 1, "the announce on the hub")
                leaf = await start(
                    nodes, dht_routers=routers, overlay=OverlayOptions(leaf=True, hub=hub.url)
                )
                # A searcher: a read-only DHT node, an ultrapeer that only asks.
                searcher = await start(
                    nodes,
                    dht_routers=routers,
                    dht_read_only=True,
                    overlay=OverlayOptions(hub=hub.url),
                )
                await until(lambda: linked(leaf, ultrapeer), "the leaf's link")
                await until(lambda: linked(searcher, ultrapeer), "the searcher's link")
                for asker in (leaf, searcher):
                    assert asker.rendezvous is not None and asker.rendezvous.tracker is None
                assert dht_holders(nodes) == {address(ultrapeer)}
                assert hub_holders(hub) == 1
        finally:
            await hub.stop()

    asyncio.run(scenario())


def test_search_via_overlay_finds_ultrapeers_through_the_hub(shoal_cli, random_file, hub):
    source = random_file(300_000, "shared/Harbour Seals at Dawn.webm", seed=3)
    sharer = len(shoal_cli.logged)
    shoal_cli.start("share", source, "--port", free_port(), "--hub", hub.url)
    wait_for(lambda: "listed" in shoal_cli.output(sharer)[1], message="never listed on the hub")
    # No --overlay-peer: the search's leaf asks the hub for the ultrapeers announced there.
    result = shoal_cli.run("search", "harbour", "seals", "--via", "overlay", "--hub", hub.url)
    assert result.returncode == 0, result.stderr
    assert "Harbour Seals at Dawn.webm" in result.stdout
    assert hub.hub.registry.stats(RENDEZVOUS_KEY).seeders == 1  # the sharer, not the searcher
