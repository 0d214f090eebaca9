"""The node's wallet, as Bitcoin Core's lives in bitcoind: Ed25519 keys in a file of the
state folder, coin selection, and signed payments with change.

The keys file is JSON, `{"chain": NAME, "keys": [HEX, ...]}` (32-byte private keys), created
with mode 0600 and rewritten whole through a temporary file and os.replace, so a crash leaves
the old or the new file and never half of one. Its history (WalletHistory) follows the
chain in SQLite.

Coin selection is largest first: the biggest coins are added until they pay the amount and
the fee at the given rate; a payment then has few inputs, so it is small and cheap, at the
cost of privacy and of leaving small coins behind. Change is kept when it is worth more than
it would cost to spend later, and given to the fee otherwise.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import ShoalError
from .bech32m import address_from_key
from .chain import ChainUpdate
from .coins import Coin
from .encoding import compact_size
from .params import ChainParams
from .primitives import MAX_MONEY, Block, OutPoint, Transaction, TxOut, key_lock, signature_messages

MAX_KEYS = 100_000  # a wallet file holding more is refused rather than read
MAX_FILE_BYTES = MAX_KEYS * 70 + 1_000
SIGNATURE_SIZE = 64
# Bytes an input adds to a signed transaction: outpoint, witness length, signature.
INPUT_SIZE = 36 + 1 + SIGNATURE_SIZE
DUST_FLOOR = 546  # change below this many base units is never worth an output
TX_VERSION = 1


class WalletError(ShoalError):
    """The wallet cannot do what was asked; the message says why in a sentence."""


class InsufficientFunds(WalletError):
    """The spendable coins do not cover the amount and the fee."""

    def __init__(self, have: int, need: int) -> None:
        super().__init__(
            f"Insufficient funds: the wallet has {format_amount(have)} spendable "
            f"and needs {format_amount(need)} (amount and fee)."
        )
        self.have = have
        self.need = need


def format_amount(base_units: int) -> str:
    """base_units as coins, e.g. 1.5 coins for 150,000,000."""
    sign = "-" if base_units < 0 else ""
    whole, fraction = divmod(abs(base_units), 100_000_000)
    digits = f"{fraction:08d}".rstrip("0")
    return f"{sign}{whole}{'.' + digits if digits else ''} coins"


@dataclass(frozen=True)
class Selection:
    """Coins chosen to pay an amount: the fee they leave and the change to return (0: none)."""

    coins: tuple[tuple[OutPoint, Coin], ...]
    fee: int
    change: int


@dataclass(frozen=True)
class Balance:
    """Base units the wallet may spend now, and those in coinbases not yet mature."""

    spendable: int
    immature: int


def signed_size(input_count: int, outputs: Sequence[TxOut]) -> int:
    """The serialised size of a transaction once each of its inputs carries a signature."""
    return (
        4
        + len(compact_size(input_count))
        + len(compact_size(len(outputs)))
        + sum(8 + len(compact_size(len(o.lock))) + len(o.lock) for o in outputs)
        + 4
        + input_count * INPUT_SIZE
    )


def is_mature(coin: Coin, tip_height: int, params: ChainParams) -> bool:
    """Whether a transaction in the block after tip_height may spend coin."""
    return not coin.coinbase or tip_height + 1 - coin.height >= params.coinbase_maturity


class Wallet:
    """Keys of one chain and the payments they sign."""

    def __init__(self, path: Path, params: ChainParams, keys: list[Ed25519PrivateKey]) -> None:
        self.path = path
        self.params = params
        self._keys: dict[bytes, Ed25519PrivateKey] = {}  # by the lock they open
        self._order: list[bytes] = []  # locks in the order their keys were made
        for key in keys:
            self._remember(key)

    @classmethod
    def create(cls, path: Path, params: ChainParams) -> Wallet:
        """A new wallet without keys, saved at path (which must not exist)."""
        if path.exists():
            raise WalletError(f"A wallet already exists at {path}.")
        wallet = cls(path, params, [])
        wallet._save()
        return wallet

    @classmethod
    def open(cls, path: Path, params: ChainParams, *, create: bool = False) -> Wallet:
        """The wallet saved at path (a new one there if create and there is none)."""
        if create and not path.exists():
            return cls.create(path, params)
        try:
            with path.open("rb") as file:
                raw = file.read(MAX_FILE_BYTES + 1)
        except OSError as error:
            raise WalletError(f"Cannot read the wallet at {path}: {error.strerror}.") from None
        return cls(path, params, cls._parse(raw, path, params))

    @staticmethod
    def _parse(raw: bytes, path: Path, params: ChainParams) -> list[Ed25519PrivateKey]:
        """The keys in a wallet file's bytes, refused whole if anything in it is wrong."""
        broken = WalletError(f"The wallet at {path} is damaged or not a wallet file.")
        if len(raw) > MAX_FILE_BYTES:
            raise broken
        try:
            document = json.loads(raw)
            chain, keys = document["chain"], document["keys"]
            if chain != params.name:
                raise WalletError(f"The wallet at {path} is for the {chain} chain.")
            if not isinstance(keys, list) or len(keys) > MAX_KEYS:
                raise broken
            return [Ed25519PrivateKey.from_private_bytes(bytes.fromhex(key)) for key in keys]
        except (ValueError, KeyError, TypeError):
            raise broken from None

    def _remember(self, key: Ed25519PrivateKey) -> bytes:
        """Add key to the ones we sign with; its lock."""
        lock = key_lock(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        if lock not in self._keys:
            self._keys[lock] = key
            self._order.append(lock)
        return lock

    def _save(self) -> None:
        """Write every key to the file atomically, readable by its owner only."""
        if len(self._order) > MAX_KEYS:
            raise WalletError(f"A wallet holds at most {MAX_KEYS} keys.")
        document = {
            "chain": self.params.name,
            "keys": [self._keys[lock].private_bytes_raw().hex() for lock in self._order],
        }
        temporary = self.path.with_name(f"{self.path.name}.{secrets.token_hex(4)}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w") as file:
                json.dump(document, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def new_address(self) -> str:
        """A new key's address, saved before it is given out."""
        return self.address(self._new_lock())

    def _new_lock(self) -> bytes:
        """The lock of a new key, saved before it is used (else coins paid to it are lost)."""
        lock = self._remember(Ed25519PrivateKey.generate())
        try:
            self._save()
        except BaseException:
            del self._keys[lock]
            self._order.pop()
            raise
        return lock

    def address(self, lock: bytes) -> str:
        """The address of one of our locks."""
        return address_from_key(lock[1:], self.params)

    def addresses(self) -> list[str]:
        """Every address of ours, oldest first."""
        return [self.address(lock) for lock in self._order]

    def locks(self) -> set[bytes]:
        """The locks our keys open, as outputs paying us carry them."""
        return set(self._keys)

    def owns(self, lock: bytes) -> bool:
        """Whether an output with this lock pays us."""
        return lock in self._keys

    def balance(self, coins: Iterable[tuple[OutPoint, Coin]], tip_height: int) -> Balance:
        """What our coins (as the chain lists them) add up to, mature and not."""
        spendable = immature = 0
        for _, coin in coins:
            if not self.owns(coin.output.lock):
                continue
            if is_mature(coin, tip_height, self.params):
                spendable += coin.output.amount
            else:
                immature += coin.output.amount
        return Balance(spendable, immature)

    def select_coins(
        self,
        coins: Iterable[tuple[OutPoint, Coin]],
        amount: int,
        fee_rate: int,
        tip_height: int,
        to_lock: bytes | None = None,
    ) -> Selection:
        """Coins of ours paying amount to to_lock (any 33-byte lock if None) and fee_rate base
        units a byte of the signed transaction, largest first; InsufficientFunds if they cannot.
        The caller leaves out coins that unconfirmed transactions already spend."""
        if not 0 < amount <= MAX_MONEY:
            raise WalletError(f"An amount is more than 0 and at most {format_amount(MAX_MONEY)}.")
        if fee_rate < 0:
            raise WalletError("A fee rate is not negative.")
        payee = TxOut(amount, to_lock if to_lock is not None else bytes(33))
        change_output = TxOut(0, bytes(33))
        usable = sorted(
            (
                (outpoint, coin)
                for outpoint, coin in coins
                if self.owns(coin.output.lock) and is_mature(coin, tip_height, self.params)
            ),
            key=lambda item: item[1].output.amount,
            reverse=True,
        )
        dust = max(DUST_FLOOR, INPUT_SIZE * fee_rate)
        total = 0
        for count, (_, coin) in enumerate(usable, start=1):
            total += coin.output.amount
            fee_alone = fee_rate * signed_size(count, [payee])
            fee_with_change = fee_rate * signed_size(count, [payee, change_output])
            chosen = tuple(usable[:count])
            if total - amount - fee_with_change > dust:
                return Selection(chosen, fee_with_change, total - amount - fee_with_change)
            if total >= amount + fee_alone:
                return Selection(chosen, total - amount, 0)
        raise InsufficientFunds(
            total, amount + fee_rate * signed_size(max(1, len(usable)), [payee])
        )

    def pay(
        self,
        coins: Iterable[tuple[OutPoint, Coin]],
        to_lock: bytes,
        amount: int,
        fee_rate: int,
        tip_height: int,
    ) -> Transaction:
        """A signed transaction paying amount to to_lock from our coins, with change to a new
        address of ours; the change output's place is random so it does not stand out."""
        selection = self.select_coins(coins, amount, fee_rate, tip_height, to_lock)
        outputs = [TxOut(amount, to_lock)]
        if selection.change:
            change = TxOut(selection.change, self._new_lock())
            outputs.insert(secrets.randbelow(2), change)
        inputs = tuple(outpoint for outpoint, _ in selection.coins)
        spent = [coin.output for _, coin in selection.coins]
        unsigned = Transaction(TX_VERSION, inputs, tuple(outputs), 0, tuple(b"" for _ in inputs))
        messages = signature_messages(unsigned, spent, self.params.chain_id)
        witnesses = tuple(
            self._keys[output.lock].sign(message)
            for output, message in zip(spent, messages, strict=True)
        )
        return Transaction(TX_VERSION, inputs, tuple(outputs), 0, witnesses)


@dataclass(frozen=True)
class HistoryEntry:
    """One transaction touching the wallet: what it did to the balance (negative for a
    payment, its fee included) and where it was mined (None: unconfirmed)."""

    txid: bytes
    amount: int
    height: int | None
    block_hash: bytes | None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS wallet_tx (
    txid BLOB PRIMARY KEY, block_hash BLOB NOT NULL, height INTEGER NOT NULL,
    position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS wallet_output (
    txid BLOB NOT NULL, output_index INTEGER NOT NULL, amount INTEGER NOT NULL,
    spent_by BLOB, PRIMARY KEY (txid, output_index));
CREATE INDEX IF NOT EXISTS wallet_output_spent_by ON wallet_output (spent_by);
CREATE TABLE IF NOT EXISTS wallet_meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


class WalletHistory:
    """The wallet's transactions on the active chain, kept in SQLite as blocks connect and
    disconnect: our outputs (and what spent them) and each transaction's block. A reorg
    undoes the disconnected blocks newest first before the new ones connect, all in one SQLite
    transaction, so the history is the active chain's after every update."""

    def __init__(self, connection: sqlite3.Connection, wallet: Wallet) -> None:
        self.connection = connection
        self.wallet = wallet
        with connection:
            connection.executescript(_SCHEMA)

    @classmethod
    def open(cls, path: Path, wallet: Wallet) -> WalletHistory:
        """The history in the SQLite file at path (made if missing)."""
        connection = sqlite3.connect(path)
        connection.execute("PRAGMA journal_mode=WAL")
        return cls(connection, wallet)

    @property
    def tip(self) -> bytes | None:
        """The hash of the last block the history followed (None: none yet)."""
        row = self.connection.execute("SELECT value FROM wallet_meta WHERE name = 'tip'").fetchone()
        return bytes(row[0]) if row else None

    def blocks_changed(self, update: ChainUpdate) -> None:
        """Follow the chain through one update: undo disconnected blocks, apply connected."""
        with self.connection:
            for block in update.disconnected:
                self._disconnect(block)
            for block in update.connected:
                self._connect(block)

    def _connect(self, block: Block) -> None:
        """Record our outputs made and spent by block's transactions, and the tip."""
        height = block_height(block)
        for position, tx in enumerate(block.transactions):
            ours = [
                (tx.txid, index, output.amount)
                for index, output in enumerate(tx.outputs)
                if self.wallet.owns(output.lock)
            ]
            spent = self.connection.executemany(
                "UPDATE wallet_output SET spent_by = ? WHERE txid = ? AND output_index = ?",
                [(tx.txid, outpoint.txid, outpoint.index) for outpoint in tx.inputs],
            ).rowcount
            if not ours and not spent:
                continue
            self.connection.executemany(
                "INSERT OR REPLACE INTO wallet_output VALUES (?, ?, ?, NULL)", ours
            )
            self.connection.execute(
                "INSERT OR REPLACE INTO wallet_tx VALUES (?, ?, ?, ?)",
                (tx.txid, block.hash, height, position),
            )
        self._set_tip(block.hash)

    def _disconnect(self, block: Block) -> None:
        """Undo _connect(block): the chain now ends at its parent."""
        for tx in reversed(block.transactions):
            self.connection.execute("DELETE FROM wallet_output WHERE txid = ?", (tx.txid,))
            self.connection.execute(
                "UPDATE wallet_output SET spent_by = NULL WHERE spent_by = ?", (tx.txid,)
            )
            self.connection.execute("DELETE FROM wallet_tx WHERE txid = ?", (tx.txid,))
        self._set_tip(block.header.previous)

    def _set_tip(self, block_hash: bytes) -> None:
        """Remember the last block followed."""
        self.connection.execute(
            "INSERT OR REPLACE INTO wallet_meta VALUES ('tip', ?)", (block_hash,)
        )

    def entries(
        self, limit: int = 1_000, *, unconfirmed: Iterable[Transaction] = ()
    ) -> list[HistoryEntry]:
        """Our transactions, newest first: those of unconfirmed (the mempool's) that touch
        us, then at most limit mined ones."""
        pending = {tx.txid: tx for tx in unconfirmed}
        entries = []
        for tx in pending.values():
            received = sum(o.amount for o in tx.outputs if self.wallet.owns(o.lock))
            spent = sum(self._our_amount(outpoint, pending) for outpoint in tx.inputs)
            if received or spent:
                entries.append(HistoryEntry(tx.txid, received - spent, None, None))
        rows = self.connection.execute(
            """SELECT txid, height, block_hash,
                 (SELECT COALESCE(SUM(amount), 0) FROM wallet_output WHERE txid = t.txid)
                 - (SELECT COALESCE(SUM(amount), 0) FROM wallet_output WHERE spent_by = t.txid)
               FROM wallet_tx AS t ORDER BY height DESC, position DESC LIMIT ?""",
            (limit,),
        )
        entries += [
            HistoryEntry(bytes(txid), amount, height, bytes(block_hash))
            for txid, height, block_hash, amount in rows
        ]
        return entries

    def _our_amount(self, outpoint: OutPoint, pending: dict[bytes, Transaction]) -> int:
        """The amount of an output of ours that outpoint names, mined or pending (0: not ours)."""
        parent = pending.get(outpoint.txid)
        if parent is not None:
            if outpoint.index < len(parent.outputs):
                output = parent.outputs[outpoint.index]
                return output.amount if self.wallet.owns(output.lock) else 0
            return 0
        row = self.connection.execute(
            "SELECT amount FROM wallet_output WHERE txid = ? AND output_index = ?",
            (outpoint.txid, outpoint.index),
        ).fetchone()
        return int(row[0]) if row else 0

    def forget(self) -> None:
        """Drop everything followed so far (the chain it followed is gone): a rescan starts."""
        with self.connection:
            for table in ("wallet_tx", "wallet_output", "wallet_meta"):
                self.connection.execute(f"DELETE FROM {table}")

    def close(self) -> None:
        """Close the SQLite connection."""
        self.connection.close()


def block_height(block: Block) -> int:
    """A block's height, as its coinbase's input names it (consensus checks it does)."""
    return block.transactions[0].inputs[0].index
