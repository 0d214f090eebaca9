"""Whole nodes on loopback against peers that never read or hog slots: bounds that must hold."""

from __future__ import annotations

import asyncio
import contextlib
import random

from conftest import until
from test_node import LOOPBACK, make_content, start_node

from shoal.node import Node
from shoal.node.overlay import OverlayOptions
from shoal.overlay.messages import GREETING as OVERLAY_GREETING
from shoal.swarm.budget import PEER_OUTPUT_HARD_LIMIT, PEER_REPLY_LIMIT
from shoal.wire import extensions as ext
from shoal.wire import messages as m


async def hostile_peer(
    port: int, info_hash: bytes, source: str = LOOPBACK
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection from source that has done the handshake and nothing else."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port, local_addr=(source, 0))
    peer_id = b"-XX0000-" + random.randbytes(12)
    writer.write(m.handshake_bytes(info_hash, peer_id))
    await writer.drain()
    await reader.readexactly(m.HANDSHAKE_LENGTH)
    return reader, writer


def test_peers_that_ask_much_and_never_read_hold_little(tmp_path):
    torrent, _content, folder = make_content(tmp_path, 2000 * 16 * 1024, 16 * 1024)

    async def scenario() -> None:
        seeder = await start_node()
        try:
            task = await seeder.add(torrent.info_hash, torrent, folder)
            assert task.swarm is not None
            writers = []
            for _ in range(4):
                _reader, writer = await hostile_peer(seeder.port, torrent.info_hash)
                writer.write(m.frame(m.INTERESTED))
                # One block of a different piece each: once, every reply pinned a whole piece.
                flood = b"".join(
                    m.frame_block_ref(m.REQUEST, index, 0, 16 * 1024) for index in range(1999)
                )
                writer.write(flood)
                writers.append(writer)
            queued_most = 0

            def all_requests_in() -> bool:
                nonlocal queued_most
                queued_most = max(queued_most, seeder.reply_budget.used)
                swarm = task.swarm
                assert swarm is not None
                served = sum(peer.uploaded // (16 * 1024) for peer in swarm.peers.values())
                queued = sum(len(peer.upload_queue) for peer in swarm.peers.values())
                return len(swarm.peers) == 4 and served + queued == 4 * 1999

            await until(all_requests_in, "every request to arrive", 30)
            bound = 4 * (PEER_REPLY_LIMIT + 64 * 1024)
            assert queued_most <= bound
            unsent = sum(c.unsent() for c in task.connections.values())
            assert unsent <= 4 * PEER_OUTPUT_HARD_LIMIT
            for writer in writers:
                writer.close()
        finally:
            await seeder.stop()

    asyncio.run(scenario())


def test_metadata_requests_do_not_amplify(tmp_path):
    torrent, _content, folder = make_content(tmp_path, 1024 * 1024, 16 * 1024)

    async def scenario() -> None:
        seeder = await start_node()
        try:
            await seeder.add(torrent.info_hash, torrent, folder)
            reader, writer = await hostile_peer(seeder.port, torrent.info_hash)
            handshake = ext.encode_handshake(
                listen_port=None, metadata_size=None, request_queue=250, client="x"
            )
            request = ext.encode_metadata(ext.MetadataMessage(ext.METADATA_REQUEST, 0))
            local_id = ext.LOCAL_IDS[ext.UT_METADATA]
            writer.write(m.frame(m.EXTENDED, b"\x00" + handshake))
            writer.write(m.frame(m.EXTENDED, bytes((local_id,)) + request) * 20_000)
            # The second request for the same piece drops us: the seeder answers one at most.
            received = 0
            with contextlib.suppress(ConnectionResetError):
                while chunk := await asyncio.wait_for(reader.read(65536), 10):
                    received += len(chunk)
            assert received < 64 * 1024
        finally:
            await seeder.stop()

    asyncio.run(scenario())


def test_idle_connections_from_one_host_cannot_keep_a_download_at_zero(tmp_path):
    torrent, content, folder = make_content(tmp_path, 2 * 1024 * 1024, 64 * 1024)

    async def scenario() -> None:
        seeder = await start_node()
        leecher = await start_node()
        hogs = []
        try:
            await seeder.add(torrent.info_hash, torrent, folder)
            # Another host (127.0.0.2) holds as many handshaken, silent connections as it can.
            for _ in range(60):
                with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                    hogs.append(await hostile_peer(seeder.port, torrent.info_hash, "127.0.0.2"))
            task = await leecher.add(
                torrent.info_hash, torrent, tmp_path / "out", [(LOOPBACK, seeder.port)]
            )
            await asyncio.wait_for(task.completed.wait(), 60)
        finally:
            for _reader, writer in hogs:
                writer.close()
            await leecher.stop()
            await seeder.stop()

    asyncio.run(scenario())
    assert (tmp_path / "out" / "content.bin").read_bytes() == content


def test_silent_connections_reopened_fast_cannot_lock_out_a_peer(tmp_path):
    torrent, content, folder = make_content(tmp_path, 1024 * 1024, 64 * 1024)

    async def scenario() -> None:
        seeder = await start_node()
        leecher = await start_node()
        stop = asyncio.Event()

        async def flood() -> None:
            # Silent connections from 127.0.0.2, each re-opened as soon as it is closed.
            open_ones: list[asyncio.StreamWriter] = []
            while not stop.is_set():
                try:
                    _r, writer = await asyncio.open_connection(
                        LOOPBACK, seeder.port, local_addr=("127.0.0.2", 0)
                    )
                    open_ones.append(writer)
                except OSError:
                    await asyncio.sleep(0)
                if len(open_ones) > 150:
                    open_ones.pop(0).close()
            for writer in open_ones:
                writer.close()

        flooder = asyncio.ensure_future(flood())
        try:
            await seeder.add(torrent.info_hash, torrent, folder)
            await until(lambda: len(seeder._gate.waiting) >= 20, "the flood to start", 10)
            task = await leecher.add(
                torrent.info_hash, torrent, tmp_path / "out", [(LOOPBACK, seeder.port)]
            )
            await asyncio.wait_for(task.completed.wait(), 60)
        finally:
            stop.set()
            await flooder
            await leecher.stop()
            await seeder.stop()

    asyncio.run(scenario())
    assert (tmp_path / "out" / "content.bin").read_bytes() == content


def test_a_dropped_peer_that_never_reads_takes_its_unsent_bytes_with_it(tmp_path):
    torrent, _content, folder = make_content(tmp_path, 400 * 16 * 1024, 16 * 1024)

    async def scenario() -> None:
        seeder = await start_node()
        try:
            task = await seeder.add(torrent.info_hash, torrent, folder)
            _reader, writer = await hostile_peer(seeder.port, torrent.info_hash)
            writer.write(m.frame(m.INTERESTED))
            writer.write(
                b"".join(m.frame_block_ref(m.REQUEST, i, 0, 16 * 1024) for i in range(400))
            )
            await until(
                lambda: any(c.unsent() > 1024 * 1024 for c in task.connections.values()),
                "replies to pile up unread",
                10,
            )
            [connection] = task.connections.values()
            assert task.swarm is not None and connection.key is not None
            task.swarm._close(task.swarm.peers[connection.key], "the test drops it", now=0.0)
            task.pump()
            # A plain close would wait for the peer to read all of it: for ever.
            await until(lambda: connection.transport is None, "the socket to be let go", 5)
            writer.close()
        finally:
            await seeder.stop()

    asyncio.run(scenario())


def test_a_file_gone_while_seeding_is_one_sentence(tmp_path):
    torrent, _content, folder = make_content(tmp_path, 64 * 16 * 1024, 16 * 1024)

    async def scenario() -> None:
        seeder = await start_node()
        try:
            task = await seeder.add(torrent.info_hash, torrent, folder)
            (folder / "content.bin").unlink()
            assert task.storage is not None
            task.storage.close()  # so the next read opens the file anew and finds it gone
            _reader, writer = await hostile_peer(seeder.port, torrent.info_hash)
            writer.write(m.frame(m.INTERESTED) + m.frame_block_ref(m.REQUEST, 5, 0, 16 * 1024))
            await asyncio.wait_for(task.stopped.wait(), 10)
            assert task.failed is not None
            assert "content.bin" in str(task.failed)
            writer.close()
        finally:
            await seeder.stop()

    asyncio.run(scenario())


def test_an_overlay_greeting_is_closed_by_a_node_off_the_overlay_and_linked_by_one_on_it():
    async def greet(node: Node) -> bytes:
        reader, writer = await asyncio.open_connection(LOOPBACK, node.port)
        writer.write(OVERLAY_GREETING)
        await writer.drain()
        # Not taken for MSE (whose handshake would wait for more): answered or closed at once.
        answer = await asyncio.wait_for(reader.read(100), 10)
        writer.close()
        return answer

    async def scenario() -> tuple[bytes, bytes]:
        off = await start_node()
        on = await start_node(overlay=OverlayOptions())
        try:
            return await greet(off), await greet(on)
        finally:
            await off.stop()
            await on.stop()

    closed, answered = asyncio.run(scenario())
    assert closed == b""
    # The overlay's greeting and hello come back: the link is the overlay core's now.
    assert answered.startswith(OVERLAY_GREETING)
    assert len(answered) > len(OVERLAY_GREETING)
