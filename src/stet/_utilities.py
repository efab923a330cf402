"""Looking at and editing a store: ``status``, ``reset`` and ``load``."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from stet._decorator import DEFAULT_STORE
from stet._identity import identity_of, parse_types
from stet.backends import BaseBackend, get_backend, is_url
from stet.backends._base import Row

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["UnknownKeyColumn", "load", "reset", "status"]


def _existing(store_path: str | os.PathLike[str]) -> BaseBackend:
    backend = get_backend(store_path)
    if not backend.exists():
        raise FileNotFoundError(
            f"stet: no store at {backend.location}; it is created when the first "
            "decorated call completes (check the path and the current directory)"
        )
    return backend


def _where(store_path: str | os.PathLike[str], backend: BaseBackend) -> str:
    return backend.location if is_url(store_path) else os.fspath(store_path)


def status(store_path: str | os.PathLike[str] = DEFAULT_STORE, grid: Any = None) -> None:
    """Print a summary of a store: its path, record count, last run and key columns.

    Args:
        store_path: the store file or URL.
        grid: optionally, the sweep's grid (a dict of lists meaning their product, or
            an iterable of dicts of key values) to print ``k / N done`` and an ETA
            from the pace of the most recent runs.

    Raises:
        FileNotFoundError: when there is no store at ``store_path``.
    """
    backend = _existing(store_path)
    rows = backend.rows()
    last = max((row.timestamp for row in rows), default="never")
    columns = backend.key_columns()
    print(f"[stet] Store: {_where(store_path, backend)}")
    print(f"[stet] {len(rows)} completed experiments recorded")
    print(f"[stet] Last run: {last}")
    print(f"[stet] Key columns: {', '.join(columns) if columns else '(none)'}")
    running = backend.in_progress()
    if running:
        print(f"[stet] {len(running)} runs in progress (claimed by live workers)")
    if grid is not None:
        total, done = _progress(backend, grid)
        share = 100.0 * done / total if total else 100.0
        print(f"[stet] Progress: {done} / {total} done ({share:.1f}%)")
        if done < total:
            print(f"[stet] ETA: {_eta(rows, total - done)}")


def _progress(backend: BaseBackend, grid: Any) -> tuple[int, int]:
    """How many points the grid has, and how many of them completed."""
    points: Iterable[Mapping[str, Any]]
    if isinstance(grid, Mapping):
        names = list(grid)
        points = (
            dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(grid[n] for n in names))
        )
    else:
        points = grid
    total = done = 0
    iterator = iter(points)
    while batch := list(itertools.islice(iterator, 4096)):
        for point in batch:
            if not isinstance(point, Mapping):
                raise TypeError(
                    "stet: status(grid=...) takes a dict of lists or an iterable of dicts of "
                    f"key values, got a {type(point).__name__} point"
                )
        total += len(batch)
        done += sum(backend.completed([identity_of(point) for point in batch]))
    return total, done


def _eta(rows: list[Row], remaining: int) -> str:
    """Time left for ``remaining`` runs at the pace of the last 50 completions."""
    stamps = sorted(row.timestamp for row in rows)[-50:]
    if len(stamps) < 2:
        return "unknown until two runs have completed"
    first = datetime.fromisoformat(stamps[0])
    last = datetime.fromisoformat(stamps[-1])
    seconds = (last - first).total_seconds()
    if seconds <= 0:
        return "unknown (the recent runs share one timestamp)"
    per_run = seconds / (len(stamps) - 1)
    left = int(per_run * remaining)
    hours, rest = divmod(left, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
    return f"{text} at the recent pace ({per_run:.3g} s per run)"


class UnknownKeyColumn(ValueError):
    """``reset(key_dict=...)`` named a column the store does not have (a typo)."""


def reset(
    store_path: str | os.PathLike[str] = DEFAULT_STORE,
    key_dict: Mapping[str, Any] | None = None,
    *,
    yes: bool = False,
) -> int:
    """Clear a store, or remove the one run ``key_dict`` names.

    Without ``key_dict`` every record is removed; when standard input is a terminal
    stet first asks ``[y/N]``, unless ``yes`` is true. With ``key_dict``, exactly the
    records whose key equals it are removed; values may be Python values
    (``{"alpha": 0.1}``) or their text (``{"alpha": "0.1"}``).

    Returns:
        The number of records removed.

    Raises:
        FileNotFoundError: when there is no store at ``store_path``.
        UnknownKeyColumn: (a ValueError) when ``key_dict`` names a column the store
            does not have; nothing is removed.
    """
    backend = _existing(store_path)
    where = _where(store_path, backend)
    if key_dict is None:
        count = len(backend.rows())
        if not yes and sys.stdin is not None and sys.stdin.isatty():
            answer = input(f"[stet] Remove all {count} records from {where}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("[stet] Aborted.")
                return 0
        backend.clear()
        print(f"[stet] Store cleared: {where}")
        return count
    columns = backend.key_columns()
    unknown = [name for name in key_dict if name not in columns]
    if unknown:
        raise UnknownKeyColumn(
            f"stet: {', '.join(map(repr, unknown))} is not a key column of {where}; its "
            f"key columns are: {', '.join(columns) if columns else '(none)'}. Nothing was "
            "removed."
        )
    removed = backend.remove(key_dict)
    if not removed:
        print(f"[stet] No record matches {dict(key_dict)} in {where}; nothing removed.")
    elif removed == 1:
        print(f"[stet] Removed entry: {dict(key_dict)}")
    else:
        print(f"[stet] Removed {removed} entries: {dict(key_dict)}")
    return removed


_NUMERIC = ("int", "float", "bool")


def load(store: str | os.PathLike[str] = DEFAULT_STORE) -> pd.DataFrame:
    """Read a store into a pandas DataFrame, one row per completed run.

    Key columns whose records all hold ints, floats or bools get that dtype; the
    others stay text (so "NA", "" and "None" stay strings). ``_stet_timestamp`` is a
    UTC datetime column.

    Raises:
        FileNotFoundError: when there is no store at ``store``.
    """
    import pandas as pd

    backend = _existing(store)
    rows: list[Row] = backend.rows()
    columns = backend.key_columns()
    tags: dict[str, set[str]] = {c: set() for c in columns}
    for row in rows:
        if row.types is None:
            for name in row.values:
                tags[name].add("legacy")
            continue
        names, row_tags = parse_types(row.types)
        for name, tag in zip(names, row_tags, strict=True):
            tags.setdefault(name, set()).add(tag)
    data: dict[str, Any] = {}
    for name in tags:
        texts = [row.values.get(name) for row in rows]
        kinds = tags[name]
        if len(kinds) == 1 and next(iter(kinds)) in _NUMERIC and None not in texts:
            kind = next(iter(kinds))
            if kind == "bool":
                data[name] = pd.array([t == "True" for t in texts], dtype="boolean")
            elif kind == "int":
                ints = [int(t) for t in texts if t is not None]
                try:
                    data[name] = pd.array(ints, dtype="int64")
                except OverflowError:
                    data[name] = pd.array(ints, dtype="object")  # beyond 64 bits
            else:
                data[name] = pd.array([float(t) for t in texts if t is not None], dtype="float64")
        else:
            data[name] = pd.array(texts, dtype="object")
    data["_stet_timestamp"] = pd.to_datetime(
        [row.timestamp for row in rows], utc=True, format="ISO8601"
    )
    return pd.DataFrame(data)
