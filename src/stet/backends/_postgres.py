"""The PostgreSQL store: one table shared by workers on many machines."""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from stet._errors import StoreError
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

__all__ = ["PostgresBackend"]

KEY = "_stet_key"
_OWN = (TYPES, TIMESTAMP, KEY)

# Connections inherited across a fork are never closed in the child: closing would
# send the server a goodbye on the parent's socket.
_abandoned: list[Any] = []


def _psycopg() -> ModuleType:
    try:
        import psycopg
    except ImportError:
        raise ImportError(
            "stet: the PostgreSQL store needs psycopg 3. Install it with: "
            'pip install "stet[postgres]"'
        ) from None
    return psycopg


def _lock_id(name: str) -> int:
    """A stable 64-bit advisory lock id for a table name."""
    return int.from_bytes(
        hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
    )


class PostgresBackend(BaseBackend):
    """Completed runs in a PostgreSQL table, for sweeps spread over many machines.

    The store is a URL: ``postgresql://user:password@host:5432/dbname``; add
    ``?table=name`` to use a table other than ``stet_records``. Columns are TEXT: one per
    key parameter (NULL where a record lacks it), ``_stet_types``, ``_stet_timestamp``
    and ``_stet_key`` (unique digest of the run identity). Runs in progress
    (``once(claim=True)``) live in a second table, ``<table>_claims``. The table is
    created on first use. Each process opens its own connection.
    """

    suffixes = ()
    format_name = "PostgreSQL"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        _psycopg()
        parts = urlsplit(self.path)
        query = parse_qsl(parts.query)
        tables = [v for k, v in query if k == "table"]
        self.table = tables[-1] if tables else "stet_records"
        if not self.table.isidentifier():
            raise ValueError(
                f"stet: table name {self.table!r} in the store URL is not an identifier"
            )
        self.claims_table = f"{self.table}_claims"
        rest = urlencode([(k, v) for k, v in query if k != "table"])
        self._conninfo = urlunsplit(parts._replace(query=rest))
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        self.where = f"{host}{port}{parts.path or '/'}"  # never the password

    @property
    def location(self) -> str:
        """The URL without its password, and the table."""
        return f"postgresql://{self.where} (table {self.table})"

    def _start_process(self) -> None:
        old = getattr(self, "_conn", None)
        if old is not None:
            _abandoned.append(old)
        self._conn: Any = None
        self._mutex = threading.RLock()
        self._has_table = False

    def bad(self, problem: str) -> StoreError:
        """An error naming this database and what is wrong."""
        return StoreError(
            f"stet: cannot use table {self.table} at {self.where} as a store: {problem}. "
            "stet has not modified it."
        )

    # -- connection --------------------------------------------------------------

    def _connect(self) -> Any:
        psycopg = _psycopg()
        text = os.environ.get("STET_CONNECT_TIMEOUT", "10")
        try:
            # libpq takes whole seconds and treats 0 as "wait forever": round up.
            timeout = max(1, math.ceil(float(text)))
        except ValueError:
            raise ValueError(
                f"stet: STET_CONNECT_TIMEOUT={text!r} is not a number of seconds"
            ) from None
        try:
            return psycopg.connect(self._conninfo, autocommit=True, connect_timeout=timeout)
        except psycopg.OperationalError as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
            password = urlsplit(self.path).password
            if password:
                message = message.replace(password, "***")
            raise StoreError(
                f"stet: cannot connect to PostgreSQL at {self.where}: {message}"
            ) from None

    @contextmanager
    def _db(self) -> Iterator[Any]:
        self._ensure_process()
        psycopg = _psycopg()
        with self._mutex:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            try:
                yield self._conn
            except psycopg.OperationalError as exc:
                self._conn = None  # reconnect next time
                raise StoreError(f"stet: PostgreSQL at {self.where} failed: {exc}") from None

    @contextmanager
    def _transaction(self, schema: tuple[str, ...] | None = None) -> Iterator[Any]:
        """A transaction holding this table's advisory lock (serialises writers).

        Args:
            schema: key names the table must have; creates or widens it first.
        """
        with self._db() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id(self.table),))
            if schema is not None:
                self._ensure_table(conn, schema)
            yield conn

    def _sql(self, text: str) -> Any:
        sql = _psycopg().sql
        return sql.SQL(text).format(
            table=sql.Identifier(self.table), claims=sql.Identifier(self.claims_table)
        )

    def _columns(self, conn: Any) -> list[str]:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
            "AND table_schema = current_schema() ORDER BY ordinal_position",
            (self.table,),
        ).fetchall()
        columns = [r[0] for r in rows]
        if columns and (TIMESTAMP not in columns or KEY not in columns):
            raise self.bad(f"its columns {columns} are not those of a stet store")
        return columns

    def _ensure_table(self, conn: Any, names: tuple[str, ...]) -> None:
        sql = _psycopg().sql
        columns = self._columns(conn)
        if not columns:
            defs = [
                sql.SQL("{} TEXT").format(sql.Identifier(n)) for n in (*names, TYPES, TIMESTAMP)
            ]
            defs.append(sql.SQL("{} TEXT NOT NULL UNIQUE").format(sql.Identifier(KEY)))
            conn.execute(
                sql.SQL("CREATE TABLE {} ({})").format(
                    sql.Identifier(self.table), sql.SQL(", ").join(defs)
                )
            )
        else:
            for name in names:
                if name not in columns:
                    conn.execute(
                        sql.SQL("ALTER TABLE {} ADD COLUMN {} TEXT").format(
                            sql.Identifier(self.table), sql.Identifier(name)
                        )
                    )
        self._has_table = True

    def _table_ready(self, conn: Any) -> bool:
        if not self._has_table:
            found = conn.execute("SELECT to_regclass(%s)", (f'"{self.table}"',)).fetchone()
            self._has_table = found is not None and found[0] is not None
        return self._has_table

    # -- BaseBackend interface ---------------------------------------------------

    def exists(self) -> bool:
        with self._db() as conn:
            return self._table_ready(conn)

    def _lookup(self, conn: Any, ident: Identity) -> bool:
        if not self._table_ready(conn):
            return False
        found = conn.execute(
            self._sql("SELECT 1 FROM {table} WHERE _stet_key = ANY(%s) LIMIT 1"),
            ([ident.digest.hex(), ident.legacy.hex()],),
        ).fetchone()
        return found is not None

    def completed(self, idents: Sequence[Lookup]) -> list[bool]:
        query = self._sql("SELECT _stet_key FROM {table} WHERE _stet_key = ANY(%s)")
        with self._db() as conn:
            if not self._table_ready(conn):
                return [False] * len(idents)
            keys = [i.digest.hex() for i in idents]
            found = {row[0] for row in conn.execute(query, (keys,))}
            done = [k in found for k in keys]
            # Records matched by text alone (imported ones) are rare: only the points
            # not found so far get their text-only digest computed and looked up.
            rest = [i.legacy.hex() if not d else "" for i, d in zip(idents, done, strict=True)]
            wanted = [k for k in rest if k]
            if wanted:
                found = {row[0] for row in conn.execute(query, (wanted,))}
                done = [d or k in found for d, k in zip(done, rest, strict=True)]
        return done

    def contains(self, ident: Identity) -> bool:
        with self._db() as conn:
            return self._lookup(conn, ident)

    def _insert(self, conn: Any, ident: Identity, timestamp: str) -> bool:
        sql = _psycopg().sql
        if self._lookup(conn, ident):
            return False
        names = (*ident.names, TYPES, TIMESTAMP, KEY)
        query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO NOTHING").format(
            sql.Identifier(self.table),
            sql.SQL(", ").join(map(sql.Identifier, names)),
            sql.SQL(", ").join(sql.Placeholder() * len(names)),
            sql.Identifier(KEY),
        )
        cursor = conn.execute(query, (*ident.texts, ident.types, timestamp, ident.digest.hex()))
        return bool(cursor.rowcount)

    def add(self, ident: Identity, timestamp: str) -> bool:
        with self._transaction(ident.names) as conn:
            return self._insert(conn, ident, timestamp)

    def _select(self, conn: Any) -> list[tuple[str, Row]]:
        sql = _psycopg().sql
        if not self._table_ready(conn):
            return []
        cols = [c for c in self._columns(conn) if c != KEY]
        cursor = conn.execute(
            sql.SQL("SELECT {}, {} FROM {} ORDER BY {}, {}").format(
                sql.SQL(", ").join(map(sql.Identifier, cols)),
                sql.Identifier(KEY),
                sql.Identifier(self.table),
                sql.Identifier(TIMESTAMP),
                sql.Identifier(KEY),
            )
        )
        return [
            (cells[-1], Row(plan.values(cells), plan.types, stamp))
            for cells, plan, stamp in read_records([*cols, "_stet_key_"], cursor, self.bad)
        ]

    def rows(self) -> list[Row]:
        with self._db() as conn:
            return [row for _, row in self._select(conn)]

    def discard(self, predicate: Callable[[Row], bool]) -> list[Row]:
        with self._db() as conn:
            if not self._table_ready(conn):
                return []
        with self._transaction() as conn:
            removed = [(key, row) for key, row in self._select(conn) if predicate(row)]
            if removed:
                conn.execute(
                    self._sql("DELETE FROM {table} WHERE _stet_key = ANY(%s)"),
                    ([key for key, _ in removed],),
                )
        return [row for _, row in removed]

    def key_columns(self) -> list[str]:
        with self._db() as conn:
            return [c for c in self._columns(conn) if not c.startswith("_stet_")]

    def in_progress(self) -> list[Claim]:
        with self._db() as conn:  # read only: status must work for a SELECT-only user
            found = conn.execute("SELECT to_regclass(%s)", (f'"{self.claims_table}"',)).fetchone()
            if found is None or found[0] is None:
                return []
            rows = conn.execute(f'SELECT {SqlClaims.COLUMNS} FROM "{self.claims_table}"').fetchall()
        return [c for c in map(SqlClaims.claim_of, rows) if not c.stale()]

    @contextmanager
    def _claims(self) -> Iterator[ClaimBook]:
        with self._transaction() as conn:
            conn.execute(
                self._sql(
                    "CREATE TABLE IF NOT EXISTS {claims} (key TEXT PRIMARY KEY, run TEXT, "
                    "host TEXT, pid INTEGER, token TEXT, expires DOUBLE PRECISION)"
                )
            )

            def record(ident: Identity, stamp: str) -> None:
                self._ensure_table(conn, ident.names)
                self._insert(conn, ident, stamp)

            yield SqlClaims(
                conn,
                f'"{self.claims_table}"',
                "%s",
                "INSERT INTO {table} (" + SqlClaims.COLUMNS + ") VALUES ({values}) "
                "ON CONFLICT (key) DO UPDATE SET run = EXCLUDED.run, host = EXCLUDED.host, "
                "pid = EXCLUDED.pid, token = EXCLUDED.token, expires = EXCLUDED.expires",
                lambda ident: self._lookup(conn, ident),
                record,
            )
