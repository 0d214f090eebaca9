"""`shoal node` processes on loopback for functional tests, as Bitcoin Core's test framework
runs bitcoind: each with its own state folder, driven through its RPC."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from conftest import SHOAL, wait_for

from shoal.errors import ShoalError
from shoal.ledger.params import LOCAL
from shoal.ledger.store import SqliteStore
from shoal.node.ledger import ledger_dir
from shoal.node.rpc import RPC_FILE, call

START_TIMEOUT = 60.0


class LedgerProcess:
    """One `shoal node --chain local` with its state in folder."""

    def __init__(self, folder: Path, *, host: str = "127.0.0.1") -> None:
        self.state = folder
        self.host = host
        self.chain_folder = ledger_dir(folder, LOCAL)
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, *peers: LedgerProcess | str, mine: str | None = None, **options: Any) -> None:
        """Start it dialling peers; return once its RPC answers."""
        (self.chain_folder / RPC_FILE).unlink(missing_ok=True)
        args = [str(SHOAL), "node", "--chain", "local", "--state", str(self.state)]
        args += ["--host", self.host, "--port", "0", "--rpc-port", "0"]
        for peer in peers:
            args += ["--peer", peer if isinstance(peer, str) else peer.address]
        if mine is not None:
            args += ["--mine", mine]
        for name, value in options.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        self.stderr = open(self.state / "node.log", "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.stderr)
        wait_for(self._answers, START_TIMEOUT, 0.05, f"node {self.state.name} did not start")
        published = json.loads((self.chain_folder / RPC_FILE).read_text())
        self.port = int(published["node_port"])

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.state / "node.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"node {self.state.name} exited: {log}")
        try:
            self.rpc("info")
        except ShoalError:
            return False
        return True

    @property
    def address(self) -> str:
        """HOST:PORT where it listens."""
        return f"{self.host}:{self.port}"

    def rpc(self, method: str, **params: Any) -> Any:
        """The result of an RPC call."""
        return call(self.chain_folder, method, params)

    def height(self) -> int:
        """Its tip's height."""
        return int(self.rpc("info")["height"])

    def height_on_disk(self) -> int:
        """The tip's height as its chain state on disk says (the node stopped)."""
        store = SqliteStore(self.chain_folder / "chain.sqlite")
        try:
            tip = store.tip()
            heights = {h.header.hash: h.height for h in store.headers()}
            return -1 if tip is None else heights[tip]
        finally:
            store.close()

    @contextlib.contextmanager
    def watch_reorg(self) -> Iterator[Callable[[], bool]]:
        """A cheap test of whether a reorganisation is under way, read from the state on disk
        (SQLite lets a reader in beside the node's writes), to poll fast."""
        path = self.chain_folder / "chain.sqlite"
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        query = "SELECT 1 FROM meta WHERE key = 'reorg_start'"
        try:
            yield lambda: db.execute(query).fetchone() is not None
        finally:
            db.close()

    def reorg_on_disk(self) -> bytes | None:
        """The tip an unfinished reorganisation left, as the state on disk says."""
        store = SqliteStore(self.chain_folder / "chain.sqlite")
        try:
            return store.reorg_start()
        finally:
            store.close()

    def tip(self) -> str:
        """Its tip's hash."""
        return str(self.rpc("info")["tip"])

    def address_new(self) -> str:
        """A new address of its wallet."""
        return str(self.rpc("wallet.new"))

    def stop(self) -> None:
        """SIGTERM, and wait for a clean exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            assert self.process.wait(30) == 0
        self._closed()

    def kill(self) -> None:
        """SIGKILL: no chance to save anything."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        self._closed()

    def _closed(self) -> None:
        self.process = None
        if getattr(self, "stderr", None) is not None:
            self.stderr.close()
            self.stderr = None  # type: ignore[assignment]


def same_tip(nodes: list[LedgerProcess]) -> bool:
    """Whether every node has the same tip."""
    return len({node.tip() for node in nodes}) == 1
