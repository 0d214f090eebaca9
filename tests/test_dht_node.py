"""The DHT on real sockets: 30 nodes on loopback, a download found through the DHT alone, a
restart that keeps the routing table."""

from __future__ import annotations

import asyncio
import random

from conftest import LOOPBACK, until
from test_node import make_content

from shoal.node import Node

NODES = 30


async def dht_nodes(tmp_path, count: int) -> list[Node]:
    """count DHT nodes on loopback, all joined through the first."""
    first = Node(port=0, host=LOOPBACK, dht_routers=[], state=tmp_path / "dht0")
    await first.start()
    routers = [(LOOPBACK, first.port)]
    nodes = [first]
    for number in range(1, count):
        node = Node(port=0, host=LOOPBACK, dht_routers=routers, state=tmp_path / f"dht{number}")
        await node.start()
        nodes.append(node)
    return nodes


def table_size(node: Node) -> int:
    assert node.dht is not None and node.dht.core is not None
    return len(node.dht.core.table)


def node_id(node: Node) -> bytes:
    assert node.dht is not None and node.dht.core is not None
    return node.dht.core.node_id


def test_thirty_nodes_find_the_true_closest_and_a_torrent_through_the_dht_alone(tmp_path):
    torrent, content, folder = make_content(tmp_path, 1024 * 1024, 64 * 1024)

    async def scenario() -> None:
        nodes = await dht_nodes(tmp_path, NODES)
        routers = [(LOOPBACK, nodes[0].port)]
        seeder = leecher = None
        try:
            await until(lambda: all(table_size(n) >= 8 for n in nodes), "tables to fill", 30)
            rng = random.Random(4)
            for _ in range(5):
                target = rng.randbytes(20)
                asker = rng.randrange(NODES)
                nodes_dht = nodes[asker].dht
                assert nodes_dht is not None
                done = await asyncio.wait_for(nodes_dht.find_node(target), 30)
                key = int.from_bytes(target, "big")
                others = [node_id(n) for i, n in enumerate(nodes) if i != asker]
                truth = sorted(others, key=lambda i: int.from_bytes(i, "big") ^ key)[:8]
                assert [n.id for n in done.closest] == truth
            seeder = Node(port=0, host=LOOPBACK, dht_routers=routers, state=tmp_path / "seed")
            await seeder.start()
            await seeder.add(torrent.info_hash, torrent, folder)
            leecher = Node(port=0, host=LOOPBACK, dht_routers=routers, state=tmp_path / "leech")
            await leecher.start()
            # No peer, no tracker, no metadata: the DHT is the only source.
            task = await leecher.add(torrent.info_hash, None, tmp_path / "out")
            await asyncio.wait_for(task.completed.wait(), 60)
        finally:
            for node in [*nodes, seeder, leecher]:
                if node is not None:
                    await node.stop()

    asyncio.run(scenario())
    assert (tmp_path / "out" / "content.bin").read_bytes() == content


def test_a_restarted_node_keeps_its_id_and_its_table(tmp_path):
    async def scenario() -> None:
        nodes = await dht_nodes(tmp_path, 12)
        try:
            await until(lambda: table_size(nodes[5]) >= 8, "a table to fill", 30)
            before = node_id(nodes[5])
            port = nodes[5].port
            await nodes[5].stop()
            again = Node(port=port, host=LOOPBACK, dht_routers=[], state=tmp_path / "dht5")
            await again.start()
            nodes[5] = again
            # No router given: what it knows comes from the table it saved.
            assert node_id(again) == before and table_size(again) >= 8
        finally:
            for node in nodes:
                await node.stop()

    asyncio.run(scenario())
