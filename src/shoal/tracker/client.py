"""The asyncio adapter: HTTP and UDP announces on the schedule, and one-off scrapes."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import aiohttp

from shoal import __version__
from shoal.addresses import Address
from shoal.datagrams import DatagramPort

from . import http
from .messages import (
    AnnounceParams,
    AnnounceResponse,
    Event,
    ScrapeResult,
    TrackerError,
    TrackerRefused,
    tracker_kind,
)
from .schedule import Announce, AnnounceSchedule, TrackerStatus
from .udp import MAX_SCRAPE_HASHES, ConnectionCache, UdpAnnounce, UdpScrape, UdpTrackerExchange

__all__ = ["AnnounceStats", "TrackerClient", "TrackerStatus", "scrape"]

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 15.0
UDP_FIRST_TIMEOUT = 3.0
UDP_TRIES = 4
_READ_CHUNK = 64 * 1024
_MAX_REDIRECTS = 3

T = TypeVar("T")


@dataclass
class AnnounceStats:
    """What the torrent reports at each announce."""

    uploaded: int
    downloaded: int
    left: int


def _new_session(timeout: float) -> aiohttp.ClientSession:
    """An HTTP session for trackers: bounded headers, no compression to inflate, no proxies."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers={"User-Agent": f"shoal/{__version__}", "Accept-Encoding": "identity"},
        auto_decompress=False,
        max_line_size=8190,
        max_field_size=8190,
        trust_env=False,
    )


def _unreachable(error: BaseException) -> TrackerError:
    """A plain TrackerError for a network error."""
    reason = str(error).strip() or type(error).__name__
    return TrackerError(f"could not reach the tracker: {reason[:200]}")


async def _http_get(
    session: aiohttp.ClientSession, url: str, parse: Callable[[bytes], T], timeout: float
) -> T:
    """GET url, read at most MAX_BODY bytes and parse them; every failure is a TrackerError."""
    try:
        async with session.get(url, max_redirects=_MAX_REDIRECTS) as response:
            if (response.content_length or 0) > http.MAX_BODY:
                raise TrackerError("the tracker's reply is larger than 1 MiB")
            body = bytearray()
            async for chunk in response.content.iter_chunked(_READ_CHUNK):
                body += chunk
                if len(body) > http.MAX_BODY:
                    raise TrackerError("the tracker's reply is larger than 1 MiB")
            status = response.status
    except TimeoutError:
        raise TrackerError(f"the tracker did not answer within {timeout:g} seconds") from None
    # These two name the URL, passkey and all, in their text: say it plainly instead.
    except aiohttp.TooManyRedirects:
        raise TrackerError(f"the tracker redirected more than {_MAX_REDIRECTS} times") from None
    except aiohttp.ClientResponseError:
        raise TrackerError("the tracker's HTTP reply is malformed") from None
    except (aiohttp.ClientError, OSError, ValueError) as error:  # ValueError: a malformed URL
        raise _unreachable(error) from None
    if status == 200:
        return parse(bytes(body))
    try:
        parse(bytes(body))
    except TrackerRefused:
        raise  # a failure reason says more than the status code
    except TrackerError:
        pass
    raise TrackerError(f"the tracker answered with HTTP status {status}")


def _udp_address(url: str) -> tuple[str, int]:
    """Host and port of a udp:// tracker URL."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or not port:
        raise TrackerError("the UDP tracker's URL has no host or no port")
    return parts.hostname, port


class _UdpProtocol(asyncio.DatagramProtocol):
    """Runs one UDP exchange: datagrams in, datagrams out, one retransmission timer.

    It has a socket of its own, or sends through the node's shared one (`attach`).
    """

    def __init__(self, exchange: UdpTrackerExchange[Any], loop: asyncio.AbstractEventLoop):
        self.exchange = exchange
        self.loop = loop
        self.finished: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.DatagramTransport | None = None
        self._send: Callable[[bytes], None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        datagrams = cast(asyncio.DatagramTransport, transport)
        self.transport = datagrams
        self.attach(datagrams.sendto)

    def attach(self, send: Callable[[bytes], None]) -> None:
        """Start the exchange, sending its datagrams with send."""
        self._send = send
        self._pump()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.exchange.receive(data, self.loop.time())
        self._pump()

    def error_received(self, exc: Exception) -> None:
        # On a local network an ICMP "port unreachable" comes back at once: no need to wait.
        self._finish(_unreachable(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(_unreachable(exc or ConnectionError("the socket closed")))

    def close(self) -> None:
        """Stop the timer and close the socket."""
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()

    def _on_timer(self) -> None:
        self._timer = None
        self.exchange.handle_timer(self.loop.time())
        self._pump()

    def _pump(self) -> None:
        for datagram in self.exchange.take_outputs():
            if self._send is not None:
                self._send(datagram)
        if self.exchange.done:
            self._finish(None)
            return
        wake = self.exchange.get_timer()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None if wake is None else self.loop.call_at(wake, self._on_timer)

    def _finish(self, error: TrackerError | None) -> None:
        if not self.finished.done():
            if error is None:
                self.finished.set_result(None)
            else:
                self.finished.set_exception(error)


def _udp_scrape(
    batch: list[bytes], cache: ConnectionCache, now: float, tracker: str, _ipv6: bool
) -> UdpTrackerExchange[dict[bytes, ScrapeResult]]:
    return UdpScrape(batch, now, cache=cache, tracker=tracker)


async def _udp_request(
    url: str,
    make_exchange: Callable[[float, str, bool], UdpTrackerExchange[T]],
    port: DatagramPort | None = None,
) -> T:
    """Run one exchange with the UDP tracker at url; make_exchange(now, tracker, ipv6).

    With port (the node's own UDP sockets) the tracker is asked from it, so it sees the
    node's one port; otherwise (or if the node has no socket of that family) the exchange
    has a socket of its own.
    """
    host, port_number = _udp_address(url)
    loop = asyncio.get_running_loop()
    try:
        addresses = await loop.getaddrinfo(host, port_number, type=socket.SOCK_DGRAM)
    except OSError as error:
        raise _unreachable(error) from None
    if not addresses:
        raise TrackerError("the UDP tracker's host name has no address")
    # IPv4 first: a name like localhost often resolves to ::1 first, while trackers commonly
    # listen on 0.0.0.0 only. (UDP gives no refusal to fall back on in time.)
    addresses.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _type, _proto, _name, address = addresses[0]
    exchange = make_exchange(loop.time(), f"{host}:{port_number}", family == socket.AF_INET6)
    remote = cast(tuple[str, int], address[:2])
    stop_listening: Callable[[], None] | None = None
    if port is not None and port.serves(family):
        protocol = _UdpProtocol(exchange, loop)
        stop_listening = port.listen(remote, lambda data: protocol.datagram_received(data, remote))
        protocol.attach(lambda datagram: port.send(datagram, remote))
    else:
        try:
            _transport, protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(exchange, loop), remote_addr=remote, family=family
            )
        except OSError as error:
            raise _unreachable(error) from None
    try:
        await protocol.finished
    finally:
        protocol.close()
        if stop_listening is not None:
            stop_listening()
    if exchange.error is not None:
        raise exchange.error
    assert exchange.result is not None
    return exchange.result


class TrackerClient:
    """Announces one torrent to its trackers and hands the peers they return to on_peers."""

    def __init__(
        self,
        info_hash: bytes,
        peer_id: bytes,
        port: int,
        tiers: Sequence[Sequence[str]],
        stats: Callable[[], AnnounceStats],
        on_peers: Callable[[list[Address]], None],
        *,
        numwant: int = 50,
        connections: ConnectionCache | None = None,
        rng: random.Random | None = None,
        http_timeout: float = HTTP_TIMEOUT,
        udp_timeout: float = UDP_FIRST_TIMEOUT,
        udp_tries: int = UDP_TRIES,
        datagrams: DatagramPort | None = None,
    ) -> None:
        if len(info_hash) != 20 or len(peer_id) != 20:
            raise ValueError("the info-hash and the peer id are 20 bytes each")
        self.info_hash = info_hash
        self.peer_id = peer_id
        self.port = port
        self.numwant = numwant
        self._stats = stats
        self._on_peers = on_peers
        self._datagrams = datagrams  # the node's UDP socket, for UDP trackers
        self._connections = connections if connections is not None else ConnectionCache()
        self._rng = rng if rng is not None else random.Random()
        # BEP 7 key: lets the tracker recognise us if our address changes.
        self._key = self._rng.getrandbits(32)
        self._http_timeout = http_timeout
        self._udp_timeout = udp_timeout
        self._udp_tries = udp_tries
        self._schedule = AnnounceSchedule(tiers, rng=self._rng)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: dict[asyncio.Task[None], Announce] = {}  # announces in flight
        self._session: aiohttp.ClientSession | None = None
        self._stopped = False

    def start(self) -> None:
        """Announce `started` to every tier, then keep announcing on schedule."""
        if self._loop is not None or self._stopped:
            return
        self._loop = asyncio.get_running_loop()
        self._schedule.start(self._loop.time())
        self._arm()

    def completed(self) -> None:
        """Announce `completed` now (only the first call counts); before start, say it then."""
        if self._stopped:
            return
        if self._loop is None:
            self._schedule.completed(now=0.0)  # nothing is scheduled yet: the time is unused
            return
        self._schedule.completed(self._loop.time())
        self._arm()

    def reannounce(self) -> None:
        """Ask for more peers soon: announce as early as each tier's min interval allows."""
        if self._loop is not None and not self._stopped:
            self._schedule.reannounce(self._loop.time())
            self._arm()

    def add_tier(self, urls: Sequence[str]) -> None:
        """Add a tier of trackers, announced to at once if already started."""
        if self._loop is None:
            self._schedule.add_tier(urls)
        elif not self._stopped:
            self._schedule.add_tier(urls, self._loop.time())
            self._arm()

    def status(self) -> list[TrackerStatus]:
        """Every tracker's last error, peer count and next announce time (loop.time())."""
        return self._schedule.status()

    async def stop(self, timeout: float = 2.0) -> None:
        """Announce `stopped` (best effort, bounded by timeout) and cancel timers."""
        if self._stopped:
            return
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = self._loop
        if loop is None:
            return
        # A `completed` announce in flight is let finish (within the timeout): otherwise a
        # download that stops right after finishing would never be counted by the tracker.
        completing = [task for task, announce in self._tasks.items() if announce.completes]
        if completing:
            await asyncio.wait(completing, timeout=timeout)
        self._schedule.stop(loop.time())
        finals = self._schedule.take_outputs()
        running = list(self._tasks)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if finals:
            stopping = [loop.create_task(self._run(announce)) for announce in finals]
            _done, late = await asyncio.wait(stopping, timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*stopping, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    def _arm(self) -> None:
        """Set the one timer to the schedule's next wake."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        wake = self._schedule.get_timer()
        if wake is not None and self._loop is not None and not self._stopped:
            self._timer = self._loop.call_at(wake, self._wake)

    def _wake(self) -> None:
        assert self._loop is not None
        self._timer = None
        self._schedule.handle_timer(self._loop.time())
        for announce in self._schedule.take_outputs():
            task = self._loop.create_task(self._run(announce))
            self._tasks[task] = announce
            task.add_done_callback(self._forget)
        self._arm()

    async def _run(self, announce: Announce) -> None:
        """Make one announce and report its outcome to the schedule; never raises."""
        assert self._loop is not None
        try:
            response = await self._announce(announce)
        except TrackerError as error:
            log.info("announce to %s failed: %s", announce.url, error)
            self._schedule.failed(announce, str(error), self._loop.time())
        except Exception:
            # A bug here must not end the announces of this torrent; the log has the trace.
            log.warning("announce to %s failed unexpectedly", announce.url, exc_info=True)
            self._schedule.failed(announce, "the announce failed unexpectedly", self._loop.time())
        else:
            self._schedule.succeeded(announce, response, self._loop.time())
            if response.warning:
                log.info("tracker %s warns: %s", announce.url, response.warning)
            log.debug("tracker %s sent %d peers", announce.url, len(response.peers))
            if response.peers and not self._stopped:
                self._deliver(response.peers)
        self._arm()

    def _deliver(self, peers: list[Address]) -> None:
        try:
            self._on_peers(peers)
        except Exception:
            log.warning("the peers callback failed", exc_info=True)

    async def _announce(self, announce: Announce) -> AnnounceResponse:
        """Send one announce with the torrent's current numbers."""
        stats = self._stats()
        params = AnnounceParams(
            info_hash=self.info_hash,
            peer_id=self.peer_id,
            port=self.port,
            uploaded=stats.uploaded,
            downloaded=stats.downloaded,
            left=stats.left,
            event=announce.event,
            numwant=0 if announce.event is Event.STOPPED else self.numwant,
            key=self._key,
            tracker_id=announce.tracker_id,
        )
        if tracker_kind(announce.url) == "udp":
            return await _udp_request(
                announce.url,
                lambda now, tracker, ipv6: UdpAnnounce(
                    params,
                    now,
                    ipv6=ipv6,
                    cache=self._connections,
                    tracker=tracker,
                    first_timeout=self._udp_timeout,
                    max_tries=self._udp_tries,
                ),
                self._datagrams,
            )
        if self._session is None:
            self._session = _new_session(self._http_timeout)
        url = http.announce_url(announce.url, params)
        return await _http_get(self._session, url, http.parse_announce_response, self._http_timeout)


async def scrape(
    url: str,
    info_hashes: Sequence[bytes],
    timeout: float = 10.0,
    *,
    connections: ConnectionCache | None = None,
) -> dict[bytes, ScrapeResult]:
    """Seeders, completed downloads and leechers per info-hash; raise TrackerError on failure."""
    hashes = list(dict.fromkeys(info_hashes))
    if any(len(info_hash) != 20 for info_hash in hashes):
        raise ValueError("an info-hash is 20 bytes long")
    kind = tracker_kind(url)
    if kind is None:
        raise TrackerError("the URL is not that of an http, https or udp tracker")
    cache = connections if connections is not None else ConnectionCache()
    batches = [hashes[i : i + MAX_SCRAPE_HASHES] for i in range(0, len(hashes), MAX_SCRAPE_HASHES)]
    results: dict[bytes, ScrapeResult] = {}
    try:
        async with asyncio.timeout(timeout):
            if kind == "udp":
                for batch in batches:
                    scrape = functools.partial(_udp_scrape, batch, cache)
                    found: dict[bytes, ScrapeResult] = await _udp_request(url, scrape)
                    results |= found
            else:
                async with _new_session(timeout) as session:
                    for batch in batches:
                        results |= await _http_get(
                            session,
                            http.scrape_url(url, batch),
                            functools.partial(http.parse_scrape_response, info_hashes=batch),
                            timeout,
                        )
    except TimeoutError:
        raise TrackerError(f"the tracker did not answer within {timeout:g} seconds") from None
    return results
