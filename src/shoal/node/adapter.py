"""What the node's adapters of sans-IO cores share: resolving the addresses users give,
closing a stream without waiting on a peer that never reads, and a core's one timer."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence

from ..addresses import Address
from ..errors import inert

log = logging.getLogger(__name__)

# A closing stream sends what it has queued only up to this much; more is dropped.
CLOSE_FLUSH_LIMIT = 64 * 1024


async def resolve(
    addresses: Sequence[Address],
    kind: socket.SocketKind,
    usable: Callable[[int], bool] = lambda _family: True,
    what: str = "address",
) -> list[Address]:
    """Numeric addresses for addresses (host names resolved, the first of a family usable
    takes); names that do not resolve are skipped, and said so in the log as what."""
    loop = asyncio.get_running_loop()
    resolved: list[Address] = []
    for host, port in addresses:
        try:
            infos = await loop.getaddrinfo(host, port, type=kind)
        except OSError as exc:
            log.info("%s %s:%d does not resolve: %s", what, inert(host), port, exc)
            continue
        for family, _type, _proto, _name, address in infos:
            if usable(family):
                resolved.append((str(address[0]), int(address[1])))
                break
    return resolved


def close(transport: asyncio.WriteTransport | None) -> None:
    """Close after flushing, unless much is unsent: a peer that never reads would keep a
    closing socket, and what it holds, open for ever."""
    if transport is None:
        return
    if transport.get_write_buffer_size() > CLOSE_FLUSH_LIMIT:
        transport.abort()
    else:
        transport.close()


def rearm(
    timer: asyncio.TimerHandle | None, wake: float | None, callback: Callable[[], None]
) -> asyncio.TimerHandle | None:
    """A core's one timer, moved to wake (the core's get_timer(); None: no timer)."""
    if timer is not None:
        timer.cancel()
    return None if wake is None else asyncio.get_running_loop().call_at(wake, callback)
