"""Benchmark: announces per second the hub's tracker sustains on loopback, against opentracker.

Both trackers run in the same run on 127.0.0.1, each in its own process: the shoal hub on
uvloop (rate limit raised out of the way, but still checked on every announce) and
opentracker with a whitelist of the benchmark's info-hashes. Each is loaded in turn:

  UDP (BEP 15)   several processes, each with its own socket: connect once, then announces
                 for random peers of ~100 info-hashes, a bounded window of them in flight.
  HTTP (BEP 3)   wrk with a Lua script: keep-alive connections, a fresh random announce URL
                 per request.

Replies are counted over a fixed time after a short warm-up; the CPU time each tracker used
in that window is read from /proc, so a tracker below one busy core shows that the load
generator, not the tracker, was the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_from_bytes

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from conftest import LOOPBACK, free_port, port_open, wait_for  # noqa: E402

INFO_HASHES = 100
PROTOCOL_ID = 0x41727101980
# Large enough to fill a swarm reply, as a real client asks.
NUMWANT = 50
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The benchmark could not run; the message says why."""


@dataclass
class Result:
    """Replies counted for one tracker over one protocol, and the CPU it spent."""

    announces: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.announces / self.seconds

    @property
    def cores(self) -> float:
        return self.cpu_seconds / self.seconds


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process (all its threads) has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # utime and stime are fields 14 and 15 of stat; fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# --- the trackers ---


def serve_hub(port: int, db: Path) -> None:
    """Run the shoal hub on uvloop until SIGTERM (this runs in its own process)."""
    import uvloop

    from shoal.hub.server import run_hub

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        # A limit far above what one address can send: checked, but never reached.
        await run_hub(LOOPBACK, port, db, announce_rate=1e9, stop=stop)

    uvloop.run(main())


@contextmanager
def running(args: list[str], port: int, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A tracker process, up once its TCP port accepts, stopped on exit."""
    process = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(
            lambda: port_open(port) or process.poll() is not None,
            timeout=15,
            message=f"{args[0]} never listened",
        )
        if process.poll() is not None:
            raise BenchError(f"{args[0]} exited with status {process.returncode}")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def announce_path(info_hash: bytes, peer_id: bytes, port: int) -> str:
    return (
        f"/announce?info_hash={quote_from_bytes(info_hash)}&peer_id={quote_from_bytes(peer_id)}"
        f"&port={port}&uploaded=0&downloaded=0&left=0&compact=1&numwant={NUMWANT}"
    )


def check_serves(port: int, info_hash: bytes) -> None:
    """Wait until an HTTP announce succeeds (opentracker loads its whitelist a bit later)."""

    def ok() -> bool:
        url = f"http://{LOOPBACK}:{port}" + announce_path(info_hash, b"-BM0001-checkcheck00", 1)
        with urllib.request.urlopen(url, timeout=5) as response:
            return b"failure reason" not in response.read()

    wait_for(ok, timeout=15, interval=0.1, message=f"the tracker on port {port} refuses announces")


# --- UDP load ---


def udp_worker(
    port: int, hashes: list[bytes], seconds: float, warmup: float, window: int, seed: int, out
) -> None:
    """Announce as fast as replies come back, up to window in flight; report replies counted."""
    rng = random.Random(seed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.settimeout(2.0)
    sock.connect((LOOPBACK, port))
    sock.send(struct.pack(">QII", PROTOCOL_ID, 0, seed))
    reply = sock.recv(64)
    action, _ = struct.unpack_from(">II", reply)
    if action != 0:
        out.put(("error", f"connect refused: {reply[8:]!r}"))
        return
    connection_id = reply[8:16]
    # Built before the clock starts so that the loop below only sends and receives.
    packets = [
        connection_id
        + struct.pack(
            ">II20s20sQQQIIIiH",
            1,
            index,
            rng.choice(hashes),
            b"-BM0001-" + rng.randbytes(12),
            0,
            rng.choice((0, 1 << 20)),
            0,
            0,
            0,
            0,
            NUMWANT,
            rng.randrange(1024, 65536),
        )
        for index in range(8192)
    ]
    sock.settimeout(0.2)
    buffer = bytearray(2048)
    sent = 0
    for _ in range(window):
        sock.send(packets[sent & 8191])
        sent += 1
    counted = errors = 0
    start = time.monotonic()
    counting_from = start + warmup
    deadline = counting_from + seconds
    while True:
        try:
            size = sock.recv_into(buffer)
        except TimeoutError:
            if time.monotonic() >= deadline:
                break
            # Lost datagrams: open the window again.
            for _ in range(window):
                sock.send(packets[sent & 8191])
                sent += 1
            continue
        now = time.monotonic()
        if now >= deadline:
            break
        if now >= counting_from:
            if size >= 20 and buffer[3] == 1:
                counted += 1
            else:
                errors += 1
        sock.send(packets[sent & 8191])
        sent += 1
    out.put(("ok", counted, errors))


def udp_load(
    port: int, hashes: list[bytes], seconds: float, processes: int, window: int
) -> tuple[int, float]:
    """Announces answered in `seconds` (after a warm-up), summed over processes."""
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    workers = [
        context.Process(target=udp_worker, args=(port, hashes, seconds, 1.0, window, seed + 1, out))
        for seed in range(processes)
    ]
    for worker in workers:
        worker.start()
    total = errors = 0
    for _ in workers:
        report = out.get(timeout=seconds + 30)
        if report[0] != "ok":
            raise BenchError(f"a UDP load process failed: {report[1]}")
        total += report[1]
        errors += report[2]
    for worker in workers:
        worker.join(10)
    if errors:
        raise BenchError(f"the tracker on port {port} answered {errors} UDP announces with errors")
    return total, seconds


# --- HTTP load ---

_WRK_SCRIPT = """
local hashes = {%s}
local counter = 0
math.randomseed(%d)
request = function()
  counter = counter + 1
  local path = "/announce?info_hash=" .. hashes[math.random(#hashes)]
    .. "&peer_id=-BM0001-" .. string.format("%%012d", math.random(0, 999999999))
    .. "&port=" .. math.random(1024, 65535)
    .. "&uploaded=0&downloaded=0&left=" .. (counter %% 2) * 1048576
    .. "&compact=1&numwant=%d"
  return wrk.format("GET", path)
end
"""


def http_load(port: int, hashes: list[bytes], seconds: float, script: Path) -> tuple[int, float]:
    """Announces wrk completed and over how long, or BenchError if any failed."""
    script.write_text(
        _WRK_SCRIPT % (", ".join(f'"{quote_from_bytes(h)}"' for h in hashes), 1, NUMWANT)
    )
    # One warm-up second fills the swarms, as the UDP warm-up does.
    subprocess.run(
        ["wrk", "-t1", "-c16", "-d1s", "-s", str(script), f"http://{LOOPBACK}:{port}"],
        capture_output=True,
        check=True,
        timeout=30,
    )
    result = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{seconds:g}s", "-s", str(script), f"http://{LOOPBACK}:{port}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    )
    match = re.search(r"(\d+) requests in ([\d.]+)s", result.stdout)
    if match is None:
        raise BenchError(f"wrk printed no request count:\n{result.stdout}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    if bad is not None:
        raise BenchError(f"the tracker on port {port} answered {bad.group(1)} requests with errors")
    return int(match.group(1)), float(match.group(2))


# --- the run ---


def measure(pid: int, load: Callable[[], tuple[int, float]]) -> Result:
    """Run load (which counts over some time after a warm-up) and the tracker's CPU meanwhile."""
    # CPU is read around the whole load, warm-up included, and scaled to the counted part.
    before_cpu, before = cpu_seconds(pid), time.monotonic()
    announces, seconds = load()
    cpu, elapsed = cpu_seconds(pid) - before_cpu, time.monotonic() - before
    return Result(announces, seconds, cpu / elapsed * seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="counted time per run")
    parser.add_argument("--udp-processes", type=int, default=2)
    parser.add_argument("--window", type=int, default=64, help="UDP announces in flight each")
    parser.add_argument("--serve-hub", nargs=2, metavar=("PORT", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_hub:
        serve_hub(int(args.serve_hub[0]), Path(args.serve_hub[1]))
        return
    for tool in ("opentracker", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"tracker_load: {tool} is not installed (apt-get install {tool})")

    rng = random.Random(2024)
    hashes = [rng.randbytes(20) for _ in range(INFO_HASHES)]
    results: dict[tuple[str, str], Result] = {}
    with tempfile.TemporaryDirectory(prefix="shoal-tracker-bench-") as temp:
        folder = Path(temp)
        # opentracker run as root chroots here and drops to user nobody, who must read it.
        folder.chmod(0o755)
        (folder / "whitelist").write_text("".join(f"{h.hex()}\n" for h in hashes))
        trackers = {
            "shoal": [sys.executable, __file__, "--serve-hub", "{port}", str(folder / "hub.db")],
            # Chrooted to the folder (it does so by default when root), hence ./whitelist.
            "opentracker": ["opentracker", "-i", LOOPBACK, "-p", "{port}", "-P", "{port}",
                            "-d", str(folder), "-w", "./whitelist"],
        }  # fmt: skip
        for name, template in trackers.items():
            port = free_port()
            command = [part.replace("{port}", str(port)) for part in template]
            with running(command, port, folder) as process:
                check_serves(port, hashes[0])
                results[name, "UDP"] = measure(
                    process.pid,
                    lambda port=port: udp_load(
                        port, hashes, args.seconds, args.udp_processes, args.window
                    ),
                )
                results[name, "HTTP"] = measure(
                    process.pid,
                    lambda port=port: http_load(port, hashes, args.seconds, folder / "load.lua"),
                )

    print(f"announces per second on {LOOPBACK}, {os.cpu_count()} CPUs, {args.seconds:g} s each")
    print(f"{'':12} {'UDP':>10} {'(cores)':>8} {'HTTP':>10} {'(cores)':>8}")
    for name in trackers:
        udp, http = results[name, "UDP"], results[name, "HTTP"]
        print(f"{name:12} {udp.rate:10,.0f} {udp.cores:8.2f} {http.rate:10,.0f} {http.cores:8.2f}")
    for protocol in ("UDP", "HTTP"):
        ratio = results["shoal", protocol].rate / results["opentracker", protocol].rate
        print(f"shoal / opentracker, {protocol}: {ratio:.2f}")


if __name__ == "__main__":
    main()
