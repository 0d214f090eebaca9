"""The node's UDP port, on the same port number as its TCP listener (a socket for IPv4, and
one for IPv6 where the host has it), shared by every part of the node that speaks in
datagrams (UDP trackers and the DHT now; uTP to come)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any, cast

from .addresses import Address

Listener = Callable[[bytes], None]
# Bytes of datagrams the kernel holds for us (it caps this at net.core.rmem_max).
RECEIVE_BUFFER = 1 << 20


def family_of(address: Address) -> socket.AddressFamily:
    """The address family of a numeric address."""
    return socket.AF_INET6 if ":" in address[0] else socket.AF_INET


class DatagramPort(asyncio.DatagramProtocol):
    """Sends datagrams, and hands each one received to those listening to its sender."""

    def __init__(self) -> None:
        self._transports: dict[int, asyncio.DatagramTransport] = {}
        self._listeners: dict[Address, list[Listener]] = {}
        # Datagrams from anyone else, by their first byte (b"d": a bencoded KRPC message).
        self._protocols: dict[int, Callable[[bytes, Address], None]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A socket (IPv4 or IPv6) is bound."""
        sock = transport.get_extra_info("socket")
        # Room for bursts (a bootstrap node that many join at once): the default drops them.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self._transports[sock.family] = cast(asyncio.DatagramTransport, transport)

    def serves(self, family: int) -> bool:
        """Whether the port has an open socket of this address family."""
        return family in self._transports

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Dispatch by sender, else by first byte; datagrams nobody takes are dropped."""
        sender = (addr[0], addr[1])
        listeners = self._listeners.get(sender)
        if listeners:
            for listener in list(listeners):
                listener(data)
            return
        handler = self._protocols.get(data[0]) if data else None
        if handler is not None:
            handler(data, sender)

    def serve(self, first_byte: bytes, handler: Callable[[bytes, Address], None]) -> None:
        """Hand datagrams that start with first_byte, from senders no exchange listens to,
        to handler(data, sender) (the DHT takes b"d")."""
        self._protocols[first_byte[0]] = handler

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
        """Send one datagram (dropped if no socket of its family is open: UDP may lose it)."""
        transport = self._transports.get(family_of(address))
        if transport is not None:
            transport.sendto(data, address)

    def close(self) -> None:
        """Close the sockets."""
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()
