"""Claims and ledger of a SQLite store: tables ``stet_claims`` and ``stet_ledger``.

Each operation is one ``BEGIN IMMEDIATE`` transaction, so a claim reads the completed
records and the claims and writes its own as one step no other worker can interleave
with. Lease expiry is judged by this machine's clock: a SQLite file is shared by the
processes of one machine.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from stet._identity import Identity
from stet.backends._claims import Claim, Outcome, Owner
from stet.backends._ledger import FAILURE, RESET, Event, duplicate_event
from stet.backends._records import describe
from stet.backends._sqlitetable import CLAIMS, LEDGER, LOOKUP, has_table, insert, read_columns

if TYPE_CHECKING:
    from stet.backends._sqlite import SqliteBackend

__all__ = [
    "claim",
    "complete",
    "events",
    "failures",
    "in_progress",
    "note",
    "release",
    "renew",
]


# -- claims ------------------------------------------------------------------------


def claims_table(conn: sqlite3.Connection) -> None:
    """Create the claims table unless it exists."""
    columns = [row[1] for row in conn.execute(f"PRAGMA table_info({CLAIMS})")]
    if columns and "since" not in columns:
        conn.execute(f"DROP TABLE {CLAIMS}")  # an older stet's claims: they are transient
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {CLAIMS} (key TEXT PRIMARY KEY, run TEXT, host TEXT, "
        "place TEXT, pid INTEGER, started INTEGER, token TEXT, expires REAL, gen INTEGER, "
        "since REAL)"
    )


def claim_rows(conn: sqlite3.Connection, key: str | None = None) -> list[Claim]:
    """The claims (of run ``key``, or all), with whether their lease ran out."""
    columns = [row[1] for row in conn.execute(f"PRAGMA table_info({CLAIMS})")]
    if "since" not in columns:
        return []  # an older stet's table: its claims are replaced with the first new one
    sql = f"SELECT key, run, host, place, pid, started, token, expires, gen, since FROM {CLAIMS}"
    found = conn.execute(sql + (" WHERE key = ?" if key else ""), (key,) if key else ())
    now = time.time()
    return [
        Claim(k, r, Owner(h, pl, p, s, t), e, g, expired=e < now, since=w)
        for k, r, h, pl, p, s, t, e, g, w in found
    ]


def claim(
    store: SqliteBackend, ident: Identity, owner: Owner, lease: float
) -> tuple[Outcome, Claim | None]:
    """See `BaseBackend.claim`."""
    key = f"{ident.digest:032x}"

    def attempt(conn: sqlite3.Connection) -> tuple[Outcome, Claim | None]:
        keys = store._keys(ident, conn)
        # Look at the table itself, inside this transaction: this process may have last
        # seen the store without a records table, and another worker may have created
        # it since, with this very run in it.
        columns = store._columns = read_columns(store, conn)  # (a local: threads share it)
        if columns and conn.execute(LOOKUP[len(keys)], keys).fetchone():
            return Outcome.DONE, None
        claims_table(conn)
        found = claim_rows(conn, key)
        current = found[0] if found else None
        if current is not None and not current.held_by(owner) and not current.stale():
            return Outcome.BUSY, current
        gen = 1 if current is None else current.generation + 1
        now = time.time()
        mine = Claim(key, describe(ident), owner, now + lease, gen, since=now)
        conn.execute(
            f"INSERT OR REPLACE INTO {CLAIMS} (key, run, host, place, pid, started, token, "
            "expires, gen, since) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, mine.run, owner.host, owner.place, owner.pid, owner.started,
             owner.token, mine.expires, gen, now),
        )  # fmt: skip
        return Outcome.CLAIMED, mine

    return store._write(attempt)


def renew(store: SqliteBackend, held: Sequence[tuple[Identity, Owner, float]]) -> list[Identity]:
    """See `BaseBackend.renew`."""

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

    return store._write(attempt)


def release(store: SqliteBackend, ident: Identity, owner: Owner) -> None:
    """See `BaseBackend.release`."""
    store._write(
        lambda conn: conn.execute(
            f"DELETE FROM {CLAIMS} WHERE key = ? AND token = ?",
            (f"{ident.digest:032x}", owner.token),
        )
    )


def complete(
    store: SqliteBackend, ident: Identity, owner: Owner, extra: Mapping[str, str] | None = None
) -> bool:
    """See `BaseBackend.complete`."""
    key = f"{ident.digest:032x}"

    def attempt(conn: sqlite3.Connection) -> bool:
        added = insert(store, conn, [ident], extra) > 0
        claims_table(conn)
        found = claim_rows(conn, key)
        conn.execute(f"DELETE FROM {CLAIMS} WHERE key = ? AND token = ?", (key, owner.token))
        if not added:
            gen = found[0].generation if found else 1
            insert_event(conn, duplicate_event(ident, gen, extra))
        return added

    return store._write(attempt)


def in_progress(store: SqliteBackend) -> list[Claim]:
    """See `BaseBackend.in_progress`; never creates the claims table."""
    if not store.exists():
        return []

    def read(conn: sqlite3.Connection) -> list[Claim]:
        if not has_table(conn, CLAIMS):
            return []  # status must not create the claims table
        return [c for c in claim_rows(conn) if not c.stale()]

    return store._read(read)


# -- the ledger -----------------------------------------------------------------------


def insert_event(conn: sqlite3.Connection, event: Event) -> None:
    """Add ``event`` to the ledger table (created on first use)."""
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


def note(store: SqliteBackend, event: Event) -> None:
    """See `BaseBackend.note`."""
    store._write(lambda conn: insert_event(conn, event))


def events(store: SqliteBackend) -> list[Event]:
    """See `BaseBackend.events`."""
    if not store.exists():
        return []

    def read(conn: sqlite3.Connection) -> list[Event]:
        if not has_table(conn, LEDGER):
            return []
        found = conn.execute(f"SELECT * FROM {LEDGER} ORDER BY rowid").fetchall()
        return [
            Event(e, k, json.loads(r), t, f, ts, json.loads(d) or {})
            for e, k, r, t, f, ts, d in found
        ]

    return store._read(read)


def failures(store: SqliteBackend, ident: Identity) -> int:
    """See `BaseBackend.failures`."""
    if not store.exists():
        return 0
    key = f"{ident.digest:032x}"

    def read(conn: sqlite3.Connection) -> int:
        if not has_table(conn, LEDGER):
            return 0
        found = conn.execute(
            f"SELECT count(*) FROM {LEDGER} WHERE key = ? AND event = ? AND rowid > "
            f"coalesce((SELECT max(rowid) FROM {LEDGER} WHERE key = ? AND event = ?), 0)",
            (key, FAILURE, key, RESET),
        ).fetchone()
        return int(found[0])

    return store._read(read)
