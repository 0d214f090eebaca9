"""The hybrid architecture as a user drives it: a hub, `share --hub`, `search`, `get INFOHASH`."""

from __future__ import annotations

import json
import signal

from conftest import LOOPBACK, free_port, port_open, wait_for
from rich.console import Console

from shoal.addresses import host_has_ipv6
from shoal.hub.client import SearchResult
from shoal.metainfo import create_torrent
from shoal.progress import results_table


def test_share_search_get_through_a_hub(shoal_cli, random_file, tmp_path):
    hub_port = free_port()
    shoal_cli.start("hub", "--host", LOOPBACK, "--port", hub_port, "--db", tmp_path / "hub.db")
    wait_for(lambda: port_open(hub_port), message="the hub never listened")
    hub = f"http://{LOOPBACK}:{hub_port}"

    random_file(700_000, "shared/Holiday Photos/beach.jpg", seed=1)
    random_file(300_000, "shared/Holiday Photos/notes.txt", seed=2)
    folder = tmp_path / "shared" / "Holiday Photos"
    info_hash = create_torrent(folder).info_hash.hex()
    sharer = shoal_cli.start("share", folder, "--hub", hub, "--port", free_port())
    wait_for(lambda: "listed" in shoal_cli.output()[1], message="the share was never listed")

    def found() -> list[dict]:
        result = shoal_cli.run("search", "holiday", "beach", "--hub", hub, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    # The seeder's first announce may land just after its listing: wait for both.
    wait_for(lambda: any(r["seeders"] >= 1 for r in found()), message="no seeded result")
    [listing] = found()
    assert listing["info_hash"] == info_hash and listing["name"] == "Holiday Photos"
    table = shoal_cli.run("search", "photos", "--hub", hub)
    assert info_hash in table.stdout

    got = shoal_cli.run("get", info_hash, "--hub", hub, "-o", tmp_path / "out", timeout=90)
    assert got.returncode == 0, got.stderr
    for name in ("beach.jpg", "notes.txt"):
        assert (tmp_path / "out" / "Holiday Photos" / name).read_bytes() == (
            folder / name
        ).read_bytes()

    sharer.send_signal(signal.SIGINT)
    assert sharer.wait(timeout=30) == 0
    assert found() == []  # withdrawn when the sharer logged off


def test_search_without_a_hub_is_one_sentence(shoal_cli):
    result = shoal_cli.run("search", "anything", "--hub", f"http://{LOOPBACK}:{free_port()}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_torrent_trackers_alone_connect_seeder_and_leecher(shoal_cli, random_file, tmp_path):
    hub_port = free_port()
    shoal_cli.start("hub", "--host", LOOPBACK, "--port", hub_port, "--db", tmp_path / "hub.db")
    wait_for(lambda: port_open(hub_port), message="the hub never listened")
    source = random_file(2_000_000, "data/song.flac")
    torrent = tmp_path / "song.torrent"
    announce = f"udp://{LOOPBACK}:{hub_port}/announce"
    assert shoal_cli.run("create", source, "-o", torrent, "--tracker", announce).returncode == 0
    shoal_cli.start_seeder(torrent, source.parent)
    # No --peer: the only way to the seeder is the tracker named in the torrent.
    got = shoal_cli.run("get", torrent, "-o", tmp_path / "out", timeout=90)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out" / "song.flac").read_bytes() == source.read_bytes()


def test_dead_trackers_do_not_hold_up_a_download(shoal_cli, random_file, tmp_path):
    source = random_file(1_000_000, "data/clip.bin")
    torrent = tmp_path / "clip.torrent"
    dead = free_port()
    shoal_cli.run(
        "create", source, "-o", torrent, "--tracker", f"http://{LOOPBACK}:{dead}/announce"
    )
    seed_port = shoal_cli.start_seeder(torrent, source.parent)
    got = shoal_cli.run(
        "get",
        torrent,
        "-o",
        tmp_path / "out",
        "--peer",
        f"{LOOPBACK}:{seed_port}",
        "--tracker",
        f"udp://{LOOPBACK}:{dead}/announce",
        timeout=30,
    )
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out" / "clip.bin").read_bytes() == source.read_bytes()


def test_result_names_are_shown_as_text_not_markup():
    strange = SearchResult(
        bytes(20), "Ubuntu ISO [/] [link=http://x]y[/link]\x1b[31m", 1, 1, 1, 0, 1
    )
    console = Console(record=True, width=200)
    console.print(results_table([strange]))
    shown = console.export_text()
    # Markup stays text, and the escape is shown as the four characters \x1b.
    assert "Ubuntu ISO [/] [link=http://x]y[/link]\\x1b[31m" in shown
    assert "\x1b" not in shown


def test_an_unreachable_hub_is_named_in_the_progress_line(shoal_cli, tmp_path):
    dead = f"http://{LOOPBACK}:{free_port()}"
    getter = shoal_cli.start("get", "ab" * 20, "--hub", dead, "-o", tmp_path / "out")
    wait_for(lambda: "trackers: " in shoal_cli.output()[1], timeout=20, message="no tracker note")
    getter.send_signal(signal.SIGINT)
    assert getter.wait(timeout=30) == 130
    assert "run the same command again" in shoal_cli.output()[1]


def test_a_hub_on_every_address_answers_on_ipv4_and_ipv6_and_says_where(shoal_cli, tmp_path):
    hub_port = free_port()
    shoal_cli.start("hub", "--port", hub_port, "--db", tmp_path / "hub.db")
    wait_for(lambda: "hub at" in shoal_cli.output()[1], message="the hub never said where")
    # Said once it listens, as an address that works when pasted.
    said = shoal_cli.output()[1]
    assert f"hub at http://127.0.0.1:{hub_port} " in said
    hosts = [LOOPBACK, "[::1]"] if host_has_ipv6() else [LOOPBACK]
    for host in hosts:
        result = shoal_cli.run("search", "anything", "--hub", f"http://{host}:{hub_port}")
        assert result.returncode == 0, result.stderr
