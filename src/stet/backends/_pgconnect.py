"""Connections to a PostgreSQL store: one per thread, and retries when they break.

A dropped connection, a server restart or "too many connections" is retried with a
growing pause (every statement stet runs is safe to repeat), for up to
``STET_RETRY_TIMEOUT`` seconds, once this process has reached the server: a server
that was never there fails at once. Every psycopg error becomes a `StoreError` whose
message never shows the password.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from stet._errors import StoreError
from stet.backends._locking import forks

if TYPE_CHECKING:
    from stet.backends._postgres import PostgresBackend

__all__ = ["psycopg_module", "run"]

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


def connect(store: PostgresBackend) -> Any:
    """A new connection, with timeouts so that one frozen client cannot stall others."""
    psycopg = psycopg_module()
    timeout = max(1, math.ceil(_seconds("STET_CONNECT_TIMEOUT", 10)))
    statement_ms = int(_seconds("STET_STATEMENT_TIMEOUT", 60) * 1000)
    # enable_seqscan=off: stet only ever looks rows up by key, and a table the planner
    # still believes empty (a new store, a big batch in one transaction) would otherwise
    # be scanned whole for every row inserted, which made a fill quadratic.
    options = (
        f"-c statement_timeout={statement_ms} -c lock_timeout={statement_ms} "
        f"-c idle_in_transaction_session_timeout={statement_ms} -c enable_seqscan=off"
    )
    params = {
        "keepalives": "1",
        "keepalives_idle": "30",
        "keepalives_interval": "10",
        "keepalives_count": "3",
        "application_name": "stet",
        "options": options,
        **store.url.params,
    }
    return psycopg.connect(autocommit=True, connect_timeout=timeout, **params)


def connection(store: PostgresBackend) -> Any:
    """This thread's connection (a new one after a fork, or after it broke)."""
    store._ensure_process()
    local = store._local
    if local.conn is not None and local.forks == forks() and not local.conn.closed:
        return local.conn
    if local.conn is not None and local.forks != forks():
        _abandoned.append(local.conn)
    local.conn = None
    local.forks = forks()
    local.conn = connect(store)
    store._reached = True
    return local.conn


def drop_conn(store: PostgresBackend) -> None:
    """Forget this thread's connection (it broke)."""
    local = store._local
    with contextlib.suppress(Exception):
        if local.conn is not None and local.forks == forks():
            local.conn.close()
    local.conn = None


def run(store: PostgresBackend, op: Callable[[Any], T], write: bool = False) -> T:
    """Run ``op(conn)``, retrying what a restart or a dropped connection interrupted."""
    psycopg = psycopg_module()
    deadline: float | None = None
    pause = 0.05
    warned = False
    looked_again = False
    while True:
        try:
            conn = connection(store)
            if write:
                store.schema.ensure(conn)
            else:
                store.schema.inspect(conn)
            return op(conn)
        except psycopg.errors.UndefinedTable as exc:
            # The tables were dropped (stet.reset through another backend object or
            # another process) since this process looked: look again, once.
            store.schema.forget()
            if looked_again:
                raise error(store, exc) from None
            looked_again = True
        except psycopg.OperationalError as exc:
            drop_conn(store)
            store.schema.forget()
            if not transient(store, exc):
                raise error(store, exc) from None
            now = time.monotonic()
            if deadline is None:
                deadline = now + _seconds("STET_RETRY_TIMEOUT", 300)
            if now > deadline:
                raise error(store, exc, " (gave up retrying; STET_RETRY_TIMEOUT)") from None
            if not warned:
                warned = True
                warnings.warn(
                    f"stet: {store.location}: {store.url.scrub(first_line(exc))}; "
                    "retrying until it is back",
                    RuntimeWarning,
                    stacklevel=3,
                )
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
        except psycopg.Error as exc:
            raise error(store, exc) from None


def transient(store: PostgresBackend, exc: Exception) -> bool:
    """Whether ``exc`` may pass if the operation is repeated."""
    state = getattr(exc, "sqlstate", None) or ""
    text = str(exc)
    if state in ("53300", "57P03") or "too many" in text or "starting up" in text:
        return True  # the server is there, but cannot take us yet
    return store._reached  # a server reached before: it is restarting or the link broke


def error(store: PostgresBackend, exc: Exception, note: str = "") -> StoreError:
    psycopg = psycopg_module()
    text = store.url.scrub(first_line(exc))
    if isinstance(exc, psycopg.ProgrammingError) and "connection option" in text:
        return StoreError(
            f"stet: the store URL {store.url.shown} has a parameter PostgreSQL does not "
            f"know ({text}). Parameters are libpq's (sslmode, connect_timeout, ...) and "
            "stet's table=name, all lower case."
        )
    if isinstance(exc, psycopg.OperationalError):
        return StoreError(f"stet: cannot reach PostgreSQL at {store.url.shown}: {text}{note}")
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return StoreError(
            f"stet: PostgreSQL at {store.url.shown} refused access to table {store.table}: "
            f"{text}. Ask for the privileges, or use a table of your own (?table=...)."
        )
    return store.bad(text)


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
