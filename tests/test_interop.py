"""shoal trading pieces with real third-party clients: libtorrent and aria2, on loopback."""

from __future__ import annotations

from pathlib import Path

import aria2
import ltclient
import pytest
from conftest import LOOPBACK, free_port, wait_for

from shoal.metainfo import load_torrent


@pytest.fixture
def album(random_file, tmp_path) -> Path:
    """A multi-file folder: files of odd sizes, one in a subfolder."""
    random_file(1_500_000, "data/album/one.bin", seed=1)
    random_file(777_777, "data/album/sub dir/two.bin", seed=2)
    random_file(10, "data/album/three.txt", seed=3)
    return tmp_path / "data" / "album"


@pytest.fixture
def single(random_file) -> Path:
    """A single 5 MiB file, not a multiple of the piece size."""
    return random_file(5 * 1024 * 1024 + 4321, "data/single.bin", seed=4)


def same_tree(a: Path, b: Path) -> bool:
    """Whether two files, or two folders' files, hold the same bytes."""
    if a.is_file():
        return b.is_file() and a.read_bytes() == b.read_bytes()
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    other = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return names == other and all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def libtorrent_download(source: Path | str, port: int, out: Path) -> int:
    """A fresh libtorrent leecher gets a torrent or magnet from 127.0.0.1:port; bytes received."""
    session = ltclient.make_session()
    handle = ltclient.leech(session, source, out)
    ltclient.connect(handle, port)
    ltclient.wait_finished(handle, timeout=60)
    ltclient.flush(session, handle)
    return ltclient.total_download(handle)


@pytest.mark.parametrize("content", ["single", "album"])
def test_shoal_leeches_from_libtorrent(request, content, shoal_cli, tmp_path):
    source: Path = request.getfixturevalue(content)
    torrent = tmp_path / "lt.torrent"
    torrent.write_bytes(ltclient.make_torrent(source, piece_size=256 * 1024))
    session = ltclient.make_session()
    ltclient.seed(session, torrent, source.parent)
    port = ltclient.listen_port(session)
    got = shoal_cli.run("get", torrent, "-o", tmp_path / "out", "--peer", f"{LOOPBACK}:{port}")
    assert got.returncode == 0, got.stderr
    assert same_tree(source, tmp_path / "out" / source.name)


@pytest.mark.parametrize("content", ["single", "album"])
def test_libtorrent_leeches_from_shoal(request, content, shoal_cli, tmp_path):
    source: Path = request.getfixturevalue(content)
    torrent = tmp_path / "shoal.torrent"
    assert shoal_cli.run("create", source, "-o", torrent).returncode == 0
    port = shoal_cli.start_seeder(torrent, source.parent)
    downloaded = libtorrent_download(torrent, port, tmp_path / "out")
    assert same_tree(source, tmp_path / "out" / source.name)
    assert downloaded >= load_torrent(torrent).total_length


def test_shoal_gets_magnet_metadata_from_libtorrent(album, shoal_cli, tmp_path):
    torrent = tmp_path / "lt.torrent"
    torrent.write_bytes(ltclient.make_torrent(album, piece_size=64 * 1024))
    session = ltclient.make_session()
    ltclient.seed(session, torrent, album.parent)
    port = ltclient.listen_port(session)
    magnet = load_torrent(torrent).magnet(peers=[(LOOPBACK, port)])
    got = shoal_cli.run("get", magnet, "-o", tmp_path / "out")
    assert got.returncode == 0, got.stderr
    assert same_tree(album, tmp_path / "out" / "album")


def test_libtorrent_gets_magnet_metadata_from_shoal(single, shoal_cli, tmp_path):
    port = free_port()
    shoal_cli.start("share", single, "--port", port)
    wait_for(lambda: "magnet:" in shoal_cli.output()[0], message="shoal printed no magnet")
    magnet = shoal_cli.output()[0].strip().splitlines()[-1]
    libtorrent_download(magnet, port, tmp_path / "out")
    assert same_tree(single, tmp_path / "out" / single.name)


@pytest.mark.parametrize("content", ["single", "album"])
def test_aria2_leeches_from_shoal(request, content, shoal_cli, tmp_path):
    source: Path = request.getfixturevalue(content)
    torrent = tmp_path / "shoal.torrent"
    assert shoal_cli.run("create", source, "-o", torrent).returncode == 0
    port = shoal_cli.start_seeder(torrent, source.parent)
    result = aria2.aria2_download(torrent, tmp_path / "out", port, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert same_tree(source, tmp_path / "out" / source.name)
