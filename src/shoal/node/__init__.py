"""One node: the asyncio adapter that connects the cores to sockets, disk and the clock.

`connection` (one TCP connection: first bytes, handshakes, bytes to its swarm), `torrent` (one
torrent: its swarm core run through the shared runner, storage, resume data, trackers) and
`node` (the port, the handshake gate, the thread pools).
"""

from .connection import PeerConnection
from .node import DEFAULT_PORT, Node, new_peer_id
from .torrent import TorrentTask

__all__ = ["DEFAULT_PORT", "Node", "PeerConnection", "TorrentTask", "new_peer_id"]
