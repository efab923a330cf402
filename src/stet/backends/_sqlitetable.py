"""The SQLite store's records table: its columns, the kinds of record it holds, rows.

``stet_records`` has one TEXT column per key parameter, stet's own columns and the
indexed ``_stet_key``; ``stet_meta`` notes which kinds of record (function-less,
text-matched) the table holds, so a lookup asks only for the digests that can match.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from functools import lru_cache
from itertools import chain
from typing import TYPE_CHECKING

from stet._identity import Identity
from stet.backends._index import Index
from stet.backends._records import (
    FUNC,
    OWN,
    PROVENANCE,
    TIMESTAMP,
    TYPES,
    Row,
    read_records,
    rows_of,
    utc_now,
)
from stet.backends._sqlschema import KEY, check_columns, quote

if TYPE_CHECKING:
    from stet.backends._sqlite import SqliteBackend

__all__ = [
    "ALL_OWN",
    "CLAIMS",
    "LEDGER",
    "LOOKUP",
    "META",
    "PLAIN_OR_KINDS",
    "TABLE",
    "check_case",
    "ensure_table",
    "has_table",
    "insert",
    "note_kinds",
    "read_columns",
    "read_kinds",
    "select",
]

TABLE = "stet_records"
META = "stet_meta"  # which kinds of record the table holds
CLAIMS = "stet_claims"  # runs in progress, kept apart from completed records
LEDGER = "stet_ledger"  # failures and duplicate executions
STET_TABLES = (TABLE, CLAIMS, LEDGER, META)
ALL_OWN = (*OWN, KEY)
#: The lookup of a run under 1, 2 or 3 digests, by how many are given.
LOOKUP = {
    n: f"SELECT 1 FROM {TABLE} WHERE {KEY} IN ({', '.join('?' * n)}) LIMIT 1" for n in (1, 2, 3)
}

#: A miss's second probe: a record of the run without a function name (row ``1``), or,
#: in the same step, the sign that the table may hold other kinds of record (row ``0``).
PLAIN_OR_KINDS = (
    f"SELECT 1 FROM {TABLE} WHERE {KEY} = ? UNION ALL "
    f"SELECT 0 FROM sqlite_master WHERE type='table' AND name='{META}'"
)


def read_columns(store: SqliteBackend, conn: sqlite3.Connection) -> list[str]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    if TABLE not in tables:
        others = [t for t in tables if not t.startswith("sqlite_") and t not in STET_TABLES]
        if others:
            raise store.bad(f"it has no {TABLE} table (its tables: {', '.join(others)})")
        return []
    columns = [r[1] for r in conn.execute(f"PRAGMA table_info({TABLE})")]
    check_columns(columns, ALL_OWN, store.bad)
    return columns


def read_kinds(store: SqliteBackend, conn: sqlite3.Connection) -> None:
    kinds = Index()
    if has_table(conn, META):
        for name, value in conn.execute(f"SELECT name, value FROM {META}"):
            if name in ("plain", "text", "text_func") and value == "1":
                setattr(kinds, name, True)
    store._kinds = kinds


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)
    ).fetchone()
    return found is not None


def note_kinds(store: SqliteBackend, conn: sqlite3.Connection, kinds: Index) -> None:
    flags = [name for name in ("plain", "text", "text_func") if getattr(kinds, name)]
    if not flags:
        return
    conn.execute(f"CREATE TABLE IF NOT EXISTS {META} (name TEXT PRIMARY KEY, value TEXT)")
    conn.executemany(
        f"INSERT OR REPLACE INTO {META} (name, value) VALUES (?, '1')", [(f,) for f in flags]
    )
    for flag in flags:
        setattr(store._kinds, flag, True)


def ensure_table(store: SqliteBackend, conn: sqlite3.Connection, names: list[str]) -> None:
    """Create the table or add key columns; caller holds a write transaction.

    It works from the columns it reads itself: ``store._columns`` is shared by the
    process's threads, and another one may empty it (to read again) at any moment.
    """
    columns = read_columns(store, conn)
    check_case(store, names, columns)
    if not columns:
        cols = ", ".join(f"{quote(n)} TEXT" for n in (*names, *ALL_OWN))
        conn.execute(f"CREATE TABLE {TABLE} ({cols})")
        conn.execute(f"CREATE INDEX {TABLE}_key ON {TABLE} ({KEY})")
        store._columns = read_columns(store, conn)
        return
    for name in names:
        if name not in columns:
            conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {quote(name)} TEXT")
            columns.append(name)
    store._columns = columns


def insert(
    store: SqliteBackend,
    conn: sqlite3.Connection,
    idents: Sequence[Identity],
    extra: Mapping[str, str] | None,
) -> int:
    """Insert the records not yet present; caller holds a write transaction.

    One statement per record, ``INSERT ... WHERE NOT EXISTS``, run by executemany:
    a record already there (also as a text-matched or function-less record) is
    left alone, and many records cost one call.
    """
    names = list(dict.fromkeys(chain.from_iterable(i.names for i in idents)))
    if not store._columns or any(n not in store._columns for n in names):
        ensure_table(store, conn, names)  # else the table was seen with these columns
    # The cells every record of this call shares: its time and the provenance given.
    provided = extra or {}
    given = [c for c in PROVENANCE if provided.get(c) is not None]
    shared = (TIMESTAMP, *given)
    shared_cells = (utc_now(), *(provided[c] for c in given))
    kinds = Index()
    batches: dict[tuple[str, ...], list[tuple[str | None, ...]]] = {}
    for ident in idents:
        keys = store._known_keys(ident)  # the first is the record's own digest
        if ident.func is None:  # a function-less record leaves _stet_func NULL
            own, own_cells = (TYPES, *shared), (ident.types, *shared_cells)
        else:
            own, own_cells = (FUNC, TYPES, *shared), (ident.func, ident.types, *shared_cells)
        layout = (*ident.names, *own, KEY, *("?" * len(keys)))  # "?": one per key looked for
        values = (*ident.texts, *own_cells, keys[0], *keys)
        batches.setdefault(layout, []).append(values)
        if ident.func is None or ident.is_text:
            kinds.note(ident.func, ident.is_text)
    before = conn.total_changes
    for layout, params in batches.items():
        statement = _insert_sql(layout)
        try:
            conn.executemany(statement, params)
        except sqlite3.OperationalError:
            # The table changed under the columns this process knew (dropped by a
            # reset, widened by another worker): look again, then insert.
            ensure_table(store, conn, names)
            conn.executemany(statement, params)
    added = conn.total_changes - before
    if added:
        note_kinds(store, conn, kinds)
    return added


@lru_cache(maxsize=256)
def _insert_sql(layout: tuple[str, ...]) -> str:
    """The INSERT for a record of these columns (``"?"``: one per key looked for)."""
    columns = [n for n in layout if n != "?"]
    looked = len(layout) - len(columns)
    return (
        f"INSERT INTO {TABLE} ({', '.join(map(quote, columns))}) "
        f"SELECT {', '.join('?' * len(columns))} WHERE NOT EXISTS "
        f"(SELECT 1 FROM {TABLE} WHERE {KEY} IN ({', '.join('?' * looked)}))"
    )


def select(store: SqliteBackend, conn: sqlite3.Connection) -> list[tuple[int, Row]]:
    columns = store._columns = read_columns(store, conn)  # (see ensure_table)
    if not columns:
        return []
    cols = [c for c in columns if c != KEY]
    found = conn.execute(
        f"SELECT {', '.join(map(quote, cols))}, rowid FROM {TABLE} ORDER BY rowid"
    ).fetchall()
    records = list(read_records([*cols, "_stet_rowid"], found, store.bad))
    rowids = [cells[-1] for cells, _, _ in records]
    return list(zip(rowids, rows_of([*cols, "_stet_rowid"], records), strict=True))


def check_case(
    store: SqliteBackend, names: Sequence[str], columns: Sequence[str] | None = None
) -> None:
    """SQLite column names ignore case: refuse ``Alpha`` beside ``alpha``.

    ``columns``: the table's, as just read (default: the ones this process knows).
    """
    known = {c.lower(): c for c in (store._columns if columns is None else columns)}
    lowered: dict[str, str] = {}
    for name in names:
        other = known.get(name.lower()) or lowered.get(name.lower())
        if other is not None and other != name:
            raise store.bad(
                f"key names {other!r} and {name!r} differ only in case, which SQLite "
                "column names cannot tell apart; rename one parameter"
            )
        lowered[name.lower()] = name
