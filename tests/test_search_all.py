"""One search over all three architectures as a user drives it: a hub, a DHT and the overlay,
`share` in all three, `search --via all` merging and labelling, one architecture down, and
`get INFOHASH` with the overlay as its only source of peers."""

from __future__ import annotations

import json
import re

from conftest import LOOPBACK, free_port, port_open, wait_for

from shoal.metainfo import create_torrent


def test_via_all_merges_hub_dht_and_overlay_and_survives_the_hub_going_down(
    shoal_cli, random_file, tmp_path
):
    hub_port = free_port()
    hub_process = shoal_cli.start(
        "hub", "--host", LOOPBACK, "--port", hub_port, "--db", tmp_path / "hub.db"
    )
    wait_for(lambda: port_open(hub_port), message="the hub never listened")
    hub = f"http://{LOOPBACK}:{hub_port}"
    router = shoal_cli.start_private_dht()
    source = random_file(400_000, "shared/Northern Lights Timelapse.mkv", seed=5)
    info_hash = create_torrent(source).info_hash.hex()
    port = free_port()
    sharer = len(shoal_cli.logged)
    shoal_cli.start("share", source, "--port", port, "--hub", hub, "--dht-bootstrap", router)
    wait_for(lambda: "listed" in shoal_cli.output(sharer)[1], message="never listed on the hub")
    overlay = f"{LOOPBACK}:{port}"
    common = ("--hub", hub, "--dht-bootstrap", router, "--overlay-peer", overlay)

    def found() -> list[dict]:
        result = shoal_cli.run("search", "northern", "lights", *common, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    # The DHT listing lands a moment after the hub's: wait until all three know it.
    wait_for(lambda: len(found()[0]["via"]) == 3, timeout=60, message="not found three ways")
    [merged] = found()
    assert merged["info_hash"] == info_hash
    assert merged["name"] == "Northern Lights Timelapse.mkv"
    assert sorted(merged["via"]) == ["dht", "hub", "overlay"]
    assert merged["seeders"] >= 1

    table = shoal_cli.run("search", "lights", *common, "--strategy", "walk")
    assert table.returncode == 0, table.stderr
    # Streamed as they come (one plain line per architecture), then the table with "via".
    streamed = [line for line in table.stdout.splitlines() if info_hash in line]
    assert {line.split()[0] for line in streamed[:-1]} == {"hub", "dht", "overlay"}
    assert re.search(r"\bvia\b", table.stdout)
    assert re.search(r"(hub|dht|overlay)(,(hub|dht|overlay)){2}", table.stdout)

    hub_process.terminate()
    hub_process.wait(timeout=30)
    down = shoal_cli.run("search", "northern", *common, "--json")
    assert down.returncode == 0, down.stderr
    [survivor] = json.loads(down.stdout)
    assert survivor["info_hash"] == info_hash
    assert sorted(survivor["via"]) == ["dht", "overlay"]
    [warning] = down.stderr.strip().splitlines()
    assert warning.startswith("shoal: hub:") and "Traceback" not in down.stderr


def test_search_fails_only_when_every_architecture_does(shoal_cli):
    dead_hub = f"http://{LOOPBACK}:{free_port()}"
    dead_peer = f"{LOOPBACK}:{free_port()}"
    result = shoal_cli.run("search", "anything", "--hub", dead_hub, "--overlay-peer", dead_peer)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [sentence] = result.stderr.strip().splitlines()
    assert "every search failed" in sentence and "overlay peer" in sentence
    usage = shoal_cli.run("search", "anything", "--via", "overlay")
    assert usage.returncode == 2 and "--overlay-peer" in usage.stderr
    contradiction = shoal_cli.run("get", "0" * 40, "--no-overlay", "--overlay-leaf")
    assert contradiction.returncode == 2 and "contradict" in contradiction.stderr


def test_get_by_info_hash_with_the_overlay_as_the_only_source(shoal_cli, random_file, tmp_path):
    source = random_file(1_200_000, "shared/Harbour Bells.flac", seed=8)
    info_hash = create_torrent(source).info_hash.hex()
    ultrapeer, leaf = free_port(), free_port()
    # An ultrapeer sharing something else, and the seeder as its leaf: the downloader knows
    # only the ultrapeer, which hands the query to the leaf because its routing table holds
    # the torrent's hash query; the hit names the leaf, whom nobody else named.
    relay = random_file(1000, "relay/other.bin", seed=9)
    shoal_cli.start("share", relay, "--port", ultrapeer, "--no-dht")
    wait_for(lambda: "seeding" in shoal_cli.output(0)[1], message="the ultrapeer never seeded")
    overlay = f"{LOOPBACK}:{ultrapeer}"
    shoal_cli.start(
        "share", source, "--port", leaf, "--no-dht", "--overlay-peer", overlay, "--overlay-leaf"
    )
    wait_for(lambda: "seeding" in shoal_cli.output(1)[1], message="the leaf never seeded")

    def found() -> bool:
        search = shoal_cli.run("search", "harbour", "--via", "overlay", "--overlay-peer", overlay)
        assert search.returncode == 0, search.stderr
        return info_hash in search.stdout

    wait_for(found, timeout=30, message="the overlay never found the leaf")
    got = shoal_cli.run(
        "get", info_hash, "-o", tmp_path / "out", "--no-dht", "--overlay-peer", overlay, timeout=90
    )
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out" / "Harbour Bells.flac").read_bytes() == source.read_bytes()
