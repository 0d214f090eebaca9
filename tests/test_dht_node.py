"""The DHT on real sockets: 30 nodes on loopback, a download found through the DHT alone, a
keyword search, lookups after a fifth of the nodes died, a restart that keeps the routing
table."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest
from conftest import LOOPBACK, free_port, until
from test_node import make_content, needs_ipv6

from shoal.addresses import Address
from shoal.dht import krpc
from shoal.dht.core import DhtNode
from shoal.dht.listings import DhtListing, keyword_key, sign_listing
from shoal.identity import Identity
from shoal.node import Node
from shoal.node.dht import TABLE_SLOTS, DhtService

NODES = 30
K = 8
IPV6_LOOPBACK = "::1"


async def dht_nodes(tmp_path, count: int, host: str = LOOPBACK) -> list[Node]:
    """count DHT nodes on host (a loopback address), all joined through the first."""
    first = Node(port=0, host=host, dht_routers=[], state=tmp_path / "dht0")
    await first.start()
    routers = [(host, first.port)]
    nodes = [first]
    for number in range(1, count):
        node = Node(port=0, host=host, dht_routers=routers, state=tmp_path / f"dht{number}")
        await node.start()
        nodes.append(node)
    return nodes


async def stop_all(nodes: list[Node | None]) -> None:
    """Stop every node started (None: never started); stopping twice is harmless."""
    for node in nodes:
        if node is not None:
            await node.stop()


def dht(node: Node) -> DhtService:
    assert node.dht is not None
    return node.dht


def core(node: Node) -> DhtNode:
    assert node.dht is not None and node.dht.core is not None
    return node.dht.core


def table_size(node: Node) -> int:
    return len(core(node).table)


def node_id(node: Node) -> bytes:
    return core(node).node_id


def true_closest(nodes: list[Node], target: bytes, count: int = K) -> list[bytes]:
    """The ids of the count nodes closest to target, closest first."""
    key = int.from_bytes(target, "big")
    return sorted(map(node_id, nodes), key=lambda i: int.from_bytes(i, "big") ^ key)[:count]


def holding_listing(nodes: list[Node], key: bytes, listing: DhtListing) -> int:
    """How many nodes store listing under key."""
    now = asyncio.get_running_loop().time()
    return sum(listing in core(n).server.listings.get(key, now) for n in nodes)


def holding_peer(nodes: list[Node], info_hash: bytes, peer: tuple[str, int]) -> int:
    """How many nodes store peer as a peer of info_hash."""
    now = asyncio.get_running_loop().time()
    return sum(peer in core(n).server.peers.peers(info_hash, now) for n in nodes)


def alpine_listing() -> DhtListing:
    """A listing of a made-up torrent, signed by a fresh identity."""
    files = ["alpine-sunrise.webm", "credits.txt"]
    return sign_listing(Identity.generate(), b"\x42" * 20, "Alpine Sunrise Timelapse", 5, files, 1)


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
            await nodes[5].stop()
            # Another port the system picks: its table waits in the slot it was saved in.
            again = Node(port=0, host=LOOPBACK, dht_routers=[], state=tmp_path / "dht5")
            await again.start()
            nodes[5] = again
            # No router given: what it knows comes from the table it saved.
            assert node_id(again) == before and table_size(again) >= 8
        finally:
            for node in nodes:
                await node.stop()

    asyncio.run(scenario())


def test_a_keyword_search_finds_a_listing_another_node_published(tmp_path):
    listing = alpine_listing()
    key = keyword_key("timelapse")  # the longest word of the searches below: the key asked

    async def scenario() -> None:
        nodes = await dht_nodes(tmp_path, NODES)
        publisher, searcher = nodes[7], nodes[21]
        try:
            await until(lambda: all(table_size(n) >= K for n in nodes), "tables to fill", 30)
            dht(publisher).publish(listing)
            await until(lambda: holding_listing(nodes, key, listing) >= 6, "the listing stored", 30)
            # Stored on the nodes closest to the word's key, and nowhere else.
            others = [n for n in nodes if n is not publisher]
            holders = {node_id(n) for n in others if holding_listing([n], key, listing)}
            assert holders <= set(true_closest(others, key))
            found = await asyncio.wait_for(dht(searcher).search("Timelapse alp"), 40)
            assert found == [listing]
            # The last word, a prefix, is the longest: another word's key is asked.
            found = await asyncio.wait_for(dht(searcher).search("alpine timelap"), 40)
            assert found == [listing]
            # Same key asked, but the listing lacks a word: filtered out.
            assert await asyncio.wait_for(dht(searcher).search("timelapse night"), 40) == []
        finally:
            await stop_all(nodes)

    asyncio.run(scenario())


def test_with_a_fifth_of_the_nodes_dead_lookups_peers_and_searches_still_succeed(tmp_path):
    listing = alpine_listing()
    key = keyword_key("timelapse")
    info_hash = b"\x17" * 20

    async def scenario() -> None:
        nodes = await dht_nodes(tmp_path, NODES)
        seeder, publisher, *askers = nodes[1:8]
        peer = (LOOPBACK, seeder.port)
        try:
            await until(lambda: all(table_size(n) >= K for n in nodes), "tables to fill", 30)
            dht(publisher).publish(listing)
            dht(seeder).find_peers(info_hash, lambda _peers: None, announce_port=0)
            await until(
                lambda: (
                    holding_listing(nodes, key, listing) >= 6
                    and holding_peer(nodes, info_hash, peer) >= 6
                ),
                "the listing and the seeder stored",
                30,
            )
            # The dead: the two closest to the key, the two closest to the info-hash (among
            # the nodes that hold the listing and the seeder), and two at random; no node has
            # yet learnt that they are gone.
            candidates = [n for n in nodes if n not in (seeder, publisher, *askers)]
            dead: list[Node] = []
            for target in (key, info_hash):
                closest = true_closest([n for n in candidates if n not in dead], target, 2)
                dead += [n for n in candidates if node_id(n) in closest]
            dead += random.Random(5).sample([n for n in candidates if n not in dead], 2)
            assert len(dead) == NODES // 5
            dead_ids = {node_id(n) for n in dead}
            # Targets whose closest nodes are dead: the key, the info-hash, and next to the
            # ids of the two dead at random.
            near = [bytes([*node_id(n)[:19], node_id(n)[19] ^ 1]) for n in dead[4:]]
            for node in dead:
                await node.stop()
            live = [n for n in nodes if n not in dead]

            async def look_up(asker: Node, target: bytes) -> None:
                done = await dht(asker).find_node(target)
                truth = true_closest([n for n in live if n is not asker], target)
                found = [n.id for n in done.closest]
                assert not set(found) & dead_ids
                assert found[0] == truth[0] and len(set(found) & set(truth)) >= 6

            seen: set[tuple[str, int]] = set()
            dht(askers[0]).find_peers(info_hash, seen.update)
            checks = [
                look_up(askers[i % len(askers)], target)
                for i, target in enumerate([key, info_hash, *near])
            ]
            found, *_ = await asyncio.wait_for(
                asyncio.gather(dht(askers[-1]).search("alpine timelapse"), *checks), 40
            )
            assert found == [listing]
            await until(lambda: peer in seen, "the seeder found", 30)
        finally:
            await stop_all(nodes)

    asyncio.run(scenario())


def families(node: Node) -> set[socket.AddressFamily]:
    """The address families of the nodes in the node's routing table."""
    return {
        socket.AF_INET6 if ":" in e.node.address[0] else socket.AF_INET
        for e in core(node).table.entries()
    }


@needs_ipv6
def test_an_ipv6_only_dht_finds_the_closest_nodes_and_stores_an_announce(tmp_path):
    info_hash = b"\x66" * 20

    async def scenario() -> None:
        nodes = await dht_nodes(tmp_path, 12, host=IPV6_LOOPBACK)
        seeder, asker = nodes[3], nodes[9]
        peer = (IPV6_LOOPBACK, seeder.port)
        try:
            assert not any(n.datagrams.serves(socket.AF_INET) for n in nodes)
            await until(lambda: all(table_size(n) >= K for n in nodes), "tables to fill", 30)
            assert all(families(n) == {socket.AF_INET6} for n in nodes)
            target = random.Random(6).randbytes(20)
            done = await asyncio.wait_for(dht(asker).find_node(target), 30)
            others = [n for n in nodes if n is not asker]
            assert [n.id for n in done.closest] == true_closest(others, target)
            # get_peers then announce_peer, with the token, at the IPv6 address it came from.
            dht(seeder).find_peers(info_hash, lambda _peers: None, announce_port=0)
            await until(lambda: holding_peer(nodes, info_hash, peer) >= 6, "the seeder stored", 30)
            others = [n for n in nodes if n is not seeder]
            holders = {node_id(n) for n in others if holding_peer([n], info_hash, peer)}
            assert holders <= set(true_closest(others, info_hash))
        finally:
            await stop_all(nodes)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "host", [LOOPBACK, pytest.param(IPV6_LOOPBACK, marks=needs_ipv6)], ids=["ipv4", "ipv6"]
)
def test_a_newcomer_finds_every_seeder_announced(tmp_path, host):
    info_hash = b"\x67" * 20

    async def scenario() -> None:
        nodes = await dht_nodes(tmp_path, 12, host=host)
        # The three farthest from the info-hash: all announce to the same 8 closest nodes.
        far = true_closest(nodes, bytes(a ^ 0xFF for a in info_hash), 3)
        seeders = [n for n in nodes if node_id(n) in far]
        newcomer = None

        async def announced(seeder: Node) -> None:
            dht(seeder).find_peers(info_hash, lambda _peers: None, announce_port=0)
            peer = (host, seeder.port)
            await until(lambda: holding_peer(nodes, info_hash, peer) == K, "an announce", 30)

        try:
            await until(lambda: all(table_size(n) >= K for n in nodes), "tables to fill", 30)
            for seeder in seeders:  # one after the other: every node holds them in that order
                await announced(seeder)
            # Read-only, so no node takes it in its table: a stranger to all until it answers.
            newcomer = Node(
                port=0, host=host, dht_routers=[(host, nodes[0].port)], dht_read_only=True
            )
            await newcomer.start()
            assert await asyncio.wait_for(dht(newcomer).count_peers(info_hash), 30) == 3
        finally:
            await stop_all([*nodes, newcomer])

    asyncio.run(scenario())


async def dual_stack_node(tmp_path, name: str, routers: list[tuple[str, int]]) -> Node:
    """A node on the wildcard address (IPv4 and IPv6 sockets) that joins through routers on
    loopback only."""
    node = Node(port=0, host="0.0.0.0", dht_routers=routers, state=tmp_path / name)
    await node.start()
    assert node.datagrams.serves(socket.AF_INET) and node.datagrams.serves(socket.AF_INET6)
    return node


async def two_families(tmp_path) -> tuple[list[Node], Node]:
    """Six nodes on 127.0.0.1, six on ::1, and a dual-stack node joined through one of each."""
    v4 = await dht_nodes(tmp_path / "v4", 6)
    v6 = await dht_nodes(tmp_path / "v6", 6, host=IPV6_LOOPBACK)
    routers = [(LOOPBACK, v4[0].port), (IPV6_LOOPBACK, v6[0].port)]
    return [*v4, *v6], await dual_stack_node(tmp_path, "dual", routers)


def joined_both(node: Node) -> bool:
    """Whether the node's table is full (a bucket of K) and holds nodes of both families."""
    return table_size(node) >= K and families(node) == {socket.AF_INET, socket.AF_INET6}


@needs_ipv6
def test_a_dual_stack_node_holds_nodes_of_both_families_and_finds_the_closest_of_both(tmp_path):
    async def scenario() -> None:
        nodes, dual = await two_families(tmp_path)
        try:
            await until(lambda: joined_both(dual), "a table of both families", 30)
            for target in (node_id(nodes[2]), node_id(nodes[8])):  # one of each family
                done = await asyncio.wait_for(dht(dual).find_node(target), 30)
                assert [n.id for n in done.closest] == true_closest(nodes, target)
        finally:
            await stop_all([*nodes, dual])

    asyncio.run(scenario())


@needs_ipv6
def test_a_dual_stack_node_learns_ipv6_nodes_through_an_ipv4_router(tmp_path):
    async def scenario() -> None:
        nodes, dual = await two_families(tmp_path)
        late = None
        try:
            await until(lambda: joined_both(dual), "a table of both families", 30)
            # It joins through the dual node's IPv4 address, which knows the IPv6 nodes too.
            late = await dual_stack_node(tmp_path, "late", [(LOOPBACK, dual.port)])
            await asyncio.wait_for(dht(late).joined(), 30)
            # A lookup of an IPv6 node's id: the dual node names it, asked for both (want).
            await asyncio.wait_for(dht(late).find_node(node_id(nodes[8])), 30)
            assert socket.AF_INET6 in families(late)
        finally:
            await stop_all([*nodes, dual, late])

    asyncio.run(scenario())


def record_datagrams(node: Node) -> tuple[list[bytes], list[bytes]]:
    """Lists that get every datagram the node sends and receives from now on."""
    sent: list[bytes] = []
    received: list[bytes] = []
    port = node.datagrams
    send, deliver = port.send, port.datagram_received

    def recorded_send(data: bytes, address: Address) -> None:
        sent.append(data)
        send(data, address)

    def recorded_receive(data: bytes, address: object) -> None:
        received.append(data)
        deliver(data, address)

    port.send = recorded_send  # type: ignore[method-assign]
    port.datagram_received = recorded_receive  # type: ignore[method-assign]
    return sent, received


def test_a_read_only_node_downloads_through_the_dht_but_never_answers_nor_enters_a_table(
    tmp_path,
):
    torrent, content, folder = make_content(tmp_path, 256 * 1024, 32 * 1024)

    async def scenario() -> None:
        nodes = await dht_nodes(tmp_path, 12)
        routers = [(LOOPBACK, nodes[0].port)]
        seeder = reader = None
        try:
            seeder = Node(port=0, host=LOOPBACK, dht_routers=routers, state=tmp_path / "seed")
            await seeder.start()
            await seeder.add(torrent.info_hash, torrent, folder)
            seeding = (LOOPBACK, seeder.port)
            await until(lambda: holding_peer(nodes, torrent.info_hash, seeding), "an announce", 30)
            reader = Node(
                port=0,
                host=LOOPBACK,
                dht_routers=routers,
                dht_read_only=True,
                state=tmp_path / "reader",
            )
            sent, received = record_datagrams(reader)
            await reader.start()
            # No peer, no tracker, no metadata: the DHT is the only source.
            task = await reader.add(torrent.info_hash, None, tmp_path / "out")
            await asyncio.wait_for(task.completed.wait(), 60)
            others = [*nodes, seeder]
            target = node_id(nodes[4])
            done = await asyncio.wait_for(dht(reader).find_node(target), 30)
            assert [n.id for n in done.closest] == true_closest(others, target)

            # A query sent to it arrives and goes unanswered.
            ping = krpc.query(b"pi", b"ping", {}, sender=b"\x01" * 20)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind((LOOPBACK, 0))
                probe.setblocking(False)
                probe.sendto(ping, (LOOPBACK, reader.port))
                await until(lambda: ping in received, "the ping to arrive")
                with pytest.raises(BlockingIOError):
                    probe.recv(2048)
            # All it ever sent were queries, each marked read-only, and nobody took it in.
            queries = [krpc.parse(data) for data in sent]
            assert queries and all(isinstance(q, krpc.Query) and q.read_only for q in queries)
            mine = node_id(reader)
            assert not any(mine == e.node.id for n in others for e in core(n).table.entries())
        finally:
            await stop_all([*nodes, seeder, reader])

    asyncio.run(scenario())
    assert (tmp_path / "out" / "content.bin").read_bytes() == content


def test_nodes_on_ports_the_system_picks_keep_their_tables_in_a_few_slots(tmp_path):
    state = tmp_path / "state"

    async def scenario() -> None:
        router = Node(port=0, host=LOOPBACK, dht_routers=[])  # no state folder: saves nothing
        await router.start()

        async def started(port: int = 0) -> Node:
            node = Node(
                port=port, host=LOOPBACK, dht_routers=[(LOOPBACK, router.port)], state=state
            )
            await node.start()
            return node

        try:
            first, second = await started(), await started()
            ids = [node_id(first), node_id(second)]
            assert ids[0] != ids[1]
            assert dht(first).table_path != dht(second).table_path
            await stop_all([first, second])
            again = await started()
            assert node_id(again) == ids[0]  # the first slot is free again, and read
            await again.stop()
            # Run after run, three at a time: three slots, never more.
            for _ in range(4):
                await stop_all([await started() for _ in range(3)])
            slots = {f"dht-slot-{slot}.{kind}" for slot in range(3) for kind in ("dat", "lock")}
            assert {path.name for path in state.iterdir()} == slots
            # With every slot held, one more runs without a table file.
            holding = [await started() for _ in range(TABLE_SLOTS)]
            extra = await started()
            assert dht(extra).table_path is None
            await stop_all([*holding, extra])
            assert len(list(state.iterdir())) == 2 * TABLE_SLOTS
            # A port asked for keeps its own table, as before.
            port = free_port()
            fixed = await started(port)
            before = node_id(fixed)
            await fixed.stop()
            assert (state / f"dht-{port}.dat").exists()
            fixed = await started(port)
            assert node_id(fixed) == before
            await fixed.stop()
        finally:
            await router.stop()

    asyncio.run(scenario())
