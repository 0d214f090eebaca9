"""The methods of the node's RPC for the ledger: what `shoal chain` and `shoal wallet` ask."""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

from ..errors import ShoalError
from ..ledger.bech32m import address_from_key, lock_from_address
from ..ledger.chain import BlockIndex, Chain, ChainUpdate
from ..ledger.coins import Coin
from ..ledger.pow import target_from_bits
from ..ledger.primitives import (
    LOCK_KEY,
    MAX_MONEY,
    Block,
    OutPoint,
    Transaction,
    hash_hex,
    parse_hash,
)
from ..ledger.validation import Invalid
from ..ledger.wallet import Wallet, WalletHistory
from ..metainfo import MetainfoError
from ..metainfo.magnet import parse_peer
from .ledger import LedgerService
from .rpc import Method

WALLET_FILE = "wallet.keys"
HISTORY_FILE = "wallet.sqlite"
MAX_GENERATE = 1000
MAX_HISTORY = 1000
DEFAULT_FEE_RATE = 2  # base units a byte: twice the minimum that nodes relay


def lock_text(lock: bytes, service: LedgerService) -> str:
    """An output's lock as users read it: an address, or the kind of lock in words."""
    if len(lock) == 33 and lock[0] == LOCK_KEY:
        return address_from_key(lock[1:], service.params)
    return f"lock {lock.hex()}"


class LedgerMethods:
    """RPC methods over a running ledger service and the node's wallet."""

    def __init__(self, service: LedgerService) -> None:
        self.service = service
        self.wallet = Wallet.open(service.folder / WALLET_FILE, service.params, create=True)
        path = service.folder / HISTORY_FILE
        try:
            self.history = WalletHistory.open(path, self.wallet)
            self._catch_up()
        except sqlite3.Error as exc:
            raise ShoalError(f"the wallet's history in {path} is damaged ({exc})") from None
        service.listeners.append(self.history.blocks_changed)

    def _catch_up(self) -> None:
        """Bring the wallet's history to the chain's tip: it may have stopped behind it, on a
        branch that lost, or ahead of what the chain had saved when a kill -9 came between
        the two databases' commits (then it starts over from the chain)."""
        chain = self.chain
        followed = self.history.tip
        known = None if followed is None else chain.get(followed)
        disconnected: list[Block] = []
        while known is not None and not chain.contains(known):
            block = chain.block(known.hash)
            if block is None:  # never saved by the chain: undo by starting over
                known, disconnected = None, []
                break
            disconnected.append(block)
            known = known.parent
        if followed is not None and known is None:
            self.history.forget()
            disconnected = []
        start = 0 if known is None else known.height + 1
        connected = []
        for height in range(start, chain.tip.height + 1):
            index = chain.at_height(height)
            assert index is not None  # a height at most the tip's
            connected.append(self._stored(index))
        if connected or disconnected:
            self.history.blocks_changed(ChainUpdate(connected, disconnected))

    def _stored(self, index: BlockIndex) -> Block:
        """The body of a block the chain connected once (so it is stored)."""
        block = self.chain.block(index.hash)
        if block is None:
            raise ShoalError(f"the chain lacks block {hash_hex(index.hash)}: it is damaged")
        return block

    def close(self) -> None:
        """Stop following the chain and close the history."""
        if self.history.blocks_changed in self.service.listeners:
            self.service.listeners.remove(self.history.blocks_changed)
        self.history.close()

    def methods(self) -> dict[str, Method]:
        """The methods by name."""
        return {
            "info": self.info,
            "block": self.block,
            "tx": self.tx,
            "peers": self.peers,
            "banned": self.banned,
            "addpeer": self.addpeer,
            "network": self.network,
            "utxos": self.utxos,
            "generate": self.generate,
            "wallet.new": self.wallet_new,
            "wallet.addresses": self.wallet_addresses,
            "wallet.balance": self.wallet_balance,
            "wallet.send": self.wallet_send,
            "wallet.history": self.wallet_history,
        }

    @property
    def chain(self) -> Chain:
        """The running chain."""
        chain = self.service.chain
        if chain is None:
            raise ShoalError("the ledger is not running")
        return chain

    # Chain.

    async def info(self, params: dict[str, Any]) -> dict[str, Any]:
        chain = self.chain
        tip = chain.tip
        core = self.service.core
        return {
            "chain": self.service.params.name,
            "height": tip.height,
            "tip": hash_hex(tip.hash),
            "work": hex(tip.work),
            "difficulty": self._difficulty(tip),
            "headers": chain.best_header.height,
            "median_time": chain.median_time_past(tip),
            "mempool_transactions": len(self.service.mempool),
            "mempool_bytes": self.service.mempool.bytes,
            "peers": 0 if core is None else len(core.peers()),
            "mining": self.service.options.mine_to is not None,
        }

    def _difficulty(self, index: BlockIndex) -> float:
        """How many times harder than the chain's easiest target the tip's target is."""
        return self.service.params.pow_limit_target / target_from_bits(index.header.bits)

    async def block(self, params: dict[str, Any]) -> dict[str, Any]:
        chain = self.chain
        index = self._find_block(params.get("id"))
        block = chain.block(index.hash)
        header = index.header
        return {
            "hash": hash_hex(index.hash),
            "height": index.height,
            "confirmations": chain.tip.height - index.height + 1 if chain.contains(index) else 0,
            "previous": hash_hex(header.previous),
            "merkle_root": hash_hex(header.merkle_root),
            "time": header.time,
            "bits": f"{header.bits:08x}",
            "nonce": header.nonce,
            "work": hex(index.work),
            "size": None if block is None else block.size,
            "transactions": [] if block is None else [hash_hex(t.txid) for t in block.transactions],
        }

    def _find_block(self, wanted: object) -> BlockIndex:
        chain = self.chain
        if isinstance(wanted, int) or (isinstance(wanted, str) and wanted.isdigit()):
            index = chain.at_height(int(wanted))
            if index is None:
                raise ShoalError(f"no block at height {wanted} on the active chain")
            return index
        try:
            index = chain.get(parse_hash(str(wanted)))
        except ValueError:
            raise ShoalError(f"{wanted!s:.80} is neither a block hash nor a height") from None
        if index is None:
            raise ShoalError(f"no block {wanted} is known")
        return index

    async def tx(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            txid = parse_hash(str(params.get("txid")))
        except ValueError:
            raise ShoalError("a txid is 64 hex digits") from None
        mempool_tx = self.service.mempool.get(txid)
        if mempool_tx is not None:
            return self._tx_json(mempool_tx) | {"block": None, "confirmations": 0}
        found = self.chain.transaction(txid)
        if found is None:
            raise ShoalError(f"no transaction {hash_hex(txid)} in the mempool or the chain")
        tx, block_hash = found
        index = self.chain.get(block_hash)
        assert index is not None
        return self._tx_json(tx) | {
            "block": hash_hex(block_hash),
            "confirmations": self.chain.tip.height - index.height + 1,
        }

    def _tx_json(self, tx: Transaction) -> dict[str, Any]:
        return {
            "txid": hash_hex(tx.txid),
            "size": tx.size,
            "coinbase": tx.is_coinbase,
            "inputs": [
                {"txid": hash_hex(outpoint.txid), "index": outpoint.index}
                for outpoint in ([] if tx.is_coinbase else tx.inputs)
            ],
            "outputs": [
                {"amount": output.amount, "to": lock_text(output.lock, self.service)}
                for output in tx.outputs
            ],
        }

    async def peers(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        core = self.service.core
        return [] if core is None else [peer.as_json() for peer in core.peers()]

    async def banned(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        core = self.service.core
        return [] if core is None else [ban.as_json() for ban in core.banned()]

    async def addpeer(self, params: dict[str, Any]) -> None:
        """Dial a ledger node and keep it as a given peer (bitcoind's addnode)."""
        try:
            address = parse_peer(str(params.get("address")))
        except MetainfoError as exc:
            raise ShoalError(str(exc)) from None
        self.service.add_peers([address])

    async def network(self, params: dict[str, Any]) -> bool:
        """Cut the node off from its peers (active false) or join again; whether active."""
        active = params.get("active")
        if not isinstance(active, bool):
            raise ShoalError("network takes active: true or false")
        self.service.set_network_active(active)
        return active

    async def utxos(self, params: dict[str, Any]) -> dict[str, Any]:
        """The UTXO set at the tip, summed up (as bitcoind's gettxoutsetinfo): its count,
        amount and a digest of every coin, for comparing two nodes."""
        chain = self.chain
        digest = hashlib.sha256()
        total = 0
        coins = sorted(chain.store.utxo(), key=lambda item: (item[0].txid, item[0].index))
        for outpoint, coin in coins:
            total += coin.output.amount
            digest.update(outpoint.serialize() + coin.output.serialize())
            digest.update(coin.height.to_bytes(4, "little") + bytes((coin.coinbase,)))
        return {
            "tip": hash_hex(chain.tip.hash),
            "coins": len(coins),
            "amount": total,
            "digest": digest.hexdigest(),
        }

    async def generate(self, params: dict[str, Any]) -> list[str]:
        """Mine count blocks at once (the local chain only, as regtest's generatetoaddress)."""
        if self.service.params.retarget_interval:
            raise ShoalError("generate works on the local chain only; use --mine")
        count = params.get("count", 1)
        if not isinstance(count, int) or not 1 <= count <= MAX_GENERATE:
            raise ShoalError(f"a count of blocks is 1 to {MAX_GENERATE}")
        address = params.get("address")
        lock = self._lock(address) if address else self._receive_lock()
        miner = self.service.ensure_miner()
        return [hash_hex(h) for h in await miner.generate(count, lock)]

    # Wallet.

    def _lock(self, address: object) -> bytes:
        try:
            return lock_from_address(str(address), self.service.params)
        except ValueError as exc:
            raise ShoalError(str(exc)) from None

    def _receive_lock(self) -> bytes:
        """The lock of the wallet's newest address (a first one made if it has none)."""
        addresses = self.wallet.addresses() or [self.wallet.new_address()]
        return self._lock(addresses[-1])

    async def wallet_new(self, params: dict[str, Any]) -> str:
        return self.wallet.new_address()

    async def wallet_addresses(self, params: dict[str, Any]) -> list[str]:
        return self.wallet.addresses()

    def _spendable_coins(self) -> list[tuple[OutPoint, Coin]]:
        """Our coins at the tip, less those our unconfirmed payments already spend."""
        mempool = self.service.mempool
        return [
            (outpoint, coin)
            for outpoint, coin in self.chain.coins_for(self.wallet.locks())
            if not mempool.spends(outpoint)
        ]

    async def wallet_balance(self, params: dict[str, Any]) -> dict[str, int]:
        coins = self._spendable_coins()
        balance = self.wallet.balance(coins, self.chain.tip.height)
        return {"spendable": balance.spendable, "immature": balance.immature}

    async def wallet_send(self, params: dict[str, Any]) -> dict[str, Any]:
        lock = self._lock(params.get("address"))
        amount = params.get("amount")
        fee_rate = params.get("fee_rate", DEFAULT_FEE_RATE)
        if not isinstance(amount, int) or not 0 < amount <= MAX_MONEY:
            raise ShoalError("an amount is more than 0 and at most 21 million coins")
        if not isinstance(fee_rate, int) or not 1 <= fee_rate <= 1_000_000:
            raise ShoalError("a fee rate is 1 to 1,000,000 base units a byte")
        tx = self.wallet.pay(self._spendable_coins(), lock, amount, fee_rate, self.chain.tip.height)
        try:
            self.service.submit_transaction(tx)
        except Invalid as exc:
            raise ShoalError(f"the node refused the payment: {exc.detail}") from None
        # The mempool worked the fee out as it took the payment: no need to look coins up again.
        return {
            "txid": hash_hex(tx.txid),
            "fee": self.service.mempool.fee(tx.txid),
            "size": tx.size,
        }

    async def wallet_history(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        entries = self.history.entries(MAX_HISTORY, unconfirmed=self.service.mempool.transactions())
        return [
            {
                "txid": hash_hex(entry.txid),
                "amount": entry.amount,
                "height": entry.height,
                "block": None if entry.block_hash is None else hash_hex(entry.block_hash),
            }
            for entry in entries
        ]
