"""The ledger core's links: opening them (the version handshake, refusals, links to
ourselves), keeping them (pings, time-outs), whom to dial (addrman), addresses traded with
caps, and bans. What travels over an open link is the layers' above: transactions
`relay.TxRelay`'s, headers and blocks `core.LedgerNode`'s.
"""

from __future__ import annotations

import random
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..addresses import Address, text
from ..contract import Close, Send
from .addrman import AddrBudget, AddressManager, Ban, BanList, ban_key, network_group
from .blockindex import BlockIndex
from .chain import ChainUpdate
from .messages import (
    MAX_ADDRESSES,
    PROTOCOL_VERSION,
    Addr,
    Framer,
    GetAddr,
    GetHeaders,
    InvItem,
    Message,
    NetAddress,
    Ping,
    Pong,
    ProtocolError,
    Verack,
    Version,
    encode,
)
from .primitives import Transaction
from .sync import BlockDownload, BoundedSet

USER_AGENT = "/shoal:0.1/"
SERVICES = 1  # NODE_NETWORK: this node serves every block it has
HANDSHAKE_TIMEOUT = 20.0
PING_EVERY = 60.0
IDLE_LIMIT = 180.0  # a peer silent this long (it ignores our pings) is dropped
HEADERS_TIMEOUT = 60.0  # a getheaders unanswered this long drops the peer
MAINTAIN_EVERY = 1.0
DIAL_TIMEOUT = 30.0  # a Dial the adapter never answered is forgotten after this long
LINKS_PER_SOURCE = 4  # inbound links from one source (an IP; on loopback an IP and port)
KNOWN_INVENTORY = 5000  # hashes a peer is remembered to have (so they are not announced to it)
LACKS = 1000  # blocks a peer said it does not have


@dataclass(frozen=True, slots=True)
class Dial:
    """Open a connection to address, then call `connected` or `dial_failed`."""

    address: Address


@dataclass(frozen=True, slots=True)
class ChainChanged:
    """The active chain moved (the miner restarts on a new tip; the wallet follows)."""

    update: ChainUpdate


@dataclass(frozen=True, slots=True)
class TransactionAccepted:
    """A transaction entered the mempool."""

    tx: Transaction


Output = Send | Dial | Close | ChainChanged | TransactionAccepted


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """One peer as the RPC shows it."""

    link: int
    address: Address
    inbound: bool
    given: bool  # a peer the user named
    height: int  # the best height it is known to have
    user_agent: str
    version: int
    connected_since: float
    blocks_in_flight: int
    ping: float | None  # seconds, as last measured

    def as_json(self) -> dict[str, object]:
        """The fields as JSON values (the address as HOST:PORT)."""
        return {
            "link": self.link,
            "address": text(self.address),
            "inbound": self.inbound,
            "given": self.given,
            "height": self.height,
            "user_agent": self.user_agent,
            "version": self.version,
            "connected_since": self.connected_since,
            "blocks_in_flight": self.blocks_in_flight,
            "ping": self.ping,
        }


@dataclass(eq=False)
class Peer:
    """One link and what we know of the peer at its other end."""

    link: int
    address: Address  # the other end as connected
    inbound: bool
    opened_at: float
    framer: Framer
    budget: AddrBudget
    last_received: float
    known: BoundedSet = field(default_factory=lambda: BoundedSet(KNOWN_INVENTORY))
    lacks: BoundedSet = field(default_factory=lambda: BoundedSet(LACKS))
    version: Version | None = None
    verack: bool = False
    best: BlockIndex | None = None  # the most-work block it is known to have
    best_height: int = 0
    paused: bool = False
    # Getdata items not yet answered, oldest first (a set too: one asked twice is queued once).
    answering: OrderedDict[InvItem, None] = field(default_factory=OrderedDict)
    headers_wanted: deque[GetHeaders] = field(default_factory=deque)  # getheaders not answered
    txs_asked: set[bytes] = field(default_factory=set)  # transactions asked of it, not come
    headers_asked_at: float | None = None
    unconnecting: int = 0
    answered_getaddr: bool = False
    ping_nonce: int | None = None
    ping_sent_at: float = 0.0
    ping_time: float | None = None
    mempool_owed: bool = True  # our mempool is yet to be announced to it (once it has our tip)

    @property
    def ready(self) -> bool:
        """Whether the handshake is done (its version and verack heard)."""
        return self.version is not None and self.verack

    @property
    def owed(self) -> bool:
        """Whether answers to its getdata or getheaders wait."""
        return bool(self.answering or self.headers_wanted)

    @property
    def listen(self) -> Address | None:
        """Where the peer accepts links, once it said (None: it does not)."""
        if self.version is None or not self.version.listen_port:
            return None
        return self.address[0], self.version.listen_port

    def saw(self, index: BlockIndex) -> None:
        """The peer has index (it sent or announced it, or a header after it)."""
        if self.best is None or index.work > self.best.work:
            self.best = index
        self.best_height = max(self.best_height, index.height)


class PeerLayer:
    """A node's links, the addresses it knows and the ones it bans."""

    def __init__(
        self,
        magic: bytes,
        rng: random.Random,
        *,
        max_block_size: int,
        listen_port: int,
        nonce: int | None,
        max_outbound: int,
        max_inbound: int,
    ) -> None:
        self.magic = magic
        self.max_block_size = max_block_size  # the chain's: what a block message may hold
        self.rng = rng
        self.listen_port = listen_port
        # Sent in every version: hearing it back means we dialled ourselves.
        self.nonce = rng.getrandbits(64) if nonce is None else nonce
        self.max_outbound = max_outbound
        self.max_inbound = max_inbound
        self.addresses = AddressManager(rng)
        self.bans = BanList()
        self.download = BlockDownload()
        self.addr_dropped = 0  # addresses past their sender's budget (for tests and status)
        self.network_active = True
        self._peers: dict[int, Peer] = {}
        self._dialling: dict[Address, float] = {}
        self._outputs: list[Output] = []
        self._now = 0.0
        self._next_maintenance = 0.0

    # The adapter's side.

    def add_peers(self, addresses: Iterable[Address], now: float) -> None:
        """Peers the user named (--peer): always kept, dialled soon."""
        self._now = now
        self.addresses.add_given(addresses, now)
        self._next_maintenance = now

    def set_network_active(self, active: bool, now: float) -> None:
        """Cut the node off (every link closed, none dialled or taken) or join again, as
        bitcoind's setnetworkactive."""
        self._now = now
        self.network_active = active
        if active:
            self._next_maintenance = now
            return
        self._dialling.clear()
        for peer in list(self._peers.values()):
            self._drop(peer, "the network is off")

    def accept(self, link: int, address: Address, now: float) -> None:
        """A connection came in from address as link (refused with a Close)."""
        self._now = now
        inbound = [peer for peer in self._peers.values() if peer.inbound]
        source = _source(address)
        if not self.network_active:
            self._outputs.append(Close(link, "the network is off"))
        elif self.bans.is_banned(address, now):
            self._outputs.append(Close(link, "banned"))
        elif len(inbound) >= self.max_inbound:
            self._outputs.append(Close(link, "no room for another peer"))
        elif sum(1 for peer in inbound if _source(peer.address) == source) >= LINKS_PER_SOURCE:
            self._outputs.append(Close(link, "too many links from one address"))
        else:
            self._peers[link] = self._open(link, address, inbound=True)

    def connected(self, link: int, address: Address, now: float) -> None:
        """The connection a Dial asked for is open as link: say who we are."""
        self._now = now
        self._dialling.pop(address, None)
        if not self.network_active:
            self._outputs.append(Close(link, "the network is off"))
            return
        peer = self._peers[link] = self._open(link, address, inbound=False)
        self._send(peer, self._version())

    def dial_failed(self, address: Address, now: float) -> None:
        """A Dial could not connect."""
        self._now = now
        self._dialling.pop(address, None)
        self.addresses.failed(address, now)

    def closed(self, link: int, now: float) -> None:
        """The other end closed link, or it broke."""
        self._now = now
        peer = self._peers.pop(link, None)
        if peer is not None:
            self._forget(peer)

    def receive(self, link: int, data: bytes, now: float) -> None:
        """Bytes arrived on link."""
        self._now = now
        peer = self._peers.get(link)
        if peer is None:
            return
        peer.last_received = now
        try:
            messages = peer.framer.feed(data)
        except ProtocolError as error:
            # Before the handshake it may be another chain's node; after, it broke the rules.
            self._drop(peer, f"malformed: {error}", ban=peer.ready)
            return
        for message in messages:
            if link not in self._peers:
                return
            self._on_message(peer, message)
        if link in self._peers:
            self._received(peer)

    def peers(self) -> list[PeerInfo]:
        """The links that finished the handshake, for the RPC."""
        given = set(self.addresses.given())
        return [
            PeerInfo(
                peer.link,
                peer.address,
                peer.inbound,
                peer.address in given,
                peer.best_height,
                peer.version.user_agent,
                peer.version.version,
                peer.opened_at,
                self.download.in_flight(peer.link),
                peer.ping_time,
            )
            for peer in self._peers.values()
            if peer.ready and peer.version is not None
        ]

    def banned(self) -> list[Ban]:
        """The bans in force, with their reasons."""
        return self.bans.entries(self._now)

    # What the layer above fills in.

    def _start_height(self) -> int:
        """The height we tell peers we have."""
        raise NotImplementedError

    def _on_traffic(self, peer: Peer, message: Message) -> None:
        """A message past the handshake that is not about links."""
        raise NotImplementedError

    def _received(self, peer: Peer) -> None:
        """Bytes from peer were handled (its link still open): whatever follows (answers,
        block requests)."""

    def _on_ready(self, peer: Peer) -> None:
        """The handshake is done: trade addresses."""
        if not peer.inbound:
            self.addresses.linked(peer.address, self._now)
            if len(self.addresses) < MAX_ADDRESSES:
                peer.budget.grant(MAX_ADDRESSES)
                self._send(peer, GetAddr())
        elif peer.listen is not None:
            self.addresses.heard([peer.listen], peer.address, self._now)

    def _forget(self, peer: Peer) -> None:
        """peer's link is gone: its blocks may be asked of others; a dial that never finished
        the handshake counts as failed."""
        self.download.release(peer.link)
        if not peer.inbound and not peer.ready and self.network_active:
            self.addresses.failed(peer.address, self._now)
        self._next_maintenance = min(self._next_maintenance, self._now + MAINTAIN_EVERY)

    # Links.

    def _open(self, link: int, address: Address, *, inbound: bool) -> Peer:
        now = self._now
        framer = Framer(self.magic, self.max_block_size)
        return Peer(link, address, inbound, now, framer, AddrBudget(now), now)

    def _version(self) -> Version:
        return Version(
            PROTOCOL_VERSION,
            SERVICES,
            int(self._now),
            self.nonce,
            self.listen_port,
            self._start_height(),
            USER_AGENT,
        )

    def _send(self, peer: Peer, message: Message) -> None:
        self._outputs.append(Send(peer.link, encode(message, self.magic)))

    def _drop(self, peer: Peer, reason: str, *, ban: bool = False) -> None:
        """Close peer's link, saying why; one that broke the rules is banned for a day."""
        if self._peers.pop(peer.link, None) is None:
            return
        self._outputs.append(Close(peer.link, reason))
        if ban:
            address = peer.listen or peer.address
            self.bans.ban(address, reason, self._now)
            self.addresses.forget(address)
        self._forget(peer)

    def _ready_peers(self) -> list[Peer]:
        return [peer for peer in self._peers.values() if peer.ready]

    def _maintain(self) -> None:
        """Time out handshakes, silent peers and unanswered requests; ping; dial."""
        now = self._now
        for peer in list(self._peers.values()):
            headers_asked = peer.headers_asked_at
            if not peer.ready and now - peer.opened_at > HANDSHAKE_TIMEOUT:
                self._drop(peer, "no handshake")
            elif now - peer.last_received > IDLE_LIMIT:
                self._drop(peer, "silent")
            elif headers_asked is not None and now - headers_asked > HEADERS_TIMEOUT:
                self._drop(peer, "no answer to getheaders")
            elif peer.ready and peer.ping_nonce is None and now - peer.ping_sent_at >= PING_EVERY:
                peer.ping_nonce = self.rng.getrandbits(64)
                peer.ping_sent_at = now
                self._send(peer, Ping(peer.ping_nonce))
        for address in [a for a, at in self._dialling.items() if now - at > DIAL_TIMEOUT]:
            del self._dialling[address]
        self._dial()

    def _dial(self) -> None:
        """Dial the given peers not linked, and others up to max_outbound, each of those in a
        network group of its own."""
        now = self._now
        if not self.network_active:
            return
        given = set(self.addresses.given())
        outbound = [peer.address for peer in self._peers.values() if not peer.inbound]
        busy = set(self._dialling) | set(outbound)
        busy |= {peer.listen for peer in self._peers.values() if peer.listen is not None}
        chosen = self.addresses.given_due(now, busy)
        automatic = [a for a in [*outbound, *self._dialling] if a not in given]
        missing = self.max_outbound - len(automatic)
        if missing > 0:
            groups = {network_group(address) for address in automatic}
            chosen += self.addresses.select(missing, now, used_groups=groups, busy=busy)
        for address in chosen:
            if self.bans.is_banned(address, now):
                self.addresses.forget(address)
                continue
            self._dialling[address] = now
            self._outputs.append(Dial(address))

    # Messages.

    def _on_message(self, peer: Peer, message: Message) -> None:
        if isinstance(message, Version):
            self._on_version(peer, message)
        elif peer.version is None:
            self._drop(peer, "spoke before its version")
        elif isinstance(message, Verack):
            if not peer.ready:
                peer.verack = True
                self._on_ready(peer)
        elif not peer.ready:
            self._drop(peer, "spoke before its verack")
        elif isinstance(message, Ping):
            self._send(peer, Pong(message.nonce))
        elif isinstance(message, Pong):
            if message.nonce == peer.ping_nonce:
                peer.ping_time = self._now - peer.ping_sent_at
                peer.ping_nonce = None
        elif isinstance(message, GetAddr):
            self._on_getaddr(peer)
        elif isinstance(message, Addr):
            self._on_addr(peer, message)
        else:
            self._on_traffic(peer, message)

    def _on_version(self, peer: Peer, version: Version) -> None:
        if peer.version is not None:
            self._drop(peer, "a second version")
            return
        if version.nonce == self.nonce:
            self._drop(peer, "a link to ourselves")
            return
        peer.version = version
        peer.best_height = version.start_height
        if peer.inbound:
            listen = peer.listen
            if listen is not None and self.bans.is_banned(listen, self._now):
                self._drop(peer, "banned")
                return
            self._send(peer, self._version())
        self._send(peer, Verack())

    def _on_getaddr(self, peer: Peer) -> None:
        """Answer once per link, inbound only (answering whom we dialled would let a node
        map our outbound peers)."""
        if not peer.inbound or peer.answered_getaddr:
            return
        peer.answered_getaddr = True
        entries = [
            NetAddress.of(address, int(self._now)) for address in self.addresses.sample(self._now)
        ]
        self._send(peer, Addr(tuple(entries[:MAX_ADDRESSES])))

    def _on_addr(self, peer: Peer, addr: Addr) -> None:
        """Take in as many addresses as the sender's budget allows, drawn at random."""
        entries = list(addr.entries)
        self.rng.shuffle(entries)
        taken = peer.budget.take(len(entries), self._now)
        self.addr_dropped += len(entries) - taken
        self.addresses.heard([e.address for e in entries[:taken]], peer.address, self._now)


def _source(address: Address) -> bytes:
    """What per-source limits count a link by (addresses.source_key)."""
    try:
        return ban_key(address)
    except ValueError:
        return address[0].encode()
