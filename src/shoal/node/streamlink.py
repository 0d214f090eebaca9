"""A link of a stream core (the overlay, the ledger) on a TCP socket: its bytes go to the
service that runs the core, its writes are bounded, and it tells when the peer reads slowly."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Protocol, cast

from . import adapter

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
