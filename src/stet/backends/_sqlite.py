"""The SQLite store: table ``stet_records``, looked up through an indexed digest.

Each thread of each process has its own connection (a forked child opens new ones), so
no Python lock is ever held across a call into SQLite, and an interrupt can at worst
leave a transaction open, which the next use rolls back. The database runs in WAL mode:
readers never wait for a writer; writers take the write lock at once (``BEGIN
IMMEDIATE``), so a read-then-write never fails halfway.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TypeVar

from stet._errors import StoreError
from stet._identity import Identity
from stet.backends import _sqliteclaims as claims
from stet.backends._base import BaseBackend, Lookup
from stet.backends._claims import Claim, Outcome, Owner
from stet.backends._index import Index
from stet.backends._ledger import Event
from stet.backends._locking import _forks, forks
from stet.backends._records import Row
from stet.backends._sqliteopen import check_writable, explain, open_database
from stet.backends._sqlitetable import (
    LEDGER,
    LOOKUP,
    PLAIN_OR_KINDS,
    TABLE,
    check_case,
    insert,
    read_columns,
    read_kinds,
    select,
)
from stet.backends._sqlschema import KEY, keys_to_index

__all__ = ["SqliteBackend"]

T = TypeVar("T")

_LOOKUP_ONE = LOOKUP[1]
#: Lookups asked again after the records table was dropped and made again meanwhile.
_LOOKUP_RETRIES = 5


class _Local(threading.local):
    conn: sqlite3.Connection | None = None
    cursor: sqlite3.Cursor
    forks: int = -1


# Connections inherited across a fork are never closed in the child: closing them could
# disturb the parent's locks. They are kept here so the garbage collector leaves them.
_abandoned: list[sqlite3.Connection] = []


class SqliteBackend(BaseBackend):
    """Completed runs in table ``stet_records`` of a SQLite database.

    Columns: one TEXT column per key parameter (NULL where a record lacks it), stet's
    own columns, and ``_stet_key``, an indexed digest of the run that makes a lookup one
    index probe. Claims, the ledger and a little metadata live in tables of their own.
    """

    suffixes = (".sqlite", ".db")
    format_name = "SQLite"

    def _start_process(self) -> None:
        self._local = _Local()
        self._columns: list[str] = []
        self._kinds = Index()  # which kinds of record exist (its digests stay empty)
        self._checked_names: tuple[str, ...] | None = None  # key names known to be columns
        self._memory: Index | None = None  # an old store that cannot be upgraded here
        self._readonly = False
        self._checked = False
        self._full = False  # opened read-only because the disk is full

    def bad(self, problem: str) -> StoreError:
        """An error naming this database and what is wrong with it."""
        return StoreError(
            f"stet: cannot use {self.file} as a SQLite store: {problem}. stet has not "
            "modified the database; fix or move it, or choose another store."
        )

    # -- connections --------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        self._ensure_process()
        local = self._local
        if local.conn is not None and local.forks == forks():
            return local.conn
        if local.conn is not None and local.forks == -1:
            local.conn.close()  # opened here, then an interrupt came before forks was set
        elif local.conn is not None:
            _abandoned.append(local.conn)
        local.conn = None
        local.forks = -1
        local.conn = open_database(self)
        local.cursor = local.conn.cursor()
        local.forks = forks()  # last: the skip path takes it to mean all above is set
        return local.conn

    # -- transactions ---------------------------------------------------------------

    def _in_write(self, conn: sqlite3.Connection, func: Callable[[], T]) -> T:
        """Run ``func`` in a write transaction; an interrupt anywhere rolls it back."""
        try:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")  # left open by an interrupt
                conn.execute("BEGIN IMMEDIATE")
                result = func()
                conn.execute("COMMIT")
                return result
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        except BaseException:
            # What this process read inside the transaction may have been rolled back
            # with it (a table created, a column added): read the schema again.
            self._columns = []
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")  # again: the interrupt may have cut the first
            raise

    def _write(self, func: Callable[[sqlite3.Connection], T]) -> T:
        self.check_writable()
        conn = self._conn()
        try:
            return self._in_write(conn, lambda: func(conn))
        except sqlite3.Error as exc:
            raise explain(self, exc) from None

    def _read(self, func: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn()
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return func(conn)
        except sqlite3.Error as exc:
            raise explain(self, exc) from None

    # -- BaseBackend interface ---------------------------------------------------

    def check_writable(self) -> None:
        check_writable(self)

    def exists(self) -> bool:
        return os.path.exists(self.file)

    def _known_keys(self, ident: Lookup) -> tuple[str, ...]:
        """The digests `_keys` gives, by the kinds of record last seen (no query)."""
        # The first is the run's own digest. to_bytes().hex() takes 90 ns, a format 210.
        keys = [ident.digest.to_bytes(16).hex(), ident.plain.to_bytes(16).hex()]
        if self._kinds.text:
            keys.append(ident.legacy.to_bytes(16).hex())
        return tuple(keys)

    def _keys(self, ident: Lookup, conn: sqlite3.Connection) -> tuple[str, ...]:
        """Every digest under which a record makes ``ident`` count as done."""
        read_kinds(self, conn)
        return self._known_keys(ident)

    def contains(self, ident: Lookup) -> bool:
        # The skip path of every decorated call: one indexed query on this thread's
        # connection, with its own cursor and statement text kept.
        if self._forks != _forks[0]:
            return self._contains_slowly(ident)
        local = self._local
        if (
            local.forks != _forks[0]  # (set only once the connection is open)
            or self._memory is not None
            or not self._columns
            or (ident.__class__ is Identity and ident.names != self._checked_names)
        ):
            return self._contains_slowly(ident)
        # A hit needs one probe: a record of exactly this run. Only a miss (the body is
        # about to run) looks for function-less and text-matched records too.
        try:
            cursor = local.cursor
            # The key's hex text; to_bytes().hex() takes 90 ns, a format 210 ns.
            cursor.execute(_LOOKUP_ONE, (ident.digest.to_bytes(16).hex(),))
            if cursor.fetchone() is not None:
                return True
            # Most stores hold only typed records with a function name: one more probe,
            # which also tells whether the kinds table exists (else none can match).
            cursor.execute(PLAIN_OR_KINDS, (ident.plain.to_bytes(16).hex(),))
            found = [row[0] for row in cursor.fetchall()]
            if 1 in found or not found:
                return bool(found)
            keys = self._keys(ident, cursor.connection)[1:]  # (the first just missed)
            cursor.execute(LOOKUP[len(keys)], keys)
            return cursor.fetchone() is not None
        except sqlite3.Error as exc:
            return self._lookup_failed(ident, exc, 0)

    def _lookup_failed(self, ident: Lookup, exc: sqlite3.Error, attempt: int) -> bool:
        """`contains` after its lookup raised ``exc``.

        The records table may have been dropped (``stet.reset``): then the run is not
        done. Or dropped and made again by another worker's record between the lookup
        and this look: then the new table answers, asked again.
        """
        if self._table_gone():
            return False
        if "no such table" in str(exc) and attempt < _LOOKUP_RETRIES:
            time.sleep(0.001 * attempt)
            return self._contains_slowly(ident, attempt + 1)
        raise explain(self, exc) from None

    def _table_gone(self) -> bool:
        """Whether the records table was dropped (``stet.reset``) since this process looked."""
        if self._read(partial(read_columns, self)):
            return False
        self._columns = []
        self._checked_names = None
        return True

    def _contains_slowly(self, ident: Lookup, attempt: int = 0) -> bool:
        """`contains` the first time, or for a store that is not there or not upgraded."""
        self._ensure_process()
        names: tuple[str, ...] = getattr(ident, "names", ())
        if not self._columns:
            check_case(self, names)  # a new store too: refuse before the run, not at its record
        if self._local.conn is None and not os.path.exists(self.file):
            return False
        conn = self._conn()
        if self._memory is not None:
            return self._memory.has(ident)
        columns = self._columns  # a local: another thread may empty the shared list
        if not columns:
            columns = self._columns = self._read(partial(read_columns, self))
            if not columns:
                return False
        if any(name not in columns for name in names):
            check_case(self, names)  # before the run, not at its record
        elif isinstance(ident, Identity):
            self._checked_names = ident.names
        keys = self._keys(ident, conn)
        try:
            return conn.execute(LOOKUP[len(keys)], keys).fetchone() is not None
        except sqlite3.Error as exc:
            return self._lookup_failed(ident, exc, attempt)

    def completed(self, idents: Sequence[Lookup]) -> list[bool]:
        return [self.contains(i) for i in idents]

    def index(self, size: int = 0) -> Index | None:
        """All keys at once, for a large grid: one scan beats many index probes."""
        if size < 10_000:
            return None
        self._ensure_process()  # pending() may be the first thing a process asks
        if not os.path.exists(self.file):
            return Index()

        def scan(conn: sqlite3.Connection) -> Index:
            index = Index()
            if not read_columns(self, conn):
                return index
            text = conn.execute(f"SELECT group_concat({KEY}, '') FROM {TABLE}").fetchone()[0]
            index.digests = keys_to_index(text or "")
            read_kinds(self, conn)  # other processes may have added other kinds since
            for flag in ("plain", "text", "text_func"):
                setattr(index, flag, getattr(self._kinds, flag))
            return index

        if self._memory is not None:
            return self._memory
        return self._read(scan)

    def add(self, ident: Identity, extra: Mapping[str, str] | None = None) -> bool:
        return self._write(lambda conn: insert(self, conn, [ident], extra)) > 0

    def add_many(self, idents: Sequence[Identity]) -> int:
        return self._write(lambda conn: insert(self, conn, idents, None))

    def rows(self) -> list[Row]:
        if not self.exists():
            return []
        return [row for _, row in self._read(partial(select, self))]

    def discard(self, predicate: Callable[[Row], bool]) -> list[Row]:
        if not self.exists():
            return []

        def remove(conn: sqlite3.Connection) -> list[Row]:
            removed = [(rowid, row) for rowid, row in select(self, conn) if predicate(row)]
            if removed:  # (no records table while every call so far failed)
                rowids = [(rowid,) for rowid, _ in removed]
                conn.executemany(f"DELETE FROM {TABLE} WHERE rowid = ?", rowids)
            return [row for _, row in removed]

        return self._write(remove)

    def drop(self) -> None:
        if not self.exists():
            return

        def remove(conn: sqlite3.Connection) -> None:
            conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
            conn.execute(f"DROP TABLE IF EXISTS {LEDGER}")

        self._write(remove)
        self._columns = []

    def key_columns(self) -> list[str]:
        if not self.exists():
            return []
        return [c for c in self._read(partial(read_columns, self)) if not c.startswith("_stet_")]

    def count(self, func: str | None = None) -> int | None:
        if not self.exists():
            return None

        def counted(conn: sqlite3.Connection) -> int:
            if not read_columns(self, conn):
                return 0
            if func is None:
                return int(conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])
            return int(
                conn.execute(
                    f"SELECT count(*) FROM {TABLE} WHERE _stet_func = ? OR _stet_func IS NULL",
                    (func,),
                ).fetchone()[0]
            )

        return self._read(counted)

    def functions(self) -> set[str]:
        if not self.exists():
            return set()

        def read(conn: sqlite3.Connection) -> set[str]:
            if not read_columns(self, conn):
                return set()
            found = conn.execute(f"SELECT DISTINCT _stet_func FROM {TABLE}")
            return {f for (f,) in found if f is not None}

        return self._read(read)

    # -- claims and ledger: in _sqliteclaims -------------------------------------------

    def claim(self, ident: Identity, owner: Owner, lease: float) -> tuple[Outcome, Claim | None]:
        return claims.claim(self, ident, owner, lease)

    def renew(self, held: Sequence[tuple[Identity, Owner, float]]) -> list[Identity]:
        return claims.renew(self, held)

    def release(self, ident: Identity, owner: Owner) -> None:
        claims.release(self, ident, owner)

    def complete(
        self, ident: Identity, owner: Owner, extra: Mapping[str, str] | None = None
    ) -> bool:
        return claims.complete(self, ident, owner, extra)

    def in_progress(self) -> list[Claim]:
        return claims.in_progress(self)

    def note(self, event: Event) -> None:
        claims.note(self, event)

    def events(self) -> list[Event]:
        return claims.events(self)

    def failures(self, ident: Identity) -> int:
        return claims.failures(self, ident)
