"""The overlay's asyncio adapter on real loopback sockets: 50+ OverlayService nodes in one
event loop, each on a listener that hands it the streams opening with the overlay's greeting
(as the node's port does), searched by flood, walk and dynamic querying; churn; hostile
peers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import LOOPBACK, until

from shoal.addresses import Address
from shoal.node.overlay import (
    HOSTS_FILE,
    SAVED_HOSTS,
    OverlayHit,
    OverlayOptions,
    OverlayService,
)
from shoal.node.streamlink import WRITE_CAP
from shoal.overlay.links import FLOOD_CLOSE
from shoal.overlay.messages import (
    GREETING,
    HEADER,
    Hello,
    Message,
    Query,
    Result,
    Role,
    encode,
)
from shoal.overlay.search import Strategy

SIZE = 1_000_000


class Listener(asyncio.Protocol):
    """A TCP port that hands each stream opening with the greeting to the overlay."""

    def __init__(self, service: OverlayService) -> None:
        self.service = service
        self.first = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.first += data
        if len(self.first) >= len(GREETING):
            peer = self.transport.get_extra_info("peername")
            self.service.adopt(self.transport, (peer[0], peer[1]), self.first)


@dataclass(eq=False)
class Peer:
    """One overlay node of the test network."""

    service: OverlayService
    server: asyncio.AbstractServer
    port: int

    @property
    def address(self) -> Address:
        return (LOOPBACK, self.port)

    def ultrapeer_links(self) -> int:
        core = self.service.core
        return 0 if core is None else sum(1 for link in core.links() if link.is_ultrapeer())

    async def stop(self) -> None:
        self.server.close()
        self.service.stop()


async def start_peer(
    peers: Sequence[Address] = (),
    *,
    leaf: bool = False,
    listings: Sequence[Result] = (),
    state: Path | None = None,
) -> Peer:
    holder: list[OverlayService] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Listener(holder[0]), LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    service = OverlayService(OverlayOptions(tuple(peers), leaf), state)
    holder.append(service)
    service.set_listings(listings)
    await service.start(port)
    return Peer(service, server, port)


def listing(name: str, seed: int) -> Result:
    return Result(random.Random(seed).randbytes(20), SIZE + seed, name)


@asynccontextmanager
async def overlay(count: int, rng: random.Random) -> AsyncIterator[list[Peer]]:
    """count ultrapeers, each joining through up to three already in, linked up."""
    peers: list[Peer] = []
    try:
        for _ in range(count):
            known = [p.address for p in rng.sample(peers, min(3, len(peers)))]
            peers.append(await start_peer(known))
        await until(lambda: all(p.ultrapeer_links() >= 3 for p in peers), "the overlay to link", 60)
        yield peers
    finally:
        for peer in peers:
            await peer.stop()


async def collect(
    peer: Peer, text: str, strategy: Strategy, wanted: int, timeout: float = 40
) -> list[OverlayHit]:
    hits: list[OverlayHit] = []

    async def run() -> None:
        async for hit in peer.service.search(text, strategy, wanted=wanted):
            hits.append(hit)

    await asyncio.wait_for(run(), timeout)
    return hits


async def add_holders(
    peers: list[Peer], rng: random.Random, name: str, count: int = 3
) -> tuple[list[Peer], Result]:
    """Ultrapeers of the overlay (never the first, the searcher) that list one torrent."""
    shared = listing(name, 7)
    holders = rng.sample(peers[1:], count)
    for holder in holders:
        holder.service.set_listings([shared])
    return holders, shared


@pytest.mark.parametrize("strategy", list(Strategy))
def test_each_strategy_finds_the_holders_and_hits_come_back_by_the_reverse_path(strategy):
    rng = random.Random(11)

    async def scenario() -> None:
        async with overlay(50, rng) as peers:
            holders, shared = await add_holders(peers, rng, "Arctic Aurora Timelapse")
            searcher = peers[0]
            hits = await collect(searcher, "aurora time", strategy, wanted=3)
            assert {hit.holder for hit in hits} == {h.address for h in holders}
            assert {hit.result for hit in hits} == {shared}
            for holder in holders:
                core = holder.service.core
                assert core is not None
                # Each holder answered the query once, however many links it came by.
                assert core.counters.hits_sent == 1
            if strategy is Strategy.FLOOD:
                # Copies beyond a node's first were dropped as duplicates, not handled again.
                assert any(p.service.core and p.service.core.counters.duplicates for p in peers)

    asyncio.run(scenario())


def test_dynamic_querying_finds_replicated_content_with_fewer_queries_than_a_flood():
    rng = random.Random(13)

    async def scenario() -> None:
        async with overlay(50, rng) as peers:
            holders, shared = await add_holders(peers, rng, "Morning Birdsong", count=12)

            def sent() -> int:
                return sum(p.service.core.counters.queries_sent for p in peers if p.service.core)

            before = sent()
            hits = await collect(peers[0], "birdsong", Strategy.DYNAMIC, wanted=4)
            dynamic = sent() - before
            assert len({hit.holder for hit in hits}) >= 4
            assert {hit.holder for hit in hits} <= {h.address for h in holders}
            assert {hit.result for hit in hits} == {shared}
            before = sent()
            flooded = await collect(peers[0], "birdsong", Strategy.FLOOD, wanted=100)
            assert {hit.holder for hit in flooded} == {h.address for h in holders}
            assert dynamic < sent() - before

    asyncio.run(scenario())


def test_a_node_leaving_mid_search_does_not_break_it_and_a_third_killed_heals():
    rng = random.Random(23)

    async def scenario() -> None:
        async with overlay(54, rng) as peers:
            holders, _shared = await add_holders(peers, rng, "Glacier Calving Sounds")
            searcher = peers[0]
            others = [p for p in peers[1:] if p not in holders]
            search = asyncio.ensure_future(collect(searcher, "glacier", Strategy.WALK, 3))
            await asyncio.sleep(0)  # the walkers are out
            for leaving in others[:3]:
                await leaving.stop()
            hits = await search
            assert {hit.holder for hit in hits} == {h.address for h in holders}
            # A third of the overlay goes at once; the rest dial others from their caches.
            for killed in others[3:18]:
                await killed.stop()
            alive = [p for p in peers if p not in others[:18]]
            await until(
                lambda: all(p.ultrapeer_links() >= 3 for p in alive), "the overlay to heal", 90
            )
            hits = await collect(searcher, "glacier calving", Strategy.FLOOD, 3)
            assert {hit.holder for hit in hits} == {h.address for h in holders}

    asyncio.run(scenario())


def test_a_leaf_is_found_through_its_ultrapeers_routing_table():
    rng = random.Random(5)

    async def scenario() -> None:
        async with overlay(12, rng) as peers:
            shared = listing("Harbour Seal Lullaby", 3)
            leaf = await start_peer([peers[5].address], leaf=True, listings=[shared])
            try:
                await until(lambda: leaf.ultrapeer_links() >= 1, "the leaf to link")
                core = leaf.service.core
                assert core is not None
                await until(
                    lambda: any(
                        link.table is not None
                        for p in peers
                        for link in (p.service.core.links() if p.service.core else [])
                    ),
                    "the leaf's routing table to arrive",
                )
                # A query its table rules out never reaches the leaf.
                assert not await collect(peers[0], "volcano", Strategy.FLOOD, 1)
                assert core.counters.queries_received == 0
                hits = await collect(peers[0], "seal lull", Strategy.FLOOD, 1)
                assert [hit.holder for hit in hits] == [leaf.address]
                assert core.counters.queries_received >= 1
            finally:
                await leaf.stop()

    asyncio.run(scenario())


async def raw_link(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-made ultrapeer that has said hello."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    hello = Hello(random.randbytes(20), 1, Role.ULTRAPEER)
    writer.write(GREETING + encode(Message(random.randbytes(16), 1, 0, hello)))
    await writer.drain()
    return reader, writer


def test_a_query_flood_is_rate_limited_and_a_peer_that_never_reads_holds_little():
    async def scenario() -> None:
        victim = await start_peer(listings=[listing("Loud Thunder " * 10, 1)])
        try:
            _reader, writer = await raw_link(victim.port)
            core = victim.service.core
            assert core is not None
            await until(lambda: core.links(), "the hello")
            link = victim.service._links[core.links()[0].number]
            # Each query asks for the listing: the answers pile up unread on our side.
            query = Query("loud thunder")
            sent = 0
            while not writer.is_closing() and sent < 3 * FLOOD_CLOSE:
                for _ in range(100):
                    writer.write(encode(Message(random.randbytes(16), 3, 0, query)))
                sent += 100
                await writer.drain()
                transport = link.transport
                if transport is not None:
                    assert transport.get_write_buffer_size() <= WRITE_CAP
            await until(lambda: not core.links(), "the flooder to be dropped")
            assert core.counters.rate_dropped > 0
            assert core.counters.hits_sent < sent / 2
            writer.close()
        finally:
            await victim.stop()

    asyncio.run(scenario())


def test_a_malformed_message_drops_the_link():
    async def scenario() -> None:
        victim = await start_peer()
        try:
            reader, writer = await raw_link(victim.port)
            core = victim.service.core
            assert core is not None
            await until(lambda: core.links(), "the hello")
            writer.write(HEADER.pack(random.randbytes(16), 0x7F, 1, 0, 0))  # no such type
            await writer.drain()
            # What it answered, then the end of the stream (a Bye said why).
            received = await asyncio.wait_for(reader.read(), 10)
            assert received.startswith(GREETING)
            assert b"malformed" in received
            assert not core.links()
            writer.close()
        finally:
            await victim.stop()

    asyncio.run(scenario())


def test_the_host_cache_is_saved_at_stop_and_dialled_at_the_next_start(tmp_path):
    rng = random.Random(3)

    async def scenario() -> None:
        async with overlay(6, rng) as peers:
            first = await start_peer([peers[0].address], state=tmp_path)
            await until(lambda: first.ultrapeer_links() >= 3, "links through the pongs")
            await first.stop()
            saved = (tmp_path / HOSTS_FILE).read_text().splitlines()
            assert 3 <= len(saved) <= SAVED_HOSTS
            assert set(saved) <= {f"{LOOPBACK}:{p.port}" for p in peers}
            # No peer given this time: the saved hosts are enough to join again.
            again = await start_peer(state=tmp_path)
            try:
                await until(lambda: again.ultrapeer_links() >= 3, "links from the saved hosts")
            finally:
                await again.stop()

    asyncio.run(scenario())
