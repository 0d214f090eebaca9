"""The hub's asyncio adapter: one aiohttp app (tracker + index) and one UDP endpoint, one port."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import re
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from shoal import __version__, addresses
from shoal.hub import HubError
from shoal.hub.front import KEEP_ALIVE, MAX_BODY, ConnectionFront, FrontStats
from shoal.hub.http import (
    announce_reply,
    failure_reply,
    parse_announce,
    parse_scrape,
    scrape_reply,
)
from shoal.hub.index import IndexFull, IndexUnavailable, KeywordIndex, SearchError
from shoal.hub.listing import ListingError, ListingForbidden, parse_publish, parse_withdraw
from shoal.hub.registry import (
    MalformedRequest,
    RateLimiter,
    Registry,
    TrackerConfig,
    TrackerRefusal,
)
from shoal.hub.udp import UdpTracker
from shoal.numbers import bounded_int
from shoal.storage.resume import state_dir

__all__ = ["Hub", "HubThread", "default_db_path", "load_allow_list", "run_hub"]

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_QUERY = 256
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
# Expired peers and listings are swept this often; announces also sweep their own swarm.
SWEEP_INTERVAL = 60.0
_HASH_HEX_LENGTH = 40
_INFO_HASH_HEX = re.compile(r"[0-9a-fA-F]{40}")
# Room for bursts of datagrams while the loop is busy; the kernel caps it at rmem_max.
_UDP_BUFFER = 4 * 1024 * 1024
_BENCODE_TYPE = "text/plain"


def default_db_path() -> Path:
    """Where the hub keeps its index unless told otherwise."""
    return state_dir() / "hub.db"


def load_allow_list(path: Path) -> frozenset[bytes]:
    """Info-hashes from a file of 40-hex-digit lines (blank lines and # comments skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise HubError(f"cannot read the allow list {path}: {exc.strerror}") from None
    hashes = set()
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            if len(entry) != _HASH_HEX_LENGTH:
                raise ValueError(entry)
            hashes.add(bytes.fromhex(entry))
        except ValueError:
            raise HubError(f"line {number} of {path} is not a 40-hex-digit info-hash") from None
    return frozenset(hashes)


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


# Which of the cores' errors become which HTTP status on the JSON endpoints.
_ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (ListingError, 400),
    (SearchError, 400),
    (ListingForbidden, 403),
    (TrackerRefusal, 429),
    (IndexFull, 503),
)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn refusals and HTTP errors into {"error": sentence} replies."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return _json_error(413, f"the request body is larger than {MAX_BODY // 1024} KiB")
    except web.HTTPNotFound:
        return _json_error(404, f"the hub has nothing at {request.path}")
    except web.HTTPMethodNotAllowed:
        return _json_error(405, f"{request.path} does not take {request.method} requests")
    except web.HTTPException as exc:
        return _json_error(exc.status, exc.reason)
    except sqlite3.Error as exc:
        log.error("index database error: %s", exc)
        return _json_error(500, "the hub's index could not be read or written")
    except ConnectionError:
        # The client left (or was cut off) before its body ended: nobody reads this answer.
        return _json_error(400, "the request ended before its body")
    except Exception as exc:
        for kind, status in _ERROR_STATUS:
            if isinstance(exc, kind):
                return _json_error(status, str(exc))
        log.exception("the hub failed on a request for %s", request.path)
        return _json_error(500, "the hub failed on this request")


# The errors aiohttp's server logs are requests that clients got wrong (the middleware
# catches the hub's own): no traceback for those, nor a warning.
class _ClientErrorLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server log, each record one line at debug level."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        error = kwargs.pop("exc_info", None)
        if error is True:
            error = sys.exc_info()[1]
        elif isinstance(error, tuple):
            error = error[1]
        if isinstance(error, BaseException):
            text = " ".join(str(error).split()).replace("%", "%%")
            msg = f"{msg}: {type(error).__name__}: {text}"
        super().log(logging.DEBUG, msg, *args, **kwargs)


class _UdpEndpoint(asyncio.DatagramProtocol):
    """Feeds datagrams to the UDP tracker core and sends back what it answers."""

    def __init__(self, core: UdpTracker, loop: asyncio.AbstractEventLoop) -> None:
        self.core = core
        self.loop = loop
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            self.core.receive(data, (addr[0], addr[1]), self.loop.time())
        except Exception:
            # The core answers every datagram with a reply or silence; this is a bug, not input.
            log.exception("the UDP tracker failed on a datagram from %s", addr[0])
            return
        for reply in self.core.take_outputs():
            if self.transport is not None:
                self.transport.sendto(reply.data, reply.address)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from clients that went away; nothing to do.
        pass


class Hub:
    """The tracker and the index served on host:port (TCP for HTTP, UDP for BEP 15)."""

    def __init__(
        self,
        host: str,
        port: int,
        db_path: Path,
        *,
        config: TrackerConfig | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.db_path = Path(db_path)
        self.registry = Registry(config)
        config = self.registry.config
        # Index requests share the announce rate, in a bucket of their own.
        self._index_limiter = RateLimiter(
            config.announce_rate, config.announce_burst, config.max_rate_limited_addresses
        )
        self.udp = UdpTracker(self.registry, os.urandom(32))
        self.index: KeywordIndex | None = None
        # SQLite calls run here, one at a time, so the tracker never waits on the disk.
        self._db_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hub-db")
        self._runner: web.AppRunner | None = None
        self.front: ConnectionFront | None = None
        self._tcp_server: asyncio.AbstractServer | None = None
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The hub's base URL (the tracker's announce URL is this plus /announce)."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    async def _in_db(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, function, *args)

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[_json_errors])
        app.router.add_get("/", self._describe)
        # Normally answered by the front before aiohttp sees them; kept for requests that
        # arrive on a connection that began with another path.
        app.router.add_get("/announce", self._tracker)
        app.router.add_get("/scrape", self._tracker)
        app.router.add_post("/index/publish", self._publish)
        app.router.add_post("/index/withdraw", self._withdraw)
        app.router.add_get("/index/search", self._search)
        app.router.add_get("/peers", self._peers)
        return app

    async def start(self) -> None:
        """Open the index and bind TCP and UDP on the same port (a free one if port is 0)."""
        try:
            await self._start()
        except BaseException:
            # Close whatever was opened before the failure.
            await self.stop()
            raise

    async def _start(self) -> None:
        try:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HubError(f"cannot create the folder for {self.db_path}: {exc.strerror}") from None
        try:
            self.index = await self._in_db(KeywordIndex, self.db_path)
        except IndexUnavailable as exc:
            raise HubError(str(exc)) from None
        tcp, udp = self._bind()
        self.port = tcp.getsockname()[1]
        loop = asyncio.get_running_loop()
        self._runner = web.AppRunner(
            self._app(),
            access_log=None,
            keepalive_timeout=KEEP_ALIVE,
            logger=_ClientErrorLog(logging.getLogger("aiohttp.server")),
        )
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        self.front = ConnectionFront(server, self.tracker_reply)
        self._tcp_server = await loop.create_server(self.front.protocol, sock=tcp)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpEndpoint(self.udp, loop), sock=udp
        )
        self._udp_transport = transport
        self._sweeper = asyncio.create_task(self._sweep())
        log.info("hub serving on %s (tracker: /announce and udp, index: /index)", self.url)

    def _bind(self) -> tuple[socket.socket, socket.socket]:
        """A listening TCP socket and a UDP socket on the same address and port."""
        if self.host == "::" and not addresses.host_has_ipv6():
            self.host = "0.0.0.0"  # "every address" on a host without IPv6
        try:
            family, _, _, _, address = socket.getaddrinfo(
                self.host or None, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
        except socket.gaierror as exc:
            raise HubError(
                f"cannot resolve the hub's address {self.host}: {exc.strerror}"
            ) from None
        # With port 0, TCP picks a port and UDP takes the same number; retry if UDP's is taken.
        for _ in range(20):
            tcp = socket.socket(family, socket.SOCK_STREAM)
            udp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                for sock in (tcp, udp):
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind(address)
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_BUFFER)
                udp.bind((address[0], tcp.getsockname()[1], *address[2:]))
                tcp.listen(1024)
                tcp.setblocking(False)
                udp.setblocking(False)
                return tcp, udp
            except OSError as exc:
                tcp.close()
                udp.close()
                if self.port != 0:
                    raise HubError(
                        f"cannot listen on {self.host}:{self.port}: {exc.strerror}"
                    ) from None
        raise HubError(f"cannot find a port free for both TCP and UDP on {self.host}")

    async def stop(self) -> None:
        """Stop serving and close the index."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._udp_transport is not None:
            self._udp_transport.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.index is not None:
            await self._in_db(self.index.close)
            self.index = None
        self._db_thread.shutdown(wait=True)

    async def _sweep(self) -> None:
        """Forget silent peers and expired listings every SWEEP_INTERVAL seconds."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.registry.expire(loop.time())
            if self.index is not None:
                try:
                    await self._in_db(self.index.purge, time.time())
                except sqlite3.Error as exc:
                    log.error("could not purge expired listings: %s", exc)

    # --- tracker ---

    @staticmethod
    def _query(request: web.Request) -> str:
        """The raw query string: binary info-hashes must not be decoded as text first."""
        return request.raw_path.partition("?")[2]

    @staticmethod
    def _sender(request: web.Request) -> bytes:
        return addresses.pack_ip(request.transport.get_extra_info("peername")[0])  # type: ignore[union-attr]

    def tracker_reply(self, path: str, query: str, sender: str) -> bytes:
        """The bencoded reply to an HTTP announce or scrape (the front answers most of them)."""
        now = asyncio.get_running_loop().time()
        ip = addresses.pack_ip(sender)
        try:
            if path == "/announce":
                parsed = parse_announce(query, ip)
                with_ids = not parsed.compact and not parsed.no_peer_id
                result = self.registry.announce(parsed.request, now, peer_ids=with_ids)
                return announce_reply(result, compact=parsed.compact)
            info_hashes = parse_scrape(query)
            stats = self.registry.scrape(info_hashes, ip, now)
            return scrape_reply(info_hashes, stats)
        except MalformedRequest as problem:
            return failure_reply(self.registry.refuse_malformed(problem, ip, now))
        except TrackerRefusal as refusal:
            return failure_reply(str(refusal))

    async def _tracker(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername")  # type: ignore[union-attr]
        body = self.tracker_reply(request.path, self._query(request), peer[0])
        return web.Response(body=body, content_type=_BENCODE_TYPE)

    # --- index ---

    def _check_index_rate(self, request: web.Request) -> None:
        if not self._index_limiter.allow(self._sender(request), time.monotonic()):
            raise TrackerRefusal("too many requests from this address; slow down")

    async def _json_body(self, request: web.Request) -> Any:
        self._check_index_rate(request)
        raw = await request.read()
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            # ValueError covers bad UTF-8 and numbers too long to convert, RecursionError
            # deeply nested arrays.
            raise ListingError("the request body is not valid JSON") from None

    def _open_index(self) -> KeywordIndex:
        if self.index is None:
            raise web.HTTPServiceUnavailable(reason="the hub is shutting down")
        return self.index

    async def _publish(self, request: web.Request) -> web.Response:
        listing, public_key = parse_publish(await self._json_body(request), time.time())
        await self._in_db(self._open_index().publish, listing, public_key)
        return web.json_response({"ok": True, "expires_at": listing.expires_at})

    async def _withdraw(self, request: web.Request) -> web.Response:
        withdrawal = parse_withdraw(await self._json_body(request), time.time())
        withdrawn = await self._in_db(self._open_index().withdraw, withdrawal)
        return web.json_response({"ok": True, "withdrawn": withdrawn})

    async def _search(self, request: web.Request) -> web.Response:
        self._check_index_rate(request)
        words = request.query.get("q", "")
        if len(words) > MAX_QUERY:
            raise SearchError(f"the search is longer than {MAX_QUERY} characters")
        limit = bounded_int(request.query.get("limit", str(DEFAULT_LIMIT)), 1, MAX_LIMIT)
        if limit is None:
            raise SearchError(f"the limit is not a whole number from 1 to {MAX_LIMIT}")
        hits = await self._in_db(self._open_index().search, words, limit, time.time())
        results = []
        for hit in hits:
            swarm = self.registry.stats(bytes.fromhex(hit.info_hash))
            results.append(
                {
                    "info_hash": hit.info_hash,
                    "name": hit.name,
                    "size": hit.size,
                    "files": hit.files,
                    "seeders": swarm.seeders,
                    "leechers": swarm.leechers,
                    "publishers": hit.publishers,
                }
            )
        return web.json_response({"results": results})

    async def _peers(self, request: web.Request) -> web.Response:
        """Peers of one info-hash for a node that only asks (an overlay leaf looking for
        ultrapeers): the tracker's answer without an announce, so the asker is not listed."""
        info_hash = request.query.get("info_hash", "")
        if not _INFO_HASH_HEX.fullmatch(info_hash):
            raise SearchError("info_hash is not 40 hex digits")
        wanted = bounded_int(request.query.get("numwant", str(DEFAULT_LIMIT)), 1, MAX_LIMIT)
        if wanted is None:
            raise SearchError(f"numwant is not a whole number from 1 to {MAX_LIMIT}")
        now = asyncio.get_running_loop().time()
        picked = self.registry.peers(bytes.fromhex(info_hash), wanted, self._sender(request), now)
        peers = [
            addresses.text(peer)
            for entry in picked
            for peer in addresses.unpack(entry, ipv6=len(entry) == addresses.IPV6_ENTRY)
        ]
        return web.json_response({"peers": peers})

    async def _describe(self, request: web.Request) -> web.Response:
        # Counting is a scan of the index: the same per-address limit as other index requests.
        self._check_index_rate(request)
        listings, torrents = await self._in_db(self._open_index().counts, time.time())
        return web.json_response(
            {
                "name": "shoal hub",
                "version": __version__,
                "tracker": {
                    "announce": "/announce",
                    "scrape": "/scrape",
                    "udp": True,
                    "lookup": "GET /peers?info_hash=HEX&numwant=N",
                    "swarms": self.registry.swarm_count,
                    "peers": self.registry.peer_count,
                },
                "index": {
                    "publish": "POST /index/publish",
                    "withdraw": "POST /index/withdraw",
                    "search": "GET /index/search?q=WORDS&limit=N",
                    "listings": listings,
                    "torrents": torrents,
                },
            }
        )


def tracker_config(allow: Path | None = None, announce_rate: float = 20.0) -> TrackerConfig:
    """The tracker policy run_hub uses: the defaults, an allow list and a rate."""
    return TrackerConfig(
        announce_rate=announce_rate,
        allowed=load_allow_list(allow) if allow is not None else None,
    )


async def run_hub(
    host: str,
    port: int,
    db_path: Path,
    *,
    allow: Path | None = None,
    announce_rate: float = 20.0,
    stop: asyncio.Event | None = None,
    ready: Callable[[Hub], None] | None = None,
) -> None:
    """Serve the hub on host:port until stop is set (forever without one); ready(hub) is
    called once it listens.

    announce_rate is the announces (and index requests) per second allowed per source
    address, with bursts of 100; 0 turns the limit off. Raises HubError if it cannot start.
    """
    hub = Hub(host, port, db_path, config=tracker_config(allow, announce_rate))
    await hub.start()
    if ready is not None:
        ready(hub)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await hub.stop()


class HubThread:
    """A hub served by its own event loop in a background thread (for tests and embedding)."""

    def __init__(
        self,
        db_path: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        config: TrackerConfig | None = None,
    ) -> None:
        self.hub = Hub(host, port, db_path, config=config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="hub", daemon=True)

    @property
    def port(self) -> int:
        """The port the hub listens on (TCP and UDP)."""
        return self.hub.port

    @property
    def url(self) -> str:
        """The hub's base URL."""
        return self.hub.url

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.hub.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.hub.stop()

    def start(self, timeout: float = 30.0) -> HubThread:
        """Start serving; return once the port is bound, or raise what went wrong."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise HubError(f"the hub did not start within {timeout} seconds")
        if self._error is not None:
            raise self._error
        return self

    def front_stats(self, timeout: float = 10.0) -> FrontStats:
        """What the hub's TCP connections hold right now, read in the hub's own thread."""

        async def read() -> FrontStats:
            assert self.hub.front is not None
            return self.hub.front.stats()

        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(read(), self._loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving and wait for the thread to end."""
        if self._thread.ident is None:
            return
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def __enter__(self) -> HubThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
