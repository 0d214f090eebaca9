"""Benchmark: loopback transfer speed of shoal against libtorrent, as leecher and as seeder.

Each round times three transfers of the same file over 127.0.0.1, in an order that rotates
from round to round so that drift in machine load hits all of them alike:

  libtorrent -> libtorrent   the baseline for both ratios
  libtorrent -> shoal        `shoal get`, process start to exit 0 (every piece verified)
  shoal -> libtorrent        `shoal seed` (started once) feeding a fresh libtorrent leecher

libtorrent leechers are timed from add_torrent to seeding. With --encryption rc4 every
connection is RC4-encrypted MSE: libtorrent forces it both ways and shoal runs with
`--encryption require`.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import libtorrent as lt

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

# The loopback helpers live with the tests; conftest is plain code outside pytest.
import ltclient  # noqa: E402
from conftest import free_port, port_open, wait_for  # noqa: E402

MiB = 1024 * 1024
PIECE_LENGTH = MiB
SHOAL = Path(sys.executable).parent / "shoal"
LT_TO_LT = "libtorrent -> libtorrent"
LT_TO_SHOAL = "libtorrent -> shoal"
SHOAL_TO_LT = "shoal -> libtorrent"


class BenchError(Exception):
    """A transfer failed; the message says which and why."""


@dataclass
class Samples:
    """Seconds per round of one configuration."""

    size: int
    seconds: list[float] = field(default_factory=list)

    def rates(self) -> list[float]:
        """MB/s (10^6 bytes) of each round."""
        return [self.size / s / 1e6 for s in self.seconds]

    def median(self) -> float:
        """Median MB/s over the rounds."""
        return statistics.median(self.rates())

    def best(self) -> float:
        """Best MB/s over the rounds."""
        return max(self.rates())


def log(message: str) -> None:
    """Progress goes to stderr so that stdout stays the result (and valid JSON with --json)."""
    print(message, file=sys.stderr, flush=True)


def write_random_file(path: Path, size: int) -> None:
    """Write size reproducible random bytes, 4 MiB at a time."""
    generator = random.Random(0)
    chunk = 4 * MiB
    with path.open("wb") as file:
        for start in range(0, size, chunk):
            file.write(generator.randbytes(min(chunk, size - start)))


def settle() -> None:
    """Flush dirty pages so one transfer's writeback does not slow the next."""
    os.sync()


def shoal_env(state: Path) -> dict[str, str]:
    """Environment for shoal processes: their state and config stay in the bench's temp dir."""
    return {
        **os.environ,
        "XDG_STATE_HOME": str(state / "xdg-state"),
        "XDG_CONFIG_HOME": str(state / "xdg-config"),
        "PYTHONUNBUFFERED": "1",
    }


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Bench:
    """The shared fixture: one file, its torrent, a libtorrent seeder and maybe a shoal seeder."""

    root: Path
    size: int
    timeout: float
    rc4: bool = False
    seed_dir: Path = field(init=False)
    content: Path = field(init=False)
    torrent: Path = field(init=False)
    lt_seeder_session: lt.session | None = None
    lt_seed_port: int = 0
    shoal_seeder: subprocess.Popen[bytes] | None = None
    shoal_seed_port: int = 0

    def __post_init__(self) -> None:
        self.seed_dir = self.root / "seed"
        self.content = self.seed_dir / "bench.bin"
        self.torrent = self.root / "bench.torrent"

    def prepare(self) -> None:
        """Write the file and its torrent and start the libtorrent seeder."""
        self.seed_dir.mkdir(parents=True)
        start = time.perf_counter()
        write_random_file(self.content, self.size)
        self.torrent.write_bytes(ltclient.make_torrent(self.content, PIECE_LENGTH))
        settle()
        log(f"wrote and hashed {self.size // MiB} MiB in {time.perf_counter() - start:.1f}s")
        session = ltclient.make_session(rc4=self.rc4)
        # Trusted data (seed_mode): the file was hashed a moment ago.
        ltclient.wait_seeding(ltclient.seed(session, self.torrent, self.seed_dir), timeout=30)
        self.lt_seeder_session = session
        self.lt_seed_port = ltclient.listen_port(session)

    def shoal_encryption(self) -> list[str]:
        """shoal's options for the bench's encryption (none: its default)."""
        return ["--encryption", "require"] if self.rc4 else []

    def start_shoal_seeder(self) -> None:
        """Start `shoal seed` and wait until it accepts connections."""
        self.shoal_seed_port = free_port()
        log_path = self.root / "shoal-seed.log"
        with log_path.open("wb") as out:
            self.shoal_seeder = subprocess.Popen(
                [
                    str(SHOAL),
                    "seed",
                    str(self.torrent),
                    str(self.seed_dir),
                    "--port",
                    str(self.shoal_seed_port),
                    "--no-dht",  # loopback only: never the public DHT
                    *self.shoal_encryption(),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=shoal_env(self.root),
            )
        seeder = self.shoal_seeder

        def ready() -> bool:
            if seeder.poll() is not None:
                raise BenchError(f"shoal seed exited with {seeder.returncode}:\n{tail(log_path)}")
            return port_open(self.shoal_seed_port)

        wait_for(ready, timeout=60, message=f"shoal seed not listening on {self.shoal_seed_port}")

    def stop_shoal_seeder(self) -> None:
        """SIGTERM the shoal seeder, SIGKILL it if it lingers."""
        seeder, self.shoal_seeder = self.shoal_seeder, None
        if seeder is None or seeder.poll() is not None:
            return
        seeder.send_signal(signal.SIGTERM)
        try:
            seeder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log("shoal seed ignored SIGTERM for 10s; killing it")
            seeder.kill()
            seeder.wait()

    def lt_leech(self, seed_port: int, label: str) -> float:
        """Seconds for a fresh libtorrent session to download everything from seed_port."""
        down = self.root / "down-lt"
        session = ltclient.make_session(rc4=self.rc4)
        try:
            start = time.perf_counter()
            handle = ltclient.leech(session, self.torrent, down)
            ltclient.connect(handle, seed_port)
            try:
                ltclient.wait_finished(handle, timeout=self.timeout, interval=0.01)
            except AssertionError as error:
                raise BenchError(f"{label}: {error}") from None
            elapsed = time.perf_counter() - start
        finally:
            # The destructor waits for libtorrent's threads, so no write lands after rmtree.
            del session
        shutil.rmtree(down, ignore_errors=True)
        settle()
        return elapsed

    def shoal_leech(self) -> float:
        """Seconds from starting `shoal get` (leeching from libtorrent) to its exit 0."""
        down = self.root / "down-shoal"
        log_path = self.root / "shoal-get.log"
        argv = [
            str(SHOAL),
            "get",
            str(self.torrent),
            "-o",
            str(down),
            "--peer",
            f"{ltclient.LOOPBACK}:{self.lt_seed_port}",
            "--port",
            str(free_port()),
            "--no-dht",  # loopback only: never the public DHT
            *self.shoal_encryption(),
        ]
        with log_path.open("wb") as out:
            start = time.perf_counter()
            try:
                result = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=shoal_env(self.root),
                    timeout=self.timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise BenchError(f"shoal get ran past {self.timeout}s:\n{tail(log_path)}") from None
            elapsed = time.perf_counter() - start
        if result.returncode != 0:
            raise BenchError(f"shoal get exited with {result.returncode}:\n{tail(log_path)}")
        # Outside the timing: an exit 0 must mean the exact bytes.
        if not filecmp.cmp(down / self.content.name, self.content, shallow=False):
            raise BenchError("shoal get exited 0 but its file differs from the original")
        shutil.rmtree(down, ignore_errors=True)
        settle()
        return elapsed


@contextmanager
def bench_dir(parent: str | None) -> Iterator[Path]:
    """A temp dir removed at the end, also when the bench is interrupted or terminated."""
    # SIGTERM becomes SystemExit so that the finally clauses stop processes and clean up.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = Path(tempfile.mkdtemp(prefix="shoal-bench-", dir=parent))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace, root: Path) -> dict[str, Samples]:
    """Prepare, warm up and time every round; returns the samples per configuration."""
    bench = Bench(root, args.size_mib * MiB, args.timeout, rc4=args.encryption == "rc4")
    try:
        bench.prepare()
        transfers: dict[str, Callable[[], float]] = {
            LT_TO_LT: lambda: bench.lt_leech(bench.lt_seed_port, LT_TO_LT),
        }
        if args.only != "lt":
            bench.start_shoal_seeder()
            transfers[LT_TO_SHOAL] = bench.shoal_leech
            transfers[SHOAL_TO_LT] = lambda: bench.lt_leech(bench.shoal_seed_port, SHOAL_TO_LT)
        # Untimed: the first read of the file through each seeder pays for page faults and
        # cold caches that later rounds do not.
        for _ in range(args.warmup):
            bench.lt_leech(bench.lt_seed_port, f"warm-up {LT_TO_LT}")
            if args.only != "lt":
                bench.lt_leech(bench.shoal_seed_port, f"warm-up {SHOAL_TO_LT}")
        log(f"warm-up done ({args.warmup} round(s))")

        samples = {name: Samples(bench.size) for name in transfers}
        names = list(transfers)
        for round_index in range(args.rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                seconds = transfers[name]()
                samples[name].seconds.append(seconds)
                log(
                    f"round {round_index + 1}/{args.rounds}  {name:<24} {seconds:6.2f}s"
                    f"  {bench.size / seconds / 1e6:7.1f} MB/s"
                )
        return samples
    finally:
        bench.stop_shoal_seeder()
        bench.lt_seeder_session = None


def ratio(samples: dict[str, Samples], name: str) -> float | None:
    """Median MB/s of name over the libtorrent baseline's; >1 means shoal is faster."""
    if name not in samples:
        return None
    return samples[name].median() / samples[LT_TO_LT].median()


def report(args: argparse.Namespace, samples: dict[str, Samples]) -> None:
    """Print the results as plain lines, or as one JSON object with --json."""
    leech_ratio = ratio(samples, LT_TO_SHOAL)
    seed_ratio = ratio(samples, SHOAL_TO_LT)
    if args.json:
        result = {
            "size_bytes": args.size_mib * MiB,
            "piece_length": PIECE_LENGTH,
            "rounds": args.rounds,
            "encryption": args.encryption,
            "configurations": {
                name: {
                    "seconds": sample.seconds,
                    "mb_per_s": sample.rates(),
                    "median_mb_per_s": sample.median(),
                    "best_mb_per_s": sample.best(),
                }
                for name, sample in samples.items()
            },
            "leech_ratio": leech_ratio,
            "seed_ratio": seed_ratio,
        }
        print(json.dumps(result, indent=2))
        return
    print(
        f"{args.size_mib} MiB, {PIECE_LENGTH // MiB} MiB pieces, {args.rounds} rounds, loopback,"
        f" encryption {args.encryption}"
    )
    for name, sample in samples.items():
        print(f"{name:<24}  median {sample.median():7.1f} MB/s  best {sample.best():7.1f} MB/s")
    if leech_ratio is not None:
        print(f"leech ratio shoal/libtorrent: {leech_ratio:.2f}")
    if seed_ratio is not None:
        print(f"seed ratio shoal/libtorrent: {seed_ratio:.2f}")


def main() -> int:
    """Run the benchmark and print each configuration's speed and shoal's ratios."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the test file")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before them")
    parser.add_argument(
        "--only", choices=["lt"], help="lt: libtorrent to libtorrent only (no shoal needed)"
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds per transfer")
    parser.add_argument(
        "--encryption",
        choices=["off", "rc4"],
        default="off",
        help="rc4: every connection RC4-encrypted (MSE), libtorrent's and shoal's alike",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--tmpdir", help="where to make the temp dir (default: system temp)")
    args = parser.parse_args()
    if args.rounds < 1 or args.size_mib < 1 or args.warmup < 0:
        parser.error("--rounds and --size-mib must be at least 1, --warmup at least 0")
    if args.only != "lt" and not SHOAL.exists():
        print(f"shoal is not installed at {SHOAL}; run `make` first", file=sys.stderr)
        return 1

    with bench_dir(args.tmpdir) as root:
        try:
            samples = run(args, root)
        except (BenchError, AssertionError) as error:
            print(f"bench failed: {error}", file=sys.stderr)
            return 1
    report(args, samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
