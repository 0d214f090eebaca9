"""The shoal command as a user runs it: real processes on loopback."""

from __future__ import annotations

import hashlib
import re
import signal
import struct
import subprocess

import pytest
from conftest import LOOPBACK, free_port, port_open, wait_for

from shoal import bencode
from shoal.metainfo import load_torrent
from shoal.storage.resume import ResumeFile


def fetched(stdout: str) -> int:
    """Bytes a finished `shoal get` says it fetched from peers."""
    match = re.search(r"fetched (\d+) bytes", stdout)
    assert match, stdout
    return int(match.group(1))


def test_create_info_seed_get_round_trip(shoal_cli, random_file, tmp_path):
    source = random_file(3 * 1024 * 1024 + 17, "share/movie.bin")
    torrent = tmp_path / "movie.torrent"
    created = shoal_cli.run("create", source, "-o", torrent, "--tracker", "http://t.example/a")
    assert created.returncode == 0, created.stderr
    info = shoal_cli.run("info", torrent)
    parsed = load_torrent(torrent)
    assert parsed.info_hash_hex in info.stdout and "movie.bin" in info.stdout
    assert "magnet:?xt=urn:btih:" in info.stdout

    port = shoal_cli.start_seeder(torrent, source.parent)
    got = shoal_cli.run("get", torrent, "-o", tmp_path / "out", "--peer", f"{LOOPBACK}:{port}")
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out" / "movie.bin").read_bytes() == source.read_bytes()
    assert fetched(got.stdout) == source.stat().st_size


def test_multi_file_share_by_magnet(shoal_cli, random_file, tmp_path):
    random_file(300_000, "album/a.bin", seed=1)
    random_file(700_000, "album/disc 2/b.bin", seed=2)
    port = free_port()
    sharer = shoal_cli.start("share", tmp_path / "album", "--port", port)
    wait_for(lambda: "magnet:" in shoal_cli.output()[0], timeout=30, message="no magnet printed")
    magnet = shoal_cli.output()[0].strip().splitlines()[-1]
    got = shoal_cli.run("get", magnet, "-o", tmp_path / "out")
    assert got.returncode == 0, got.stderr
    for name in ("a.bin", "disc 2/b.bin"):
        assert (tmp_path / "out/album" / name).read_bytes() == (
            tmp_path / "album" / name
        ).read_bytes()
    sharer.send_signal(signal.SIGINT)
    assert sharer.wait(timeout=30) == 0


def test_seed_exits_cleanly_on_sigterm(shoal_cli, random_file, tmp_path):
    source = random_file(100_000, "data/x.bin")
    shoal_cli.run("create", source, "-o", tmp_path / "x.torrent")
    shoal_cli.start_seeder(tmp_path / "x.torrent", source.parent)
    process = shoal_cli.processes[-1]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert "Traceback" not in shoal_cli.output()[1]


def test_kill_9_then_resume_fetches_only_what_was_left(shoal_cli, random_file, tmp_path):
    size = 16 * 1024 * 1024
    source = random_file(size, "data/big.bin")
    torrent = tmp_path / "big.torrent"
    shoal_cli.run("create", source, "-o", torrent, "--piece-size", str(256 * 1024))
    num_pieces = load_torrent(torrent).num_pieces
    # A slow seeder, so the download is surely half way when it is killed.
    port = shoal_cli.start_seeder(torrent, source.parent, "--up-limit", "2048")
    out = tmp_path / "out"
    first = shoal_cli.start("get", torrent, "-o", out, "--peer", f"{LOOPBACK}:{port}")
    resume = ResumeFile(load_torrent(torrent).info_hash, out)

    def saved_pieces() -> int:
        """Pieces in the resume record and its journal, as a restart will read them."""
        try:
            have = bytearray(bencode.decode(resume.path.read_bytes())[b"pieces"])
            journal = resume.journal_path.read_bytes() if resume.journal_path.exists() else b""
        except (OSError, bencode.BencodeError):
            return 0
        for (index,) in struct.iter_unpack(">I", journal[: len(journal) // 4 * 4]):
            have[index] = 1
        return sum(have)

    # Killed at an arbitrary moment, long before the record's periodic save: every piece
    # verified so far is in the journal already.
    wait_for(lambda: saved_pieces() >= num_pieces // 3, timeout=60, message="no progress saved")
    first.kill()
    first.wait()
    verified_before = saved_pieces()
    assert verified_before < num_pieces
    second = shoal_cli.run("get", torrent, "-o", out, "--peer", f"{LOOPBACK}:{port}", timeout=120)
    assert second.returncode == 0, second.stderr
    assert (out / "big.bin").read_bytes() == source.read_bytes()
    left = size - verified_before * 256 * 1024
    assert fetched(second.stdout) <= left


def test_unsafe_path_is_rejected_with_one_sentence(shoal_cli, tmp_path):
    info = {b"length": 5, b"name": b"..", b"piece length": 16384, b"pieces": bytes(20)}
    bad = tmp_path / "evil.torrent"
    bad.write_bytes(bencode.encode({b"info": info}))
    for command in (("info", bad), ("get", bad, "--peer", "127.0.0.1:1")):
        result = shoal_cli.run(*command)
        assert result.returncode == 1
        assert "unsafe file path" in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_malformed_bencode_is_rejected_with_one_sentence(shoal_cli, tmp_path):
    bad = tmp_path / "broken.torrent"
    bad.write_bytes(b"d4:infod6:lengthi05eee")
    result = shoal_cli.run("info", bad)
    assert result.returncode == 1
    assert "not valid bencode" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2(shoal_cli):
    assert shoal_cli.run("get").returncode == 2
    assert shoal_cli.run("get", "x.torrent", "--peer", "nonsense").returncode == 2


@pytest.fixture
def tiny_disk(tmp_path):
    """A 4 MiB tmpfs, if this machine lets us mount one (it needs root)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


def test_full_disk_is_one_sentence_and_keeps_verified_pieces(
    shoal_cli, random_file, tmp_path, tiny_disk
):
    source = random_file(8 * 1024 * 1024, "data/big.bin")
    torrent_path = tmp_path / "big.torrent"
    shoal_cli.run("create", source, "-o", torrent_path, "--piece-size", str(256 * 1024))
    port = shoal_cli.start_seeder(torrent_path, source.parent)
    result = shoal_cli.run("get", torrent_path, "-o", tiny_disk, "--peer", f"{LOOPBACK}:{port}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("shoal: the disk is full")
    assert "Traceback" not in result.stderr
    torrent = load_torrent(torrent_path)
    saved = bencode.decode(ResumeFile(torrent.info_hash, tiny_disk).path.read_bytes())[b"pieces"]
    assert 0 < sum(saved) < torrent.num_pieces
    written = (tiny_disk / "big.bin").open("rb")
    for index, verified in enumerate(saved):
        if verified:
            written.seek(index * torrent.piece_length)
            data = written.read(torrent.piece_length)
            assert hashlib.sha1(data).digest() == torrent.piece_hash(index)


# A stranger's torrent name: rich markup, a terminal escape that turns text red, a newline.
# ("/" cannot be in a torrent's name, but can be in a magnet's: see the magnet below.)
HOSTILE_NAME = "[bold]evil\x1b[31mred\nline.bin"
SHOWN_NAME = "[bold]evil\\x1b[31mred\\nline.bin"


def control_characters(text: str) -> set[str]:
    """The characters in text, other than line ends, that a terminal would act upon."""
    return {char for char in text if not char.isprintable() and char != "\n"}


def test_hostile_names_are_shown_as_inert_text(shoal_cli, random_file, tmp_path, monkeypatch):
    source = random_file(300_000, f"share/{HOSTILE_NAME}")
    torrent = tmp_path / "hostile.torrent"
    assert shoal_cli.run("create", source, "-o", torrent).returncode == 0

    info = shoal_cli.run("info", torrent)
    assert info.returncode == 0, info.stderr
    assert f"name:       {SHOWN_NAME}\n" in info.stdout
    assert not control_characters(info.stdout)

    port = shoal_cli.start_seeder(torrent, source.parent)
    seeder_stderr = shoal_cli.output()[1]
    assert f"seeding {SHOWN_NAME} on port" in seeder_stderr
    assert not control_characters(seeder_stderr)
    # Rich draws its live bar only on a terminal; this makes it take the log file for one.
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    got = shoal_cli.run("get", torrent, "-o", tmp_path / "out", "--peer", f"{LOOPBACK}:{port}")
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out" / HOSTILE_NAME).read_bytes() == source.read_bytes()
    assert got.stdout.startswith(f"done: {SHOWN_NAME} (293.0 KiB) in ")
    assert not control_characters(got.stdout)
    # The bar moves the cursor with escapes of its own, but none of the name's gets through.
    assert SHOWN_NAME in got.stderr and "\x1b[31m" not in got.stderr
    assert "Traceback" not in got.stderr

    # The bar shows a magnet's own name until the metadata comes: a closing tag crashed it.
    info_hash = load_torrent(torrent).info_hash_hex
    magnet = f"magnet:?xt=urn:btih:{info_hash}&dn=%5B%2Fx%5D%1B%5B32m&x.pe={LOOPBACK}:{port}"
    by_magnet = shoal_cli.run("get", magnet, "-o", tmp_path / "by-magnet")
    assert by_magnet.returncode == 0, by_magnet.stderr
    assert "[/x]\\x1b[32m" in by_magnet.stderr
    assert "\x1b[32m" not in by_magnet.stderr and "Traceback" not in by_magnet.stderr
    assert (tmp_path / "by-magnet" / HOSTILE_NAME).read_bytes() == source.read_bytes()


def test_numbers_from_outside_are_bounded(shoal_cli, tmp_path):
    digits = "9" * 5000
    peer = shoal_cli.run("get", "x.torrent", "--peer", f"{LOOPBACK}:{digits}")
    assert peer.returncode == 2
    assert "Traceback" not in peer.stderr and "is not host:port or [IPv6]:port" in peer.stderr
    port = shoal_cli.run("get", "x.torrent", "--peer", f"{LOOPBACK}:1", "--port", digits)
    assert port.returncode == 2 and "Traceback" not in port.stderr

    magnet = f"magnet:?xt=urn:btih:{'a' * 40}&x.pe={LOOPBACK}:{digits}"
    got = shoal_cli.run("get", magnet, "-o", tmp_path / "out")
    assert got.returncode == 1
    assert "Traceback" not in got.stderr
    (sentence,) = got.stderr.strip().splitlines()
    assert sentence.startswith(f"shoal: the peer address {LOOPBACK}:999")
    assert sentence.endswith("is not host:port or [IPv6]:port") and len(sentence) < 200


def test_a_signal_stops_the_start_up_check_at_once(shoal_cli, tmp_path):
    # 16 GiB of sparse zeros against made-up hashes: checking it all would take many seconds.
    piece_length = 4 * 1024 * 1024
    size = 16 * 1024 * 1024 * 1024
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "huge.bin", "wb") as file:
        file.truncate(size)
    info = {
        b"length": size,
        b"name": b"huge.bin",
        b"piece length": piece_length,
        b"pieces": bytes(20 * (size // piece_length)),
    }
    torrent = tmp_path / "huge.torrent"
    torrent.write_bytes(bencode.encode({b"info": info}))
    port = free_port()
    seeder = shoal_cli.start("seed", torrent, data, "--port", port)
    wait_for(lambda: port_open(port), timeout=30, message="shoal seed is not listening")
    seeder.send_signal(signal.SIGTERM)
    # Before, the check ran to its end first; now pieces being hashed finish and it stops.
    assert seeder.wait(timeout=5) == 130
    assert "run the same command again" in shoal_cli.output()[1]
