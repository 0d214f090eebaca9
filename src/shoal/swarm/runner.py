"""The one loop that carries out a swarm core's outputs, shared by the node and the simulator.

Each environment says how to do each thing (with sockets and threads, or in memory on a
virtual clock) by implementing `Effects`; what is done, in which order, and what the core is
told afterwards is decided here, once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..addresses import Address
from .state import (
    ClosePeer,
    Completed,
    ConnectTo,
    MetadataReady,
    NeedPeers,
    ReadBlock,
    Send,
    VerifyPiece,
)

if TYPE_CHECKING:
    from .core import Swarm


class Effects(Protocol):
    """What an environment does for one swarm."""

    def send(self, peer: int, data: list[bytes]) -> int | None:
        """Write to the peer; the bytes it has yet to read, or None if it is gone."""

    def verify_piece(self, index: int, data: bytearray) -> None:
        """Hash the piece (and keep it if good); later: swarm.piece_checked."""

    def read_block(self, action: ReadBlock) -> None:
        """Read the block; later: swarm.send_block."""

    def close_peer(self, peer: int, reason: str) -> None:
        """Close the connection; the core has forgotten the peer already."""

    def connect_to(self, address: Address, encrypted: bool) -> None:
        """Dial; later: swarm.add_peer(dialled=address) or swarm.dial_failed."""

    def use_metadata(self, info_bytes: bytes) -> None:
        """Open the torrent the info dict describes; later: swarm.attach_metadata."""

    def finish(self) -> None:
        """Every piece is verified."""

    def find_peers(self) -> None:
        """No peer and none being dialled: ask the peer sources (trackers) again."""


def run_outputs(swarm: Swarm, effects: Effects, now: float) -> None:
    """Carry out everything the core asks, and what that leads to, until it asks nothing."""
    while outputs := swarm.take_outputs():
        for output in outputs:
            if isinstance(output, Send):
                unsent = effects.send(output.peer, output.data)
                if unsent is not None:
                    # The core serves the peer more while it keeps up: the loop goes on.
                    swarm.flushed(output.peer, unsent, now)
            elif isinstance(output, ReadBlock):
                effects.read_block(output)
            elif isinstance(output, VerifyPiece):
                effects.verify_piece(output.index, output.data)
            elif isinstance(output, ClosePeer):
                effects.close_peer(output.peer, output.reason)
            elif isinstance(output, ConnectTo):
                effects.connect_to(output.address, output.encrypted)
            elif isinstance(output, MetadataReady):
                effects.use_metadata(output.info_bytes)
            elif isinstance(output, Completed):
                effects.finish()
            elif isinstance(output, NeedPeers):
                effects.find_peers()
