"""The libtorrent harness itself: one libtorrent seeds, another leeches, over loopback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import ltclient

SIZE = 3 * 1024 * 1024


def test_libtorrent_leecher_downloads_from_libtorrent_seeder(
    tmp_path: Path, random_file: Callable[..., Path]
) -> None:
    content = random_file(SIZE + 1234, "seed/content.bin", seed=7)
    torrent = tmp_path / "content.torrent"
    torrent.write_bytes(ltclient.make_torrent(content, piece_size=256 * 1024))

    seeder_session = ltclient.make_session()
    leecher_session = ltclient.make_session()
    seeder = ltclient.seed(seeder_session, torrent, content.parent)
    ltclient.wait_seeding(seeder, timeout=5)
    leecher = ltclient.leech(leecher_session, torrent, tmp_path / "leech")
    ltclient.connect(leecher, ltclient.listen_port(seeder_session))

    ltclient.wait_finished(leecher, timeout=8)
    ltclient.flush(leecher_session, leecher, timeout=5)

    assert (tmp_path / "leech" / "content.bin").read_bytes() == content.read_bytes()
    assert ltclient.total_download(leecher) >= content.stat().st_size
    assert ltclient.total_upload(seeder) >= content.stat().st_size
