"""What a swarm knows and says: its tunables, each peer's state, the actions it asks for."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..addresses import Address
from ..wire import extensions as ext
from ..wire.connection import PeerWire

# Requests we keep in flight per peer are sized to this many seconds of its download rate.
REQUEST_QUEUE_SECONDS = 2.0
# A new peer starts with this many requests and gains one per block received (slow start,
# doubling each round trip) until its rate stops growing; then the rate sets the depth.
INITIAL_REQUEST_QUEUE = 16
# Requests are topped up once this many slots are free (or a quarter of the queue, if smaller).
REFILL_BATCH = 32
MAX_REQUEST_QUEUE = 1000
# What we assume of a peer that does not say how many requests it queues (reqq).
DEFAULT_PEER_REQUEST_QUEUE = 250
# A piece the peer rejected a request for rests this long before we ask that peer again.
REJECT_REST = 3.0
# How many requests we accept queued from one peer before calling it abusive.
MAX_UPLOAD_QUEUE = 2000
SNUB_TIMEOUT = 30.0
IDLE_TIMEOUT = 180.0
HANDSHAKE_TIMEOUT = 20.0
# A connection we dialled counts as useful (the back-off resets) after trading or this long.
USEFUL_CONNECTION = 60.0
KEEP_ALIVE_INTERVAL = 90.0
PEX_INTERVAL = 60.0
RATE_INTERVAL = 1.0
HASH_FAILURES_BEFORE_BAN = 2
MAX_WASTED_BYTES = 8 * 1024 * 1024
MAX_REMEMBERED_PEERS = 1000
# How many times over a peer may have the whole metadata sent to it.
METADATA_REPEATS = 3
# Haves a peer may send before we know how many pieces there are.
MAX_PENDING_HAVES = 1 << 16


def ban_key(address: Address) -> Address | str:
    """What a ban covers: the IP, or on loopback (where local peers share one IP) the address."""
    host = address[0]
    return address if host.startswith("127.") or host == "::1" else host


@dataclass(frozen=True, slots=True)
class Send:
    """Write these bytes to the peer's connection, then report what it has yet to read."""

    peer: int
    data: list[bytes]


@dataclass(frozen=True, slots=True)
class VerifyPiece:
    """Hash this complete piece off the event loop; on success write it, then report back."""

    index: int
    data: bytearray


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """Read a block of a verified piece and send it to the peer."""

    peer: int
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class ClosePeer:
    """Drop this connection; `ban` keeps the peer out for good."""

    peer: int
    reason: str
    ban: bool = False


@dataclass(frozen=True, slots=True)
class ConnectTo:
    """Dial this address; report back with add_peer(dialled=...) or dial_failed."""

    address: Address
    encrypted: bool = False  # open with the MSE handshake


@dataclass(frozen=True, slots=True)
class MetadataReady:
    """The info dictionary arrived and matches the info-hash."""

    info_bytes: bytes


@dataclass(frozen=True, slots=True)
class Completed:
    """Every piece is verified."""


@dataclass(frozen=True, slots=True)
class NeedPeers:
    """Pieces are missing and no peer is connected or being dialled: find more (ask the
    trackers again); said each tick while it lasts."""


Action = (
    Send | VerifyPiece | ReadBlock | ClosePeer | ConnectTo | MetadataReady | Completed | NeedPeers
)


@dataclass(slots=True)
class SwarmConfig:
    """Tunables of one swarm."""

    client: str = "shoal"
    listen_port: int | None = None
    upload_slots: int = 4
    max_peers: int = 60
    private: bool = False
    encryption: str = "prefer"  # see sources.ENCRYPTION_POLICIES


@dataclass(slots=True)
class Peer:
    """What we know about one connected peer."""

    key: int
    wire: PeerWire
    address: Address
    outgoing: bool
    connected_at: float
    dialled: Address | None = None  # the source this connection was dialled from
    listen_address: Address | None = None
    handshaken: bool = False
    am_choking: bool = True
    am_interested: bool = False
    peer_choking: bool = True
    peer_interested: bool = False
    has: bytearray | None = None
    # Before the metadata arrives, what the peer announced is kept as it came.
    pending_bitfield: bytes | None = None
    pending_all: bool | None = None
    pending_haves: set[int] = field(default_factory=set)
    extensions: ext.ExtensionHandshake = field(default_factory=ext.ExtensionHandshake)
    outstanding: dict[tuple[int, int], float] = field(default_factory=dict)
    # Pieces the peer rejected a request for, and when we may ask it for them again.
    resting: dict[int, float] = field(default_factory=dict)
    upload_queue: deque[tuple[int, int, int]] = field(default_factory=deque)
    # Bytes queued for the peer that it has not read yet (as the adapter last reported).
    unsent: int = 0
    metadata_sent: int = 0  # bytes of metadata pieces sent
    downloaded: int = 0
    uploaded: int = 0
    download_rate: float = 0.0
    request_depth: int = INITIAL_REQUEST_QUEUE
    slow_start: bool = True
    upload_rate: float = 0.0
    window_down: int = 0
    window_up: int = 0
    wasted: int = 0
    last_block: float = 0.0
    last_payload: float = float("-inf")  # when a block last went either way
    last_received: float = 0.0
    last_sent: float = 0.0
    unchoked_since: float | None = None
    waiting_since: float = 0.0
    strikes: int = 0
    pex_sent: set[Address] = field(default_factory=set)
    last_pex: float = 0.0
    last_pex_received: float = float("-inf")

    @property
    def is_seed(self) -> bool:
        """Whether the peer has every piece."""
        return self.has is not None and 0 not in self.has  # a C search, not a Python loop
