"""The tables of a PostgreSQL store, and the statements stet runs on them.

The schema is looked at once per connection (`Schema.inspect`, read only, so a user
with SELECT rights can run ``stet status``) and created or brought up to date once per
connection before the first write (`Schema.ensure`), under an advisory lock so that
many workers starting at once do not race. A table written by stet 0.1 (whose digests
were computed differently) is upgraded in one transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from stet._identity import Identity
from stet.backends._claims import Owner
from stet.backends._index import Index
from stet.backends._records import OWN, Row, read_records, rows_of
from stet.backends._sqlschema import KEY, check_columns

if TYPE_CHECKING:
    from stet.backends._postgres import PostgresBackend

__all__ = ["Schema"]

_ALL_OWN = (*OWN, KEY)
_NO_FUNC = "_stet_func IS NULL"


def _lock_id(name: str) -> int:
    """A stable 64-bit advisory lock id for a table name."""
    return int.from_bytes(
        hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
    )


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Sql:
    """The statements for one table (names quoted once)."""

    def __init__(self, table: str) -> None:
        t, c, led = _q(table), _q(f"{table}_claims"), _q(f"{table}_ledger")
        seq = f"nextval('{_q(table + '_cseq')}')"
        self.records, self.claims_table, self.ledger = t, c, led
        self.sequence = _q(f"{table}_cseq")
        self.lookup = f"SELECT 1 FROM {t} WHERE {KEY} = ANY(%s) LIMIT 1"
        self.found = f"SELECT {KEY} FROM {t} WHERE {KEY} = ANY(%s)"
        # Every key, and whether any record has no function name (typed, or by text).
        by_text = "(_stet_types IS NULL OR _stet_types LIKE '%=text%')"
        self.all_keys = (
            f"SELECT string_agg({KEY}, ''), "
            f"coalesce(bool_or({_NO_FUNC} AND NOT {by_text}), false), "
            f"coalesce(bool_or({_NO_FUNC} AND {by_text}), false) FROM {t}"
        )
        self.delete = f"DELETE FROM {t} WHERE {KEY} = ANY(%s)"
        self.drop = f"DROP TABLE IF EXISTS {t}, {led}"
        self.count_all = f"SELECT count(*) FROM {t}"
        self.count_func = f"SELECT count(*) FROM {t} WHERE _stet_func = %s OR _stet_func IS NULL"
        self.functions = f"SELECT DISTINCT _stet_func FROM {t}"
        cols = (
            "run, host, place, pid, started, token, date_part('epoch', expires), gen, "
            "date_part('epoch', since)"
        )
        # Live claims. A completed run leaves a row with token '' (a tombstone, so a
        # worker's view of recent changes learns it is done), a released one token '-'.
        self.claims = f"SELECT key, {cols}, expires < now() FROM {c} WHERE token NOT IN ('', '-')"
        self.changes = (
            f"SELECT seq, key, token, host, place, pid, started, "
            f"date_part('epoch', expires - now()) FROM {c} "
            "WHERE seq > %s ORDER BY seq"
        )
        self.sweep = f"DELETE FROM {c} WHERE expires < now() - interval '600 seconds'"
        self.forget_claims = f"DELETE FROM {c} WHERE key = ANY(%s) AND token = ''"
        self.claim = f"""
            WITH done AS (SELECT 1 FROM {t} WHERE {KEY} = ANY(%(keys)s) LIMIT 1),
            ins AS (
                INSERT INTO {c} AS c
                    (key, run, host, place, pid, started, token, expires, gen, seq, since)
                SELECT %(key)s, %(run)s, %(host)s, %(place)s, %(pid)s, %(started)s, %(token)s,
                       now() + %(lease)s * interval '1 second', 1, {seq}, now()
                WHERE NOT EXISTS (SELECT 1 FROM done)
                ON CONFLICT (key) DO UPDATE SET run = EXCLUDED.run, host = EXCLUDED.host,
                    place = EXCLUDED.place, pid = EXCLUDED.pid, started = EXCLUDED.started,
                    token = EXCLUDED.token, expires = EXCLUDED.expires, seq = EXCLUDED.seq,
                    gen = CASE WHEN c.token = EXCLUDED.token THEN c.gen ELSE c.gen + 1 END,
                    since = CASE WHEN c.token = EXCLUDED.token THEN c.since ELSE now() END
                WHERE c.expires < now() OR c.token = EXCLUDED.token OR c.token = %(dead)s
                RETURNING gen, date_part('epoch', expires) AS expires,
                    date_part('epoch', since) AS since
            ),
            cur AS (SELECT {cols}, expires < now() AS expired FROM {c} WHERE key = %(key)s)
            SELECT EXISTS (SELECT 1 FROM done), ins.gen, ins.expires, ins.since, cur.*
            FROM (SELECT 1) AS one LEFT JOIN ins ON true LEFT JOIN cur ON true
        """
        self.renew = f"""
            UPDATE {c} AS c SET expires = now() + v.lease * interval '1 second'
            FROM unnest(%s::text[], %s::text[], %s::float8[]) AS v(key, token, lease)
            WHERE c.key = v.key AND c.token = v.token RETURNING c.key
        """
        self.release = (
            f"UPDATE {c} SET token = '-', expires = now(), seq = {seq} "
            "WHERE key = %s AND token = %s"
        )
        self.tombstone = (
            f"UPDATE {c} SET token = '', expires = now() + interval '600 seconds', seq = {seq} "
            "WHERE key = %s AND token = %s RETURNING 1"
        )
        self.note = (
            f"INSERT INTO {led} (event, key, run, types, func, timestamp, details) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)"
        )
        self.events = (
            f"SELECT event, key, run, types, func, timestamp, details FROM {led} ORDER BY id"
        )
        self.failures = (
            f"SELECT count(*) FROM {led} WHERE key = %s AND event = %s AND id > "
            f"coalesce((SELECT max(id) FROM {led} WHERE key = %s AND event = %s), 0)"
        )
        self.create_claims = [
            f"CREATE SEQUENCE IF NOT EXISTS {self.sequence}",
            f"CREATE TABLE IF NOT EXISTS {c} (key TEXT PRIMARY KEY, run TEXT, host TEXT, "
            "place TEXT, pid INTEGER, started BIGINT, token TEXT, expires TIMESTAMPTZ, "
            "gen INTEGER, seq BIGINT, since TIMESTAMPTZ)",
            f"CREATE INDEX IF NOT EXISTS {_q(table + '_cseqi')} ON {c} (seq)",
        ]
        self.create_ledger = (
            f"CREATE TABLE IF NOT EXISTS {led} (id BIGSERIAL PRIMARY KEY, event TEXT, key TEXT, "
            "run TEXT, types TEXT, func TEXT, timestamp TEXT, details TEXT)"
        )


class Schema:
    """What this process knows of a store's tables (per process, shared by its threads)."""

    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend
        self.sql = _Sql(backend.table)
        self.forget()

    def forget(self) -> None:
        """Look again on the next use (a new connection, or the tables changed)."""
        self.columns: list[str] | None = None  # None: no records table
        self.memory: Index | None = None  # an old table this user may not upgrade
        self.has_claims = False
        self.has_ledger = False
        self._looked = False
        self._ensured = False

    def _tables(self, conn: Any) -> dict[str, list[str]]:
        table = self.backend.table
        names = [table, f"{table}_claims", f"{table}_ledger"]
        found: dict[str, list[str]] = {}
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE "
            "table_schema = current_schema() AND table_name = ANY(%s) ORDER BY ordinal_position",
            (names,),
        ).fetchall()
        for name, column in rows:
            found.setdefault(name, []).append(column)
        return found

    def inspect(self, conn: Any) -> None:
        """Read the columns (once per connection)."""
        if self._looked:
            return
        table = self.backend.table
        tables = self._tables(conn)
        self.columns = tables.get(table)
        self.has_claims = f"{table}_claims" in tables
        self.has_ledger = f"{table}_ledger" in tables
        if self.columns is not None:
            check_columns(self.columns, _ALL_OWN, self.backend.bad)
            if KEY not in self.columns:
                raise self.backend.bad(f"its columns {self.columns} are not those of a stet store")
            if "_stet_func" not in self.columns:
                self.memory = self._memory(conn)  # written by stet 0.1; upgraded on write
        # No table yet: look again next time (another worker may create it any moment).
        self._looked = self.columns is not None

    def _memory(self, conn: Any) -> Index:
        index = Index()
        index.add_rows(row for _, row in self.select(conn))
        return index

    def ensure(self, conn: Any) -> None:
        """Create the tables, or upgrade them, before the first write of a connection."""
        if self._ensured:
            return
        self.inspect(conn)
        claims = self._tables(conn).get(f"{self.backend.table}_claims", ["seq", "since"])
        old_claims = self.has_claims and not {"seq", "since"} <= set(claims)
        if self.memory is not None or not (self.has_claims and self.has_ledger) or old_claims:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id(self.backend.table),))
                self._create(conn)
            self._looked = False
            self.memory = None
            self.inspect(conn)
        self._ensured = True

    def _create(self, conn: Any) -> None:
        table = self.backend.table
        tables = self._tables(conn)
        columns = tables.get(table)
        if columns is not None and "_stet_func" not in columns:
            self._upgrade(conn, columns)
            self._index(conn)
        claims = tables.get(f"{table}_claims")
        if claims is not None and not {"seq", "since"} <= set(claims):
            conn.execute(f"DROP TABLE {self.sql.claims_table}")  # an older stet's: transient
        for statement in self.sql.create_claims:
            conn.execute(statement)
        conn.execute(self.sql.create_ledger)
        conn.execute(f"CREATE INDEX IF NOT EXISTS {_q(table + '_lkey')} ON {self.sql.ledger} (key)")

    def _upgrade(self, conn: Any, columns: list[str]) -> None:
        """Add stet's new columns to a 0.1 table and recompute every key."""
        t = self.sql.records
        for name in OWN:
            if name not in columns:
                conn.execute(f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {_q(name)} TEXT")
        cols = [c for c in self._tables(conn)[self.backend.table] if c != KEY]
        rows = conn.execute(f"SELECT {', '.join(map(_q, cols))}, ctid::text FROM {t}").fetchall()
        keys: list[str] = []
        ids: list[str] = []
        for cells, plan, _ in read_records([*cols, "_stet_ctid"], rows, self.backend.bad):
            keys.append(f"{plan.digest(cells):032x}")
            ids.append(cells[-1])
        conn.execute(
            f"UPDATE {t} SET {KEY} = v.k FROM unnest(%s::text[], %s::tid[]) AS v(k, id) "
            f"WHERE {t}.ctid = v.id",
            (keys, ids),
        )

    def widen(self, conn: Any, names: Sequence[str]) -> None:
        """Create the records table, or add key columns it lacks (once per new name).

        The table is created by the first run recorded or claimed, with that run's key
        columns first, then stet's.
        """
        missing = [n for n in names if n not in (self.columns or [])]
        if self.columns is not None and not missing:
            return
        t = self.sql.records
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id(self.backend.table),))
            if self._tables(conn).get(self.backend.table) is None:
                defs = [f"{_q(c)} TEXT" for c in (*names, *OWN)]
                conn.execute(f"CREATE TABLE {t} ({', '.join(defs)}, {KEY} TEXT NOT NULL UNIQUE)")
                self._index(conn)
            else:
                for name in missing:
                    conn.execute(f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {_q(name)} TEXT")
        self.columns = self._tables(conn).get(self.backend.table)

    def _index(self, conn: Any) -> None:
        name = _q(self.backend.table + "_nofunc")
        conn.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON {self.sql.records} ({KEY}) WHERE {_NO_FUNC}"
        )

    def insert(
        self, ident: Identity, stamp: str, extra: Mapping[str, str] | None, keys: list[str]
    ) -> tuple[str, list[Any]]:
        """The statement recording ``ident`` unless it (or a record matching it) is there.

        Args:
            ident: the run.
            stamp: its ``_stet_timestamp``.
            extra: stet's other columns for it.
            keys: every digest under which a record would make the run count as done.
        """
        row = Row.of(ident, stamp, extra)
        names = [*ident.names, *(c for c in OWN if row.cell(c) is not None), KEY]
        values: list[Any] = [*ident.texts, *(row.cell(c) for c in OWN if row.cell(c) is not None)]
        values += [f"{ident.digest:032x}", keys]
        query = (
            f"INSERT INTO {self.sql.records} ({', '.join(map(_q, names))}) "
            f"SELECT {', '.join(['%s'] * len(names))} WHERE NOT EXISTS "
            f"(SELECT 1 FROM {self.sql.records} WHERE {KEY} = ANY(%s)) "
            f"ON CONFLICT ({KEY}) DO NOTHING"
        )
        return query, values

    def complete(
        self,
        ident: Identity,
        owner: Owner,
        stamp: str,
        extra: Mapping[str, str] | None,
        keys: list[str],
    ) -> tuple[str, list[Any]]:
        """One statement: record, drop the claim, note a duplicate if already recorded."""
        insert, values = self.insert(ident, stamp, extra, keys)
        key = f"{ident.digest:032x}"
        details = json.dumps(dict(extra or {}), ensure_ascii=False)
        query = f"""
            WITH rec AS ({insert} RETURNING 1),
            gone AS ({self.sql.tombstone}),
            dup AS (
                INSERT INTO {self.sql.ledger} (event, key, run, types, func, timestamp, details)
                SELECT 'duplicate', %s, %s, %s, %s, %s,
                    (jsonb_build_object('generation', coalesce(
                        (SELECT gen FROM {self.sql.claims_table} WHERE key = %s), 1))
                     || %s::jsonb)::text
                WHERE NOT EXISTS (SELECT 1 FROM rec)
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM rec), (SELECT count(*) FROM gone)
        """
        run = json.dumps(ident.as_dict(), ensure_ascii=False)
        values += [key, owner.token, key, run, ident.types, ident.func, stamp, key, details]
        return query, values

    def select(self, conn: Any) -> list[tuple[str, Row]]:
        """Every record with its key, in the order recorded (by timestamp)."""
        # Others may have added some. A local: the process's threads share self.columns.
        columns = self.columns = self._tables(conn).get(self.backend.table)
        if columns is None:
            return []
        cols = [c for c in columns if c != KEY]
        cursor = conn.execute(
            f"SELECT {', '.join(map(_q, cols))}, {KEY} FROM {self.sql.records} "
            f"ORDER BY _stet_timestamp, {KEY}"
        )
        header = [*cols, "_stet_key_"]
        records = list(read_records(header, cursor, self.backend.bad))
        keys = [cells[-1] for cells, _, _ in records]
        return list(zip(keys, rows_of(header, records), strict=True))
