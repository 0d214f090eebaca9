"""The DHT as a user drives it: `shoal dht` as a bootstrap node, `share` announcing to it,
`get INFOHASH` finding the seeder with no other source, the tables processes leave behind."""

from __future__ import annotations

import json
import re

from conftest import LOOPBACK, free_port, wait_for

from shoal.metainfo import create_torrent


def test_get_finds_a_shared_file_through_a_private_dht(shoal_cli, random_file, tmp_path):
    router_port = free_port()
    shoal_cli.start("dht", "--port", router_port)
    wait_for(lambda: "DHT node on port" in shoal_cli.output()[1], message="no DHT node")
    router = f"{LOOPBACK}:{router_port}"
    source = random_file(1_500_000, "shared/tune.ogg", seed=3)
    info_hash = create_torrent(source).info_hash.hex()
    shoal_cli.start("share", source, "--port", free_port(), "--dht-bootstrap", router)
    wait_for(lambda: "seeding" in shoal_cli.output()[1], message="the share never seeded")
    # A bare info-hash: no peer, no tracker, no hub. Only the DHT can find the seeder.
    got = shoal_cli.run(
        "get", info_hash, "-o", tmp_path / "out", "--dht-bootstrap", router, timeout=90
    )
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out" / "tune.ogg").read_bytes() == source.read_bytes()


def test_dht_options_that_contradict_each_other_are_refused(shoal_cli):
    result = shoal_cli.run("get", "0" * 40, "--no-dht", "--dht-bootstrap", f"{LOOPBACK}:1")
    assert result.returncode == 2 and "contradict" in result.stderr
    result = shoal_cli.run("search", "words", "--via", "dht", "--no-dht", "--dht-read-only")
    assert result.returncode == 2 and "--no-dht and --dht-read-only contradict" in result.stderr
    result = shoal_cli.run("get", "0" * 40, "--no-dht")
    assert result.returncode == 1 and "no way to find peers" in result.stderr


def test_search_via_the_dht_finds_what_share_listed(shoal_cli, random_file, tmp_path):
    # A few nodes, so the listing has somewhere to live besides the router.
    router = shoal_cli.start_private_dht(others=4)
    source = random_file(300_000, "shared/Alpine Sunrise Timelapse.webm", seed=4)
    info_hash = create_torrent(source).info_hash.hex()
    shoal_cli.start("share", source, "--port", free_port(), "--dht-bootstrap", router)
    wait_for(lambda: "seeding" in shoal_cli.output()[1], message="the share never seeded")

    def found() -> list[dict]:
        result = shoal_cli.run(
            "search", "sunrise", "alpine", "--via", "dht", "--dht-bootstrap", router, "--json"
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    wait_for(lambda: found(), timeout=60, message="the listing was never found")
    [result] = found()
    assert result["info_hash"] == info_hash
    assert result["name"] == "Alpine Sunrise Timelapse.webm"
    assert result["seeders"] >= 1  # the sharer announced itself too
    # A read-only node (BEP 43) searches as well: it asks, nobody needs its answers.
    table = shoal_cli.run("search", "timelapse", "--dht-bootstrap", router, "--dht-read-only")
    assert info_hash in table.stdout
    short = shoal_cli.run("search", "a", "of", "--dht-bootstrap", router)
    assert short.returncode == 2 and "three letters or more" in short.stderr


def test_dht_processes_on_ports_the_system_picks_never_share_a_table(shoal_cli, tmp_path):
    def started() -> str:
        """Start `shoal dht --port 0` and return the id it says it has."""
        process = shoal_cli.start("dht", "--port", 0)
        index = len(shoal_cli.logged) - 1

        def said() -> str | None:
            if process.poll() is not None:
                raise AssertionError(f"shoal dht exited with {process.returncode}")
            found = re.search(r"id ([0-9a-f]{40})", shoal_cli.output(index)[1])
            return found and found.group(1)

        wait_for(said, message="shoal dht never said its id")
        return said() or ""

    first, second = started(), started()
    assert first != second
    shoal_cli.stop_all()
    folder = tmp_path / "xdg-state" / "shoal" / "dht-node"
    tables = {"dht-slot-0.dat", "dht-slot-1.dat"}
    assert {path.name for path in folder.glob("*.dat")} == tables
    assert started() == first  # the first slot, free again, and the id saved in it
