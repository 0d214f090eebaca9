"""What an incoming TCP connection speaks, told by its first bytes: one port serves them all."""

from __future__ import annotations

import enum

from .ledger.params import CHAINS
from .overlay.messages import GREETING as OVERLAY_GREETING
from .wire import messages as m


class StreamKind(enum.Enum):
    """The protocols the node's TCP port speaks."""

    BITTORRENT = "a BitTorrent handshake"
    MSE = "an MSE/PE handshake"
    OVERLAY = "the overlay's greeting"
    LEDGER = "a ledger chain's magic"


# Protocols that open with a fixed greeting.
GREETINGS: dict[bytes, StreamKind] = {
    bytes((len(m.PROTOCOL),)) + m.PROTOCOL: StreamKind.BITTORRENT,
    OVERLAY_GREETING: StreamKind.OVERLAY,
    # The ledger's messages open with their chain's 4 magic bytes, as Bitcoin's do; an MSE
    # key starts so once in 2^31 connections, and fails its handshake then.
    **{params.magic: StreamKind.LEDGER for params in CHAINS.values()},
}
# A stream that opens with none of them is taken for MSE, whose first bytes are random (a
# Diffie-Hellman key): that is how BitTorrent clients tell the two apart.
OTHERWISE = StreamKind.MSE


def classify(first_bytes: bytes | memoryview) -> StreamKind | None:
    """The kind of stream these first bytes open; None until enough have arrived to tell."""
    undecided = False
    for greeting, kind in GREETINGS.items():
        seen = min(len(first_bytes), len(greeting))
        if bytes(first_bytes[:seen]) == greeting[:seen]:
            if seen == len(greeting):
                return kind
            undecided = True
    return None if undecided else OTHERWISE
