"""Run aria2c as a leecher against one peer on loopback, through a tiny in-process tracker.

aria2c cannot be handed a peer address directly, so the peer reaches it the way it would in
the wild: the helper serves an HTTP tracker on 127.0.0.1 whose every announce answers with
that one peer, and passes it to aria2c with --bt-tracker (aria2c announces to it even when
the torrent itself names no tracker).
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote_to_bytes, urlsplit

from conftest import free_port

from shoal import addresses

LOOPBACK = "127.0.0.1"
ARIA2C = "aria2c"


def _bencode(value: int | bytes | str | list | dict) -> bytes:
    """Bencode the few shapes a tracker reply needs (kept local: no dependency on shoal)."""
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(_bencode(item) for item in value) + b"e"
    items = sorted(
        (key.encode() if isinstance(key, str) else key, item) for key, item in value.items()
    )
    return b"d" + b"".join(_bencode(key) + _bencode(item) for key, item in items) + b"e"


def parse_announce(query: str) -> dict[str, bytes]:
    """An announce query string as raw values (info_hash and peer_id are binary)."""
    # parse_qs decodes values as UTF-8, which mangles the binary ones.
    params: dict[str, bytes] = {}
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        params[key] = unquote_to_bytes(value)
    return params


class Tracker:
    """A threaded HTTP tracker on 127.0.0.1 that hands every announcer the same peer list."""

    def __init__(self, peers: Iterable[tuple[str, int]] = (), interval: int = 60) -> None:
        """Serve peers (host, port); announces are kept in .announces for assertions."""
        self.peers: list[tuple[str, int]] = list(peers)
        self.interval = interval
        self.announces: list[dict[str, bytes]] = []
        tracker = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/announce":
                    self.send_error(404)
                    return
                tracker.announces.append(parse_announce(url.query))
                body = _bencode(
                    {"interval": tracker.interval, "peers": addresses.pack_all(tracker.peers)[0]}
                )
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: test output is for failures, not for every announce."""

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval: stop() waits up to one interval for the serving loop.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """The announce URL to give a client."""
        return f"http://{LOOPBACK}:{self._server.server_address[1]}/announce"

    def start(self) -> Tracker:
        """Begin answering announces."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Tracker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def aria2_args(torrent_path: Path, out_dir: Path, tracker_url: str) -> list[str]:
    """The aria2c command line for a loopback-only, leech-then-exit download."""
    return [
        ARIA2C,
        "--no-conf=true",
        f"--dir={out_dir}",
        f"--bt-tracker={tracker_url}",
        # Peers only from our tracker; nothing that broadcasts or reaches other hosts.
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--disable-ipv6=true",
        "--async-dns=false",
        f"--listen-port={free_port()}",
        f"--dht-listen-port={free_port()}",
        # Leech, verify every piece, exit: no seeding afterwards, no trust in old files.
        # (With no file yet, --check-integrity logs a harmless "Checksum error detected".)
        "--seed-time=0",
        "--bt-hash-check-seed=false",
        "--check-integrity=true",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
        "--bt-save-metadata=false",
        "--file-allocation=none",
        # Exit with us if the test process dies before it can clean up.
        f"--stop-with-process={os.getpid()}",
        "--console-log-level=warn",
        "--summary-interval=0",
        "--show-console-readout=false",
        str(torrent_path),
    ]


def aria2_download(
    torrent_path: Path,
    out_dir: Path,
    peer_port: int,
    timeout: float = 60.0,
    log_path: Path | None = None,
    extra_args: Iterable[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Download torrent_path into out_dir with aria2c from the peer at 127.0.0.1:peer_port.

    Returns aria2c's result (returncode 0 means every piece arrived and verified); raises
    subprocess.TimeoutExpired, after killing aria2c, if it runs past timeout.
    """
    with Tracker([(LOOPBACK, peer_port)]) as tracker:
        args = aria2_args(Path(torrent_path), Path(out_dir), tracker.url)
        if log_path is not None:
            args[1:1] = [f"--log={log_path}", "--log-level=info"]
        # Options go before the torrent path, which stays last.
        args[-1:-1] = list(extra_args)
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
