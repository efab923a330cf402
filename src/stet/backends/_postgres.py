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

import contextlib
import json
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any, TypeVar

from stet._errors import StoreError
from stet._identity import Identity
from stet.backends._base import BaseBackend, Lookup
from stet.backends._claims import Claim, Outcome, Owner
from stet.backends._index import Index
from stet.backends._ledger import FAILURE, RESET, Event
from stet.backends._locking import forks
from stet.backends._pgschema import Schema
from stet.backends._pgurl import parse_url
from stet.backends._records import describe, utc_now

__all__ = ["PostgresBackend"]

T = TypeVar("T")

# Connections inherited across a fork are never closed in the child: closing would
# send the server a goodbye on the parent's socket.
_abandoned: list[Any] = []


def psycopg_module() -> ModuleType:
    """psycopg, or an ImportError saying how to install it."""
    try:
        import psycopg
    except ImportError:
        raise ImportError(
            "stet: the PostgreSQL store needs psycopg 3. Install it with: "
            'pip install "stet[postgres]"'
        ) from None
    return psycopg


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name, "")
    try:
        return float(text) if text else default
    except ValueError:
        raise ValueError(f"stet: {name}={text!r} is not a number of seconds") from None


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

    def bad(self, problem: str) -> StoreError:
        """An error naming this table and what is wrong."""
        return StoreError(
            f"stet: cannot use table {self.table} at {self.url.shown} as a store: "
            f"{self.url.scrub(problem)}. stet has not modified it."
        )

    # -- connections and retries -----------------------------------------------------

    def _connect(self) -> Any:
        psycopg = psycopg_module()
        timeout = max(1, math.ceil(_seconds("STET_CONNECT_TIMEOUT", 10)))
        statement_ms = int(_seconds("STET_STATEMENT_TIMEOUT", 60) * 1000)
        options = (
            f"-c statement_timeout={statement_ms} -c lock_timeout={statement_ms} "
            f"-c idle_in_transaction_session_timeout={statement_ms}"
        )
        params = {
            "keepalives": "1",
            "keepalives_idle": "30",
            "keepalives_interval": "10",
            "keepalives_count": "3",
            "application_name": "stet",
            "options": options,
            **self.url.params,
        }
        return psycopg.connect(autocommit=True, connect_timeout=timeout, **params)

    def _conn(self) -> Any:
        self._ensure_process()
        local = self._local
        if local.conn is not None and local.forks == forks() and not local.conn.closed:
            return local.conn
        if local.conn is not None and local.forks != forks():
            _abandoned.append(local.conn)
        local.conn = None
        local.forks = forks()
        local.conn = self._connect()
        self._reached = True
        return local.conn

    def _drop_conn(self) -> None:
        local = self._local
        with contextlib.suppress(Exception):
            if local.conn is not None and local.forks == forks():
                local.conn.close()
        local.conn = None

    def _run(self, op: Callable[[Any], T], write: bool = False) -> T:
        """Run ``op(conn)``, retrying what a restart or a dropped connection interrupted."""
        psycopg = psycopg_module()
        deadline: float | None = None
        pause = 0.05
        warned = False
        while True:
            try:
                conn = self._conn()
                if write:
                    self.schema.ensure(conn)
                else:
                    self.schema.inspect(conn)
                return op(conn)
            except psycopg.OperationalError as exc:
                self._drop_conn()
                self.schema.forget()
                if not self._transient(exc):
                    raise self._error(exc) from None
                now = time.monotonic()
                if deadline is None:
                    deadline = now + _seconds("STET_RETRY_TIMEOUT", 300)
                if now > deadline:
                    raise self._error(exc, " (gave up retrying; STET_RETRY_TIMEOUT)") from None
                if not warned:
                    warned = True
                    warnings.warn(
                        f"stet: {self.location}: {self.url.scrub(_first_line(exc))}; "
                        "retrying until it is back",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
            except psycopg.Error as exc:
                raise self._error(exc) from None

    def _transient(self, exc: Exception) -> bool:
        """Whether ``exc`` may pass if the operation is repeated."""
        state = getattr(exc, "sqlstate", None) or ""
        text = str(exc)
        if state in ("53300", "57P03") or "too many" in text or "starting up" in text:
            return True  # the server is there, but cannot take us yet
        return self._reached  # a server reached before: it is restarting or the link broke

    def _error(self, exc: Exception, note: str = "") -> StoreError:
        psycopg = psycopg_module()
        text = self.url.scrub(_first_line(exc))
        if isinstance(exc, psycopg.ProgrammingError) and "connection option" in text:
            return StoreError(
                f"stet: the store URL {self.url.shown} has a parameter PostgreSQL does not "
                f"know ({text}). Parameters are libpq's (sslmode, connect_timeout, ...) and "
                "stet's table=name, all lower case."
            )
        if isinstance(exc, psycopg.OperationalError):
            return StoreError(f"stet: cannot reach PostgreSQL at {self.url.shown}: {text}{note}")
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return StoreError(
                f"stet: PostgreSQL at {self.url.shown} refused access to table {self.table}: "
                f"{text}. Ask for the privileges, or use a table of your own (?table=...)."
            )
        return self.bad(text)

    # -- BaseBackend interface ---------------------------------------------------

    def exists(self) -> bool:
        return self._run(lambda conn: self.schema.columns is not None)

    def check_writable(self) -> None:
        self._run(lambda conn: None, write=True)

    def _keys(self, ident: Lookup, conn: Any) -> list[str]:
        # A run recorded without a function name costs nothing more to look for; runs
        # matched by text alone only in a table that holds some (checked every 5 s).
        self.schema.refresh_kinds(conn)
        keys = [f"{ident.digest:032x}", f"{ident.plain:032x}"]
        if self.schema.kinds.text:
            keys.append(f"{ident.legacy:032x}")
        return keys

    def contains(self, ident: Lookup) -> bool:
        def look(conn: Any) -> bool:
            if self.schema.columns is None:
                return False
            if self.schema.memory is not None:
                return self.schema.memory.has(ident)
            found = conn.execute(self.schema.sql.lookup, (self._keys(ident, conn),)).fetchone()
            return found is not None

        return self._run(look)

    def completed(self, idents: Sequence[Lookup]) -> list[bool]:
        def look(conn: Any) -> list[bool]:
            if self.schema.columns is None:
                return [False] * len(idents)
            if self.schema.memory is not None:
                return [self.schema.memory.has(i) for i in idents]
            wanted = [self._keys(i, conn) for i in idents]
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
            self.schema.widen(conn, {n for i in idents for n in i.names})
            added = 0
            with conn.transaction():
                for ident in idents:
                    keys = self._keys(ident, conn)
                    query, values = self.schema.insert(ident, stamp, extra, keys)
                    added += conn.execute(query, values).rowcount
                    self.schema.note_kind(conn, ident)
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
                    conn.execute(self.schema.sql.delete, ([key for key, _ in removed],))
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

    def index(self) -> Index | None:
        return self.schema.memory

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
            params["keys"] = self._keys(ident, conn)
            # The claim, and then a fresh look at the records in the same round trip: a
            # worker that completed the run while the claim ran may not have been seen
            # by the claim statement's snapshot (it deleted its claim as it recorded).
            with conn.pipeline():
                claimed = conn.execute(self.schema.sql.claim, params)
                recorded = conn.execute(self.schema.sql.lookup, (params["keys"],))
            row = claimed.fetchone()
            done_now = recorded.fetchone() is not None
            done, gen, expires = row[0], row[1], row[2]
            if done:
                return Outcome.DONE, None
            if gen is not None:
                if done_now:
                    conn.execute(self.schema.sql.release, (key, owner.token))
                    return Outcome.DONE, None
                return Outcome.CLAIMED, Claim(key, params["run"], owner, float(expires), int(gen))
            if done_now:
                return Outcome.DONE, None
            current = _claim(key, row[3:])
            if current is not None and current.owner.dead() and not params["dead"]:
                params["dead"] = current.owner.token  # a process of this machine that ended
                return attempt(conn)
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
            self.schema.widen(conn, set(ident.names))
            keys = self._keys(ident, conn)
            query, values = self.schema.complete(ident, owner, stamp, extra, keys)
            added, _ = conn.execute(query, values).fetchone()
            self.schema.note_kind(conn, ident)
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
    """The claim in the columns ``run, host, place, pid, started, token, expires, gen, expired``."""
    run, host, place, pid, started, token, expires, gen, expired = row
    if token is None:
        return None
    owner = Owner(host, place or "", int(pid), int(started or 0), token)
    return Claim(key, run, owner, float(expires), int(gen or 1), expired=bool(expired))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
