"""shoal's DHT with libtorrent's, on loopback: a libtorrent node joins a shoal DHT, and each
finds the other's torrent through the DHT alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import libtorrent as lt
import ltclient
from conftest import LOOPBACK, until
from test_node import make_content, received_from

from shoal.addresses import Address
from shoal.dht.core import DhtNode
from shoal.dht.routing import NodeInfo
from shoal.errors import ShoalError
from shoal.metainfo import make_magnet, parse_torrent
from shoal.node import Node
from shoal.node.dht import DhtService

SHOAL_NODES = 8
SIZE = 1024 * 1024 + 4321
PIECE = 64 * 1024
# libtorrent never puts its bootstrap node in its routing table: it holds the other nodes.
LT_TABLE = SHOAL_NODES - 1
PORT_TRIES = 5
# A seeder announces to the 8 closest nodes that answered; half of ours is plenty to be found.
ANNOUNCED = SHOAL_NODES // 2


def dht(node: Node) -> DhtService:
    """The node's DHT service (it runs one)."""
    assert node.dht is not None
    return node.dht


def core(node: Node) -> DhtNode:
    """The node's running DHT core."""
    assert node.dht is not None and node.dht.core is not None
    return node.dht.core


async def start_dht_node(state: Path, routers: list[Address]) -> Node:
    """A DHT node on a loopback port, joining through routers (none: the first node)."""

    def new_node() -> Node:
        return Node(port=0, host=LOOPBACK, dht_routers=routers, state=state)

    for _ in range(PORT_TRIES - 1):
        node = new_node()
        # Node(port=0) binds the TCP port the system picks, in one try, and fails if that
        # number is taken for UDP (by another test run on this machine, say): pick again.
        with suppress(ShoalError):
            await node.start()
            return node
    node = new_node()
    await node.start()
    return node


@asynccontextmanager
async def shoal_dht(tmp_path: Path) -> AsyncIterator[list[Node]]:
    """SHOAL_NODES DHT nodes on loopback, all joined through the first, stopped at the end."""
    nodes: list[Node] = []
    try:
        for number in range(SHOAL_NODES):
            routers = [(LOOPBACK, nodes[0].port)] if nodes else []
            nodes.append(await start_dht_node(tmp_path / f"dht{number}", routers))
        await until(
            lambda: all(len(core(n).table) == SHOAL_NODES - 1 for n in nodes),
            "the shoal nodes to know each other",
            30,
        )
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


async def dht_peer(tmp_path: Path, nodes: list[Node], name: str) -> Node:
    """A shoal node that joins the DHT of nodes, to seed or leech."""
    return await start_dht_node(tmp_path / name, [(LOOPBACK, nodes[0].port)])


def tables_holding(nodes: list[Node], wanted: NodeInfo) -> int:
    """How many of the nodes' routing tables hold wanted (its id at its address)."""
    return sum(any(e.node == wanted for e in core(node).table.entries()) for node in nodes)


def stores_holding(nodes: list[Node], info_hash: bytes, peer: Address) -> int:
    """How many of the nodes give out peer for info_hash in answer to get_peers."""
    now = asyncio.get_running_loop().time()
    return sum(peer in core(node).server.peers.peers(info_hash, now) for node in nodes)


def lt_joined(session: lt.session) -> Callable[[], bool]:
    """Whether libtorrent's routing table holds every shoal node it can."""
    return lambda: ltclient.dht_routing_nodes(session) >= LT_TABLE


def test_libtorrent_joins_a_shoal_dht_and_answers_it(tmp_path):
    async def scenario() -> None:
        async with shoal_dht(tmp_path) as nodes:
            session = ltclient.make_dht_session(nodes[0].port)
            address = (LOOPBACK, ltclient.listen_port(session))

            def held_everywhere() -> bool:
                itself = NodeInfo(ltclient.dht_node_id(session), address)
                return tables_holding(nodes, itself) == SHOAL_NODES

            await until(held_everywhere, "every shoal table to hold libtorrent's node", 30)
            await until(lt_joined(session), "libtorrent's table to hold the shoal nodes", 30)
            # So far libtorrent only asked; a lookup of its own id shows that it answers too.
            lt_id = ltclient.dht_node_id(session)
            done = await asyncio.wait_for(dht(nodes[SHOAL_NODES // 2]).find_node(lt_id), 30)
            assert done.closest[:1] == [NodeInfo(lt_id, address)], done

    asyncio.run(scenario())


def test_libtorrent_finds_a_shoal_seeder_through_the_dht_alone(tmp_path):
    torrent, content, folder = make_content(tmp_path, SIZE, PIECE)
    info_hash = torrent.info_hash

    async def scenario() -> int:
        async with shoal_dht(tmp_path) as nodes:
            session = ltclient.make_dht_session(nodes[0].port)
            seeder = await dht_peer(tmp_path, nodes, "seeder")
            try:
                await seeder.add(info_hash, torrent, folder)
                await until(
                    lambda: stores_holding(nodes, info_hash, (LOOPBACK, seeder.port)) >= ANNOUNCED,
                    "the shoal seeder's announce to be stored",
                    30,
                )
                await until(lt_joined(session), "libtorrent to join the DHT", 30)
                # The info-hash alone: no peer, no tracker, no metadata, LSD off.
                magnet = make_magnet(info_hash)
                handle = ltclient.leech(session, magnet, tmp_path / "out", dht=True)
                # In threads: the shoal nodes on this loop must go on answering meanwhile.
                await asyncio.to_thread(ltclient.wait_finished, handle, 60)
                await asyncio.to_thread(ltclient.flush, session, handle)
                return ltclient.total_download(handle)
            finally:
                await seeder.stop()

    downloaded = asyncio.run(scenario())
    assert (tmp_path / "out" / "content.bin").read_bytes() == content
    assert downloaded >= SIZE


def test_shoal_finds_a_libtorrent_seeder_through_the_dht_alone(tmp_path, random_file):
    content = random_file(SIZE, "seed/content.bin", seed=5)
    torrent = ltclient.make_torrent(content, piece_size=PIECE)
    info_hash = parse_torrent(torrent).info_hash

    async def scenario() -> tuple[int, dict[int, int]]:
        async with shoal_dht(tmp_path) as nodes:
            session = ltclient.make_dht_session(nodes[0].port)
            lt_port = ltclient.listen_port(session)
            await until(lt_joined(session), "libtorrent to join the DHT", 30)
            ltclient.seed(session, torrent, content.parent, dht=True)
            # shoal's nodes take libtorrent's announce_peer: its token, and its port.
            await until(
                lambda: stores_holding(nodes, info_hash, (LOOPBACK, lt_port)) >= ANNOUNCED,
                "libtorrent's announce to be stored",
                30,
            )
            leecher = await dht_peer(tmp_path, nodes, "leecher")
            try:
                # No peer and no metadata: the DHT is the only source.
                task = await leecher.add(info_hash, None, tmp_path / "out")
                await asyncio.wait_for(task.completed.wait(), 60)
                return lt_port, received_from(task)
            finally:
                await leecher.stop()

    lt_port, received = asyncio.run(scenario())
    assert (tmp_path / "out" / "content.bin").read_bytes() == content.read_bytes()
    assert received.get(lt_port, 0) >= SIZE, received
