"""The chain's state: headers, block bodies, the unspent outputs, undo data and the transaction
index, in SQLite (a node's state folder) or in memory (the simulator and tests).

Chain writes through this one interface. SqliteStore gathers writes in one SQLite transaction
until commit(); Chain commits between blocks, after each or (catching up) after a batch of
them, the UTXO changes, undo data and the tip together, so a kill at any moment leaves a state
some tip explains. A storage error is not handled: the node stops and resumes from the last
commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Protocol

from .coins import Coin
from .encoding import Reader, compact_size, u32, u64, var_bytes
from .primitives import HASH_SIZE, MAX_LOCK, BlockHeader, OutPoint, TxOut, decode_header

Undo = list[tuple[OutPoint, Coin]]  # the coins a block spent that existed before it


@dataclass(frozen=True, slots=True)
class StoredHeader:
    """A header as stored, with what the store knows of its block."""

    header: BlockHeader
    height: int
    has_data: bool
    invalid: bool


@dataclass(frozen=True, slots=True)
class StateChange:
    """What connecting (or disconnecting) one block does, written in one go: coins removed
    and added, its undo data kept (or dropped), its txids indexed (or not), the new tip."""

    block_hash: bytes
    connect: bool
    tip: bytes
    removed: list[OutPoint]
    added: Undo
    undo: Undo  # kept when connecting; ignored when disconnecting (dropped)
    txids: list[bytes]  # the block's, in order


class ChainStore(Protocol):
    """What Chain needs of a store."""

    def headers(self) -> list[StoredHeader]:
        """Every stored header, parents before children (by height)."""
        ...

    def tip(self) -> bytes | None:
        """The hash of the active chain's tip; None for a new store."""
        ...

    def reorg_start(self) -> bytes | None:
        """The tip an unfinished reorganisation left (None when none is under way)."""
        ...

    def set_reorg_start(self, block_hash: bytes | None) -> None:
        """Record (or with None forget) the tip a reorganisation leaves, with the next commit."""
        ...

    def add_header(self, header: BlockHeader, height: int) -> None:
        """Keep a header that passed its checks."""
        ...

    def mark_invalid(self, block_hash: bytes) -> None:
        """Remember that a block (or an ancestor) breaks a rule."""
        ...

    def put_block(self, block_hash: bytes, data: bytes) -> None:
        """Keep a block's serialised body (its header is stored already)."""
        ...

    def block(self, block_hash: bytes) -> bytes | None:
        """A stored body."""
        ...

    def undo(self, block_hash: bytes) -> Undo:
        """The coins a connected block spent, to restore when it is disconnected."""
        ...

    def coin(self, outpoint: OutPoint) -> Coin | None:
        """An unspent output at the tip."""
        ...

    def coins_for(self, locks: Collection[bytes]) -> list[tuple[OutPoint, Coin]]:
        """Every unspent output locked by one of locks, oldest first."""
        ...

    def tx_location(self, txid: bytes) -> tuple[bytes, int] | None:
        """The active block holding txid and its position there."""
        ...

    def utxo(self) -> list[tuple[OutPoint, Coin]]:
        """Every unspent output, oldest first: the whole set, for checks and tests."""
        ...

    def apply(self, change: StateChange) -> None:
        """Write a block's connection or disconnection (not yet committed)."""
        ...

    def commit(self) -> None:
        """Make every write so far durable at once."""
        ...

    def close(self) -> None:
        """Commit and let go of the state."""
        ...


def encode_coin(coin: Coin) -> bytes:
    """A coin as undo data keeps it."""
    return (
        u64(coin.output.amount)
        + var_bytes(coin.output.lock)
        + u32(coin.height)
        + bytes((coin.coinbase,))
    )


def encode_undo(undo: Undo) -> bytes:
    """The spent coins of a block, each after its outpoint."""
    parts = [compact_size(len(undo))]
    for outpoint, coin in undo:
        parts += [outpoint.serialize(), encode_coin(coin)]
    return b"".join(parts)


def decode_undo(data: bytes) -> Undo:
    """The undo data encode_undo wrote."""
    reader = Reader(data)
    undo = []
    for _ in range(reader.count(len(data))):
        outpoint = OutPoint(reader.take(HASH_SIZE), reader.u32())
        output = TxOut(reader.u64(), reader.var_bytes(MAX_LOCK))
        undo.append((outpoint, Coin(output, reader.u32(), bool(reader.u8()))))
    reader.end()
    return undo


def _coin_order(entry: tuple[OutPoint, Coin]) -> tuple[int, bytes, int]:
    """Oldest first, then by outpoint: one order for both stores."""
    outpoint, coin = entry
    return (coin.height, outpoint.txid, outpoint.index)


class MemoryStore:
    """The state in dicts: for the simulator and tests, lost when the process ends."""

    def __init__(self) -> None:
        self._headers: dict[bytes, StoredHeader] = {}
        self._blocks: dict[bytes, bytes] = {}
        self._undo: dict[bytes, Undo] = {}
        self._coins: dict[OutPoint, Coin] = {}
        self._by_lock: dict[bytes, dict[OutPoint, Coin]] = {}
        self._txs: dict[bytes, tuple[bytes, int]] = {}
        self._tip: bytes | None = None
        self._reorg_start: bytes | None = None

    def headers(self) -> list[StoredHeader]:
        return sorted(self._headers.values(), key=lambda stored: stored.height)

    def tip(self) -> bytes | None:
        return self._tip

    def reorg_start(self) -> bytes | None:
        return self._reorg_start

    def set_reorg_start(self, block_hash: bytes | None) -> None:
        self._reorg_start = block_hash

    def add_header(self, header: BlockHeader, height: int) -> None:
        self._headers[header.hash] = StoredHeader(header, height, False, False)

    def mark_invalid(self, block_hash: bytes) -> None:
        stored = self._headers[block_hash]
        self._headers[block_hash] = StoredHeader(
            stored.header, stored.height, stored.has_data, True
        )

    def put_block(self, block_hash: bytes, data: bytes) -> None:
        stored = self._headers[block_hash]
        self._headers[block_hash] = StoredHeader(stored.header, stored.height, True, stored.invalid)
        self._blocks[block_hash] = data

    def block(self, block_hash: bytes) -> bytes | None:
        return self._blocks.get(block_hash)

    def undo(self, block_hash: bytes) -> Undo:
        return self._undo.get(block_hash, [])

    def coin(self, outpoint: OutPoint) -> Coin | None:
        return self._coins.get(outpoint)

    def coins_for(self, locks: Collection[bytes]) -> list[tuple[OutPoint, Coin]]:
        found = [entry for lock in set(locks) for entry in self._by_lock.get(lock, {}).items()]
        return sorted(found, key=_coin_order)

    def tx_location(self, txid: bytes) -> tuple[bytes, int] | None:
        return self._txs.get(txid)

    def utxo(self) -> list[tuple[OutPoint, Coin]]:
        return sorted(self._coins.items(), key=_coin_order)

    def apply(self, change: StateChange) -> None:
        for outpoint in change.removed:
            coin = self._coins.pop(outpoint, None)
            if coin is not None:
                self._by_lock[coin.output.lock].pop(outpoint)
        for outpoint, coin in change.added:
            self._coins[outpoint] = coin
            self._by_lock.setdefault(coin.output.lock, {})[outpoint] = coin
        if change.connect:
            self._undo[change.block_hash] = change.undo
            for position, txid in enumerate(change.txids):
                self._txs[txid] = (change.block_hash, position)
        else:
            self._undo.pop(change.block_hash, None)
            for txid in change.txids:
                self._txs.pop(txid, None)
        self._tip = change.tip

    def commit(self) -> None:
        """Nothing to do: every write is in place at once."""

    def close(self) -> None:
        """Nothing to let go of."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS headers (
    hash BLOB PRIMARY KEY, header BLOB NOT NULL, height INTEGER NOT NULL,
    has_data INTEGER NOT NULL DEFAULT 0, invalid INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks (hash BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS undo (hash BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS utxo (
    txid BLOB NOT NULL, idx INTEGER NOT NULL, amount INTEGER NOT NULL, lock BLOB NOT NULL,
    height INTEGER NOT NULL, coinbase INTEGER NOT NULL, PRIMARY KEY (txid, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS utxo_by_lock ON utxo (lock);
CREATE TABLE IF NOT EXISTS txindex (
    txid BLOB PRIMARY KEY, block BLOB NOT NULL, position INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
_LOCKS_PER_QUERY = 500  # under SQLite's limit on bound parameters
_RECENT_COINS = 200_000  # coins kept in memory: most outputs are spent soon after they are made


_SELECT_COINS = "SELECT txid, idx, amount, lock, height, coinbase FROM utxo"


def _coin_rows(
    rows: Iterable[tuple[bytes, int, int, bytes, int, int]],
) -> list[tuple[OutPoint, Coin]]:
    """Coins from rows of _SELECT_COINS."""
    return [
        (OutPoint(bytes(txid), index), Coin(TxOut(amount, bytes(lock)), height, bool(coinbase)))
        for txid, index, amount, lock, height, coinbase in rows
    ]


def _chunks(items: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    """items in lists of at most size."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class SqliteStore:
    """The state in one SQLite file (WAL journal), with the newest coins also in memory."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL under WAL: a crash of the process loses nothing committed, a power cut at
        # most the last commits, and the file is never left inconsistent.
        self._db.execute("PRAGMA synchronous=NORMAL")
        # Each block dirties pages all over the coin and transaction tables (their keys are
        # hashes): a longer log between checkpoints writes each page back once for many
        # blocks, and a larger page cache keeps those tables' upper levels in memory.
        self._db.execute("PRAGMA wal_autocheckpoint=10000")
        self._db.execute("PRAGMA cache_size=-65536")
        self._db.executescript(_SCHEMA)
        self._recent: dict[OutPoint, Coin] = {}

    def _begin(self) -> None:
        """Open the transaction that the next commit() ends, if none is open."""
        if not self._db.in_transaction:
            self._db.execute("BEGIN")

    def headers(self) -> list[StoredHeader]:
        rows = self._db.execute(
            "SELECT header, height, has_data, invalid FROM headers ORDER BY height"
        )
        return [
            StoredHeader(decode_header(header), height, bool(has_data), bool(invalid))
            for header, height, has_data, invalid in rows
        ]

    def _meta(self, key: str) -> bytes | None:
        """A value of the meta table."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def tip(self) -> bytes | None:
        return self._meta("tip")

    def reorg_start(self) -> bytes | None:
        return self._meta("reorg_start")

    def set_reorg_start(self, block_hash: bytes | None) -> None:
        self._begin()
        if block_hash is None:
            self._db.execute("DELETE FROM meta WHERE key = 'reorg_start'")
        else:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('reorg_start', ?)", (block_hash,))

    def add_header(self, header: BlockHeader, height: int) -> None:
        self._begin()
        self._db.execute(
            "INSERT OR IGNORE INTO headers (hash, header, height) VALUES (?, ?, ?)",
            (header.hash, header.serialize(), height),
        )

    def mark_invalid(self, block_hash: bytes) -> None:
        self._begin()
        self._db.execute("UPDATE headers SET invalid = 1 WHERE hash = ?", (block_hash,))

    def put_block(self, block_hash: bytes, data: bytes) -> None:
        self._begin()
        self._db.execute("INSERT OR REPLACE INTO blocks VALUES (?, ?)", (block_hash, data))
        self._db.execute("UPDATE headers SET has_data = 1 WHERE hash = ?", (block_hash,))

    def block(self, block_hash: bytes) -> bytes | None:
        row = self._db.execute("SELECT data FROM blocks WHERE hash = ?", (block_hash,)).fetchone()
        return None if row is None else bytes(row[0])

    def undo(self, block_hash: bytes) -> Undo:
        row = self._db.execute("SELECT data FROM undo WHERE hash = ?", (block_hash,)).fetchone()
        return [] if row is None else decode_undo(row[0])

    def coin(self, outpoint: OutPoint) -> Coin | None:
        coin = self._recent.get(outpoint)
        if coin is not None:
            return coin
        row = self._db.execute(
            "SELECT amount, lock, height, coinbase FROM utxo WHERE txid = ? AND idx = ?",
            (outpoint.txid, outpoint.index),
        ).fetchone()
        if row is None:
            return None
        amount, lock, height, coinbase = row
        return Coin(TxOut(amount, bytes(lock)), height, bool(coinbase))

    def coins_for(self, locks: Collection[bytes]) -> list[tuple[OutPoint, Coin]]:
        found = []
        for chunk in _chunks(set(locks), _LOCKS_PER_QUERY):
            marks = ",".join("?" * len(chunk))
            found += _coin_rows(self._db.execute(f"{_SELECT_COINS} WHERE lock IN ({marks})", chunk))
        return sorted(found, key=_coin_order)

    def utxo(self) -> list[tuple[OutPoint, Coin]]:
        return sorted(_coin_rows(self._db.execute(_SELECT_COINS)), key=_coin_order)

    def tx_location(self, txid: bytes) -> tuple[bytes, int] | None:
        row = self._db.execute(
            "SELECT block, position FROM txindex WHERE txid = ?", (txid,)
        ).fetchone()
        return None if row is None else (bytes(row[0]), row[1])

    def apply(self, change: StateChange) -> None:
        self._begin()
        try:
            self._write(change)
        except sqlite3.Error:
            # Never let a later commit() keep half a block: drop the open transaction.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._remember(change)

    def _write(self, change: StateChange) -> None:
        """The statements of apply."""
        db = self._db
        db.executemany(
            "DELETE FROM utxo WHERE txid = ? AND idx = ?",
            [(outpoint.txid, outpoint.index) for outpoint in change.removed],
        )
        db.executemany(
            "INSERT OR REPLACE INTO utxo VALUES (?, ?, ?, ?, ?, ?)",
            [
                (o.txid, o.index, c.output.amount, c.output.lock, c.height, c.coinbase)
                for o, c in change.added
            ],
        )
        if change.connect:
            db.execute(
                "INSERT OR REPLACE INTO undo VALUES (?, ?)",
                (change.block_hash, encode_undo(change.undo)),
            )
            db.executemany(
                "INSERT OR REPLACE INTO txindex VALUES (?, ?, ?)",
                [(txid, change.block_hash, pos) for pos, txid in enumerate(change.txids)],
            )
        else:
            db.execute("DELETE FROM undo WHERE hash = ?", (change.block_hash,))
            db.executemany("DELETE FROM txindex WHERE txid = ?", [(t,) for t in change.txids])
        db.execute("INSERT OR REPLACE INTO meta VALUES ('tip', ?)", (change.tip,))

    def _remember(self, change: StateChange) -> None:
        """Keep the memory copy of recent coins in step with the table."""
        for outpoint in change.removed:
            self._recent.pop(outpoint, None)
        self._recent.update(change.added)
        excess = len(self._recent) - _RECENT_COINS
        if excess > 0:  # drop the oldest half at once, not one per insert
            for outpoint in list(islice(self._recent, excess + _RECENT_COINS // 2)):
                del self._recent[outpoint]

    def commit(self) -> None:
        if self._db.in_transaction:
            self._db.execute("COMMIT")

    def close(self) -> None:
        self.commit()
        self._db.close()
