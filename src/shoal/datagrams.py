"""The node's one UDP socket, on the same port number as its TCP listener, shared by every
part of the node that speaks in datagrams (UDP trackers now; the DHT and uTP to come)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from .addresses import Address

Listener = Callable[[bytes], None]


class DatagramPort(asyncio.DatagramProtocol):
    """Sends datagrams, and hands each one received to those listening to its sender."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self._listeners: dict[Address, list[Listener]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The socket is bound."""
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Dispatch by sender; datagrams nobody listens for are dropped."""
        for listener in list(self._listeners.get((addr[0], addr[1]), ())):
            listener(data)

    def error_received(self, exc: Exception) -> None:
        """An ICMP error names no exchange; each one's own timeout covers it."""

    def listen(self, address: Address, listener: Listener) -> Callable[[], None]:
        """Receive what address sends; returns the function that stops it."""
        self._listeners.setdefault(address, []).append(listener)

        def stop() -> None:
            listeners = self._listeners.get(address, [])
            if listener in listeners:
                listeners.remove(listener)
            if not listeners:
                self._listeners.pop(address, None)

        return stop

    def send(self, data: bytes, address: Address) -> None:
        """Send one datagram (dropped if the socket is closed: UDP may lose it anyway)."""
        if self.transport is not None:
            self.transport.sendto(data, address)

    def close(self) -> None:
        """Close the socket."""
        if self.transport is not None:
            self.transport.close()
            self.transport = None
