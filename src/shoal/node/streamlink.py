"""A link of a stream core (the overlay, the ledger) on a TCP socket: its bytes go to the
service that runs the core, its writes are bounded, and it tells when the peer reads slowly;
and what every such service does for its links (StreamService)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Protocol, TypeVar, cast

from ..addresses import Address
from ..contract import Close, Send
from ..errors import inert
from . import adapter
from .adapter import CoreClock, TimedCore

log = logging.getLogger(__name__)

DIAL_TIMEOUT = 10.0

# A link's unsent bytes: past HIGH the core hears it is paused, below LOW that it is not; past
# CAP the link is dropped, so a peer that never reads holds at most this much of our memory.
WRITE_HIGH = 256 * 1024
WRITE_LOW = 64 * 1024
WRITE_CAP = 2 * 1024 * 1024


class LinkOwner(Protocol):
    """The service a link reports to, by the link's number."""

    def dialled(self, link: StreamLink) -> None: ...

    def received(self, number: int, data: bytes) -> None: ...

    def paused(self, number: int, paused: bool) -> None: ...

    def lost(self, link: StreamLink) -> None: ...


class StreamLink(asyncio.Protocol):
    """One link's socket; its bytes go to the owner's core."""

    def __init__(self, owner: LinkOwner, number: int, cap: int = WRITE_CAP) -> None:
        self.owner = owner
        self.number = number
        self.cap = cap
        self.transport: asyncio.Transport | None = None

    def attach(self, transport: asyncio.BaseTransport) -> None:
        """Take the socket over: bounded writes, no Nagle delay."""
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A dial the core asked for is open."""
        self.attach(transport)
        self.owner.dialled(self)

    def data_received(self, data: bytes) -> None:
        self.owner.received(self.number, data)

    def pause_writing(self) -> None:
        self.owner.paused(self.number, True)

    def resume_writing(self) -> None:
        self.owner.paused(self.number, False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.owner.lost(self)

    def write(self, data: bytes) -> bool:
        """Queue data; False (and the socket aborted) if the peer has left too much unread."""
        transport = self.transport
        if transport is None:
            return False
        if transport.get_write_buffer_size() + len(data) > self.cap:
            transport.abort()
            return False
        transport.write(data)
        return True

    def close(self) -> None:
        """Close the socket (dropping what is unsent if it is much)."""
        adapter.close(self.transport)


class StreamCore(TimedCore, Protocol):
    """What a stream core (see shoal.contract) takes from its links."""

    def receive(self, link: int, data: bytes, now: float) -> None: ...

    def set_paused(self, link: int, paused: bool, now: float) -> None: ...

    def closed(self, link: int, now: float) -> None: ...


S = TypeVar("S", bound=StreamCore)


class StreamService(CoreClock[S]):
    """What a service does for every link of its stream core: feed it the link's bytes, pause
    and close; write its Sends and carry out its Closes; dial. Subclasses say what a link
    that opens or a dial that fails means to their core."""

    kind = "stream"  # what the log calls its links
    write_cap = WRITE_CAP

    def __init__(self) -> None:
        super().__init__()
        self._links: dict[int, StreamLink] = {}
        self._dials: dict[int, asyncio.Task[None]] = {}

    def _adopt_link(self, transport: asyncio.BaseTransport, number: int) -> StreamLink:
        """Make an incoming connection link number."""
        link = StreamLink(self, number, self.write_cap)
        transport.set_protocol(link)
        link.attach(transport)
        self._links[number] = link
        return link

    def _dial(self, number: int, address: Address, failed: Callable[[], None]) -> None:
        """Dial address as link number (its protocol calls dialled once open); failed is
        called, and the core pumped, if the connection cannot be made."""
        self._dials[number] = asyncio.get_running_loop().create_task(
            self._connect(number, address, failed)
        )

    async def _connect(self, number: int, address: Address, failed: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: StreamLink(self, number, self.write_cap), *address),
                DIAL_TIMEOUT,
            )
        except (TimeoutError, OSError, ValueError) as exc:
            log.info(
                "cannot reach %s peer %s:%s: %s", self.kind, inert(address[0]), address[1], exc
            )
            if self.core is not None:
                failed()
                self._pump()
        finally:
            self._dials.pop(number, None)
            self._dial_ended(number)

    def _dial_ended(self, number: int) -> None:
        """The dial of link number ended, opened or not."""

    def dialled(self, link: StreamLink) -> None:
        """A dial is open: tell the core (or close it if the core gave it up meanwhile)."""
        raise NotImplementedError

    def received(self, number: int, data: bytes) -> None:
        if self.core is not None:
            self.core.receive(number, data, self.now())
            self._pump()

    def paused(self, number: int, paused: bool) -> None:
        if self.core is not None:
            self.core.set_paused(number, paused, self.now())
            self._pump()

    def lost(self, link: StreamLink) -> None:
        if self._links.get(link.number) is link:
            del self._links[link.number]
            if self.core is not None:
                self.core.closed(link.number, self.now())
                self._pump()

    def _write(self, core: S, output: Send) -> None:
        """Carry out a Send: a link that left too much unread is dropped instead."""
        link = self._links.get(output.link)
        if link is not None and not link.write(output.data):
            log.info("dropped %s link %d: it left too much unread", self.kind, output.link)
            del self._links[output.link]
            core.closed(output.link, self.now())

    def _close(self, output: Close) -> None:
        """Carry out a Close: the link, or its dial."""
        log.info("closed %s link %d: %s", self.kind, output.link, inert(output.reason))
        dial = self._dials.pop(output.link, None)
        if dial is not None:
            dial.cancel()
        link = self._links.pop(output.link, None)
        if link is not None:
            link.close()

    def _close_all(self) -> None:
        """Cancel every dial and close every link (the service stops)."""
        for dial in self._dials.values():
            dial.cancel()
        for link in list(self._links.values()):
            link.close()
        self._links.clear()
