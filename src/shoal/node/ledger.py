"""The ledger on the node's TCP port: the sans-IO `LedgerNode` run on the event loop's clock,
its chain state in SQLite in the chain's own folder, each link a StreamLink, and a miner in a
worker process when the node mines."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import random
import socket
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..addresses import Address
from ..errors import ShoalError
from ..ledger.chain import Chain, ChainUpdate
from ..ledger.core import ChainChanged, Close, Dial, LedgerNode, Send
from ..ledger.mempool import Mempool
from ..ledger.params import ChainParams
from ..ledger.primitives import Block, Transaction
from ..ledger.store import SqliteStore
from .adapter import resolve
from .miner import Miner
from .streamlink import StreamLink, StreamService

log = logging.getLogger(__name__)

CHAIN_FILE = "chain.sqlite"
LOCK_FILE = "lock"
# A link's unsent bytes past which it is dropped: room for the core's round of getdata
# answers (1 MB and at most one more block) above the pause mark, so an honest peer that
# reads slowly is paused, never dropped.
LEDGER_WRITE_CAP = 4 * 1024 * 1024


@dataclass(frozen=True)
class LedgerOptions:
    """How a node runs the ledger: the chain, the peers it dials first, and whom it mines
    for (a lock; None: it does not mine)."""

    params: ChainParams
    peers: tuple[Address, ...] = ()
    mine_to: bytes | None = None
    # On the local chain proof of work is nearly free: a miner waits an exponentially
    # distributed time of this mean before each block, as if it had searched that long, so
    # blocks come as a Poisson process as real mining makes them.
    block_time: float = 5.0


def ledger_dir(state: Path, params: ChainParams) -> Path:
    """The folder of one chain's files in a node's state folder: each chain its own."""
    return state / "ledger" / params.name


class LedgerService(StreamService[LedgerNode]):
    """The ledger core on the node's TCP port number."""

    wall_clock = True
    kind = "ledger"
    write_cap = LEDGER_WRITE_CAP

    def __init__(self, options: LedgerOptions, state: Path) -> None:
        super().__init__()
        self.options = options
        self.params = options.params
        self.folder = ledger_dir(state, options.params)
        self.chain: Chain | None = None
        self.mempool = Mempool(options.params)
        self.miner: Miner | None = None
        self._dialling: dict[int, Address] = {}  # link number -> the address dialled
        self._next_link = 0
        self._lock: int | None = None  # the descriptor holding the folder's lock
        # Told of every change of the active chain (the wallet's history follows it).
        self.listeners: list[Callable[[ChainUpdate], None]] = []

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop."""
        return asyncio.get_running_loop()

    async def start(self, port: int) -> None:
        """Open the chain state and start the core on port (the node's), dialling the peers
        given; start mining if asked to."""
        self._lock_folder()
        path = self.folder / CHAIN_FILE
        try:
            self.chain = Chain(self.params, SqliteStore(path))
        except OSError as exc:
            raise ShoalError(f"cannot open the chain in {path}: {exc.strerror}") from None
        except (sqlite3.Error, ValueError) as exc:
            raise ShoalError(
                f"the chain in {path} is damaged or not {self.params.name}'s ({exc})"
            ) from None
        now = self.now()
        self.core = LedgerNode(
            self.params, self.chain, self.mempool, random.Random(), listen_port=port, now=now
        )
        given = await resolve(self.options.peers, socket.SOCK_STREAM, what="ledger peer")
        self.core.add_peers(given, now)
        self._pump()
        if self.options.mine_to is not None:
            self.start_miner(self.options.mine_to)

    def _lock_folder(self) -> None:
        """Make the chain's folder (readable by its owner alone: the wallet is there) and hold
        its lock while the node runs: two processes on one chain state would corrupt it."""
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ShoalError(f"cannot use {self.folder}: {exc.strerror}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
            raise ShoalError(
                f"another shoal node runs the {self.params.name} chain in {self.folder}"
            ) from None
        self._lock = descriptor

    def start_miner(self, lock: bytes) -> None:
        """Mine new blocks paying lock, for as long as the node runs."""
        self.ensure_miner().start(lock)

    def ensure_miner(self) -> Miner:
        """The node's miner (made idle if there is none: `generate` mines with it)."""
        if self.miner is None:
            self.miner = Miner(self, self.options.block_time)
        return self.miner

    def height(self) -> int:
        """The height of the active chain's tip."""
        return -1 if self.chain is None else self.chain.tip.height

    def stop(self) -> None:
        """Stop mining, close every link and the chain state."""
        self._stop_clock()
        if self.miner is not None:
            self.miner.stop()
            self.miner = None
        self.core = None
        self._close_all()
        if self.chain is not None:
            self.chain.close()
            self.chain = None
        if self._lock is not None:
            os.close(self._lock)  # and with it the lock
            self._lock = None

    # What the node's RPC and miner ask.

    def submit_transaction(self, tx: Transaction) -> None:
        """Take a transaction of ours (the wallet's) and relay it; Invalid if it is not valid."""
        if self.core is None:
            raise ShoalError("the ledger is not running")
        try:
            self.core.submit_transaction(tx, self.now())
        finally:
            self._pump()

    def submit_block(self, block: Block) -> None:
        """Take a block our miner found and relay it."""
        if self.core is None:
            return
        try:
            self.core.submit_block(block, self.now())
        finally:
            self._pump()

    def add_peers(self, addresses: list[Address]) -> None:
        """Ledger nodes to dial and keep (given peers)."""
        if self.core is not None:
            self.core.add_peers(addresses, self.now())
            self._pump()

    def set_network_active(self, active: bool) -> None:
        """Cut the node off from every peer (closing its links, dialling and taking none), or
        join again, as bitcoind's setnetworkactive."""
        if self.core is not None:
            self.core.set_network_active(active, self.now())
            self._pump()

    # Links.

    def adopt(self, transport: asyncio.BaseTransport, address: Address, first: bytes) -> None:
        """An incoming connection that opened with a ledger magic (first: the bytes read so
        far) becomes a link, if the core takes it."""
        core = self.core
        if core is None or not first.startswith(self.params.magic):
            transport.close()  # another chain's node, or we are stopping
            return
        number = self._new_number()
        self._adopt_link(transport, number)
        now = self.now()
        core.accept(number, address, now)
        core.receive(number, first, now)
        self._pump()

    def _new_number(self) -> int:
        self._next_link += 1
        return self._next_link

    def dialled(self, link: StreamLink) -> None:
        dial = self._dials.get(link.number)
        if self.core is None or dial is None:
            link.close()  # stopped, or the core gave the link up while it was dialled
            return
        self._links[link.number] = link
        self.core.connected(link.number, self._dialling[link.number], self.now())
        self._pump()

    def _dial_ended(self, number: int) -> None:
        self._dialling.pop(number, None)

    # The core's loop.

    def _pump(self) -> None:
        core = self.core
        if core is None:
            return
        try:
            while outputs := core.take_outputs():
                for output in outputs:
                    self._carry_out(core, output)
        finally:
            if self.core is core:
                self._rearm(core)  # the core's upkeep goes on whatever a listener did

    def _carry_out(self, core: LedgerNode, output: object) -> None:
        if isinstance(output, Send):
            self._write(core, output)
        elif isinstance(output, Dial):
            number = self._new_number()
            address = output.address
            self._dialling[number] = address
            self._dial(number, address, lambda: core.dial_failed(address, self.now()))
        elif isinstance(output, Close):
            self._close(output)
        elif isinstance(output, ChainChanged):
            if self.miner is not None:
                self.miner.tip_changed()
            for listener in self.listeners:
                try:
                    listener(output.update)
                except Exception:  # one follower failing (a full disk) must not stop the rest
                    log.exception("a follower of the chain failed")

    def _save(self) -> None:
        """Chain state is written as blocks connect: nothing to save on the clock."""
