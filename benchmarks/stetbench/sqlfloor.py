"""The SQLite floor: the least a decorator that keeps its runs in SQLite does per call.

`floor` bounds what any decorator can do in Python; this bounds what one can do with
its runs in a SQLite database, through the standard ``sqlite3`` module. stet's SQLite
figures are also reported as ratios to it, measured in the same run on the same keys,
so that what SQLite itself costs at each size is told apart from what stet adds.

- `SqliteFloor.skip`: `floor.SkipFloor`'s binding, then one query for the key values
  on a cursor made once.
- `SqliteFloor.record`: the same, then the body, then ``BEGIN IMMEDIATE``, one
  ``INSERT`` (key values and a UTC ISO timestamp) and ``COMMIT``: in WAL mode with
  ``synchronous=NORMAL``, a commit survives a crash of the process, as stet's does.
- `pending`: every key read with one ``SELECT`` into a set of tuples, then the points
  of a dict-of-lists grid not in it, as dicts (what ``f.pending(grid)`` yields), with
  the garbage collector paused (a million tuples would set it off again and again).

The table is the cheapest correct layout for one function's runs: a column per key
parameter holding the values as SQLite stores them (integers, reals), a unique index
over them, and a timestamp. stet's table is larger (text cells, a 32-character digest
indexed, its own columns), since it must hold many functions and say which is which.
Both use the same page cache (64 MB) and checkpoint interval (8,192 pages).
"""

from __future__ import annotations

import functools
import gc
import inspect
import sqlite3
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from itertools import product
from pathlib import Path
from typing import Any

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA cache_size=-65536",
    "PRAGMA wal_autocheckpoint=8192",
)


def _columns(width: int) -> list[str]:
    """The key columns of the floor's table, one per key parameter."""
    return [f"k{i}" for i in range(width)]


class SqliteFloor:
    """A database of completed runs of one function, keyed by ``width`` values."""

    def __init__(self, path: Path, width: int) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None)
        for pragma in _PRAGMAS:
            self.conn.execute(pragma)
        columns = _columns(width)
        listed = ", ".join(columns)
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS runs ({listed}, at TEXT)")
        self.conn.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS runs_key ON runs ({listed})")
        where = " AND ".join(f"{c} = ?" for c in columns)
        self.select = f"SELECT 1 FROM runs WHERE {where}"
        self.insert = f"INSERT INTO runs VALUES ({', '.join('?' * (width + 1))})"

    def close(self) -> None:
        self.conn.close()

    def mark(self, points: Iterable[tuple[Any, ...]]) -> None:
        """Record these key tuples as completed runs, in one transaction."""
        stamp = datetime.now(UTC).isoformat(timespec="microseconds")
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(self.insert, ((*p, stamp) for p in points))
        self.conn.execute("COMMIT")

    def skip(self, func: Callable[..., Any], key: Iterable[str] | None = None) -> Any:
        """``func`` decorated to skip the runs the database holds."""
        return self._decorate(func, key, record=False)

    def record(self, func: Callable[..., Any], key: Iterable[str] | None = None) -> Any:
        """``func`` decorated to skip recorded runs and record the others."""
        return self._decorate(func, key, record=True)

    def _decorate(self, func: Callable[..., Any], key: Iterable[str] | None, record: bool) -> Any:
        signature = inspect.signature(func)
        names = tuple(key) if key is not None else tuple(signature.parameters)
        bind = signature.bind
        execute = self.conn.cursor().execute
        select, insert = self.select, self.insert

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = bound.arguments
            values = [arguments[n] for n in names]
            if execute(select, values).fetchone() is not None:
                return None
            result = func(*args, **kwargs)
            if record:
                stamp = datetime.now(UTC).isoformat(timespec="microseconds")
                execute("BEGIN IMMEDIATE")
                execute(insert, [*values, stamp])
                execute("COMMIT")
            return result

        return wrapper


def pending(path: str, grid: dict[str, list[Any]]) -> dict[str, Any]:
    """Seconds to list the points of ``grid`` the database at ``path`` does not hold."""
    gc.collect()
    gc.disable()
    start = time.perf_counter()
    conn = sqlite3.connect(path)
    done = set(conn.execute(f"SELECT {', '.join(_columns(len(grid)))} FROM runs"))
    names = list(grid)
    left = [dict(zip(names, p, strict=True)) for p in product(*grid.values()) if p not in done]
    seconds = time.perf_counter() - start
    gc.enable()
    conn.close()
    return {"dict_s": seconds, "dict_left": len(left)}
