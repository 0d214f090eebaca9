"""BEP 44 items as a user stores and reads them: `shoal dht put` and `shoal dht get`."""

from __future__ import annotations

import json

from conftest import LOOPBACK, free_port, wait_for

from shoal.metainfo import create_torrent


def private_dht(shoal_cli) -> str:
    """Two `shoal dht` nodes on loopback, the second joined through the first; its address."""
    first = free_port()
    shoal_cli.start("dht", "--port", first)
    wait_for(lambda: "DHT node on port" in shoal_cli.output()[1], message="no DHT node")
    router = f"{LOOPBACK}:{first}"
    shoal_cli.start("dht", "--port", free_port(), "--dht-bootstrap", router)
    return router


def put_get(shoal_cli, router: str, *args: str) -> dict:
    result = shoal_cli.run("dht", *args, "--dht-bootstrap", router, "--json", timeout=90)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_an_item_put_by_one_process_is_got_by_another(shoal_cli):
    router = private_dht(shoal_cli)
    stored = put_get(shoal_cli, router, "put", "hello from shoal")
    assert stored["nodes"] >= 1
    got = put_get(shoal_cli, router, "get", stored["target"])
    assert got["value"] == "hello from shoal"
    missing = shoal_cli.run("dht", "get", "ab" * 20, "--dht-bootstrap", router, timeout=90)
    assert missing.returncode == 1 and "nothing is stored under" in missing.stderr


def test_a_mutable_item_is_got_at_its_latest_version(shoal_cli):
    router = private_dht(shoal_cli)
    first = put_get(shoal_cli, router, "put", "draft", "--mutable", "--salt", "notes")
    second = put_get(shoal_cli, router, "put", "final", "--mutable", "--salt", "notes")
    assert second["target"] == first["target"] and second["seq"] == first["seq"] + 1
    got = put_get(shoal_cli, router, "get", "--key", second["key"], "--salt", "notes")
    assert got["value"] == "final" and got["seq"] == second["seq"]


def test_item_mistakes_are_one_sentence(shoal_cli):
    router = f"{LOOPBACK}:{free_port()}"
    too_big = shoal_cli.run("dht", "put", "x" * 1000, "--dht-bootstrap", router)
    assert too_big.returncode == 1 and "TEXT is 1000 bytes; it may be 996 at most" in too_big.stderr
    salted = shoal_cli.run("dht", "put", "x", "--salt", "s", "--dht-bootstrap", router)
    assert salted.returncode == 2 and "--salt needs --mutable" in salted.stderr
    both = shoal_cli.run("dht", "get", "0" * 40, "--key", "0" * 64)
    assert both.returncode == 2 and "one of them" in both.stderr
    misplaced = shoal_cli.run("dht", "--dht-bootstrap", router, "get", "0" * 40)
    assert misplaced.returncode == 2 and "after 'get'" in misplaced.stderr
    stray = shoal_cli.run("dht", "get", "0" * 40, "--salt", "s")
    assert stray.returncode == 2 and "--salt goes with --key" in stray.stderr
    # Nobody at the bootstrap address: said once the join gives up, not after a minute.
    dead = shoal_cli.run("dht", "get", "0" * 40, "--dht-bootstrap", router, timeout=60)
    assert dead.returncode == 1 and f"no DHT node answered in 20 s (asked {router})" in dead.stderr
    for result in (too_big, salted, both, misplaced, stray, dead):
        assert "Traceback" not in result.stderr


def test_dht_sample_lists_what_a_node_holds(shoal_cli, random_file):
    router = private_dht(shoal_cli)
    source = random_file(100_000, "shared/sampled.bin", seed=9)
    info_hash = create_torrent(source).info_hash.hex()
    shoal_cli.start("share", source, "--port", free_port(), "--dht-bootstrap", router)

    def sampled() -> list[str]:
        result = shoal_cli.run("dht", "sample", router, "--json", timeout=30)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["samples"]

    wait_for(lambda: info_hash in sampled(), timeout=60, message="the announce never sampled")
    silent = shoal_cli.run("dht", "sample", f"{LOOPBACK}:{free_port()}", timeout=30)
    assert silent.returncode == 1 and "no answer from" in silent.stderr
    named = shoal_cli.run("dht", "sample", f"localhost:{router.rsplit(':', 1)[1]}", "--json")
    assert named.returncode == 0, named.stderr  # a host name is resolved first
