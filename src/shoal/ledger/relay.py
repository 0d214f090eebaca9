"""The ledger core's transaction relay, on top of `peers.PeerLayer`: transactions announced
by inv are asked for (a bounded number per peer, for a bounded time), checked into the
mempool and announced on to every other peer; a peer holding our tip hears of our whole
mempool. Blocks and headers are the layer above's (`core.LedgerNode`).
"""

from __future__ import annotations

import random

from .chain import Chain
from .mempool import Mempool
from .messages import GetData, Inv, InvItem, InvType
from .params import ChainParams
from .peers import Peer, PeerLayer, TransactionAccepted
from .primitives import Transaction
from .sync import BoundedSet
from .validation import Invalid

# Refusals that a later tip or a freer mempool may lift: such a transaction may be asked again.
REFUSED_FOR_NOW = frozenset(
    ("immature-coinbase", "bad-txns-nonfinal", "txn-mempool-conflict", "mempool-full")
)
MEMPOOL_ANNOUNCED = 5000  # transactions of our mempool announced to a new peer, parents first
# Transactions asked of one peer and not yet come (Bitcoin's MAX_PEER_TX_REQUEST_IN_FLIGHT):
# a peer announcing junk it never sends holds up only its own requests, for TX_TIMEOUT.
TXS_PER_PEER = 100
TX_TIMEOUT = 60.0
RECENT = 20_000  # txids recently refused or mined, not asked for again


class TxRelay(PeerLayer):
    """A node's links, relaying transactions through its mempool."""

    def __init__(
        self,
        params: ChainParams,
        chain: Chain,
        mempool: Mempool,
        rng: random.Random,
        *,
        listen_port: int,
        nonce: int | None,
        max_outbound: int,
        max_inbound: int,
    ) -> None:
        super().__init__(
            params.magic,
            rng,
            max_block_size=params.max_block_size,
            listen_port=listen_port,
            nonce=nonce,
            max_outbound=max_outbound,
            max_inbound=max_inbound,
        )
        self.params = params
        self.chain = chain
        self.mempool = mempool
        self._tx_asked: dict[bytes, tuple[int, float]] = {}  # txid -> link asked, when
        self._recent = BoundedSet(RECENT)

    def submit_transaction(self, tx: Transaction, now: float) -> None:
        """Take a transaction of ours into the mempool and relay it; Invalid if refused."""
        self._now = now
        self._accepted(self.mempool.add(tx, self.chain, now), None)

    def _announce_mempool(self, peer: Peer) -> None:
        """Tell a new peer what waits in our mempool, as BIP 35's answer would (a payment made
        while a miner was away reaches it when it comes), but only once it holds our tip:
        before, our transactions may spend what it has yet to see, and it would refuse them."""
        if not peer.mempool_owed or peer.best is None or peer.best.work < self.chain.tip.work:
            return
        peer.mempool_owed = False
        waiting = [InvItem(InvType.TX, tx.txid) for tx in self.mempool.transactions()]
        fresh = [item for item in waiting[:MEMPOOL_ANNOUNCED] if item.hash not in peer.known]
        for item in fresh:
            peer.known.add(item.hash)
        if fresh:
            self._send(peer, Inv(tuple(fresh)))

    def _forget(self, peer: Peer) -> None:
        super()._forget(peer)
        for txid in peer.txs_asked:  # others may be asked for them now
            self._tx_asked.pop(txid, None)

    def _maintain(self) -> None:
        """The links' upkeep; forget transactions asked long ago; tell peers that have come
        to hold our tip of our mempool."""
        super()._maintain()
        now = self._now
        for txid in [t for t, (_, at) in self._tx_asked.items() if now - at > TX_TIMEOUT]:
            self._tx_came(txid)
        for peer in self._ready_peers():
            self._announce_mempool(peer)

    def _announce(self, items: list[InvItem], source: Peer | None) -> None:
        """Tell every peer but source of the items it is not known to have."""
        for peer in self._ready_peers():
            if peer is source:
                continue
            fresh = [item for item in items if item.hash not in peer.known]
            for item in fresh:
                peer.known.add(item.hash)
            if fresh:
                self._send(peer, Inv(tuple(fresh)))

    def _ask_txs(self, peer: Peer, txids: list[bytes]) -> None:
        """Ask peer for the transactions it announced that are new to us, while it has fewer
        than TXS_PER_PEER in flight."""
        wanted = []
        for txid in txids:
            if self._want_tx(txid) and len(peer.txs_asked) < TXS_PER_PEER:
                self._tx_asked[txid] = (peer.link, self._now)
                peer.txs_asked.add(txid)
                wanted.append(InvItem(InvType.TX, txid))
        if wanted:
            self._send(peer, GetData(tuple(wanted)))

    def _want_tx(self, txid: bytes) -> bool:
        return (
            txid not in self._tx_asked
            and txid not in self._recent
            and txid not in self.mempool
            and not self.mempool.has_orphan(txid)
        )

    def _on_tx(self, peer: Peer, tx: Transaction) -> None:
        txid = tx.txid
        self._tx_came(txid)
        peer.known.add(txid)
        if txid in self.mempool or txid in self._recent:
            return
        try:
            accepted = self.mempool.add(tx, self.chain, self._now)
        except Invalid as error:
            if error.reason not in REFUSED_FOR_NOW:
                self._recent.add(txid)
            if error.ban:
                self._drop(peer, f"{error.reason}: {error.detail}", ban=True)
            return
        self._accepted(accepted, peer)

    def _tx_came(self, txid: bytes) -> None:
        """A transaction asked for came, was not found, or was waited for long enough."""
        asked = self._tx_asked.pop(txid, None)
        peer = None if asked is None else self._peers.get(asked[0])
        if peer is not None:
            peer.txs_asked.discard(txid)

    def _accepted(self, txs: list[Transaction], source: Peer | None) -> None:
        """Tell of transactions new in the mempool, and relay them to every peer but source."""
        for tx in txs:
            self._outputs.append(TransactionAccepted(tx))
        if txs:
            self._announce([InvItem(InvType.TX, tx.txid) for tx in txs], source)
