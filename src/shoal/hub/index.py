"""The hub's keyword index: signed listings in SQLite, searched with FTS5, the time passed in."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shoal.errors import ShoalError
from shoal.hub.listing import MAX_CLOCK_SKEW, Listing, ListingForbidden, Withdrawal
from shoal.words import WORD

__all__ = [
    "IndexFull",
    "IndexHit",
    "IndexUnavailable",
    "KeywordIndex",
    "SearchError",
    "match_expression",
]

MAX_QUERY_WORDS = 16
# Matches ranked before grouping by torrent: enough for any limit, bounded for common words.
_MAX_MATCHES = 2000
# bm25 weights of the name and the file paths: a word in the name says more.
_NAME_WEIGHT, _PATHS_WEIGHT = 4.0, 1.0

# One key may list this many torrents: keys are free, but a flood from one is easy to stop.
MAX_LISTINGS_PER_KEY = 1000
# The last search word matches as a prefix only from this many characters on.
MIN_PREFIX = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS listings (
    id INTEGER PRIMARY KEY,
    info_hash TEXT NOT NULL,
    public_key TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    file_count INTEGER NOT NULL,
    published_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    UNIQUE (info_hash, public_key)
);
CREATE INDEX IF NOT EXISTS listings_by_expiry ON listings (expires_at);
CREATE INDEX IF NOT EXISTS listings_by_key ON listings (public_key);
CREATE VIRTUAL TABLE IF NOT EXISTS listing_words USING fts5(
    name, paths, tokenize = 'unicode61 remove_diacritics 2'
);
-- The newest signed time seen per (torrent, key), withdrawals included, so that an old
-- publish replayed within the clock-skew window cannot bring a listing back. Older stamps
-- are dropped: the skew check alone refuses anything that old.
CREATE TABLE IF NOT EXISTS stamps (
    info_hash TEXT NOT NULL,
    public_key TEXT NOT NULL,
    signed_at INTEGER NOT NULL,
    PRIMARY KEY (info_hash, public_key)
) WITHOUT ROWID;
"""

_SEARCH = f"""
SELECT info_hash, name, size, file_count, MIN(score) AS best,
    (SELECT COUNT(*) FROM listings AS other
     WHERE other.info_hash = matched.info_hash AND other.expires_at > :now) AS publishers
FROM (
    SELECT listings.info_hash, listings.name, listings.size, listings.file_count,
        bm25(listing_words, {_NAME_WEIGHT}, {_PATHS_WEIGHT}) AS score
    FROM listing_words JOIN listings ON listings.id = listing_words.rowid
    WHERE listing_words MATCH :match AND listings.expires_at > :now
    ORDER BY score LIMIT {_MAX_MATCHES}
) AS matched
GROUP BY info_hash ORDER BY best LIMIT :limit
"""


class IndexUnavailable(ShoalError):
    """The index's database cannot be opened or written."""


class SearchError(ShoalError):
    """A search query the index cannot run."""


class IndexFull(ShoalError):
    """The index holds as many listings as it may."""


@dataclass(frozen=True, slots=True)
class IndexHit:
    """One torrent that matched a search, as its best-matching listing describes it."""

    info_hash: str
    name: str
    size: int
    files: int
    publishers: int


def match_expression(words: str) -> str:
    """An FTS5 query for words: each one required, the last also as a prefix."""
    found = WORD.findall(words)[:MAX_QUERY_WORDS]
    if not found:
        raise SearchError("the search has no words to look for")
    # Quoted, so that nothing a user types is FTS5 syntax (AND, NEAR, column filters...).
    terms = [f'"{word}"' for word in found]
    if len(found[-1]) >= MIN_PREFIX:
        # A one-letter prefix matches nearly everything and costs a full ranking.
        terms[-1] += "*"
    return " ".join(terms)


class KeywordIndex:
    """Listings keyed by (info-hash, publisher key), kept in one SQLite file."""

    def __init__(self, path: Path | str, max_listings: int = 1_000_000) -> None:
        self.path = path
        self.max_listings = max_listings
        try:
            # One connection, used from one thread at a time (the hub's database thread).
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode = WAL")
            # With WAL, NORMAL survives a crash of the hub; a power loss may lose the last commits.
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(_SCHEMA)
            self._count: int = self._db.execute("SELECT COUNT(*) FROM listings").fetchone()[0]
        except sqlite3.Error as exc:
            raise IndexUnavailable(f"cannot open the hub's index {path}: {exc}") from None

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def _check_newer(
        self, info_hash: str, public_key: str, signed_at: int, *, same_second: bool = False
    ) -> None:
        """Refuse a message older than the last one from this key about this torrent.

        Publishes must be strictly newer. A withdrawal may share its second with the publish
        it takes back: a publish can never follow a withdrawal in the same second, so one
        with an equal time was the earlier of the two.
        """
        row = self._db.execute(
            "SELECT signed_at FROM stamps WHERE info_hash = ? AND public_key = ?",
            (info_hash, public_key),
        ).fetchone()
        if row is not None and (signed_at < row[0] or (signed_at == row[0] and not same_second)):
            raise ListingForbidden(
                "the hub already has a message as new or newer about this torrent from this key"
            )
        self._db.execute(
            "INSERT OR REPLACE INTO stamps VALUES (?, ?, ?)", (info_hash, public_key, signed_at)
        )

    def _listing_id(self, info_hash: str, public_key: str) -> int | None:
        row = self._db.execute(
            "SELECT id FROM listings WHERE info_hash = ? AND public_key = ?",
            (info_hash, public_key),
        ).fetchone()
        return None if row is None else row[0]

    def publish(self, listing: Listing, public_key: str) -> None:
        """Store or replace public_key's listing of the torrent (signature already checked)."""
        db = self._db
        with _transaction(db):
            self._check_newer(listing.info_hash, public_key, listing.published_at)
            fields = (
                listing.name,
                listing.size,
                len(listing.files),
                listing.published_at,
                listing.expires_at,
            )
            listing_id = self._listing_id(listing.info_hash, public_key)
            if listing_id is None:
                if self._count >= self.max_listings:
                    raise IndexFull("the hub's index is full; try again later")
                owned = db.execute(
                    "SELECT COUNT(*) FROM listings WHERE public_key = ?", (public_key,)
                ).fetchone()[0]
                if owned >= MAX_LISTINGS_PER_KEY:
                    raise ListingForbidden(
                        f"this key already lists {owned} torrents, the most one key may list"
                    )
                listing_id = db.execute(
                    "INSERT INTO listings (info_hash, public_key, name, size, file_count,"
                    " published_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (listing.info_hash, public_key, *fields),
                ).lastrowid
                added = 1
            else:
                db.execute(
                    "UPDATE listings SET name = ?, size = ?, file_count = ?, published_at = ?,"
                    " expires_at = ? WHERE id = ?",
                    (*fields, listing_id),
                )
                db.execute("DELETE FROM listing_words WHERE rowid = ?", (listing_id,))
                added = 0
            paths = "\n".join(file.path for file in listing.files)
            db.execute(
                "INSERT INTO listing_words (rowid, name, paths) VALUES (?, ?, ?)",
                (listing_id, listing.name, paths),
            )
        self._count += added

    def withdraw(self, withdrawal: Withdrawal) -> bool:
        """Drop the key's listing of the torrent; whether there was one."""
        with _transaction(self._db):
            self._check_newer(
                withdrawal.info_hash,
                withdrawal.public_key,
                withdrawal.timestamp,
                same_second=True,
            )
            listing_id = self._listing_id(withdrawal.info_hash, withdrawal.public_key)
            if listing_id is not None:
                self._db.execute("DELETE FROM listings WHERE id = ?", (listing_id,))
                self._db.execute("DELETE FROM listing_words WHERE rowid = ?", (listing_id,))
        if listing_id is None:
            return False
        self._count -= 1
        return True

    def search(self, words: str, limit: int, now: float) -> list[IndexHit]:
        """Torrents whose name or file names hold every word, best bm25 match first."""
        rows = self._db.execute(
            _SEARCH, {"match": match_expression(words), "now": int(now), "limit": limit}
        ).fetchall()
        return [
            IndexHit(info_hash, name, size, files, publishers)
            for info_hash, name, size, files, _, publishers in rows
        ]

    def purge(self, now: float) -> int:
        """Delete expired listings and stamps too old to matter; return how many listings went."""
        cutoff = int(now)
        with _transaction(self._db):
            self._db.execute(
                "DELETE FROM listing_words WHERE rowid IN"
                " (SELECT id FROM listings WHERE expires_at <= ?)",
                (cutoff,),
            )
            removed = self._db.execute(
                "DELETE FROM listings WHERE expires_at <= ?", (cutoff,)
            ).rowcount
            self._db.execute("DELETE FROM stamps WHERE signed_at < ?", (cutoff - MAX_CLOCK_SKEW,))
        self._count -= removed
        return removed

    def counts(self, now: float) -> tuple[int, int]:
        """(live listings, distinct torrents among them)."""
        row = self._db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT info_hash) FROM listings WHERE expires_at > ?",
            (int(now),),
        ).fetchone()
        return row[0], row[1]


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK if the block raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
