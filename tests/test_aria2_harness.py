"""The aria2c harness itself: aria2c finds a libtorrent seeder through the helper's tracker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aria2
import ltclient


def test_aria2_downloads_from_libtorrent_seeder_via_tracker(
    tmp_path: Path, random_file: Callable[..., Path]
) -> None:
    content = random_file(1024 * 1024 + 99, "seed/content.bin", seed=11)
    torrent = tmp_path / "content.torrent"
    torrent.write_bytes(ltclient.make_torrent(content, piece_size=64 * 1024))
    session = ltclient.make_session()
    seeder = ltclient.seed(session, torrent, content.parent)
    ltclient.wait_seeding(seeder, timeout=5)

    result = aria2.aria2_download(
        torrent, tmp_path / "out", ltclient.listen_port(session), timeout=30
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out" / "content.bin").read_bytes() == content.read_bytes()
    # The bytes came from the seeder, not from anywhere else.
    assert ltclient.total_upload(seeder) >= content.stat().st_size
