"""The SQLite store: table ``stet_records``, looked up through an indexed digest.

Each thread of each process has its own connection (a forked child opens new ones), so
no Python lock is ever held across a call into SQLite, and an interrupt can at worst
leave a transaction open, which the next use rolls back. The database runs in WAL mode:
readers never wait for a writer; writers take the write lock at once (``BEGIN
IMMEDIATE``), so a read-then-write never fails halfway.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from stet._errors import StoreError, StoreLockTimeout
from stet._identity import Identity
from stet.backends._atomic import real_path
from stet.backends._base import BaseBackend, Lookup
from stet.backends._claims import Claim, Outcome, Owner
from stet.backends._index import Index
from stet.backends._ledger import FAILURE, RESET, Event, duplicate_event
from stet.backends._locking import forks, lock_timeout
from stet.backends._records import OWN, Row, describe, read_records, rows_of, utc_now
from stet.backends._sqlschema import KEY, check_columns, keys_to_index, quote

__all__ = ["SqliteBackend"]

T = TypeVar("T")
TABLE = "stet_records"
CLAIMS = "stet_claims"  # runs in progress, kept apart from completed records
LEDGER = "stet_ledger"  # failures and duplicate executions
META = "stet_meta"  # which kinds of record the table holds
_STET_TABLES = (TABLE, CLAIMS, LEDGER, META)
_ALL_OWN = (*OWN, KEY)


class _Local(threading.local):
    conn: sqlite3.Connection | None = None
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
        self._kinds_read = 0.0
        self._memory: Index | None = None  # an old store that cannot be upgraded here
        self._readonly = False
        self._checked = False

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
        if local.conn is not None:
            _abandoned.append(local.conn)
        local.conn = None
        local.forks = forks()
        local.conn = self._open()
        return local.conn

    def _explain(self, exc: sqlite3.Error) -> StoreError:
        """Turn SQLite's terse errors into errors naming the database."""
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StoreLockTimeout(
                f"stet: {self.file} stayed locked by another process for "
                f"{lock_timeout():g} s; raise STET_LOCK_TIMEOUT (seconds) or wait for it"
            )
        if "readonly" in text or "read-only" in text:
            return StoreError(
                f"stet: {self.file} is read-only, so stet cannot record runs in it. Make "
                "it (and its directory) writable, or choose another store."
            )
        if "full" in text or "disk I/O" in text:
            return StoreError(
                f"stet: could not write {self.file}: {text}. The run was not recorded; "
                "free some space and run again."
            )
        return self.bad(text)

    def _connect(self, uri: str) -> sqlite3.Connection:
        return sqlite3.connect(
            uri, uri=True, timeout=lock_timeout(), isolation_level=None, check_same_thread=False
        )

    def _open(self) -> sqlite3.Connection:
        if os.path.isdir(self.file):
            raise self.bad("it is a directory")
        target = real_path(self.file)
        writable = self._can_write(target)
        conn: sqlite3.Connection | None = None
        try:
            if writable:
                directory = os.path.dirname(target)
                if directory:
                    os.makedirs(directory, exist_ok=True)
                conn = self._connect(f"file:{_uri_path(target)}")
                # Look before touching anything: a database stet does not understand
                # must keep every byte, and switching the journal mode writes.
                self._columns = self._read_columns(conn)
                self._wal(conn)
                # WAL with synchronous=NORMAL: a commit survives a crash of the process;
                # only a power loss may undo the last commits, never corrupt the file.
                conn.execute("PRAGMA synchronous=NORMAL")
                if self._columns:
                    self._upgrade(conn)
            else:
                conn = self._open_readonly(target)
                self._columns = self._read_columns(conn)
            self._read_kinds(conn)
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()  # else Windows keeps the rejected file locked
            raise self._explain(exc) from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return conn

    def _can_write(self, target: str) -> bool:
        if os.path.exists(target):
            st = os.stat(target)
            ok = bool(st.st_mode & 0o222) and os.access(target, os.W_OK)
            ok = ok and os.access(os.path.dirname(target) or ".", os.W_OK)
        else:
            ok = True
        self._readonly = not ok
        return ok

    def _open_readonly(self, target: str) -> sqlite3.Connection:
        """Open for reading a database this process may not write (or on a full disk).

        WAL needs its ``-shm`` file; where it cannot be created, ``immutable=1`` reads
        the database file as it is (nobody can be writing to a read-only place).
        """
        path = _uri_path(target)
        try:
            conn = self._connect(f"file:{path}?mode=ro")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            return self._connect(f"file:{path}?immutable=1")

    def _wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL mode, waiting out processes creating the database at once.

        Changing the journal mode needs an exclusive lock and SQLite does not wait for
        it (no busy handler), so retry until the lock timeout.
        """
        deadline = time.monotonic() + lock_timeout()
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

    def _read_columns(self, conn: sqlite3.Connection) -> list[str]:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        if TABLE not in tables:
            others = [t for t in tables if not t.startswith("sqlite_") and t not in _STET_TABLES]
            if others:
                raise self.bad(f"it has no {TABLE} table (its tables: {', '.join(others)})")
            return []
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({TABLE})")]
        check_columns(columns, _ALL_OWN, self.bad)
        return columns

    def _read_kinds(self, conn: sqlite3.Connection) -> None:
        kinds = Index()
        if self._has_table(conn, META):
            for name, value in conn.execute(f"SELECT name, value FROM {META}"):
                if name in ("plain", "text", "text_func") and value == "1":
                    setattr(kinds, name, True)
        self._kinds = kinds

    @staticmethod
    def _has_table(conn: sqlite3.Connection, name: str) -> bool:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)
        ).fetchone()
        return found is not None

    def _upgrade(self, conn: sqlite3.Connection) -> None:
        """Bring a table of stet 0.0.x or 0.1 up to date; fill keys other tools left NULL.

        stet 0.1 computed ``_stet_key`` differently and had no ``_stet_func``: such a
        table gets the new columns and every key recomputed, once, in one transaction.
        """
        old = any(c not in self._columns for c in _ALL_OWN)
        if not old:
            missing = conn.execute(f"SELECT 1 FROM {TABLE} WHERE {KEY} IS NULL LIMIT 1").fetchone()
            if missing is None:
                return
        self._in_write(conn, lambda: self._rekey(conn, everything=old))

    def _rekey(self, conn: sqlite3.Connection, everything: bool) -> None:
        self._columns = self._read_columns(conn)
        for name in _ALL_OWN:
            if name not in self._columns:
                conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {name} TEXT")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_key ON {TABLE} ({KEY})")
        self._columns = self._read_columns(conn)
        cols = [c for c in self._columns if c != KEY]
        where = "" if everything else f" WHERE {KEY} IS NULL"
        found = conn.execute(
            f"SELECT {', '.join(map(quote, cols))}, rowid FROM {TABLE}{where}"
        ).fetchall()
        updates: list[tuple[str, Any]] = []
        kinds = Index()
        for cells, plan, _ in read_records([*cols, "_stet_rowid"], found, self.bad):
            updates.append((f"{plan.digest(cells):032x}", cells[-1]))
            kinds.note(plan.func, plan.by_text)
        conn.executemany(f"UPDATE {TABLE} SET {KEY} = ? WHERE rowid = ?", updates)
        self._note_kinds(conn, kinds)

    def _note_kinds(self, conn: sqlite3.Connection, kinds: Index) -> None:
        flags = [name for name in ("plain", "text", "text_func") if getattr(kinds, name)]
        if not flags:
            return
        conn.execute(f"CREATE TABLE IF NOT EXISTS {META} (name TEXT PRIMARY KEY, value TEXT)")
        conn.executemany(
            f"INSERT OR REPLACE INTO {META} (name, value) VALUES (?, '1')", [(f,) for f in flags]
        )
        for flag in flags:
            setattr(self._kinds, flag, True)

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
            raise self._explain(exc) from None

    def _read(self, func: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn()
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return func(conn)
        except sqlite3.Error as exc:
            raise self._explain(exc) from None

    # -- BaseBackend interface ---------------------------------------------------

    def exists(self) -> bool:
        return os.path.exists(self.file)

    def check_writable(self) -> None:
        self._ensure_process()
        if self._checked:
            return
        target = real_path(self.file)
        if not self._can_write(target):
            raise StoreError(
                f"stet: {self.file} is read-only (or its directory is), so stet cannot "
                "record runs in it. Make both writable, or choose another store."
            )
        directory = os.path.dirname(target) or "."
        while not os.path.isdir(directory):
            directory = os.path.dirname(directory) or "."
        if not os.access(directory, os.W_OK | os.X_OK):
            raise StoreError(
                f"stet: cannot record runs in {self.file}: the directory {directory} is not "
                "writable. Make it writable, or choose a store in a writable directory."
            )
        self._checked = True

    def _keys(self, ident: Lookup, conn: sqlite3.Connection) -> tuple[str, ...]:
        # A run recorded without a function name (backend.record) costs one more index
        # probe; records matched by text alone (imports, 0.0.x) are looked for only in
        # a store that holds some (checked again at most once a second).
        now = time.monotonic()
        if now - self._kinds_read > 1.0:
            self._kinds_read = now
            self._read_kinds(conn)
        keys = [f"{ident.digest:032x}", f"{ident.plain:032x}"]
        if self._kinds.text:
            keys.append(f"{ident.legacy:032x}")
        return tuple(keys)

    def contains(self, ident: Lookup) -> bool:
        self._ensure_process()
        if self._local.conn is None and not os.path.exists(self.file):
            return False
        conn = self._conn()
        if self._memory is not None:
            return self._memory.has(ident)
        if not self._columns:
            self._columns = self._read(self._read_columns)
            if not self._columns:
                return False
        if any(name not in self._columns for name in getattr(ident, "names", ())):
            _check_case(self, getattr(ident, "names", ()))  # before the run, not at its record
        keys = self._keys(ident, conn)
        marks = ", ".join("?" * len(keys))
        try:
            found = conn.execute(
                f"SELECT 1 FROM {TABLE} WHERE {KEY} IN ({marks}) LIMIT 1", keys
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._explain(exc) from None
        return found is not None

    def completed(self, idents: Sequence[Lookup]) -> list[bool]:
        return [self.contains(i) for i in idents]

    def index(self, size: int = 0) -> Index | None:
        """All keys at once, for a large grid: one scan beats many index probes."""
        if size and size < 10_000:
            return None
        if not os.path.exists(self.file):
            return Index()

        def scan(conn: sqlite3.Connection) -> Index:
            index = Index()
            if not self._read_columns(conn):
                return index
            text = conn.execute(f"SELECT group_concat({KEY}, '') FROM {TABLE}").fetchone()[0]
            index.digests = keys_to_index(text or "")
            for flag in ("plain", "text", "text_func"):
                setattr(index, flag, getattr(self._kinds, flag))
            return index

        if self._memory is not None:
            return self._memory
        return self._read(scan)

    def add(self, ident: Identity, extra: Mapping[str, str] | None = None) -> bool:
        return self._write(lambda conn: self._insert(conn, [ident], extra)) > 0

    def add_many(self, idents: Sequence[Identity]) -> int:
        return self._write(lambda conn: self._insert(conn, idents, None))

    def _insert(
        self, conn: sqlite3.Connection, idents: Sequence[Identity], extra: Mapping[str, str] | None
    ) -> int:
        """Insert the records not yet present; caller holds a write transaction."""
        self._ensure_table(conn, list(dict.fromkeys(n for i in idents for n in i.names)))
        stamp = utc_now()
        added = 0
        kinds = Index()
        for ident in idents:
            keys = self._keys(ident, conn)
            marks = ", ".join("?" * len(keys))
            if conn.execute(
                f"SELECT 1 FROM {TABLE} WHERE {KEY} IN ({marks}) LIMIT 1", keys
            ).fetchone():
                continue
            row = Row.of(ident, stamp, extra)
            names = [*ident.names, *(c for c in OWN if row.cell(c) is not None), KEY]
            values = [*ident.texts, *(row.cell(c) for c in OWN if row.cell(c) is not None)]
            conn.execute(
                f"INSERT INTO {TABLE} ({', '.join(map(quote, names))}) "
                f"VALUES ({', '.join('?' * len(names))})",
                (*values, f"{ident.digest:032x}"),
            )
            if ident.func is None or ident.is_text:
                kinds.note(ident.func, ident.is_text)
            added += 1
        self._note_kinds(conn, kinds)
        return added

    def _ensure_table(self, conn: sqlite3.Connection, names: list[str]) -> None:
        """Create the table or add key columns; caller holds a write transaction."""
        self._columns = self._read_columns(conn)
        _check_case(self, names)
        if not self._columns:
            cols = ", ".join(f"{quote(n)} TEXT" for n in (*names, *_ALL_OWN))
            conn.execute(f"CREATE TABLE {TABLE} ({cols})")
            conn.execute(f"CREATE INDEX {TABLE}_key ON {TABLE} ({KEY})")
            self._columns = self._read_columns(conn)
            return
        for name in names:
            if name not in self._columns:
                conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {quote(name)} TEXT")
                self._columns.append(name)

    def _select(self, conn: sqlite3.Connection) -> list[tuple[int, Row]]:
        self._columns = self._read_columns(conn)
        if not self._columns:
            return []
        cols = [c for c in self._columns if c != KEY]
        found = conn.execute(
            f"SELECT {', '.join(map(quote, cols))}, rowid FROM {TABLE} ORDER BY rowid"
        ).fetchall()
        records = list(read_records([*cols, "_stet_rowid"], found, self.bad))
        rowids = [cells[-1] for cells, _, _ in records]
        return list(zip(rowids, rows_of([*cols, "_stet_rowid"], records), strict=True))

    def rows(self) -> list[Row]:
        if not self.exists():
            return []
        return [row for _, row in self._read(self._select)]

    def discard(self, predicate: Callable[[Row], bool]) -> list[Row]:
        if not self.exists():
            return []

        def remove(conn: sqlite3.Connection) -> list[Row]:
            removed = [(rowid, row) for rowid, row in self._select(conn) if predicate(row)]
            conn.executemany(f"DELETE FROM {TABLE} WHERE rowid = ?", [(r,) for r, _ in removed])
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
        return [c for c in self._read(self._read_columns) if not c.startswith("_stet_")]

    def count(self, func: str | None = None) -> int | None:
        if not self.exists():
            return None

        def counted(conn: sqlite3.Connection) -> int:
            if not self._read_columns(conn):
                return 0
            if func is None:
                return int(conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])
            return int(
                conn.execute(
                    f"SELECT count(*) FROM {TABLE} WHERE _stet_func = ?", (func,)
                ).fetchone()[0]
            )

        return self._read(counted)

    def functions(self) -> set[str]:
        if not self.exists():
            return set()

        def read(conn: sqlite3.Connection) -> set[str]:
            if not self._read_columns(conn):
                return set()
            found = conn.execute(f"SELECT DISTINCT _stet_func FROM {TABLE}")
            return {f for (f,) in found if f is not None}

        return self._read(read)

    # -- claims ------------------------------------------------------------------------

    def _claims_table(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {CLAIMS} (key TEXT PRIMARY KEY, run TEXT, host TEXT, "
            "place TEXT, pid INTEGER, started INTEGER, token TEXT, expires REAL, gen INTEGER)"
        )

    def _claim_rows(self, conn: sqlite3.Connection, key: str | None = None) -> list[Claim]:
        sql = f"SELECT key, run, host, place, pid, started, token, expires, gen FROM {CLAIMS}"
        found = conn.execute(sql + (" WHERE key = ?" if key else ""), (key,) if key else ())
        now = time.time()
        return [
            Claim(k, r, Owner(h, pl, p, s, t), e, g, expired=e < now)
            for k, r, h, pl, p, s, t, e, g in found
        ]

    def claim(self, ident: Identity, owner: Owner, lease: float) -> tuple[Outcome, Claim | None]:
        key = f"{ident.digest:032x}"

        def attempt(conn: sqlite3.Connection) -> tuple[Outcome, Claim | None]:
            keys = self._keys(ident, conn)
            marks = ", ".join("?" * len(keys))
            if (
                self._columns
                and conn.execute(f"SELECT 1 FROM {TABLE} WHERE {KEY} IN ({marks})", keys).fetchone()
            ):
                return Outcome.DONE, None
            self._claims_table(conn)
            found = self._claim_rows(conn, key)
            current = found[0] if found else None
            if current is not None and not current.held_by(owner) and not current.stale():
                return Outcome.BUSY, current
            gen = 1 if current is None else current.generation + 1
            mine = Claim(key, describe(ident), owner, time.time() + lease, gen)
            conn.execute(
                f"INSERT OR REPLACE INTO {CLAIMS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, mine.run, owner.host, owner.place, owner.pid, owner.started,
                 owner.token, mine.expires, gen),
            )  # fmt: skip
            return Outcome.CLAIMED, mine

        return self._write(attempt)

    def renew(self, held: Sequence[tuple[Identity, Owner, float]]) -> list[Identity]:
        def attempt(conn: sqlite3.Connection) -> list[Identity]:
            lost: list[Identity] = []
            now = time.time()
            for ident, owner, lease in held:
                cursor = conn.execute(
                    f"UPDATE {CLAIMS} SET expires = ? WHERE key = ? AND token = ?",
                    (now + lease, f"{ident.digest:032x}", owner.token),
                )
                if not cursor.rowcount:
                    lost.append(ident)
            return lost

        return self._write(attempt)

    def release(self, ident: Identity, owner: Owner) -> None:
        self._write(
            lambda conn: conn.execute(
                f"DELETE FROM {CLAIMS} WHERE key = ? AND token = ?",
                (f"{ident.digest:032x}", owner.token),
            )
        )

    def complete(
        self, ident: Identity, owner: Owner, extra: Mapping[str, str] | None = None
    ) -> bool:
        key = f"{ident.digest:032x}"

        def attempt(conn: sqlite3.Connection) -> bool:
            added = self._insert(conn, [ident], extra) > 0
            self._claims_table(conn)
            found = self._claim_rows(conn, key)
            conn.execute(f"DELETE FROM {CLAIMS} WHERE key = ? AND token = ?", (key, owner.token))
            if not added:
                gen = found[0].generation if found else 1
                self._insert_event(conn, duplicate_event(ident, gen, extra))
            return added

        return self._write(attempt)

    def in_progress(self) -> list[Claim]:
        if not self.exists():
            return []

        def read(conn: sqlite3.Connection) -> list[Claim]:
            if not self._has_table(conn, CLAIMS):
                return []  # status must not create the claims table
            return [c for c in self._claim_rows(conn) if not c.stale()]

        return self._read(read)

    # -- the ledger -----------------------------------------------------------------------

    def _insert_event(self, conn: sqlite3.Connection, event: Event) -> None:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {LEDGER} (event TEXT, key TEXT, run TEXT, types TEXT, "
            "func TEXT, timestamp TEXT, details TEXT)"
        )
        conn.execute(f"CREATE INDEX IF NOT EXISTS {LEDGER}_key ON {LEDGER} (key)")
        conn.execute(
            f"INSERT INTO {LEDGER} VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event.kind, event.key, json.dumps(event.run, ensure_ascii=False), event.types,
             event.func, event.timestamp, json.dumps(event.details, ensure_ascii=False)),
        )  # fmt: skip

    def note(self, event: Event) -> None:
        self._write(lambda conn: self._insert_event(conn, event))

    def events(self) -> list[Event]:
        if not self.exists():
            return []

        def read(conn: sqlite3.Connection) -> list[Event]:
            if not self._has_table(conn, LEDGER):
                return []
            found = conn.execute(f"SELECT * FROM {LEDGER} ORDER BY rowid").fetchall()
            return [
                Event(e, k, json.loads(r), t, f, ts, json.loads(d) or {})
                for e, k, r, t, f, ts, d in found
            ]

        return self._read(read)

    def failures(self, ident: Identity) -> int:
        if not self.exists():
            return 0
        key = f"{ident.digest:032x}"

        def read(conn: sqlite3.Connection) -> int:
            if not self._has_table(conn, LEDGER):
                return 0
            found = conn.execute(
                f"SELECT count(*) FROM {LEDGER} WHERE key = ? AND event = ? AND rowid > "
                f"coalesce((SELECT max(rowid) FROM {LEDGER} WHERE key = ? AND event = ?), 0)",
                (key, FAILURE, key, RESET),
            ).fetchone()
            return int(found[0])

        return self._read(read)


def _check_case(backend: SqliteBackend, names: Sequence[str]) -> None:
    """SQLite column names ignore case: refuse ``Alpha`` beside ``alpha``."""
    known = {c.lower(): c for c in backend._columns}
    lowered: dict[str, str] = {}
    for name in names:
        other = known.get(name.lower()) or lowered.get(name.lower())
        if other is not None and other != name:
            raise backend.bad(
                f"key names {other!r} and {name!r} differ only in case, which SQLite "
                "column names cannot tell apart; rename one parameter"
            )
        lowered[name.lower()] = name


def _uri_path(path: str) -> str:
    """A file path as the path part of a SQLite URI (``%``, ``?`` and ``#`` escaped)."""
    from urllib.parse import quote as url_quote

    absolute = os.path.abspath(path)
    if sys.platform == "win32":
        absolute = "/" + absolute.replace("\\", "/")
    return url_quote(absolute, safe="/:")
