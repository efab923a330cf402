"""Opening a SQLite store: connections, read-only and full disks, upgrades, errors.

A database stet may write is opened in WAL mode; one it may not write (a read-only
file or directory, a full disk) is opened read only, or, where SQLite cannot even
create its shared-memory file, as an immutable file. A table written by stet 0.0.x or
0.1 is brought up to date once, in one transaction.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from typing import TYPE_CHECKING, Any

from stet._errors import StoreError, StoreLockTimeout
from stet.backends._atomic import nearest_directory, real_path
from stet.backends._index import Index
from stet.backends._locking import lock_timeout
from stet.backends._records import read_records
from stet.backends._sqlitetable import ALL_OWN, TABLE, note_kinds, read_columns, read_kinds
from stet.backends._sqlschema import KEY, quote

if TYPE_CHECKING:
    from stet.backends._sqlite import SqliteBackend

__all__ = ["can_write", "check_writable", "explain", "open_database"]

#: Times a connection is opened again after its schema turned out stale.
_STALE_RETRIES = 5
#: Page cache of each connection, in KiB.
_CACHE_KIB = 64 * 1024
#: Pages the write-ahead log may hold before a commit copies them into the database.
_CHECKPOINT_PAGES = 8000


def explain(store: SqliteBackend, exc: sqlite3.Error) -> StoreError:
    """Turn SQLite's terse errors into errors naming the database."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StoreLockTimeout(
            f"stet: {store.file} stayed locked by another process for "
            f"{lock_timeout():g} s; raise STET_LOCK_TIMEOUT (seconds) or wait for it"
        )
    if "readonly" in text or "read-only" in text:
        return StoreError(
            f"stet: {store.file} is read-only, so stet cannot record runs in it. Make "
            "it (and its directory) writable, or choose another store."
        )
    if "full" in text or "disk I/O" in text:
        return StoreError(
            f"stet: could not write {store.file}: {text}. The run was not recorded; "
            "free some space and run again."
        )
    return store.bad(text)


def connect(store: SqliteBackend, uri: str) -> sqlite3.Connection:
    conn = sqlite3.connect(
        uri, uri=True, timeout=lock_timeout(), isolation_level=None, check_same_thread=False
    )
    try:
        # A page cache of up to 64 MB (SQLite's default is 2 MB) holds the key index of
        # a million records: skips across such a store stop reading pages from the OS,
        # 7.6 -> 6.8 us each. Not a memory map (PRAGMA mmap_size), as fast: an I/O
        # error, or a file cut short by another program, would kill the process with
        # SIGBUS instead of raising an error naming the store.
        conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
    except BaseException:
        conn.close()
        raise
    return conn


def open_database(store: SqliteBackend) -> sqlite3.Connection:
    """A connection to the store's database, its table looked at (and upgraded).

    While other processes create the database and its table, a new connection may
    find the table in ``sqlite_master`` and yet be told "no such table" by its next
    statement (its cached schema is from before; seen in about one of a hundred
    rounds of four processes opening a new store at once). That is retried.
    """
    for attempt in range(_STALE_RETRIES):
        try:
            return _open(store)
        except _StaleSchema:
            time.sleep(0.005 * (attempt + 1))
    return _open(store, last=True)


class _StaleSchema(Exception):
    """The table was seen, then reported missing: look again."""


def _open(store: SqliteBackend, last: bool = False) -> sqlite3.Connection:
    if os.path.isdir(store.file):
        raise store.bad("it is a directory")
    target = real_path(store.file)
    writable = can_write(store, target)
    conn: sqlite3.Connection | None = None
    # The columns this connection found. store._columns is shared by the threads of the
    # process, and another thread may empty it (to read the schema again) at any time.
    seen: list[str] = []
    try:
        if writable:
            directory = os.path.dirname(target)
            if directory:
                os.makedirs(directory, exist_ok=True)
            conn = connect(store, f"file:{_uri_path(target)}")
            # Look before touching anything: a database stet does not understand
            # must keep every byte, and switching the journal mode writes.
            seen = store._columns = read_columns(store, conn)
            wal(store, conn)
            # WAL with synchronous=NORMAL: a commit survives a crash of the process;
            # only a power loss may undo the last commits, never corrupt the file.
            conn.execute("PRAGMA synchronous=NORMAL")
            # Each record dirties a page at a random place of the key index; a longer
            # log between checkpoints (32 MB, not 4) copies pages back and syncs less
            # often: records into a 1M-record store average 82 us instead of 104.
            conn.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES}")
            if seen:
                upgrade(store, conn, seen)
        else:
            conn = open_readonly(store, target)
            seen = store._columns = read_columns(store, conn)
        read_kinds(store, conn)
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()  # else Windows keeps the rejected file locked
        text = str(exc)
        if "no such table" in text and seen and not last:
            raise _StaleSchema from None
        if writable and os.path.exists(target) and ("disk I/O" in text or "full" in text):
            # A full disk: SQLite cannot even create its -shm file. Read what is there;
            # check_writable refuses records, before the body runs.
            conn = open_readonly(store, target)
            try:
                store._columns = read_columns(store, conn)
                read_kinds(store, conn)
            except BaseException:
                conn.close()
                raise
            store._full = True
            return conn
        raise explain(store, exc) from None
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    return conn


def can_write(store: SqliteBackend, target: str) -> bool:
    if os.path.exists(target):
        st = os.stat(target)
        ok = bool(st.st_mode & 0o222) and os.access(target, os.W_OK)
        ok = ok and os.access(os.path.dirname(target) or ".", os.W_OK)
    else:
        ok = True
    store._readonly = not ok
    return ok


def open_readonly(store: SqliteBackend, target: str) -> sqlite3.Connection:
    """Open for reading a database this process may not write (or on a full disk).

    WAL needs its ``-shm`` file; where it cannot be created, ``immutable=1`` reads
    the database file as it is (nobody can be writing to a read-only place).
    """
    path = _uri_path(target)
    try:
        conn = connect(store, f"file:{path}?mode=ro")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        return connect(store, f"file:{path}?immutable=1")


def wal(store: SqliteBackend, conn: sqlite3.Connection) -> None:
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


def upgrade(store: SqliteBackend, conn: sqlite3.Connection, columns: list[str]) -> None:
    """Bring a table of stet 0.0.x or 0.1 up to date; fill keys other tools left NULL.

    stet 0.1 computed ``_stet_key`` differently and had no ``_stet_func``: such a
    table (its ``columns`` as this connection read them) gets the new columns and every
    key recomputed, once, in one transaction.
    """
    old = any(c not in columns for c in ALL_OWN)
    if not old:
        missing = conn.execute(f"SELECT 1 FROM {TABLE} WHERE {KEY} IS NULL LIMIT 1").fetchone()
        if missing is None:
            return
    store._in_write(conn, lambda: rekey(store, conn, everything=old))


def rekey(store: SqliteBackend, conn: sqlite3.Connection, everything: bool) -> None:
    # From the columns read here: other threads share store._columns and may empty it.
    columns = read_columns(store, conn)
    for name in ALL_OWN:
        if name not in columns:
            conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {name} TEXT")
    conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_key ON {TABLE} ({KEY})")
    columns = store._columns = read_columns(store, conn)
    cols = [c for c in columns if c != KEY]
    where = "" if everything else f" WHERE {KEY} IS NULL"
    found = conn.execute(
        f"SELECT {', '.join(map(quote, cols))}, rowid FROM {TABLE}{where}"
    ).fetchall()
    updates: list[tuple[str, Any]] = []
    kinds = Index()
    for cells, plan, _ in read_records([*cols, "_stet_rowid"], found, store.bad):
        updates.append((f"{plan.digest(cells):032x}", cells[-1]))
        kinds.note(plan.func, plan.by_text)
    conn.executemany(f"UPDATE {TABLE} SET {KEY} = ? WHERE rowid = ?", updates)
    note_kinds(store, conn, kinds)


def _uri_path(path: str) -> str:
    """A file path as the path part of a SQLite URI (``%``, ``?`` and ``#`` escaped)."""
    from urllib.parse import quote as url_quote

    absolute = os.path.abspath(path)
    if sys.platform == "win32":
        absolute = "/" + absolute.replace("\\", "/")
    return url_quote(absolute, safe="/:")


def check_writable(store: SqliteBackend) -> None:
    """Refuse, before the run, a store this process cannot record in."""
    store._ensure_process()
    if store._checked:
        return
    if os.path.exists(store.file):
        store._conn()  # finds a full disk (see _sqliteopen.open_database)
    if store._full:
        raise StoreError(
            f"stet: could not write {store.file}: the disk is full. The run was not "
            "recorded; free some space and run again."
        )
    target = real_path(store.file)
    if not can_write(store, target):
        raise StoreError(
            f"stet: {store.file} is read-only (or its directory is), so stet cannot "
            "record runs in it. Make both writable, or choose another store."
        )
    directory = nearest_directory(target)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(
            f"stet: cannot record runs in {store.file}: the directory {directory} is not "
            "writable. Make it writable, or choose a store in a writable directory."
        )
    store._checked = True
