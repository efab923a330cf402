"""The PostgreSQL store: one table shared by workers on many machines.

Every operation is one statement in autocommit mode (no table lock): a lookup, a record
(``INSERT ... ON CONFLICT DO NOTHING``), a claim (one ``INSERT ... ON CONFLICT DO
UPDATE ... WHERE`` on the run's row, that also says whether the run is done and who
holds it), a completion (record, drop the claim and, for a run that was already
recorded, note the duplicate, all in one statement) and a heartbeat (one ``UPDATE``
for all the claims of a process). Lease expiry is judged by the server's clock
(``now()``), never a worker's. The schema is checked once per connection.

Each thread has its own connection. A dropped connection, a server restart or "too
many connections" is retried with a growing pause (every operation is safe to repeat),
for up to ``STET_RETRY_TIMEOUT`` seconds, once the server has been reached; so a run
whose body finished is recorded once the server is back.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from stet._errors import StoreError
from stet._identity import Identity
from stet.backends._base import BaseBackend, Lookup
from stet.backends._claims import Claim, Outcome, Owner
from stet.backends._index import Index
from stet.backends._ledger import FAILURE, RESET, Event
from stet.backends._pgconnect import psycopg_module, run
from stet.backends._pgschema import Schema
from stet.backends._pgurl import parse_url
from stet.backends._pgview import View
from stet.backends._records import describe, utc_now
from stet.backends._sqlschema import keys_to_index

__all__ = ["PostgresBackend"]

T = TypeVar("T")


class _Local(threading.local):
    conn: Any = None
    forks: int = -1


class PostgresBackend(BaseBackend):
    """Completed runs in a PostgreSQL table, for sweeps spread over many machines.

    The store is a URL: ``postgresql://user@host:5432/dbname``; add ``?table=name`` to
    use a table other than ``stet_records``. Columns are TEXT: one per key parameter
    (NULL where a record lacks it), stet's own, and ``_stet_key`` (unique digest of the
    run). Runs in progress live in ``<table>_claims``, failures and duplicate executions
    in ``<table>_ledger``. The tables are created on first record.
    """

    format_name = "PostgreSQL"
    cheap_lookups = False  # a lookup is a round trip: claims check "done" themselves

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.path = self.file  # a URL, not a file
        psycopg_module()
        self.url = parse_url(self.file)
        self.table = self.url.table
        self.schema = Schema(self)

    @property
    def location(self) -> str:
        """The URL without its password, and the table."""
        return f"{self.url.shown} (table {self.table})"

    def _start_process(self) -> None:
        self._local = _Local()
        self._reached = False  # the server answered once: later failures are retried
        self.schema.forget()
        self._view = View()
        self._completions = 0

    def bad(self, problem: str) -> StoreError:
        """An error naming this table and what is wrong."""
        return StoreError(
            f"stet: cannot use table {self.table} at {self.url.shown} as a store: "
            f"{self.url.scrub(problem)}. stet has not modified it."
        )

    def _run(self, op: Callable[[Any], T], write: bool = False) -> T:
        """Run ``op(conn)``; see `stet.backends._pgconnect.run`."""
        return run(self, op, write)

    # -- BaseBackend interface ---------------------------------------------------

    def exists(self) -> bool:
        return self._run(lambda conn: self.schema.columns is not None)

    def check_writable(self) -> None:
        self._run(lambda conn: None, write=True)

    @staticmethod
    def _keys(ident: Lookup) -> list[str]:
        # Records without a function name and records matched by text alone (imports)
        # are looked for in the same query: they cost nothing more to find, and no
        # process has to learn first that the table holds some.
        return [f"{ident.digest:032x}", f"{ident.plain:032x}", f"{ident.legacy:032x}"]

    def contains(self, ident: Lookup) -> bool:
        def look(conn: Any) -> bool:
            if self.schema.columns is None:
                return False
            if self.schema.memory is not None:
                return self.schema.memory.has(ident)
            found = conn.execute(self.schema.sql.lookup, (self._keys(ident),)).fetchone()
            return found is not None

        return self._run(look)

    def completed(self, idents: Sequence[Lookup]) -> list[bool]:
        def look(conn: Any) -> list[bool]:
            if self.schema.columns is None:
                return [False] * len(idents)
            if self.schema.memory is not None:
                return [self.schema.memory.has(i) for i in idents]
            wanted = [self._keys(i) for i in idents]
            flat = [k for keys in wanted for k in keys]
            found = {row[0] for row in conn.execute(self.schema.sql.found, (flat,))}
            return [any(k in found for k in keys) for keys in wanted]

        return self._run(look)

    def add(self, ident: Identity, extra: Mapping[str, str] | None = None) -> bool:
        return self.add_many([ident], extra) > 0

    def add_many(self, idents: Sequence[Identity], extra: Mapping[str, str] | None = None) -> int:
        if not idents:
            return 0
        stamp = utc_now()

        def insert(conn: Any) -> int:
            self.schema.widen(conn, list(dict.fromkeys(n for i in idents for n in i.names)))
            added = 0
            with conn.transaction():
                for ident in idents:
                    keys = self._keys(ident)
                    query, values = self.schema.insert(ident, stamp, extra, keys)
                    added += conn.execute(query, values).rowcount
            return added

        return self._run(insert, write=True)

    def rows(self) -> list[Any]:
        return self._run(lambda conn: [row for _, row in self.schema.select(conn)])

    def discard(self, predicate: Callable[[Any], bool]) -> list[Any]:
        def remove(conn: Any) -> list[Any]:
            if self.schema.columns is None:
                return []
            with conn.transaction():
                removed = [(key, row) for key, row in self.schema.select(conn) if predicate(row)]
                if removed:
                    keys = [key for key, _ in removed]
                    conn.execute(self.schema.sql.delete, (keys,))
                    if self.schema.has_claims:  # the runs are to do again: not "done" there
                        conn.execute(self.schema.sql.forget_claims, (keys,))
            return [row for _, row in removed]

        return self._run(remove)

    def drop(self) -> None:
        def remove(conn: Any) -> None:
            conn.execute(self.schema.sql.drop)
            self.schema.forget()

        self._run(remove)

    def key_columns(self) -> list[str]:
        return self._run(
            lambda conn: [c for c in self.schema.columns or [] if not c.startswith("_stet_")]
        )

    def count(self, func: str | None = None) -> int | None:
        def counted(conn: Any) -> int | None:
            if self.schema.columns is None:
                return None
            if func is None:
                return int(conn.execute(self.schema.sql.count_all).fetchone()[0])
            return int(conn.execute(self.schema.sql.count_func, (func,)).fetchone()[0])

        return self._run(counted)

    def functions(self) -> set[str]:
        def read(conn: Any) -> set[str]:
            if self.schema.columns is None:
                return set()
            return {f for (f,) in conn.execute(self.schema.sql.functions) if f is not None}

        return self._run(read)

    def index(self, size: int = 0) -> Index | None:
        """All keys in one query for a large grid, rather than a query per 4,096 points."""
        if self.schema.memory is not None or size < 10_000:
            return self.schema.memory

        def scan(conn: Any) -> Index | None:
            schema = self.schema
            if schema.columns is None:
                return Index()
            if schema.memory is not None:
                return schema.memory
            keys, plain, text = conn.execute(schema.sql.all_keys).fetchone()
            index = Index()
            index.digests = keys_to_index(keys or "")
            index.plain, index.text = plain, text
            return index

        return self._run(scan)

    # -- claims ------------------------------------------------------------------------

    def claim(self, ident: Identity, owner: Owner, lease: float) -> tuple[Outcome, Claim | None]:
        key = f"{ident.digest:032x}"
        params: dict[str, Any] = {
            "key": key,
            "run": describe(ident),
            "host": owner.host,
            "place": owner.place,
            "pid": owner.pid,
            "started": owner.started,
            "token": owner.token,
            "lease": lease,
            "dead": "",
        }

        def attempt(conn: Any) -> tuple[Outcome, Claim | None]:
            self.schema.widen(conn, ident.names)  # the claim looks at the records table
            view = self._view
            if view.stale() and self.schema.has_claims:
                view.update(conn.execute(self.schema.sql.changes, (view.seq,)).fetchall())
            known = view.answer(key, owner)
            if known is not None:
                return known
            params["keys"] = self._keys(ident)
            # The claim, and then a fresh look at the records in the same round trip: a
            # worker that completed the run while the claim ran may not have been seen
            # by the claim statement's snapshot (it deleted its claim as it recorded).
            with conn.pipeline():
                claimed = conn.execute(self.schema.sql.claim, params)
                recorded = conn.execute(self.schema.sql.lookup, (params["keys"],))
            row = claimed.fetchone()
            done_now = recorded.fetchone() is not None
            done, gen, expires, since = row[0], row[1], row[2], row[3]
            if done:
                view.forget()  # finished by another worker, and the view did not know
                return Outcome.DONE, None
            if gen is not None:
                if done_now:
                    conn.execute(self.schema.sql.release, (key, owner.token))
                    return Outcome.DONE, None
                mine = Claim(key, params["run"], owner, float(expires), int(gen), since=since)
                return Outcome.CLAIMED, mine
            if done_now:
                view.forget()
                return Outcome.DONE, None
            current = _claim(key, row[4:])
            if current is not None and current.owner.dead() and not params["dead"]:
                params["dead"] = current.owner.token  # a process of this machine that ended
                return attempt(conn)
            view.forget()  # it did not know this claim: it is behind
            return Outcome.BUSY, current

        return self._run(attempt, write=True)

    def renew(self, held: Sequence[tuple[Identity, Owner, float]]) -> list[Identity]:
        keys = [f"{ident.digest:032x}" for ident, _, _ in held]
        tokens = [owner.token for _, owner, _ in held]
        leases = [float(lease) for _, _, lease in held]

        def beat(conn: Any) -> list[Identity]:
            kept = {r[0] for r in conn.execute(self.schema.sql.renew, (keys, tokens, leases))}
            return [ident for (ident, _, _), key in zip(held, keys, strict=True) if key not in kept]

        return self._run(beat, write=True)

    def release(self, ident: Identity, owner: Owner) -> None:
        key = f"{ident.digest:032x}"
        self._run(lambda conn: conn.execute(self.schema.sql.release, (key, owner.token)), True)

    def complete(
        self, ident: Identity, owner: Owner, extra: Mapping[str, str] | None = None
    ) -> bool:
        stamp = utc_now()

        def finish(conn: Any) -> bool:
            self.schema.widen(conn, ident.names)
            keys = self._keys(ident)
            query, values = self.schema.complete(ident, owner, stamp, extra, keys)
            added, _ = conn.execute(query, values).fetchone()
            self._completions += 1
            if self._completions % 500 == 0:
                conn.execute(self.schema.sql.sweep)  # tombstones of long-finished runs
            return bool(added)

        return self._run(finish, write=True)

    def _claims(self, conn: Any) -> list[Claim]:
        if not self.schema.has_claims:
            return []
        rows = conn.execute(self.schema.sql.claims).fetchall()
        found = (_claim(row[0], row[1:]) for row in rows)
        return [c for c in found if c is not None and not c.stale()]

    def in_progress(self) -> list[Claim]:
        return self._run(self._claims)

    # -- the ledger --------------------------------------------------------------------

    def note(self, event: Event) -> None:
        values = (
            event.kind,
            event.key,
            json.dumps(event.run, ensure_ascii=False),
            event.types,
            event.func,
            event.timestamp,
            json.dumps(event.details, ensure_ascii=False),
        )
        self._run(lambda conn: conn.execute(self.schema.sql.note, values), write=True)

    def events(self) -> list[Event]:
        def read(conn: Any) -> list[Event]:
            if not self.schema.has_ledger:
                return []
            return [
                Event(e, k, json.loads(r), t, f, ts, json.loads(d) or {})
                for e, k, r, t, f, ts, d in conn.execute(self.schema.sql.events)
            ]

        return self._run(read)

    def failures(self, ident: Identity) -> int:
        key = f"{ident.digest:032x}"

        def read(conn: Any) -> int:
            if not self.schema.has_ledger:
                return 0
            found = conn.execute(self.schema.sql.failures, (key, FAILURE, key, RESET)).fetchone()
            return int(found[0])

        return self._run(read)


def _claim(key: str, row: Sequence[Any]) -> Claim | None:
    """The claim in the columns ``run ... gen, since, expired`` (see `_pgschema._Sql`)."""
    run, host, place, pid, started, token, expires, gen, since, expired = row
    if token is None:
        return None
    owner = Owner(host, place or "", int(pid), int(started or 0), token)
    when = None if since is None else float(since)
    return Claim(key, run, owner, float(expires), int(gen or 1), bool(expired), when)
