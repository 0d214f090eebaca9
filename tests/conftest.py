"""Shared test helpers: polling, free ports, random files and the shoal console script."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shoal.hub.registry import TrackerConfig
from shoal.hub.server import HubThread

LOOPBACK = "127.0.0.1"
SHOAL = Path(sys.executable).parent / "shoal"
DHT_OPTIONS = {"--dht-bootstrap", "--no-dht"}


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 30.0,
    interval: float = 0.02,
    message: str = "condition not met",
) -> None:
    """Poll predicate until it is truthy; raise AssertionError with message at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} (waited {timeout}s)")
        time.sleep(interval)


async def until(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """The asyncio twin of wait_for: await a condition with a deadline, letting the loop run."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what} (waited {timeout}s)")
        await asyncio.sleep(0.01)


def free_port() -> int:
    """A port on 127.0.0.1 that is free for both TCP and UDP right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((LOOPBACK, 0))
            port = tcp.getsockname()[1]
            # Peers listen on the same number for TCP and uTP/DHT, so both must be free.
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind((LOOPBACK, port))
            except OSError:
                continue
            return port


def port_open(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point XDG state and config at tmp_path so shoal never touches the real home."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


@dataclass
class _Logged:
    """One shoal invocation and the files its output went to."""

    args: tuple[str, ...]
    stdout: Path
    stderr: Path


@dataclass
class ShoalCli:
    """Runs the shoal console script from this venv, output kept in files under tmp_path."""

    log_dir: Path
    executable: Path = SHOAL
    logged: list[_Logged] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def _log_files(self, args: tuple[str, ...]) -> _Logged:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        index = len(self.logged)
        entry = _Logged(
            args, self.log_dir / f"shoal-{index}.stdout", self.log_dir / f"shoal-{index}.stderr"
        )
        self.logged.append(entry)
        return entry

    def _env(self) -> dict[str, str]:
        # Unbuffered so a process killed at teardown has still left its output in the files.
        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    def run(
        self, *args: str | int | os.PathLike[str], timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run shoal to completion; on timeout it is killed and TimeoutExpired raised."""
        process = self.start(*args)
        index = len(self.logged) - 1
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        stdout, stderr = self.output(index)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def start(self, *args: str | int | os.PathLike[str]) -> subprocess.Popen[bytes]:
        """Start shoal in the background; it is stopped at teardown if still running."""
        argv = tuple(str(arg) for arg in args)
        if argv[:1] in (("seed",), ("share",), ("get",)) and not DHT_OPTIONS & set(argv):
            # Without DHT options shoal joins the public DHT: tests talk to loopback only.
            argv = (*argv, "--no-dht")
        entry = self._log_files(argv)
        with entry.stdout.open("wb") as out, entry.stderr.open("wb") as err:
            process = subprocess.Popen(
                [str(self.executable), *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self._env(),
            )
        self.processes.append(process)
        return process

    def start_private_dht(self, others: int = 3) -> str:
        """`shoal dht` as the bootstrap node of a DHT of its own, and others that join it;
        the bootstrap's HOST:PORT."""
        router_port = free_port()
        self.start("dht", "--port", router_port)
        wait_for(lambda: "DHT node on port" in self.output()[1], message="no DHT node")
        router = f"{LOOPBACK}:{router_port}"
        for _ in range(others):
            self.start("dht", "--port", free_port(), "--dht-bootstrap", router)
        return router

    def start_seeder(self, torrent: Path, data_dir: Path, *extra: str | int) -> int:
        """Start `shoal seed` on a free port and wait until it seeds; returns the port."""
        port = free_port()
        process = self.start("seed", torrent, data_dir, "--port", port, *extra)

        def seeding() -> bool:
            # It listens at once, then checks its data, then says so.
            if process.poll() is not None:
                raise AssertionError(f"shoal seed exited with {process.returncode}")
            return "seeding " in self.output()[1]

        wait_for(seeding, timeout=30, message="the shoal seeder never started seeding")
        return port

    def output(self, index: int = -1) -> tuple[str, str]:
        """(stdout, stderr) so far of the index-th invocation."""
        entry = self.logged[index]
        return (
            entry.stdout.read_text(errors="replace"),
            entry.stderr.read_text(errors="replace"),
        )

    def report(self) -> str:
        """Every invocation's command line and output, for a failed test's report."""
        parts = []
        for index, entry in enumerate(self.logged):
            stdout, stderr = self.output(index)
            parts.append(
                f"$ shoal {' '.join(entry.args)}\n--- stdout\n{stdout}--- stderr\n{stderr}"
            )
        return "\n".join(parts)

    def stop_all(self, grace: float = 5.0) -> None:
        """SIGTERM every process still running, then SIGKILL those that ignore it."""
        running = [process for process in self.processes if process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


_SHOAL_CLI = pytest.StashKey[ShoalCli]()


@pytest.fixture
def shoal_cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ShoalCli]:
    """A ShoalCli whose processes are stopped at teardown and whose output a failure shows."""
    cli = ShoalCli(tmp_path / "shoal-logs")
    request.node.stash[_SHOAL_CLI] = cli
    try:
        yield cli
    finally:
        cli.stop_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the shoal processes' output to the report of a test that failed."""
    report = yield
    cli = item.stash.get(_SHOAL_CLI, None)
    if report.failed and cli is not None and cli.logged:
        report.sections.append((f"shoal output ({report.when})", cli.report()))
    return report


@pytest.fixture
def random_file(tmp_path: Path) -> Callable[..., Path]:
    """Factory: random_file(size, name="random.bin", seed=0) writes size reproducible bytes."""

    def make(size: int, name: str | os.PathLike[str] = "random.bin", seed: int = 0) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = random.Random(seed)
        chunk = 4 * 1024 * 1024
        with path.open("wb") as out:
            for start in range(0, size, chunk):
                out.write(rng.randbytes(min(chunk, size - start)))
        return path

    return make


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubThread]:
    """A hub on a free loopback port, without per-IP limits (loopback clients share one IP)."""
    with HubThread(tmp_path / "hub.db", config=TrackerConfig(announce_rate=None)) as running:
        yield running


def shoal_json(*args: str) -> Any:
    """Run shoal with args (a command that prints one JSON object) and return the object."""
    result = subprocess.run(
        [str(SHOAL), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
