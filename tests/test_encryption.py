"""Protocol encryption (MSE/PE) with libtorrent forcing it, both directions, through shoal nodes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import libtorrent as lt
import ltclient
import pytest
from conftest import LOOPBACK, until
from mse_peer import encrypted_session
from test_node import start_node

from shoal.metainfo import load_torrent
from shoal.node import Node


@pytest.fixture
def payload(random_file, tmp_path) -> tuple[Path, Path]:
    """A 3 MiB file and a libtorrent-made torrent of it."""
    source = random_file(3 * 1024 * 1024 + 17, "data/secret.bin", seed=9)
    torrent = tmp_path / "secret.torrent"
    torrent.write_bytes(ltclient.make_torrent(source, piece_size=64 * 1024))
    return source, torrent


async def shoal_get(torrent: Path, out: Path, port: int, encryption: str) -> Node:
    """A shoal node that downloads torrent from 127.0.0.1:port; returns it once complete."""
    node = await start_node(encryption=encryption)
    parsed = load_torrent(torrent)
    task = await node.add(parsed.info_hash, parsed, out, [(LOOPBACK, port)])
    try:
        await asyncio.wait_for(task.completed.wait(), 60)
    finally:
        await node.stop()
    return node


@pytest.mark.parametrize("encryption", ["prefer", "require"])
def test_shoal_leeches_from_libtorrent_that_forces_rc4(payload, tmp_path, encryption):
    source, torrent = payload
    session = encrypted_session(lt.enc_level.rc4)
    ltclient.seed(session, torrent, source.parent)
    port = ltclient.listen_port(session)
    asyncio.run(shoal_get(torrent, tmp_path / "out", port, encryption))
    assert (tmp_path / "out" / source.name).read_bytes() == source.read_bytes()


def test_shoal_set_to_off_cannot_trade_with_a_peer_that_forces_rc4(payload, tmp_path):
    source, torrent = payload
    session = encrypted_session(lt.enc_level.rc4)
    ltclient.seed(session, torrent, source.parent)
    port = ltclient.listen_port(session)
    parsed = load_torrent(torrent)

    async def scenario() -> None:
        node = await start_node(encryption="off")
        try:
            task = await node.add(parsed.info_hash, parsed, tmp_path / "out", [(LOOPBACK, port)])
            assert task.swarm is not None
            sources = task.swarm.sources.sources

            def refused() -> bool:
                source = sources.get((LOOPBACK, port))
                return source is not None and source.failures >= 2

            # Each plaintext dial is hung up on before a handshake; the back-off grows.
            await until(refused, "two refused dials", 20)
            assert not task.completed.is_set() and task.swarm.downloaded == 0
        finally:
            await node.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("encryption", ["prefer", "require"])
def test_libtorrent_forcing_rc4_leeches_from_shoal(payload, tmp_path, encryption):
    source, torrent = payload
    parsed = load_torrent(torrent)
    session = encrypted_session(lt.enc_level.rc4)

    async def scenario() -> None:
        node = await start_node(encryption=encryption)
        try:
            await node.add(parsed.info_hash, parsed, source.parent)
            handle = ltclient.leech(session, torrent, tmp_path / "out")
            ltclient.connect(handle, node.port)
            rc4_seen = []

            def finished() -> bool:
                rc4_seen.extend(p.flags & p.rc4_encrypted for p in handle.get_peer_info())
                return handle.status().is_seeding

            await until(finished, "libtorrent to finish", 60)
            assert any(rc4_seen), "libtorrent saw no RC4-encrypted peer"
        finally:
            await node.stop()

    asyncio.run(scenario())
    ltclient.flush(session, session.get_torrents()[0])
    assert (tmp_path / "out" / source.name).read_bytes() == source.read_bytes()


def test_shoal_requiring_encryption_refuses_a_plaintext_peer(payload, tmp_path, caplog):
    source, torrent = payload
    parsed = load_torrent(torrent)
    session = ltclient.make_session()  # plaintext only when it dials
    caplog.set_level(logging.INFO, logger="shoal.node")

    async def scenario() -> None:
        node = await start_node(encryption="require")
        try:
            await node.add(parsed.info_hash, parsed, source.parent)
            handle = ltclient.leech(session, torrent, tmp_path / "out")
            ltclient.connect(handle, node.port)
            await until(lambda: "not allowed by --encryption" in caplog.text, "a refusal", 20)
            # libtorrent's attempt was refused: the seeder has no peer.
            assert not node.torrents[parsed.info_hash].connections
        finally:
            await node.stop()

    asyncio.run(scenario())


def test_shoal_get_requiring_encryption_trades_with_libtorrent_that_forces_it(
    payload, shoal_cli, tmp_path
):
    source, torrent = payload
    session = encrypted_session(lt.enc_level.rc4)
    ltclient.seed(session, torrent, source.parent)
    port = ltclient.listen_port(session)
    out = tmp_path / "out"
    got = shoal_cli.run(
        "get", torrent, "-o", out, "--peer", f"{LOOPBACK}:{port}", "--encryption", "require"
    )
    assert got.returncode == 0, got.stderr
    assert (out / source.name).read_bytes() == source.read_bytes()


def test_libtorrent_forcing_encryption_leeches_from_shoal_seed(payload, shoal_cli, tmp_path):
    source, torrent = payload
    port = shoal_cli.start_seeder(torrent, source.parent, "--encryption", "require")
    session = encrypted_session(lt.enc_level.rc4)
    handle = ltclient.leech(session, torrent, tmp_path / "out")
    ltclient.connect(handle, port)
    ltclient.wait_finished(handle, timeout=60)
    ltclient.flush(session, handle)
    assert (tmp_path / "out" / source.name).read_bytes() == source.read_bytes()
