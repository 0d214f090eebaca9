"""Overlay cores wired together in memory on a virtual clock: the same code as on the wire.

Each simulated node is a real `OverlayNode` at an address. A `Dial` reaches the node at that
address a latency later (its `accept` decides), and the dialler hears `connected` or
`dial_failed` a latency after that; bytes written to a link arrive in order a latency later;
a node that leaves closes all its links, and their other ends hear so a latency later.
Found and SearchEnded events go to the search they belong to, with their virtual times.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..addresses import Address
from ..overlay.core import Close, Dial, Found, OverlayNode, SearchEnded, Send
from ..overlay.messages import Result, Role
from ..overlay.search import Strategy
from .kernel import EventQueue

LATENCY = 0.05
PORT = 6881


@dataclass(slots=True, eq=False)
class OverlayHost:
    """A simulated node: its core and the far ends of its links."""

    address: Address
    core: OverlayNode
    pipes: dict[int, tuple[OverlayHost, int]] = field(default_factory=dict, repr=False)
    alive: bool = True
    timer_at: float | None = None


@dataclass(slots=True, eq=False)
class SearchRecord:
    """One search as its origin saw it."""

    origin: OverlayHost = field(repr=False)
    text: str
    strategy: Strategy
    started: float
    first_at: float | None = None
    last_at: float | None = None
    ended_at: float | None = None
    holders: set[bytes] = field(default_factory=set)  # node ids of the nodes that answered
    hits: list[tuple[float, Address, bytes]] = field(default_factory=list)  # when, holder, id

    @property
    def found(self) -> bool:
        return bool(self.holders)


class OverlayNetwork:
    """Overlay nodes on one virtual clock."""

    def __init__(
        self, queue: EventQueue | None = None, seed: int = 0, latency: float = LATENCY
    ) -> None:
        self.queue = queue or EventQueue()
        self.rng = random.Random(seed)
        self.latency = latency
        self.hosts: dict[Address, OverlayHost] = {}
        self.searches: dict[bytes, SearchRecord] = {}
        self.messages = 0  # writes carried, in all
        self.bytes = 0
        self._next_ip = 1
        self.on_found: Callable[[SearchRecord, Found], None] | None = None
        # Told of every write carried: the sender, the receiver, the bytes.
        self.on_send: Callable[[OverlayHost, OverlayHost, bytes], None] | None = None

    @property
    def now(self) -> float:
        return self.queue.now

    def add(
        self,
        role: Role = Role.ULTRAPEER,
        listings: Iterable[Result] = (),
        bootstrap: Iterable[Address] = (),
        degree: int | None = None,
    ) -> OverlayHost:
        """A new node, knowing the addresses in bootstrap; it starts dialling at once."""
        number = self._next_ip
        self._next_ip += 1
        address = (f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}", PORT)
        node_id = self.rng.randbytes(20)
        extra = {} if degree is None else {"degree": degree}
        core = OverlayNode(
            node_id, PORT, role, random.Random(self.rng.random()), now=self.now, **extra
        )
        core.set_listings(listings)
        core.add_hosts(bootstrap, self.now)
        host = OverlayHost(address, core)
        self.hosts[address] = host
        self._pump(host)
        return host

    def remove(self, host: OverlayHost) -> None:
        """host leaves at once: every link of it breaks."""
        host.alive = False
        del self.hosts[host.address]
        for far, far_link in host.pipes.values():
            self._hang_up(far, far_link)
        host.pipes.clear()

    def search(
        self,
        host: OverlayHost,
        text: str,
        strategy: Strategy,
        **options: int,
    ) -> SearchRecord:
        """Start a search at host; its record fills in as the clock runs."""
        search_id = host.core.search(text, strategy, self.now, **options)
        record = SearchRecord(host, text, strategy, self.now)
        self.searches[search_id] = record
        self._pump(host)
        return record

    def run(self, until: float, done: Callable[[], bool] = lambda: False) -> None:
        """Run the clock to until (or until done says so)."""
        self.queue.run(until, done)

    def live(self) -> list[OverlayHost]:
        return list(self.hosts.values())

    # Carrying outputs out.

    def _later(self, host: OverlayHost, action: Callable[[], None], delay: float = -1.0) -> None:
        """Run action on host a latency from now (if it is still up), then its outputs."""

        def run() -> None:
            if host.alive:
                action()
                self._pump(host)

        self.queue.at(self.now + (self.latency if delay < 0 else delay), run)

    def _pump(self, host: OverlayHost) -> None:
        core = host.core
        for output in core.take_outputs():
            if isinstance(output, Send):
                self._carry(host, output)
            elif isinstance(output, Dial):
                self._dial(host, output)
            elif isinstance(output, Close):
                pipe = host.pipes.pop(output.link, None)
                if pipe is not None:
                    far, far_link = pipe
                    far.pipes.pop(far_link, None)
                    self._hang_up(far, far_link)
            elif isinstance(output, Found):
                self._found(output)
            elif isinstance(output, SearchEnded):
                record = self.searches.get(output.search)
                if record is not None:
                    record.ended_at = self.now
        self._schedule(host)

    def _hang_up(self, far: OverlayHost, far_link: int) -> None:
        """The far end of a link hears, a latency from now, that it closed."""
        self._later(far, lambda: far.core.closed(far_link, self.now))

    def _carry(self, host: OverlayHost, send: Send) -> None:
        pipe = host.pipes.get(send.link)
        if pipe is None:
            return
        far, far_link = pipe
        self.messages += 1
        self.bytes += len(send.data)
        data = send.data
        if self.on_send is not None:
            self.on_send(host, far, data)
        self._later(far, lambda: far.core.receive(far_link, data, self.now))

    def _dial(self, host: OverlayHost, dial: Dial) -> None:
        far = self.hosts.get(dial.address)

        def arrive() -> None:
            if not host.alive:
                return
            if far is None or not far.alive:
                self._later(host, lambda: host.core.dial_failed(dial.link, self.now))
                return
            far_link = far.core.accept(host.address, self.now)
            if far_link is None:
                self._pump(far)
                self._later(host, lambda: host.core.dial_failed(dial.link, self.now))
                return
            far.pipes[far_link] = (host, dial.link)
            host.pipes[dial.link] = (far, far_link)
            # The dialler hears it is connected before any byte the far end sends arrives.
            self._later(host, lambda: host.core.connected(dial.link, self.now))
            self._pump(far)

        self.queue.at(self.now + self.latency, arrive)

    def _found(self, found: Found) -> None:
        record = self.searches.get(found.search)
        if record is None:
            return
        now = self.now
        if record.first_at is None:
            record.first_at = now
        record.last_at = now
        record.holders.add(found.hit.node_id)
        record.hits.append((now, found.hit.holder, found.hit.node_id))
        if self.on_found is not None:
            self.on_found(record, found)

    def _schedule(self, host: OverlayHost) -> None:
        when = host.core.get_timer()
        if when is None or (host.timer_at is not None and host.timer_at <= when):
            return
        host.timer_at = when

        def fire() -> None:
            if not host.alive or host.timer_at != when:
                return
            host.timer_at = None
            host.core.handle_timer(self.now)
            self._pump(host)

        self.queue.at(when, fire)
