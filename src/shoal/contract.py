"""The one shape every protocol core has (see docs/architecture.md, "The core contract").

A core is a state machine: inputs (bytes of a stream, or datagrams with their sender) come
with `now`; `handle_timer(now)` does what is due and `get_timer()` says when that is next;
everything it wants done (bytes or datagrams to send, requests to the adapter, events for the
layer above) waits in one queue that the adapter empties with `take_outputs()`. A core opens
no socket, reads no clock and starts no thread, so the simulator runs it unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar, runtime_checkable

from .addresses import Address

OutputT_co = TypeVar("OutputT_co", covariant=True)


@runtime_checkable
class Core(Protocol[OutputT_co]):
    """What the adapter and the simulator may call on any core."""

    def handle_timer(self, now: float) -> None:
        """Do what is due at now."""

    def get_timer(self) -> float | None:
        """When handle_timer next has something to do; None if nothing is scheduled."""

    def take_outputs(self) -> Sequence[OutputT_co]:
        """Everything queued since the last call, in order; each output is returned once."""


class Datagram(NamedTuple):
    """A datagram to send to address (an output of datagram cores); a tuple, as trackers and
    the DHT make one per request and a frozen dataclass costs several times more to build."""

    data: bytes
    address: Address


@runtime_checkable
class DatagramCore(Core[OutputT_co], Protocol[OutputT_co]):
    """A core on the node's UDP port: datagrams in with their sender; out, `Datagram`s and
    whatever events it has for the layer above."""

    def receive(self, data: bytes, sender: Address, now: float) -> None:
        """A datagram arrived from sender."""


# The outputs every stream core (the overlay, the ledger) has for its links, which the adapter
# numbers as the core says: bytes to write, and a link to close.


@dataclass(frozen=True, slots=True)
class Send:
    """Bytes to write to a link."""

    link: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """Close link (everything sent before it is flushed first)."""

    link: int
    reason: str
