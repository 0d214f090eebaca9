"""shoal's tracker client against a real opentracker on 127.0.0.1, over HTTP and UDP."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote_from_bytes

import pytest
from conftest import LOOPBACK, free_port, port_open, until, wait_for

from shoal.tracker import AnnounceStats, ScrapeResult, TrackerClient, scrape

# One torrent per protocol, so that the counts of one test do not show in the other.
INFO_HASHES = {"http": bytes(range(1, 21)), "udp": bytes(range(101, 121))}


def whitelist_loaded(port: int) -> bool:
    """Whether opentracker accepts the torrents yet (it reads its whitelist in a thread)."""
    # A `stopped` from a peer it does not know registers nobody, so the counts stay clean.
    query = (
        f"info_hash={quote_from_bytes(INFO_HASHES['http'], safe='')}"
        f"&peer_id={'-PROBE-'.ljust(20, 'x')}&port=1&uploaded=0&downloaded=0&left=0&event=stopped"
    )
    url = f"http://{LOOPBACK}:{port}/announce?{query}"
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return b"failure reason" not in reply.read()
    except OSError:
        return False


@pytest.fixture(scope="module")
def opentracker() -> Iterator[int]:
    """An opentracker whitelisting INFO_HASHES, listening on one port for TCP and UDP."""
    if shutil.which("opentracker") is None:
        pytest.skip("opentracker is not installed")
    # opentracker drops privileges before it reads the whitelist, so the file must be readable
    # by anyone; pytest's tmp_path is private to its user.
    folder = Path(tempfile.mkdtemp(prefix="shoal-opentracker-"))
    folder.chmod(0o755)
    whitelist = folder / "whitelist"
    whitelist.write_text("".join(f"{info_hash.hex()}\n" for info_hash in INFO_HASHES.values()))
    whitelist.chmod(0o644)
    port = free_port()
    with (folder / "opentracker.log").open("wb") as log:
        process = subprocess.Popen(
            ["opentracker", "-i", LOOPBACK, "-p", str(port), "-P", str(port), "-w", str(whitelist)],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        wait_for(
            lambda: process.poll() is not None or port_open(port),
            timeout=10,
            message="opentracker did not start listening",
        )
        assert process.poll() is None, (folder / "opentracker.log").read_text(errors="replace")
        wait_for(lambda: whitelist_loaded(port), timeout=10, message="opentracker's whitelist")
        yield port
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(folder, ignore_errors=True)


class Collected:
    """An on_peers callback that remembers every peer it was given."""

    def __init__(self) -> None:
        self.peers: set[tuple[str, int]] = set()

    def __call__(self, peers: list[tuple[str, int]]) -> None:
        self.peers.update(peers)


@pytest.mark.parametrize("scheme", ["http", "udp"])
def test_two_clients_find_each_other_and_scrape_counts_them(opentracker, scheme):
    info_hash = INFO_HASHES[scheme]
    announce = f"{scheme}://{LOOPBACK}:{opentracker}/announce"
    both = [f"{kind}://{LOOPBACK}:{opentracker}/announce" for kind in ("http", "udp")]

    async def counts() -> list[ScrapeResult]:
        """The torrent's counts, scraped over HTTP and over UDP."""
        return [(await scrape(url, [info_hash]))[info_hash] for url in both]

    async def scenario() -> None:
        leecher_stats = AnnounceStats(uploaded=0, downloaded=0, left=5000)
        seeder_stats = AnnounceStats(uploaded=0, downloaded=0, left=0)
        leecher_peers, seeder_peers = Collected(), Collected()
        leecher = TrackerClient(
            info_hash,
            b"-SH0100-leecherXXXXX",
            41001,
            [[announce]],
            lambda: leecher_stats,
            leecher_peers,
        )
        seeder = TrackerClient(
            info_hash,
            b"-SH0100-seederXXXXXX",
            41002,
            [[announce]],
            lambda: seeder_stats,
            seeder_peers,
        )
        try:
            leecher.start()
            # Answered, not just scheduled: next_announce is set from the start, and a seeder
            # that announced first would hear of no leecher until its next interval.
            await until(lambda: leecher.status()[0].leechers is not None, "the leecher's announce")
            assert leecher.status()[0].last_error is None
            seeder.start()
            await until(lambda: (LOOPBACK, 41001) in seeder_peers.peers, "the seeder to learn")
            assert await counts() == [ScrapeResult(seeders=1, completed=0, leechers=1)] * 2

            # The leecher finishes; its `completed` announce brings it the seeder's address.
            leecher_stats.downloaded, leecher_stats.left = 5000, 0
            leecher.completed()
            await until(lambda: (LOOPBACK, 41002) in leecher_peers.peers, "the leecher to learn")
            assert await counts() == [ScrapeResult(seeders=2, completed=1, leechers=0)] * 2
        finally:
            await leecher.stop()
            await seeder.stop()
        assert [status.last_error for status in leecher.status() + seeder.status()] == [None, None]
        # Both said `stopped`, so the tracker has forgotten them.
        assert await counts() == [ScrapeResult(seeders=0, completed=1, leechers=0)] * 2

    asyncio.run(scenario())
