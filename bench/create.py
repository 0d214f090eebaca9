"""Benchmark: hash a random file into a torrent with shoal and with mktorrent, and compare."""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from shoal.metainfo import create_torrent, load_torrent

MiB = 1024 * 1024
PIECE_LENGTH = MiB
THREADS = 2
ROUNDS = 3


def write_random_file(path: Path, size_mib: int) -> None:
    """Write size_mib MiB of random bytes to path."""
    generator = random.Random(0)
    with open(path, "wb") as file:
        for _ in range(size_mib):
            file.write(generator.randbytes(MiB))


def warm_page_cache(path: Path) -> None:
    """Read path once so that both tools read it from the page cache."""
    with open(path, "rb", buffering=0) as file:
        while file.read(16 * MiB):
            pass


def run_mktorrent(source: Path, output: Path) -> bytes:
    """Hash source with mktorrent and return the piece hashes it wrote."""
    output.unlink(missing_ok=True)
    subprocess.run(
        ["mktorrent", "-l", "20", "-p", "-t", str(THREADS), "-o", str(output), str(source)],
        check=True,
        capture_output=True,
    )
    return load_torrent(output).piece_hashes


def run_shoal(source: Path) -> bytes:
    """Hash source with shoal and return the piece hashes."""
    torrent = create_torrent(source, piece_length=PIECE_LENGTH, private=True, workers=THREADS)
    return torrent.piece_hashes


def timed(run: Callable[[], bytes]) -> tuple[float, bytes]:
    """Run once and return the seconds it took and its result."""
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def main() -> int:
    """Run the benchmark and print the throughput of each tool."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=512, help="size of the test file")
    args = parser.parse_args()
    if shutil.which("mktorrent") is None:
        print("mktorrent is not installed; run `make apt` first", file=sys.stderr)
        return 1

    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as folder:
        source = Path(folder) / "random.bin"
        output = Path(folder) / "mktorrent.torrent"
        write_random_file(source, args.size_mib)
        warm_page_cache(source)

        best = {"mktorrent": float("inf"), "shoal": float("inf")}
        hashes: dict[str, bytes] = {}
        # Alternate the tools so that drift in machine load hits both alike.
        for _ in range(ROUNDS):
            for name, run in (
                ("mktorrent", lambda: run_mktorrent(source, output)),
                ("shoal", lambda: run_shoal(source)),
            ):
                seconds, hashes[name] = timed(run)
                best[name] = min(best[name], seconds)
        if hashes["shoal"] != hashes["mktorrent"]:
            print("shoal and mktorrent computed different piece hashes", file=sys.stderr)
            return 1

    size_mb = args.size_mib * MiB / 1e6
    speed = {name: size_mb / seconds for name, seconds in best.items()}
    print(
        f"create_torrent: {args.size_mib} MiB, {PIECE_LENGTH // MiB} MiB pieces,"
        f" {THREADS} threads, best of {ROUNDS}"
    )
    for name in ("mktorrent", "shoal"):
        print(f"  {name:<10} {best[name]:7.3f} s  {speed[name]:8.1f} MB/s")
    print(f"  shoal/mktorrent throughput ratio: {speed['shoal'] / speed['mktorrent']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
