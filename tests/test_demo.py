"""`shoal demo` as `make demo` runs it, small: a hub, a DHT and the overlay on loopback; one
search finds the file three ways; every leecher's copy is verified. Then `demo --ledger`."""

from __future__ import annotations

import re


def test_the_demo_finds_the_file_three_ways_and_every_copy_arrives(shoal_cli):
    result = shoal_cli.run("demo", "--leechers", "2", "--size-mib", "2", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    # Each architecture's answer streamed as it came, then the merged table's via column.
    found = re.findall(
        r"^\s+(hub|dht|overlay)\s+found shoal-demo-holiday-video\.bin", result.stdout, re.M
    )
    assert sorted(found) == ["dht", "hub", "overlay"]
    assert re.search(r"shoal-demo-holiday-video\.bin .* hub,dht,overlay\s*$", result.stdout, re.M)
    assert "all 2 copies verified" in result.stdout


def test_the_ledger_demo_heals_its_partition_and_mines_the_losing_payment_again(shoal_cli):
    result = shoal_cli.run("demo", "--ledger", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert "is in every mempool" in out
    assert "is back in the mempool and relayed to alice and bob" in out
    assert re.search(r"alice mines it again: confirmed in [0-9a-f]{64}", out)
    assert re.search(r"all three agree on tip [0-9a-f]{64}", out)
