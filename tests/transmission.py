"""Run transmission-daemon (Debian's Transmission 3.00) on loopback and drive it over its RPC.

The daemon runs in the foreground with a config folder of its own, its RPC and peer ports on
127.0.0.1, and every way of finding or reaching other hosts turned off (DHT, local peer
discovery, port mapping, blocklist updates). Its peer sockets are bound to 127.0.0.1 as well,
so even a tracker in a torrent could not make it reach another host; the torrents used in tests
name none, so the only peers it talks to are the ones that dial it.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import LOOPBACK, free_port, wait_for

TRANSMISSION = "transmission-daemon"
ENCRYPTION = {"tolerated": 0, "preferred": 1, "required": 2}
SESSION_HEADER = "X-Transmission-Session-Id"

# libtransmission's tr_torrent_activity, as torrent-get reports it in "status".
STOPPED, CHECK_WAIT, CHECK, DOWNLOAD_WAIT, DOWNLOAD, SEED_WAIT, SEED = range(7)
STATUS_NAMES = ("stopped", "check-wait", "check", "download-wait", "download", "seed-wait", "seed")

_FIELDS = [
    "percentDone",
    "status",
    "peersConnected",
    "peers",
    "error",
    "errorString",
    "haveValid",
    "uploadedEver",
    "downloadedEver",
]


class TransmissionError(AssertionError):
    """The daemon failed to start, answered an RPC with an error, or died."""


@dataclass(frozen=True)
class TorrentStatus:
    """What torrent-get says about one torrent."""

    percent_done: float
    status: int
    peers_connected: int
    peers: tuple[str, ...]
    error: str
    have_valid: int
    uploaded: int
    downloaded: int

    def describe(self) -> str:
        """One line for assertion messages."""
        state = STATUS_NAMES[self.status] if 0 <= self.status < len(STATUS_NAMES) else "?"
        error = f" error={self.error!r}" if self.error else ""
        return (
            f"status={state} done={self.percent_done:.4f} have={self.have_valid}"
            f" peers={list(self.peers)} down={self.downloaded} up={self.uploaded}{error}"
        )


def settings(
    download_dir: Path, rpc_port: int, peer_port: int, encryption: str, utp: bool
) -> dict[str, Any]:
    """settings.json for a loopback-only daemon that trades as fast as it can."""
    return {
        # Loopback only, both for peers and for the RPC.
        "bind-address-ipv4": LOOPBACK,
        "bind-address-ipv6": "::1",
        "rpc-bind-address": LOOPBACK,
        "rpc-port": rpc_port,
        "rpc-whitelist-enabled": True,
        "rpc-whitelist": LOOPBACK,
        "rpc-host-whitelist-enabled": False,
        "rpc-authentication-required": False,
        "peer-port": peer_port,
        "peer-port-random-on-start": False,
        # No discovery and nothing that reaches out: peers only come by dialling in.
        "dht-enabled": False,
        "lpd-enabled": False,
        "pex-enabled": True,
        "port-forwarding-enabled": False,
        "blocklist-enabled": False,
        "utp-enabled": utp,
        "encryption": ENCRYPTION[encryption],
        # Every peer in a test is 127.0.0.1; room for a few of them.
        "peer-limit-per-torrent": 50,
        "peer-limit-global": 200,
        # Files keep their final names while incomplete, so a test can compare them at once.
        "download-dir": str(download_dir),
        "incomplete-dir-enabled": False,
        "rename-partial-files": False,
        "watch-dir-enabled": False,
        "start-added-torrents": True,
        # No queues, limits or ratio stops that could hold a torrent back in a test.
        "download-queue-enabled": False,
        "seed-queue-enabled": False,
        "queue-stalled-enabled": False,
        "speed-limit-down-enabled": False,
        "speed-limit-up-enabled": False,
        "alt-speed-enabled": False,
        "alt-speed-time-enabled": False,
        "ratio-limit-enabled": False,
        "idle-seeding-limit-enabled": False,
        "script-torrent-done-enabled": False,
        "message-level": 2,
    }


class TransmissionDaemon:
    """One transmission-daemon in the foreground, with its state under root; stop() it."""

    def __init__(self, root: Path, *, encryption: str = "preferred", utp: bool = False) -> None:
        """Prepare (not start) a daemon; encryption is tolerated, preferred or required."""
        self.root = Path(root)
        self.config_dir = self.root / "config"
        self.download_dir = self.root / "downloads"
        self.log_path = self.root / "transmission.log"
        self.encryption = encryption
        self.utp = utp
        self.rpc_port = free_port()
        self.peer_port = free_port()
        while self.peer_port == self.rpc_port:
            self.peer_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._session_id = ""

    @property
    def peer_address(self) -> str:
        """HOST:PORT where it accepts peers, as `shoal --peer` takes it."""
        return f"{LOOPBACK}:{self.peer_port}"

    @property
    def rpc_url(self) -> str:
        """Where the JSON RPC answers."""
        return f"http://{LOOPBACK}:{self.rpc_port}/transmission/rpc"

    def command(self) -> list[str]:
        """The command line; it repeats settings.json's loopback and discovery options."""
        return [
            TRANSMISSION,
            "--foreground",
            "--config-dir",
            str(self.config_dir),
            "--no-auth",
            "--rpc-bind-address",
            LOOPBACK,
            "--port",
            str(self.rpc_port),
            "--peerport",
            str(self.peer_port),
            "--bind-address-ipv4",
            LOOPBACK,
            "--no-dht",
            "--no-lpd",
            "--no-portmap",
            "--no-blocklist",
            "--utp" if self.utp else "--no-utp",
            f"--encryption-{self.encryption}",
            "--download-dir",
            str(self.download_dir),
            "--logfile",
            str(self.log_path),
        ]

    def start(self, timeout: float = 30.0) -> TransmissionDaemon:
        """Write settings, start the daemon and wait until its RPC answers."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.download_dir.mkdir(parents=True, exist_ok=True)
        config = settings(
            self.download_dir, self.rpc_port, self.peer_port, self.encryption, self.utp
        )
        (self.config_dir / "settings.json").write_text(json.dumps(config, indent=2))
        with (self.root / "transmission.out").open("wb") as out:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_for(
                self._answers, timeout=timeout, message="transmission-daemon's RPC never answered"
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        """Whether the RPC answers; raises if the daemon has exited."""
        self._check_alive()
        try:
            self.rpc("session-get")
        except (urllib.error.URLError, ConnectionError):
            return False
        return True

    def _check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise TransmissionError(
                f"transmission-daemon is not running (exit {code}){self.tail()}"
            )

    def rpc(self, method: str, **arguments: Any) -> dict[str, Any]:
        """Call one RPC method; returns its arguments, raises TransmissionError on failure."""
        body = json.dumps({"method": method, "arguments": arguments}).encode()
        # The first request of a session, and any after the daemon rotates its id, is
        # refused with 409 and the id to send (Transmission's CSRF guard).
        for _attempt in range(2):
            request = urllib.request.Request(
                self.rpc_url,
                data=body,
                headers={SESSION_HEADER: self._session_id, "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    reply = json.loads(response.read())
                    break
            except urllib.error.HTTPError as exc:
                if exc.code != 409 or not exc.headers.get(SESSION_HEADER):
                    raise TransmissionError(f"RPC {method} failed: HTTP {exc.code}") from exc
                self._session_id = exc.headers[SESSION_HEADER]
        else:
            raise TransmissionError(f"RPC {method}: the session id was refused twice")
        if reply.get("result") != "success":
            raise TransmissionError(f"RPC {method} failed: {reply.get('result')}")
        result: dict[str, Any] = reply.get("arguments", {})
        return result

    def add_torrent(self, metainfo: bytes, download_dir: Path) -> int:
        """Add a .torrent (its bytes); data lives in, or goes to, download_dir. Returns its id."""
        return self._add(metainfo=base64.b64encode(metainfo).decode(), download_dir=download_dir)

    def add_magnet(self, magnet: str, download_dir: Path) -> int:
        """Add a magnet link; returns the torrent's id."""
        return self._add(filename=magnet, download_dir=download_dir)

    def _add(self, download_dir: Path, **source: str) -> int:
        Path(download_dir).mkdir(parents=True, exist_ok=True)
        added = self.rpc("torrent-add", **source, **{"download-dir": str(download_dir)})
        entry = added.get("torrent-added") or added.get("torrent-duplicate")
        if not entry:
            raise TransmissionError(f"torrent-add returned no torrent: {added}")
        torrent_id: int = entry["id"]
        return torrent_id

    def status(self, torrent_id: int) -> TorrentStatus:
        """The torrent's progress, state, peers and error."""
        found = self.rpc("torrent-get", ids=[torrent_id], fields=_FIELDS)["torrents"]
        if not found:
            raise TransmissionError(f"transmission has no torrent {torrent_id}")
        info = found[0]
        return TorrentStatus(
            percent_done=float(info["percentDone"]),
            status=int(info["status"]),
            peers_connected=int(info["peersConnected"]),
            peers=tuple(
                f"{p['address']}:{p['port']} {p['clientName']} {p['progress']:.3f}"
                for p in info["peers"]
            ),
            error=str(info["errorString"]) if info["error"] else "",
            have_valid=int(info["haveValid"]),
            uploaded=int(info["uploadedEver"]),
            downloaded=int(info["downloadedEver"]),
        )

    def wait_status(
        self,
        torrent_id: int,
        condition: Callable[[TorrentStatus], bool],
        what: str,
        timeout: float = 60.0,
    ) -> TorrentStatus:
        """Poll the torrent until condition holds; raise with its last status at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            current = self.status(torrent_id)
            if current.error:
                raise TransmissionError(f"torrent failed waiting for {what}: {current.describe()}")
            if condition(current):
                return current
            if time.monotonic() >= deadline:
                raise TransmissionError(
                    f"torrent not {what} after {timeout}s: {current.describe()}{self.tail()}"
                )
            time.sleep(0.05)

    def wait_seeding(self, torrent_id: int, timeout: float = 60.0) -> TorrentStatus:
        """Wait until the torrent has checked its data, has all of it and seeds."""
        return self.wait_status(
            torrent_id,
            lambda s: s.status == SEED and s.percent_done == 1.0,
            "seeding",
            timeout,
        )

    def wait_complete(self, torrent_id: int, timeout: float = 60.0) -> TorrentStatus:
        """Wait until every piece is downloaded and verified."""
        return self.wait_status(torrent_id, lambda s: s.percent_done == 1.0, "complete", timeout)

    def tail(self, lines: int = 30) -> str:
        """The end of the daemon's log, to append to an error message."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n--- transmission log (end)\n" + "\n".join(text) if text else ""

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited by the deadline; files are flushed."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
