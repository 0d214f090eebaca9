"""The ledger's peer-to-peer core: headers-first sync, blocks downloaded from several peers
at once, answers paced by how fast a peer reads, and bans for
invalid data; on top of `headers.HeaderExchange` (getheaders, headers, announcements by
header), `relay.TxRelay` (transactions) and `peers.PeerLayer` (links, handshake, dialling,
addresses). A sans-IO core of the one shape (see shoal.contract).

The adapter opens the connections the core asks for with `Dial` and reports them with
`connected` or `dial_failed`, hands over incoming ones with `accept`, feeds bytes to
`receive`, writes `Send`s, closes on `Close` and reports `closed`. `now` is the wall clock
(Unix seconds): block times are checked against it. The core changes the chain and the
mempool on a peer's word; `ChainChanged` tells the wallet and the miner of every move of
the active chain, `TransactionAccepted` of every transaction new in the mempool. A long move
(a reorganisation, a sync) goes ACTIVATE_STEP blocks at a time, one step per `handle_timer`
(`get_timer` is due at once while more is to connect), so links are served in between.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..contract import Close, Send
from .chain import Chain, ChainUpdate, RejectedBlock
from .headers import HeaderExchange
from .mempool import Mempool
from .messages import (
    HEADER,
    MAX_INVENTORY,
    BlockMessage,
    GetData,
    GetHeaders,
    Headers,
    Inv,
    InvItem,
    InvType,
    Message,
    NotFound,
    TxMessage,
    frame,
)
from .params import ChainParams
from .peers import (
    MAINTAIN_EVERY,
    ChainChanged,
    Dial,
    Output,
    Peer,
    PeerInfo,
    TransactionAccepted,
)
from .pow import target_from_bits, work_of
from .primitives import Block, BlockHeader
from .sync import BLOCKS_PER_PEER, REFILL_AT, Supplier
from .validation import Invalid, check_header_pow

__all__ = [
    "ChainChanged",
    "Close",
    "Dial",
    "LedgerNode",
    "Output",
    "PeerInfo",
    "Send",
    "TransactionAccepted",
]

MAX_ORPHAN_BLOCKS = 16  # bodies of blocks with an unknown parent, kept until headers come
MAX_ANNOUNCED = 8  # blocks of one update announced one by one; of a longer one, its tip only
# Bytes of getdata answers written to a link in one round, before the next gets a turn: a
# round stops before a message would cross it (one message always goes), so a link that is
# not paused (under the adapter's high mark) never holds much more than this.
SEND_ROUND = 1_000_000
HEADERS_WANTED = 8  # getheaders of a peer waiting for their answers (an honest one sends 1 or 2)
ACTIVATE_STEP = 32  # blocks the active chain connects before the core handles input again
BLOCK_SOURCES = 1024  # who sent each of the latest blocks (punished if it proves invalid)


class LedgerNode(HeaderExchange):
    """One node of the ledger's network."""

    def __init__(
        self,
        params: ChainParams,
        chain: Chain,
        mempool: Mempool,
        rng: random.Random,
        *,
        listen_port: int,
        nonce: int | None = None,
        max_outbound: int = 8,
        max_inbound: int = 32,
        now: float = 0.0,
    ) -> None:
        """now: the clock at start. The chain opened may have finished a reorganisation a
        kill cut short (chain.resumed): the losing branch's payments go back to the mempool
        at once, and each peer hears of them with the rest of it once it holds our tip. (The
        mempool uses now only for orphans, which taking back makes none of.)"""
        super().__init__(
            params,
            chain,
            mempool,
            rng,
            listen_port=listen_port,
            nonce=nonce,
            max_outbound=max_outbound,
            max_inbound=max_inbound,
        )
        self._orphans: dict[bytes, tuple[Block, int]] = {}  # hash -> block, link it came on
        self._block_sources: dict[bytes, int] = {}  # block hash -> link it came on
        self._sync_peer: int | None = None
        self._now = now
        mempool.blocks_changed(chain.resumed, chain, now)

    # The adapter's side.

    def take_outputs(self) -> Sequence[Output]:
        outputs, self._outputs = self._outputs, []
        return outputs

    def get_timer(self) -> float | None:
        if self.chain.activation_pending or any(
            peer.owed and not peer.paused for peer in self._peers.values()
        ):
            return self._now  # the next step of activation, or answers' next turn
        mempool_timer = self.mempool.get_timer()
        if mempool_timer is None:
            return self._next_maintenance
        return min(self._next_maintenance, mempool_timer)

    def handle_timer(self, now: float) -> None:
        self._now = now
        if self.chain.activation_pending:
            self._chain_changed(self.chain.continue_activation(ACTIVATE_STEP), None)
            self._fetch_blocks()  # the download window moved with the tip
        for peer in list(self._peers.values()):
            self._serve(peer)
        self.mempool.handle_timer(now)
        if now >= self._next_maintenance:
            self._next_maintenance = now + MAINTAIN_EVERY
            self._maintain()

    def set_paused(self, link: int, paused: bool, now: float) -> None:
        """The link's send buffer is over its high mark (paused) or drained again."""
        self._now = now
        peer = self._peers.get(link)
        if peer is not None:
            peer.paused = paused
            if not paused:
                self._serve(peer)

    # What the node's miner asks (its wallet's payments go to the relay's submit_transaction).

    def submit_block(self, block: Block, now: float) -> ChainUpdate:
        """Take a block our miner found and announce it; Invalid if it is not valid."""
        self._now = now
        try:
            update = self.chain.accept_block(block, now, max_connects=ACTIVATE_STEP)
        except RejectedBlock as error:
            self._chain_changed(error.update, None)
            raise
        self._chain_changed(update, None, announce=True)
        return update

    # The layer below's hooks.

    def _start_height(self) -> int:
        return self.chain.tip.height

    def _on_ready(self, peer: Peer) -> None:
        """Trade addresses; sync headers from a peer ahead of us (and from the first one)."""
        super()._on_ready(peer)
        if self._sync_peer is None or peer.best_height > self.chain.best_header.height:
            if self._sync_peer is None:
                self._sync_peer = peer.link
            self._ask_headers(peer)
        self._announce_mempool(peer)

    def _forget(self, peer: Peer) -> None:
        super()._forget(peer)
        if self._sync_peer == peer.link:
            self._sync_peer = None
        self._fetch_blocks()

    def _received(self, peer: Peer) -> None:
        """Answer in one round what peer asked for in these bytes (however many getdata and
        getheaders they held), then ask for blocks."""
        if peer.owed:
            self._serve(peer)
        self._fetch_blocks()

    def _on_traffic(self, peer: Peer, message: Message) -> None:
        if isinstance(message, Inv):
            self._on_inv(peer, message.items)
        elif isinstance(message, GetData):
            peer.answering.update(dict.fromkeys(message.items))  # answered once, in _received
            if len(peer.answering) > MAX_INVENTORY:
                self._drop(peer, "too many items asked for", ban=True)
        elif isinstance(message, NotFound):
            self._on_notfound(peer, message.items)
        elif isinstance(message, GetHeaders):
            if len(peer.headers_wanted) >= HEADERS_WANTED:
                self._drop(peer, "too many getheaders unanswered")
            else:
                peer.headers_wanted.append(message)  # answered as getdata is, in rounds
        elif isinstance(message, Headers):
            self._on_headers(peer, message.headers)
        elif isinstance(message, BlockMessage):
            self._on_block(peer, message.block)
        elif isinstance(message, TxMessage):
            self._on_tx(peer, message.tx)

    # Inventory.

    def _on_inv(self, peer: Peer, items: tuple[InvItem, ...]) -> None:
        """For a block new to us, ask for its headers first; ask for the transactions new to
        us."""
        unknown_block = False
        for item in items:
            peer.known.add(item.hash)
            if item.type == InvType.BLOCK:
                index = self.chain.get(item.hash)
                if index is None:
                    unknown_block = True
                else:
                    peer.saw(index)
        if unknown_block and peer.headers_asked_at is None:
            self._ask_headers(peer)
        self._ask_txs(peer, [item.hash for item in items if item.type == InvType.TX])

    def _on_notfound(self, peer: Peer, items: tuple[InvItem, ...]) -> None:
        """The peer lacks these: a block may be asked of another."""
        for item in items:
            if item.type == InvType.TX:
                if item.hash in peer.txs_asked:
                    self._tx_came(item.hash)
                continue
            request = self.download.requests.get(item.hash)
            if request is not None and request.peer == peer.link:
                self.download.received(item.hash)
                peer.lacks.add(item.hash)

    def _serve(self, peer: Peer) -> None:
        """Answer queued getheaders, then getdata items, one round: until the next message
        would take it past SEND_ROUND bytes (the first always goes) or the link pauses. A
        peer gets its answers as fast as it reads them, and the adapter never holds more for
        it than its high mark and a round."""
        sent = 0
        missing: list[InvItem] = []
        while peer.owed and not peer.paused:
            answer: tuple[bytes, bytes] | None
            if peer.headers_wanted:
                answer = self._headers_answer(peer.headers_wanted[0])
            else:
                item = next(iter(peer.answering))
                answer = self._answer(peer, item)
                if answer is None:
                    del peer.answering[item]
                    missing.append(item)
                    continue
            command, payload = answer
            if sent and sent + HEADER.size + len(payload) > SEND_ROUND:
                break  # first in the next round
            if peer.headers_wanted:
                peer.headers_wanted.popleft()
            else:
                peer.answering.popitem(last=False)
            data = frame(command, payload, self.magic)
            sent += len(data)
            self._outputs.append(Send(peer.link, data))
        if missing:
            self._send(peer, NotFound(tuple(missing)))
        self._announce_mempool(peer)

    def _answer(self, peer: Peer, item: InvItem) -> tuple[bytes, bytes] | None:
        """The command and payload that answer item (a block as stored, not decoded and
        encoded again); None if we lack it."""
        if item.type == InvType.BLOCK:
            index = self.chain.get(item.hash)
            if index is not None:
                peer.saw(index)  # it asked: it will have it (and our mempool after)
            raw = self.chain.raw_block(item.hash)
            return None if raw is None else (BlockMessage.command, raw)
        # Only what it is known to have heard of from us (or told us of): otherwise anyone
        # could probe our mempool for a transaction's first relayer.
        tx = self.mempool.get(item.hash) if item.hash in peer.known else None
        return None if tx is None else (TxMessage.command, tx.serialized)

    # Blocks.

    def _suppliers(self) -> list[Supplier]:
        return [
            Supplier(peer.link, peer.best, peer.lacks)
            for peer in self._ready_peers()
            if peer.best is not None
        ]

    def _fetch_blocks(self) -> None:
        """Ask peers for the blocks the chain lacks, neighbours to different peers; a peer is
        topped up once half its slots are free (each look walks the chain's window)."""
        if self.chain.best_header is self.chain.tip:
            return  # in step: nothing to fetch (the usual case, checked on every read)
        suppliers = [
            supplier
            for supplier in self._suppliers()
            if not self._peers[supplier.peer].paused
            and self.download.free(supplier.peer) >= REFILL_AT
        ]
        if not suppliers:
            return
        wanted = self.chain.blocks_to_fetch(2 * BLOCKS_PER_PEER * len(suppliers), self.download)
        plan = self.download.plan(suppliers, [i for i in wanted if i.hash not in self._orphans])
        for link, indexes in plan.items():
            hashes = [index.hash for index in indexes]
            self.download.asked(link, hashes, self._now)
            items = tuple(InvItem(InvType.BLOCK, block_hash) for block_hash in hashes)
            self._send(self._peers[link], GetData(items))

    def _maintain(self) -> None:
        """The links' and the relay's upkeep; drop a peer slow with any block, or holding the
        block the chain waits for while another peer could send it."""
        super()._maintain()
        now = self._now
        slow = self.download.timed_out(now)
        first = self.chain.blocks_to_fetch(1, ())
        if first:
            stalling = self.download.stalling(first[0].hash, now)
            others = [s for s in self._suppliers() if s.peer != stalling and s.has(first[0])]
            if stalling is not None and others:
                slow.add(stalling)
        for link in slow:
            peer = self._peers.get(link)
            if peer is not None:
                self._drop(peer, "stalling the block download")
        self._fetch_blocks()

    def _on_block(self, peer: Peer, block: Block) -> None:
        """Take a block asked of peer. One it was not asked for is dropped with its link if
        we hold it already (no honest peer resends a block unasked: it would cost us a
        decode each time), and ignored unless its chain would have at least our tip's work
        (Bitcoin's fHasMoreOrSameWork), so a stale branch costs us no storage."""
        request = self.download.requests.get(block.hash)
        if request is not None and request.peer == peer.link:
            self.download.received(block.hash)
        elif self._holds(block.hash):
            self._drop(peer, "a block we have, sent unasked")
            return
        elif not self._worth_taking(block.header):
            return
        peer.known.add(block.hash)
        self._block_sources[block.hash] = peer.link
        if len(self._block_sources) > BLOCK_SOURCES:
            del self._block_sources[next(iter(self._block_sources))]
        self._process_block(block, peer)
        self._retry_orphans()

    def _holds(self, block_hash: bytes) -> bool:
        """Whether the block's body is stored, or kept until its parent comes."""
        index = self.chain.get(block_hash)
        return (index is not None and index.has_data) or block_hash in self._orphans

    def _worth_taking(self, header: BlockHeader) -> bool:
        """Whether a block not asked for would end a chain of at least our tip's work (one on
        an unknown parent may: it is kept as an orphan if its proof of work holds). The work
        is that of the bits its parent's child must carry, not of what it claims."""
        known = self.chain.get(header.hash)
        if known is not None:
            return known.work >= self.chain.tip.work
        parent = self.chain.get(header.previous)
        if parent is None:
            return True
        work = work_of(target_from_bits(self.chain.next_bits(parent)))
        return parent.work + work >= self.chain.tip.work

    def _process_block(self, block: Block, peer: Peer | None) -> None:
        """Hand block to the chain; keep it a while if its parent is unknown."""
        try:
            update = self.chain.accept_block(block, self._now, max_connects=ACTIVATE_STEP)
        except RejectedBlock as error:
            self._chain_changed(error.update, peer)
            if peer is not None:
                self._drop(peer, f"{error.reason}: {error.detail}", ban=error.ban)
            return
        except Invalid as error:
            if error.reason == "prev-blk-not-found":
                self._keep_orphan(block, peer)
            elif peer is not None and error.ban:
                self._drop(peer, f"{error.reason}: {error.detail}", ban=True)
            return
        index = self.chain.get(block.hash)
        if peer is not None and index is not None:
            peer.saw(index)
        self._chain_changed(update, peer)

    def _keep_orphan(self, block: Block, peer: Peer | None) -> None:
        """Keep a block on an unknown parent (a few, none too large, each with its proof of
        work: junk is not kept, and its sender is banned) and ask for its headers."""
        if block.size > self.params.max_block_size:
            return
        try:
            check_header_pow(block.header, self.params)
        except Invalid as error:
            if peer is not None:
                self._drop(peer, f"{error.reason}: {error.detail}", ban=True)
            return
        if len(self._orphans) >= MAX_ORPHAN_BLOCKS:
            del self._orphans[next(iter(self._orphans))]
        self._orphans[block.hash] = (block, -1 if peer is None else peer.link)
        if peer is not None:
            self._ask_headers(peer)

    def _headers_accepted(self) -> None:
        self._retry_orphans()

    def _retry_orphans(self) -> None:
        """Hand the chain the kept blocks whose parent is known now."""
        while ready := [
            h for h, (b, _) in self._orphans.items() if self.chain.get(b.header.previous)
        ]:
            for block_hash in ready:
                block, link = self._orphans.pop(block_hash)
                self._process_block(block, self._peers.get(link))

    def _chain_changed(
        self, update: ChainUpdate, source: Peer | None, *, announce: bool = False
    ) -> None:
        """Follow a move of the active chain: punish who sent blocks found invalid, update
        the mempool, tell the layer above, and announce the new blocks once in step (while
        catching up, peers have them already)."""
        for block_hash, error in update.invalid:
            link = self._block_sources.get(block_hash)
            sender = None if link is None else self._peers.get(link)
            if sender is not None:
                self._drop(sender, f"{error.reason}: {error.detail}", ban=error.ban)
        if not update.connected and not update.disconnected:
            return
        for block in update.connected:
            for tx in block.transactions:
                self._recent.add(tx.txid)
        orphans = self.mempool.blocks_changed(update, self.chain, self._now)
        self._outputs.append(ChainChanged(update))
        if update.connected and (announce or self.chain.tip is self.chain.best_header):
            connected = update.connected
            if len(connected) <= MAX_ANNOUNCED:
                self._announce_headers([block.header for block in connected], source)
            else:
                self._announce([InvItem(InvType.BLOCK, connected[-1].hash)], source)
        # The losing branch's payments back in the mempool are relayed again (the winning
        # branch's miners may never have heard of them), as are orphans they made valid.
        back = []
        for block in update.disconnected:
            for tx in block.transactions[1:]:
                self._recent.discard(tx.txid)
                if tx.txid in self.mempool:
                    back.append(tx)
        self._accepted(back + orphans, None)
