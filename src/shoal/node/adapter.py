"""What the node's adapters of sans-IO cores share: a core's clock (one timer, and what the
adapter keeps saved written now and then), resolving the addresses users give, and closing a
stream without waiting on a peer that never reads."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

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
    timer: asyncio.TimerHandle | None,
    wake: float | None,
    callback: Callable[[], None],
    wall_clock: bool = False,
) -> asyncio.TimerHandle | None:
    """A core's one timer, moved to wake (the core's get_timer(); None: no timer), a time of
    the event loop's clock or, for a core on the wall clock, of time.time()."""
    if timer is not None:
        timer.cancel()
    if wake is None:
        return None
    loop = asyncio.get_running_loop()
    if wall_clock:
        return loop.call_later(max(0.0, wake - time.time()), callback)
    return loop.call_at(wake, callback)


class TimedCore(Protocol):
    """A core's side of the clock (see shoal.contract)."""

    def handle_timer(self, now: float) -> None: ...

    def get_timer(self) -> float | None: ...


C = TypeVar("C", bound=TimedCore)


class CoreClock(Generic[C]):
    """An adapter's clock: one call_at at its core's get_timer(), and _save every
    save_interval seconds (a killed node loses little). Subclasses pump the core's outputs
    in _pump and re-arm the timer there with _rearm."""

    save_interval = 300.0
    # Cores whose `now` is Unix time (the ledger checks block times against it) rather than
    # the event loop's monotonic clock.
    wall_clock = False

    def __init__(self) -> None:
        self.core: C | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_save = 0.0

    def _on_timer(self) -> None:
        self._timer = None
        if self.core is None:
            return
        now = self.now()
        self.core.handle_timer(now)
        if now - self._last_save >= self.save_interval:
            self._last_save = now
            self._save()
        self._pump()

    def now(self) -> float:
        """The time as the core reads it."""
        return time.time() if self.wall_clock else asyncio.get_running_loop().time()

    def _rearm(self, core: C) -> None:
        self._timer = rearm(self._timer, core.get_timer(), self._on_timer, self.wall_clock)

    def _stop_clock(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _pump(self) -> None:
        raise NotImplementedError

    def _save(self) -> None:
        raise NotImplementedError
