"""Whole nodes on loopback sockets: several seeders, leechers trading, a malicious peer."""

from __future__ import annotations

import asyncio
import errno
import random
import socket
import struct
from pathlib import Path

import pytest
from conftest import until

from shoal.addresses import host_has_ipv6
from shoal.metainfo import Torrent, create_torrent
from shoal.node import Node, TorrentTask
from shoal.wire import messages as m

LOOPBACK = "127.0.0.1"


def make_content(tmp_path: Path, size: int, piece_length: int) -> tuple[Torrent, bytes, Path]:
    """A random file in a seed folder and its torrent."""
    content = random.Random(size).randbytes(size)
    folder = tmp_path / "seed"
    folder.mkdir()
    (folder / "content.bin").write_bytes(content)
    return create_torrent(folder / "content.bin", piece_length=piece_length), content, folder


needs_ipv6 = pytest.mark.skipif(not host_has_ipv6(), reason="the host has no IPv6")


async def start_node(host: str = LOOPBACK, **options) -> Node:
    """A node listening on a free loopback port (or any free port on host)."""
    node = Node(port=0, host=host, **options)
    await node.start()
    return node


def received_from(task: TorrentTask) -> dict[int, int]:
    """Payload bytes received per remote listening port."""
    assert task.swarm is not None
    return {address[1]: down for address, (down, _up) in task.swarm.transfer_totals().items()}


def test_three_seeders_each_contribute(tmp_path):
    torrent, content, folder = make_content(tmp_path, 24 * 1024 * 1024, 256 * 1024)

    async def scenario() -> None:
        seeders = [await start_node(upload_limit=4 * 1024 * 1024) for _ in range(3)]
        leecher = await start_node()
        try:
            for seeder in seeders:
                await seeder.add(torrent.info_hash, torrent, folder)
            peers = [(LOOPBACK, seeder.port) for seeder in seeders]
            task = await leecher.add(torrent.info_hash, torrent, tmp_path / "out", peers)
            await asyncio.wait_for(task.completed.wait(), 60)
            sources = received_from(task)
            assert all(sources.get(seeder.port, 0) > 0 for seeder in seeders), sources
        finally:
            for node in [*seeders, leecher]:
                await node.stop()

    asyncio.run(scenario())
    assert (tmp_path / "out" / "content.bin").read_bytes() == content


def test_leechers_upload_to_each_other(tmp_path):
    torrent, content, folder = make_content(tmp_path, 16 * 1024 * 1024, 256 * 1024)

    async def scenario() -> None:
        seeder = await start_node(upload_limit=2 * 1024 * 1024)
        leechers = [await start_node() for _ in range(3)]
        try:
            await seeder.add(torrent.info_hash, torrent, folder)
            known = [(LOOPBACK, seeder.port)]
            tasks = []
            for number, node in enumerate(leechers):
                root = tmp_path / f"leecher{number}"
                tasks.append(await node.add(torrent.info_hash, torrent, root, known))
                known = [*known, (LOOPBACK, node.port)]
            await asyncio.wait_for(asyncio.gather(*(t.completed.wait() for t in tasks)), 90)
            between_leechers = sum(
                down
                for task in tasks
                for port, down in received_from(task).items()
                if port != seeder.port
            )
            assert between_leechers > len(content) // 2
        finally:
            for node in [seeder, *leechers]:
                await node.stop()

    asyncio.run(scenario())
    for number in range(3):
        assert (tmp_path / f"leecher{number}" / "content.bin").read_bytes() == content


class CorruptSeeder(asyncio.Protocol):
    """A peer that claims every piece and answers every request with garbage."""

    def __init__(self, info_hash: bytes) -> None:
        self.info_hash = info_hash
        self.buffer = b""
        self.shaken = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.shaken:
            if len(self.buffer) < m.HANDSHAKE_LENGTH:
                return
            self.buffer = self.buffer[m.HANDSHAKE_LENGTH :]
            self.shaken = True
            self.transport.write(m.handshake_bytes(self.info_hash, b"-EV0000-evilevilevil"))
            self.transport.write(m.frame(m.HAVE_ALL) + m.frame(m.UNCHOKE))
        while len(self.buffer) >= 4:
            length = int.from_bytes(self.buffer[:4], "big")
            if len(self.buffer) < 4 + length:
                return
            message, self.buffer = self.buffer[4 : 4 + length], self.buffer[4 + length :]
            if message[:1] == bytes([m.REQUEST]):
                index, begin, size = (int.from_bytes(message[i : i + 4], "big") for i in (1, 5, 9))
                self.transport.write(m.piece_header(index, begin, size) + random.randbytes(size))


def test_a_host_without_ipv6_still_listens_on_ipv4(monkeypatch):
    real_socket = socket.socket

    class NoIpv6(real_socket):
        """A socket module whose host lacks IPv6."""

        def __init__(self, family=socket.AF_INET, *args, **kwargs):
            if family == socket.AF_INET6:
                raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
            super().__init__(family, *args, **kwargs)

    monkeypatch.setattr(socket, "socket", NoIpv6)

    async def scenario() -> None:
        node = await start_node(host="0.0.0.0")
        try:
            assert node.port > 0
            assert node.datagrams.serves(socket.AF_INET)
            assert not node.datagrams.serves(socket.AF_INET6)
        finally:
            await node.stop()

    asyncio.run(scenario())


@needs_ipv6
def test_a_node_on_the_wildcard_address_serves_ipv6_peers_on_the_same_port(tmp_path):
    torrent, content, folder = make_content(tmp_path, 2 * 1024 * 1024, 64 * 1024)

    async def scenario() -> None:
        seeder = await start_node(host="0.0.0.0")
        leecher = await start_node()
        try:
            await seeder.add(torrent.info_hash, torrent, folder)
            peers = [("::1", seeder.port)]
            task = await leecher.add(torrent.info_hash, torrent, tmp_path / "out", peers)
            await asyncio.wait_for(task.completed.wait(), 30)
            assert set(received_from(task)) == {seeder.port}
        finally:
            await seeder.stop()
            await leecher.stop()

    asyncio.run(scenario())
    assert (tmp_path / "out" / "content.bin").read_bytes() == content


def test_corrupt_peer_is_banned_and_download_completes(tmp_path):
    torrent, content, folder = make_content(tmp_path, 8 * 1024 * 1024, 128 * 1024)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        evil = await loop.create_server(lambda: CorruptSeeder(torrent.info_hash), LOOPBACK, 0)
        evil_port = evil.sockets[0].getsockname()[1]
        # The honest seeder is slow, so the liar gets plenty of chances to send bad data.
        seeder = await start_node(upload_limit=1024 * 1024)
        leecher = await start_node()
        try:
            await seeder.add(torrent.info_hash, torrent, folder)
            peers = [(LOOPBACK, evil_port), (LOOPBACK, seeder.port)]
            task = await leecher.add(torrent.info_hash, torrent, tmp_path / "out", peers)
            await asyncio.wait_for(task.completed.wait(), 60)
            assert task.swarm is not None
            assert task.swarm.is_banned((LOOPBACK, evil_port))
            assert not task.swarm.is_banned((LOOPBACK, seeder.port))
        finally:
            evil.close()
            await seeder.stop()
            await leecher.stop()

    asyncio.run(scenario())
    assert (tmp_path / "out" / "content.bin").read_bytes() == content


def test_unfinished_handshakes_are_closed(tmp_path, monkeypatch):
    monkeypatch.setattr("shoal.node.node.HANDSHAKE_TIMEOUT", 0.3)

    async def scenario() -> None:
        node = await start_node()
        try:
            streams = [await asyncio.open_connection(LOOPBACK, node.port) for _ in range(3)]
            for _reader, writer in streams:
                writer.write(m.handshake_bytes(bytes(20), bytes(20))[:67])  # one byte short
            for reader, _writer in streams:
                assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the node
        finally:
            await node.stop()

    asyncio.run(scenario())


def test_leecher_reconnects_after_dropping_a_peer(tmp_path):
    torrent, content, folder = make_content(tmp_path, 4 * 1024 * 1024, 256 * 1024)

    async def scenario() -> None:
        seeder = await start_node(upload_limit=1024 * 1024)
        leecher = await start_node()
        try:
            await seeder.add(torrent.info_hash, torrent, folder)
            task = await leecher.add(
                torrent.info_hash, torrent, tmp_path / "out", [(LOOPBACK, seeder.port)]
            )
            await until(lambda: task.connections, "a first connection", 10)
            assert task.swarm is not None
            peer = next(iter(task.swarm.peers.values()))
            task.swarm._close(peer, "dropped by the test", now=asyncio.get_running_loop().time())
            task.pump()
            await asyncio.wait_for(task.completed.wait(), 60)
        finally:
            await seeder.stop()
            await leecher.stop()

    asyncio.run(scenario())
    assert (tmp_path / "out" / "content.bin").read_bytes() == content


def test_a_seeder_dials_a_given_peer_again_after_it_hangs_up(tmp_path):
    torrent, _content, folder = make_content(tmp_path, 256 * 1024, 16 * 1024)

    async def scenario() -> None:
        accepted = 0

        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # Like a Transmission leecher done with the metadata: read the handshake, leave.
            nonlocal accepted
            accepted += 1
            await reader.readexactly(m.HANDSHAKE_LENGTH)
            writer.close()

        leecher = await asyncio.start_server(hang_up, LOOPBACK, 0)
        port = leecher.sockets[0].getsockname()[1]
        seeder = await start_node()
        try:
            await seeder.add(torrent.info_hash, torrent, folder, [(LOOPBACK, port)])
            await until(lambda: accepted >= 3, "the seeder to dial again", 20)
        finally:
            await seeder.stop()
            leecher.close()

    asyncio.run(scenario())


def test_a_node_handed_its_own_address_stops_dialling_it(tmp_path):
    torrent, _content, _folder = make_content(tmp_path, 256 * 1024, 16 * 1024)

    async def scenario() -> None:
        node = Node(port=0, host="0.0.0.0")
        await node.start()
        # Another loopback address of this very host: only the handshake shows it is us.
        ourselves = ("127.0.0.2", node.port)
        try:
            task = await node.add(torrent.info_hash, None, tmp_path / "out")
            task.add_peers([ourselves], learned=True)
            await until(lambda: ourselves in node.own_addresses, "self-recognition", 10)
            assert task.swarm is not None
            task.add_peers([ourselves], learned=True)
            assert ourselves not in task.swarm.sources
            assert node.is_self(ourselves)
        finally:
            await node.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "tracker_host", [LOOPBACK, pytest.param("::1", marks=needs_ipv6)], ids=["ipv4", "ipv6"]
)
def test_udp_trackers_are_asked_from_the_nodes_one_port(tmp_path, tracker_host):
    torrent, _content, folder = make_content(tmp_path, 256 * 1024, 16 * 1024)

    async def scenario() -> None:
        seen: list[tuple[str, int]] = []

        class Tracker(asyncio.DatagramProtocol):
            """Answers connect and announce (BEP 15), and notes who asked."""

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                seen.append(addr[:2])
                action, transaction = struct.unpack_from(">II", data, 8)
                reply = (
                    struct.pack(">IIQ", 0, transaction, 42)
                    if action == 0
                    else struct.pack(">IIIII", 1, transaction, 1800, 0, 1)
                )
                self.transport.sendto(reply, addr)  # type: ignore[attr-defined]

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Tracker, local_addr=(tracker_host, 0))
        port = transport.get_extra_info("sockname")[1]
        url = f"udp://{tracker_host}:{port}/announce".replace("::1", "[::1]")
        # On the wildcard address the node listens on IPv4 and IPv6 alike.
        node = await start_node(host="0.0.0.0")
        try:
            task = await node.add(torrent.info_hash, torrent, folder, trackers=[[url]])
            assert task.tracker is not None
            await until(lambda: len(seen) >= 2, "a connect and an announce", 10)
            # One port number for TCP and UDP: the tracker sees the port peers dial.
            assert {port for _host, port in seen} == {node.port}
            await until(lambda: not task.tracker_problem(), "the announce to succeed", 10)
        finally:
            await node.stop()
            transport.close()

    asyncio.run(scenario())
