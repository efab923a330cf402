"""The SQLite store: table ``stet_records``, looked up through an index."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from stet._errors import StoreError, StoreLockTimeout
from stet._identity import Identity
from stet.backends._base import (
    TIMESTAMP,
    TYPES,
    BaseBackend,
    ClaimBook,
    Lookup,
    Row,
    read_records,
)
from stet.backends._claims import Claim, SqlClaims
from stet.backends._filestore import _lock_timeout

__all__ = ["SqliteBackend"]

TABLE = "stet_records"
CLAIMS = "stet_claims"  # runs in progress, kept apart from completed records
KEY = "_stet_key"  # hex digest of the run identity, indexed; computed by stet
_OWN = (TYPES, TIMESTAMP, KEY)

# Connections inherited across a fork are never closed in the child: closing them could
# disturb the parent's locks. They are kept here so the garbage collector leaves them.
_abandoned: list[sqlite3.Connection] = []


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SqliteBackend(BaseBackend):
    """Completed runs in table ``stet_records`` of a SQLite database.

    Columns: one TEXT column per key parameter (NULL where a record lacks that
    parameter), ``_stet_types``, ``_stet_timestamp`` and ``_stet_key``, an indexed
    digest of the run identity that makes a lookup one index probe. The database runs
    in WAL mode so readers never wait for a writer; each process opens its own
    connection (a forked child opens a new one).
    """

    suffixes = (".sqlite", ".db")
    format_name = "SQLite"

    def _start_process(self) -> None:
        old = getattr(self, "_conn", None)
        if old is not None:
            _abandoned.append(old)
        self._conn: sqlite3.Connection | None = None
        self._mutex = threading.RLock()
        self._columns: list[str] = []
        self._snapshot: tuple[tuple[int, int], set[str], set[str]] | None = None

    def bad(self, problem: str) -> StoreError:
        """An error naming this database and what is wrong with it."""
        return StoreError(
            f"stet: cannot use {self.path} as a SQLite store: {problem}. stet has not "
            "modified the database; fix or move it, or choose another store."
        )

    # -- connection and schema ---------------------------------------------------

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self._ensure_process()
        with self._mutex:
            if self._conn is None:
                self._conn = self._open()
            try:
                yield self._conn
            except sqlite3.OperationalError as exc:
                raise self._explain(exc) from None
            except sqlite3.DatabaseError as exc:
                raise self.bad(str(exc)) from None

    def _explain(self, exc: sqlite3.OperationalError) -> StoreError:
        """Turn SQLite's terse operational errors into errors naming the database."""
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StoreLockTimeout(
                f"stet: {self.path} stayed locked by another process for "
                f"{_lock_timeout():g} s; raise STET_LOCK_TIMEOUT (seconds) or wait for it"
            )
        if "readonly" in text or "read-only" in text:
            return StoreError(
                f"stet: {self.path} is read-only, so stet cannot record runs in it. Make "
                "it (and its directory) writable, or choose another store."
            )
        return self.bad(text)

    def _wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL mode, waiting out processes creating the database at once.

        Changing the journal mode needs an exclusive lock and SQLite does not wait for
        it (no busy handler), so retry until the lock timeout.
        """
        deadline = time.monotonic() + _lock_timeout()
        delay = 0.005
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _open(self) -> sqlite3.Connection:
        if os.path.isdir(self.path):
            raise self.bad("it is a directory")
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        conn = None
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=_lock_timeout(),
                isolation_level=None,
                check_same_thread=False,
            )
            # Look before touching anything: a database stet does not understand must
            # keep every byte, and switching the journal mode rewrites the header.
            self._columns = self._read_columns(conn)
            if not os.access(self.path, os.W_OK) or not os.stat(self.path).st_mode & 0o222:
                conn.close()
                conn = sqlite3.connect(
                    f"file:{self.path}?mode=ro",
                    uri=True,
                    timeout=_lock_timeout(),
                    isolation_level=None,
                    check_same_thread=False,
                )
                return conn  # read-only: readable, and writes fail with a clear error
            self._wal(conn)
            # WAL with synchronous=NORMAL: a commit survives a crash of the process;
            # only a power loss may undo the last commits, never corrupt the database.
            conn.execute("PRAGMA synchronous=NORMAL")
            if self._columns:
                self._upgrade(conn)
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()  # else Windows keeps the rejected file locked
            if isinstance(exc, sqlite3.OperationalError):
                raise self._explain(exc) from None
            raise self.bad(str(exc)) from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return conn

    def _read_columns(self, conn: sqlite3.Connection) -> list[str]:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        if TABLE not in tables:
            others = [t for t in tables if not t.startswith("sqlite_") and t != CLAIMS]
            if others:
                raise self.bad(f"it has no {TABLE} table (its tables: {', '.join(others)})")
            return []
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({TABLE})")]
        if TIMESTAMP not in columns:
            raise self.bad(f"table {TABLE} has no {TIMESTAMP} column, so stet did not write it")
        for name in columns:
            if name.startswith("_stet_") and name not in _OWN:
                raise self.bad(f"unknown column {name!r} (written by a newer stet?)")
            if not name.startswith("_stet_") and not name.isidentifier():
                raise self.bad(f"column {name!r} is not a parameter name")
        return columns

    def _upgrade(self, conn: sqlite3.Connection) -> None:
        """Add stet's columns to a 0.0.x table and fill keys that are missing."""
        if (
            TYPES in self._columns
            and KEY in self._columns
            and (
                conn.execute(f"SELECT 1 FROM {TABLE} WHERE {KEY} IS NULL LIMIT 1").fetchone()
                is None
            )
        ):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._columns = self._read_columns(conn)
            for name in (TYPES, KEY):
                if name not in self._columns:
                    conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {name} TEXT")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_key ON {TABLE} ({KEY})")
            self._columns = self._read_columns(conn)
            cols = [c for c in self._columns if c != KEY]
            missing = conn.execute(
                f"SELECT {', '.join(map(_quote, cols))}, rowid FROM {TABLE} WHERE {KEY} IS NULL"
            ).fetchall()
            updates = [
                (plan.digest(cells).hex(), cells[-1])
                for cells, plan, _ in read_records([*cols, "_stet_rowid"], missing, self.bad)
            ]
            conn.executemany(f"UPDATE {TABLE} SET {KEY} = ? WHERE rowid = ?", updates)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _ensure_table(self, conn: sqlite3.Connection, names: tuple[str, ...]) -> None:
        """Create the table or add key columns; caller holds a write transaction."""
        self._columns = self._read_columns(conn)
        self._check_case(names)
        if not self._columns:
            cols = ", ".join(f"{_quote(n)} TEXT" for n in (*names, *_OWN))
            conn.execute(f"CREATE TABLE {TABLE} ({cols})")
            conn.execute(f"CREATE INDEX {TABLE}_key ON {TABLE} ({KEY})")
            self._columns = [*names, *_OWN]
            return
        for name in names:
            if name not in self._columns:
                conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {_quote(name)} TEXT")
                self._columns.append(name)

    # -- BaseBackend interface ---------------------------------------------------

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def contains(self, ident: Identity) -> bool:
        self._ensure_process()
        if self._conn is None and not os.path.exists(self.path):
            self._check_case(ident.names)
            return False
        with self._db() as conn:
            return self._lookup(conn, ident)

    def completed(self, idents: Sequence[Lookup]) -> list[bool]:
        self._ensure_process()
        if self._conn is None and not os.path.exists(self.path):
            return [False] * len(idents)
        with self._db() as conn:
            if not self._lookup_ready(conn):
                return [False] * len(idents)
            typed, by_text = self._keys(conn)
        found = [i.digest.hex() in typed for i in idents]
        if by_text:
            found = [f or i.legacy.hex() in by_text for f, i in zip(found, idents, strict=True)]
        return found

    def _keys(self, conn: sqlite3.Connection) -> tuple[set[str], set[str]]:
        """Every record's key, typed and text-matched apart, for large batched lookups.

        One scan of the key column beats thousands of indexed queries when a grid of a
        million points is checked. The snapshot is reused while the database is
        unchanged (``data_version`` counts others' commits, ``total_changes`` ours) and
        dropped by the next single lookup or record, so it does not linger in memory.
        """
        stamp = (conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes)
        if self._snapshot is None or self._snapshot[0] != stamp:
            typed: set[str] = set()
            by_text: set[str] = set()
            for key, types in conn.execute(f"SELECT {KEY}, {TYPES} FROM {TABLE}"):
                (by_text if types is None or "=text" in types else typed).add(key)
            self._snapshot = (stamp, typed, by_text)
        return self._snapshot[1], self._snapshot[2]

    def _lookup_ready(self, conn: sqlite3.Connection) -> bool:
        if not self._columns:
            self._columns = self._read_columns(conn)
        return bool(self._columns)

    def _check_case(self, names: tuple[str, ...]) -> None:
        """SQLite column names ignore case: refuse ``Alpha`` beside ``alpha``."""
        known = {c.lower(): c for c in self._columns}
        lowered: dict[str, str] = {}
        for name in names:
            other = known.get(name.lower()) or lowered.get(name.lower())
            if other is not None and other != name:
                raise self.bad(
                    f"key names {other!r} and {name!r} differ only in case, which SQLite "
                    "column names cannot tell apart; rename one parameter"
                )
            lowered[name.lower()] = name

    def _lookup(self, conn: sqlite3.Connection, ident: Identity) -> bool:
        self._snapshot = None
        ready = self._lookup_ready(conn)
        if any(name not in self._columns for name in ident.names):
            self._check_case(ident.names)  # before the run, not when recording it
        if not ready:
            return False
        found = conn.execute(
            f"SELECT 1 FROM {TABLE} WHERE {KEY} IN (?, ?) LIMIT 1",
            (ident.digest.hex(), ident.legacy.hex()),
        ).fetchone()
        return found is not None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE takes the write lock at once."""
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _insert(self, conn: sqlite3.Connection, ident: Identity, timestamp: str) -> bool:
        """Insert the record unless present; caller holds a write transaction."""
        self._ensure_table(conn, ident.names)
        exists = conn.execute(
            f"SELECT 1 FROM {TABLE} WHERE {KEY} IN (?, ?) LIMIT 1",
            (ident.digest.hex(), ident.legacy.hex()),
        ).fetchone()
        if exists is not None:
            return False
        names = (*ident.names, TYPES, TIMESTAMP, KEY)
        conn.execute(
            f"INSERT INTO {TABLE} ({', '.join(map(_quote, names))}) "
            f"VALUES ({', '.join('?' * len(names))})",
            (*ident.texts, ident.types, timestamp, ident.digest.hex()),
        )
        return True

    def add(self, ident: Identity, timestamp: str) -> bool:
        with self._write() as conn:
            return self._insert(conn, ident, timestamp)

    def in_progress(self) -> list[Claim]:
        if not self.exists():
            return []
        with self._db() as conn:  # read only: status must not create the claims table
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (CLAIMS,)
            ).fetchone()
            if found is None:
                return []
            rows = conn.execute(f"SELECT key, run, host, pid, token, expires FROM {CLAIMS}")
            return [c for c in map(SqlClaims.claim_of, rows) if not c.stale()]

    @contextmanager
    def _claims(self) -> Iterator[ClaimBook]:
        """Claims live in table ``stet_claims`` of the same database."""
        with self._write() as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {CLAIMS} (key TEXT PRIMARY KEY, run TEXT, "
                "host TEXT, pid INTEGER, token TEXT, expires REAL)"
            )
            yield SqlClaims(
                conn,
                CLAIMS,
                "?",
                "INSERT OR REPLACE INTO {table} (" + SqlClaims.COLUMNS + ") VALUES ({values})",
                lambda ident: self._lookup(conn, ident),
                lambda ident, stamp: self._insert(conn, ident, stamp),
            )

    def _select(self, conn: sqlite3.Connection) -> list[tuple[int, Row]]:
        self._columns = self._read_columns(conn)
        if not self._columns:
            return []
        cols = [c for c in self._columns if c != KEY]
        cursor = conn.execute(
            f"SELECT {', '.join(map(_quote, cols))}, rowid FROM {TABLE} ORDER BY rowid"
        )
        return [
            (cells[-1], Row(plan.values(cells), plan.types, stamp))
            for cells, plan, stamp in read_records([*cols, "_stet_rowid"], cursor, self.bad)
        ]

    def rows(self) -> list[Row]:
        if not self.exists():
            return []
        with self._db() as conn:
            return [row for _, row in self._select(conn)]

    def discard(self, predicate: Callable[[Row], bool]) -> list[Row]:
        if not self.exists():
            return []
        with self._write() as conn:
            removed = [(rowid, row) for rowid, row in self._select(conn) if predicate(row)]
            conn.executemany(f"DELETE FROM {TABLE} WHERE rowid = ?", [(r,) for r, _ in removed])
        return [row for _, row in removed]

    def key_columns(self) -> list[str]:
        if not self.exists():
            return []
        with self._db() as conn:
            return [c for c in self._read_columns(conn) if not c.startswith("_stet_")]
