"""Filling stores with records, checking them, and the few readings of stet's insides.

THIS IS THE ONLY MODULE THAT USES STET INTERNALS (anything not in S2's public API).
The internals are being rewritten, so each use sits in a function marked
``# INTERNALS`` and is wrapped: when it raises AttributeError or ImportError the
benchmark goes on without it:

- `fill` writes a store of ``n`` records. Its fast path builds the runs' identities
  (``stet._identity.identity_of``, under the benchmark function's name) and writes them
  with one ``backend.add_many``, so the files are exactly what stet writes. Its
  fallback calls the decorated benchmark function once per record through the public
  API: slow, but always right. The fallback is taken on AttributeError, ImportError or
  TypeError (a renamed or re-signed internal), or when the rows counted with pandas &
  co. are not all there.
- `index_bytes` and `skip_parts` read ``backend._index`` and time the identity and
  lookup halves of a skip; they report None when the internals are gone (RSS growth,
  measured in `child`, is the figure the targets use).

Everything else here uses the public API or the store formats of S3 (counting rows
with pandas, json, sqlite3 and psycopg, as a user would).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from stetbench.plan import point
from stetbench.timing import progress


@dataclass(frozen=True)
class Rows:
    """The records ``0 .. n-1`` of a store keyed by ``names`` (see `plan.point`)."""

    names: tuple[str, ...]
    n: int

    def key(self, i: int) -> dict[str, Any]:
        return dict(zip(self.names, point(self.names, i), strict=True))


def is_url(store: str) -> bool:
    return "://" in store


def pg_url(base: str, table: str) -> str:
    """``base`` (a postgresql:// URL) pointing at ``table``."""
    parts = urlsplit(base)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "table"] + [("table", table)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def fill(store: str, rows: Rows, func: Callable[..., Any], check: bool = True) -> str:
    """Make ``store`` (a new file or table) hold exactly ``rows``; return how it was filled.

    ``func`` is the benchmark function whose runs these are; the slow fallback calls it
    decorated, once per record. ``check=False`` leaves `check_filled` to the caller, for
    a store whose first reader must be a fresh process (a cold start).
    """
    try:
        _fill_internal(store, rows, func)
        found = count_rows(store)  # with the user's tools: stet has not read it yet
        if found != rows.n:
            raise _Unfilled(f"the fast fill wrote {found} records, not {rows.n}")
        how = "internal"
    except (AttributeError, ImportError, TypeError, _Unfilled) as exc:
        progress(f"fast fill unavailable ({type(exc).__name__}: {exc}); public API, slowly")
        _clear(store)
        _fill_public(store, rows, func)
        how = "public"
    if check:
        check_filled(store, rows)
    return how


class _Unfilled(Exception):
    """The fast fill ran but the store does not hold what it should."""


def _fill_public(store: str, rows: Rows, func: Callable[..., Any]) -> None:
    import stet

    decorated = stet.once(store=store, key=list(rows.names), quiet=True)(func)
    for i in range(rows.n):
        decorated(*point(rows.names, i))


def _clear(store: str) -> None:
    """Remove what a failed fast fill may have left."""
    if is_url(store):
        drop_tables([store])
        return
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(store + suffix).unlink(missing_ok=True)


def check_filled(store: str, rows: Rows) -> None:
    """Read the store back with a fresh backend: first and last record in, next one out."""
    from stet.backends import get_backend

    backend = get_backend(store)
    for i, expect in ((0, True), (rows.n - 1, True), (rows.n, False)):
        if backend.has(rows.key(i)) is not expect:
            raise SystemExit(f"benchmark store {store} was not filled as stet reads it")


# -- INTERNALS: the fast fill ------------------------------------------------------------


def _fill_internal(store: str, rows: Rows, func: Callable[..., Any]) -> None:  # INTERNALS
    """One ``backend.add_many`` of the runs ``func`` would record, under its name.

    A file store's records get the columns a sweep's records have (duration, host),
    so that its file is as large as a real one and a fold finds the columns it knows.
    """
    import socket

    from stet._identity import identity_of
    from stet.backends import get_backend

    name = func.__qualname__
    idents = [identity_of(rows.key(i), func=name) for i in range(rows.n)]
    backend: Any = get_backend(store)
    if hasattr(backend, "_add_locked"):
        extra = {"_stet_duration": "0.000004", "_stet_host": socket.gethostname()}
        backend._prepare_write()
        backend._locked(lambda: backend._add_locked(idents, extra))
    else:
        backend.add_many(idents)
    fold = getattr(backend, "fold", None)
    if fold is not None:
        fold()  # Parquet: the journal into the file, as at the end of a sweep


def index_bytes(decorated: Any) -> int | None:  # INTERNALS: _stet_runner, backend._index
    """Size of a file store's in-memory index (dict and keys), or None."""
    import sys

    try:
        index = decorated._stet_runner.backend._index.digests
    except AttributeError:
        return None
    return sys.getsizeof(index) + sum(sys.getsizeof(d) for d in index)


def skip_parts(decorated: Any, points: list[tuple[Any, ...]]) -> dict[str, float | None]:
    """Median us of the two halves of a skip: the run identity, then the store lookup.

    INTERNALS: ``_stet_runner.binder.identity`` and ``backend.contains``; None when missing.
    """
    try:
        runner = decorated._stet_runner
        backend = runner.backend
        identity = runner.binder.identity
        idents = [identity(p, {}) for p in points]
        contains = backend.contains
    except (AttributeError, TypeError):
        return {"identity_us": None, "lookup_us": None}
    clock = time.perf_counter_ns
    ident_ns, look_ns = [], []
    for p in points:
        start = clock()
        identity(p, {})
        ident_ns.append(clock() - start)
    for ident in idents:
        start = clock()
        contains(ident)
        look_ns.append(clock() - start)
    return {
        "identity_us": statistics.median(ident_ns) / 1000,
        "lookup_us": statistics.median(look_ns) / 1000,
    }


def claims_table(url: str) -> str:  # INTERNALS: the claims table is named <table>_claims
    return _table_of(url) + "_claims"


# -- public formats (S3) -------------------------------------------------------------------


def _table_of(url: str) -> str:
    tables = [v for k, v in parse_qsl(urlsplit(url).query) if k == "table"]
    return tables[-1] if tables else "stet_records"


def _connect(url: str) -> Any:
    import psycopg

    parts = urlsplit(url)
    rest = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "table"])
    return psycopg.connect(urlunsplit(parts._replace(query=rest)), autocommit=True)


def drop_tables(urls: list[str]) -> None:
    """Drop the record and claims tables of these PostgreSQL stores, if they exist."""
    from psycopg import sql

    if not urls:
        return
    with _connect(urls[0]) as conn:
        for url in urls:
            base = _table_of(url)
            for table in (base, f"{base}_claims", f"{base}_ledger"):
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
            sequence = sql.Identifier(f"{base}_cseq")
            conn.execute(sql.SQL("DROP SEQUENCE IF EXISTS {}").format(sequence))


def count_rows(store: str) -> int:
    """Completed records as a user's own tools see them (pandas, json, sqlite3, psycopg)."""
    if is_url(store):
        from psycopg import sql

        with _connect(store) as conn:
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(_table_of(store)))
            return int(conn.execute(query).fetchone()[0])
    if store.endswith(".csv"):
        import pandas

        return len(pandas.read_csv(store, dtype=str, keep_default_na=False))
    if store.endswith(".json"):
        return len(json.loads(Path(store).read_text(encoding="utf-8")))
    if store.endswith((".sqlite", ".db")):
        import contextlib
        import sqlite3

        with contextlib.closing(sqlite3.connect(store)) as conn:
            return int(conn.execute("SELECT count(*) FROM stet_records").fetchone()[0])
    if store.endswith(".parquet"):
        import pandas

        return len(pandas.read_parquet(store))
    raise ValueError(store)


def forget(store: str) -> None:  # INTERNALS: stet.backends._open, the per-process cache
    """Let this process drop stet's backend for ``store`` (its index, its connection)."""
    try:
        from stet.backends import _open
    except ImportError:
        return
    key = store if is_url(store) else str(Path(store).absolute())
    _open.pop(key, None)
