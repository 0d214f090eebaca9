"""shoal trading pieces with Transmission 3.00 (transmission-daemon), on loopback only.

Transmission advertises `reqq` 512 and rejects requests beyond it, and never dials loopback
addresses it learns, so shoal always dials it (`--peer`). The torrents are 16 MiB in 256 KiB
pieces: 1,024 blocks, enough for shoal's request queue to grow to Transmission's limit.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import ltclient
import pytest
from conftest import ShoalCli, wait_for
from test_interop import same_tree
from transmission import TRANSMISSION, TransmissionDaemon

from shoal.hub.server import HubThread
from shoal.metainfo import load_torrent

if shutil.which(TRANSMISSION) is None:
    pytest.skip(
        "transmission-daemon is not installed (apt-get install transmission-daemon)",
        allow_module_level=True,
    )

KiB = 1024
MiB = 1024 * KiB
PIECE = 256 * KiB
# Transmission unchokes a new peer within 10 s, then 16 MiB take a few seconds on loopback;
# the rest is room for a loaded machine.
DEADLINE = 60.0


@pytest.fixture
def transmission(tmp_path: Path) -> Iterator[TransmissionDaemon]:
    """A running transmission-daemon, stopped at teardown."""
    daemon = TransmissionDaemon(tmp_path / "transmission").start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def single(random_file: Callable[..., Path]) -> Path:
    """One file of 16 MiB and a bit: 65 pieces, 1025 blocks."""
    return random_file(16 * MiB + 4321, "data/single.bin", seed=21)


@pytest.fixture
def album(random_file: Callable[..., Path], tmp_path: Path) -> Path:
    """A folder of files of odd sizes, one in a subfolder, 16 MiB in all."""
    random_file(10 * MiB + 1, "data/album/one.bin", seed=22)
    random_file(6 * MiB - 777, "data/album/sub dir/two.bin", seed=23)
    random_file(10, "data/album/three.txt", seed=24)
    return tmp_path / "data" / "album"


@pytest.fixture(params=["single", "album"])
def content(request: pytest.FixtureRequest) -> Path:
    """Each of the single file and the folder in turn."""
    path: Path = request.getfixturevalue(request.param)
    return path


def create(shoal_cli: ShoalCli, source: Path, torrent: Path) -> Path:
    """A tracker-free torrent of source with 256 KiB pieces."""
    made = shoal_cli.run("create", source, "-o", torrent, "--piece-size", PIECE)
    assert made.returncode == 0, made.stderr
    return torrent


def transmission_seeds(daemon: TransmissionDaemon, torrent: Path, data_dir: Path) -> int:
    """Add torrent to Transmission over data_dir and wait until it has checked it and seeds."""
    torrent_id = daemon.add_torrent(torrent.read_bytes(), data_dir)
    daemon.wait_seeding(torrent_id, timeout=DEADLINE)
    return torrent_id


def shoal_get(shoal_cli: ShoalCli, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run `shoal get`; fail with its last words if it has not finished by the deadline."""
    try:
        return shoal_cli.run("get", *args, timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        pass  # failed below, out of the handler, so the report is not two tracebacks long
    stderr = shoal_cli.output()[1].strip().splitlines()
    pytest.fail(
        f"shoal get did not finish within {DEADLINE}s; it last said:"
        f" {stderr[-1] if stderr else '(nothing)'}"
    )


def test_shoal_leeches_from_transmission(
    content: Path, transmission: TransmissionDaemon, shoal_cli: ShoalCli, tmp_path: Path
) -> None:
    torrent = create(shoal_cli, content, tmp_path / "t.torrent")
    seeder = transmission_seeds(transmission, torrent, content.parent)
    out = tmp_path / "out"

    got = shoal_get(shoal_cli, torrent, "-o", out, "--peer", transmission.peer_address)

    assert got.returncode == 0, got.stderr
    assert same_tree(content, out / content.name)
    # Transmission was the only source, so it sent every byte.
    status = transmission.status(seeder)
    assert status.uploaded >= load_torrent(torrent).total_length, status.describe()


def test_shoal_gets_magnet_from_transmission(
    single: Path, transmission: TransmissionDaemon, shoal_cli: ShoalCli, tmp_path: Path
) -> None:
    torrent = create(shoal_cli, single, tmp_path / "t.torrent")
    transmission_seeds(transmission, torrent, single.parent)
    info_hash = load_torrent(torrent).info_hash_hex
    magnet = f"magnet:?xt=urn:btih:{info_hash}&x.pe={transmission.peer_address}"

    got = shoal_get(shoal_cli, magnet, "-o", tmp_path / "out")

    assert got.returncode == 0, got.stderr
    assert same_tree(single, tmp_path / "out" / single.name)


def test_transmission_leeches_from_shoal(
    content: Path, transmission: TransmissionDaemon, shoal_cli: ShoalCli, tmp_path: Path
) -> None:
    torrent = create(shoal_cli, content, tmp_path / "t.torrent")
    out = tmp_path / "out"
    leecher = transmission.add_torrent(torrent.read_bytes(), out)
    # Transmission does not dial loopback peers it learns of, so the seeder dials it.
    shoal_cli.start_seeder(torrent, content.parent, "--peer", transmission.peer_address)

    done = transmission.wait_complete(leecher, timeout=DEADLINE)

    assert done.downloaded >= load_torrent(torrent).total_length, done.describe()
    # Stopping the daemon flushes its write cache, so the files hold every verified byte.
    transmission.stop()
    assert same_tree(content, out / content.name)


def test_transmission_gets_magnet_from_shoal(
    single: Path, transmission: TransmissionDaemon, shoal_cli: ShoalCli, tmp_path: Path
) -> None:
    torrent = create(shoal_cli, single, tmp_path / "t.torrent")
    out = tmp_path / "out"
    leecher = transmission.add_magnet(load_torrent(torrent).magnet(), out)
    shoal_cli.start_seeder(torrent, single.parent, "--peer", transmission.peer_address)

    transmission.wait_complete(leecher, timeout=DEADLINE)

    transmission.stop()
    assert same_tree(single, out / single.name)


def test_harness_libtorrent_leeches_from_transmission(
    random_file: Callable[..., Path], transmission: TransmissionDaemon, tmp_path: Path
) -> None:
    """The harness without shoal: Transmission seeds a file libtorrent fetches by dialling it."""
    content = random_file(MiB + 99, "seed/content.bin", seed=25)
    torrent = tmp_path / "lt.torrent"
    torrent.write_bytes(ltclient.make_torrent(content, piece_size=64 * KiB))
    seeder = transmission_seeds(transmission, torrent, content.parent)
    session = ltclient.make_session()
    handle = ltclient.leech(session, torrent, tmp_path / "out")
    ltclient.connect(handle, transmission.peer_port)

    ltclient.wait_finished(handle, timeout=DEADLINE)
    ltclient.flush(session, handle)

    assert (tmp_path / "out" / content.name).read_bytes() == content.read_bytes()
    assert transmission.status(seeder).uploaded >= content.stat().st_size


def test_shoal_gets_by_info_hash_from_transmission_through_the_hub(
    single: Path,
    hub: HubThread,
    transmission: TransmissionDaemon,
    shoal_cli: ShoalCli,
    tmp_path: Path,
) -> None:
    torrent = tmp_path / "t.torrent"
    made = shoal_cli.run(
        "create", single, "-o", torrent, "--piece-size", PIECE, "--tracker", f"{hub.url}/announce"
    )
    assert made.returncode == 0, made.stderr
    transmission_seeds(transmission, torrent, single.parent)
    info_hash = load_torrent(torrent).info_hash
    wait_for(
        lambda: hub.hub.registry.stats(info_hash).seeders == 1,
        timeout=DEADLINE,
        message="Transmission never announced to the hub",
    )

    got = shoal_get(shoal_cli, info_hash.hex(), "--hub", hub.url, "-o", tmp_path / "out")

    assert got.returncode == 0, got.stderr
    assert same_tree(single, tmp_path / "out" / single.name)


def test_shoal_leeches_from_transmission_that_requires_encryption(
    single: Path, shoal_cli: ShoalCli, tmp_path: Path
) -> None:
    daemon = TransmissionDaemon(tmp_path / "transmission", encryption="required").start()
    try:
        torrent = create(shoal_cli, single, tmp_path / "t.torrent")
        transmission_seeds(daemon, torrent, single.parent)
        # shoal's default dials plaintext first; refused, it dials again encrypted.
        got = shoal_get(shoal_cli, torrent, "-o", tmp_path / "out", "--peer", daemon.peer_address)
        assert got.returncode == 0, got.stderr
        assert same_tree(single, tmp_path / "out" / single.name)
    finally:
        daemon.stop()
