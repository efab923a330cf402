"""Looking at and editing a store: ``status``, ``reset`` and ``load``."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stet._decorator import DEFAULT_STORE
from stet._errors import StoreError
from stet._identity import parse_types
from stet._messages import say
from stet._status import Status, build_status
from stet.backends import BaseBackend, get_backend, is_url
from stet.backends._ledger import FAILURE, RESET
from stet.backends._records import Row

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["UnknownKeyColumn", "load", "reset", "status"]


def existing(store_path: str | os.PathLike[str]) -> BaseBackend:
    """The backend of a store that must exist already.

    Raises:
        FileNotFoundError: naming the store when there is none.
    """
    backend = get_backend(store_path)
    if not backend.exists() and not _has_failures(backend):
        raise FileNotFoundError(
            f"stet: no store at {backend.location}; it is created when the first "
            "decorated call completes (check the path and the current directory)"
        )
    return backend


def _has_failures(backend: BaseBackend) -> bool:
    """Whether a store without records has a ledger (every call so far failed)."""
    try:
        return bool(backend.events())
    except NotImplementedError:
        return False


def where(store_path: str | os.PathLike[str], backend: BaseBackend) -> str:
    """How messages name the store: the path as given, a URL without its password."""
    return backend.location if is_url(store_path) else os.fspath(store_path)


def _ipython() -> Any:
    """The running IPython shell (terminal or Jupyter kernel), or None."""
    module = sys.modules.get("IPython")
    get = getattr(module, "get_ipython", None)
    return get() if get is not None else None


def _shows_results() -> bool:
    """Whether the session displays what a call returns (IPython, Jupyter, a REPL)."""
    return _ipython() is not None or hasattr(sys, "ps1")


def _interactive() -> bool:
    """Whether someone can answer a question: a terminal, or an IPython/Jupyter session."""
    stdin = sys.stdin
    return bool(stdin is not None and stdin.isatty()) or _ipython() is not None


def status(store_path: str | os.PathLike[str] = DEFAULT_STORE, grid: Any = None) -> Status:
    """Summarise a store: its runs, failures, runs in progress and, given a grid, progress.

    In a script it prints the summary, one ``[stet] ...`` line each; in Jupyter the
    returned `Status` shows as a table (in IPython and the Python prompt, as those
    lines).

    Args:
        store_path: the store file or URL.
        grid: optionally, the sweep's grid (a dict of lists meaning their product, or
            an iterable of dicts of key values) to show ``k / N done`` and an ETA from
            the pace of the most recent runs.

    Returns:
        The summary (its attributes hold the numbers).

    Raises:
        FileNotFoundError: when there is no store at ``store_path``.
    """
    backend = existing(store_path)
    summary = build_status(backend, where(store_path, backend), grid)
    if not _shows_results():
        for line in summary.lines():
            print(line)
    return summary


class UnknownKeyColumn(ValueError):
    """``reset(key_dict=...)`` named a column the store does not have (a typo)."""


def reset(
    store_path: str | os.PathLike[str] = DEFAULT_STORE,
    key_dict: Mapping[str, Any] | None = None,
    *,
    yes: bool = False,
) -> int:
    """Remove a whole store, or the one run ``key_dict`` names.

    Without ``key_dict`` the store is removed, as stet 0.0.x did: the file (through a
    symbolic link, the file is emptied instead), or the records table of a database;
    its ledger of failures goes too. In an interactive session (a terminal, IPython or a
    Jupyter notebook) stet first asks ``[y/N]``, unless ``yes`` is true. With
    ``key_dict``, exactly the records whose key equals it are removed, whichever
    function recorded them; values may be Python values (``{"alpha": 0.1}``) or their
    text (``{"alpha": "0.1"}``).

    Returns:
        The number of records removed.

    Raises:
        FileNotFoundError: when there is no store at ``store_path``.
        UnknownKeyColumn: (a ValueError) when ``key_dict`` names a column the store
            does not have; nothing is removed.
    """
    backend = existing(store_path)
    shown = where(store_path, backend)
    if key_dict is None:
        count = backend.count() or 0
        if not yes and _interactive():
            answer = input(f"[stet] Remove all {count} records from {shown}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                say("[stet] Aborted.")
                return 0
        backend.drop()
        say(f"[stet] Store cleared: {shown}")
        return count
    columns = backend.key_columns()
    unknown = [name for name in key_dict if name not in columns]
    if unknown:
        raise UnknownKeyColumn(
            f"stet: {', '.join(map(repr, unknown))} is not a key column of {shown}; its "
            f"key columns are: {', '.join(columns) if columns else '(none)'}. Nothing was "
            "removed."
        )
    removed = backend.remove(key_dict)
    if not removed:
        say(f"[stet] No record matches {dict(key_dict)} in {shown}; nothing removed.")
    elif removed == 1:
        say(f"[stet] Removed entry: {dict(key_dict)}")
    else:
        say(f"[stet] Removed {removed} entries: {dict(key_dict)}")
    return removed


_NUMERIC = ("int", "float", "bool")


def load(store: str | os.PathLike[str] = DEFAULT_STORE, failed: bool = False) -> pd.DataFrame:
    """Read a store into a pandas DataFrame, one row per completed run.

    Key columns whose records all hold ints, floats or bools get that dtype; the
    others stay text (so "NA", "" and "None" stay strings). ``_stet_timestamp`` is a
    UTC datetime column, ``_stet_duration`` seconds as floats.

    Args:
        store: the store file or URL.
        failed: return the failures noted in the store's ledger instead (since each
            run's last reset): key columns, ``_stet_func``, ``error``, ``traceback``,
            ``attempt``, ``host``, ``job``, ``duration`` and ``_stet_timestamp``.

    Raises:
        FileNotFoundError: when there is no store at ``store``.
        StoreError: for a timestamp that is not ISO 8601, naming the file and line.
    """
    import pandas as pd

    backend = existing(store)
    if failed:
        return _failures(backend)
    rows: list[Row] = backend.rows()
    columns = backend.key_columns()
    data = _typed_columns(rows, columns)
    for column in ("_stet_func", "_stet_host", "_stet_job", "_stet_meta"):
        if any(row.cell(column) for row in rows):
            data[column] = pd.array([row.cell(column) for row in rows], dtype="object")
    durations = [row.extra.get("_stet_duration") for row in rows]
    if any(durations):
        data["_stet_duration"] = pd.array(
            [float(d) if d else None for d in durations], dtype="Float64"
        )
    data["_stet_timestamp"] = _timestamps(backend, rows)
    return pd.DataFrame(data)


def _typed_columns(rows: list[Row], columns: list[str]) -> dict[str, Any]:
    import pandas as pd

    tags: dict[str, set[str]] = {c: set() for c in columns}
    for row in rows:
        if row.types is None:
            for name in row.values:
                tags.setdefault(name, set()).add("legacy")
            continue
        names, row_tags = parse_types(row.types)
        for name, tag in zip(names, row_tags, strict=True):
            tags.setdefault(name, set()).add(tag)
    data: dict[str, Any] = {}
    for name in tags:
        texts = [row.values.get(name) for row in rows]
        kinds = tags[name]
        kind = next(iter(kinds)) if len(kinds) == 1 else None
        if kind in _NUMERIC and None not in texts:
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
    return data


def _timestamps(backend: BaseBackend, rows: list[Row]) -> Any:
    import pandas as pd

    stamps = [row.timestamp for row in rows]
    try:
        return pd.to_datetime(stamps, utc=True, format="ISO8601")
    except (ValueError, TypeError):
        for n, row in enumerate(rows, 1):
            try:  # the same parser as above: one that accepts more finds no culprit
                pd.to_datetime(row.timestamp, utc=True, format="ISO8601")
            except (ValueError, TypeError):
                place = f"line {row.line}" if row.line else f"record {n}"
                raise StoreError(
                    f"stet: {backend.location}, {place}: _stet_timestamp {row.timestamp!r} is "
                    "not an ISO 8601 time (like 2026-01-31T12:00:00+00:00). Correct it by hand."
                ) from None
        raise


def _failures(backend: BaseBackend) -> pd.DataFrame:
    import pandas as pd

    events = backend.events()
    reset_at: dict[str, int] = {}
    for n, event in enumerate(events):
        if event.kind == RESET:
            reset_at[event.key] = n
    kept = [e for n, e in enumerate(events) if e.kind == FAILURE and n > reset_at.get(e.key, -1)]
    names: dict[str, None] = {}
    for event in kept:
        names.update(dict.fromkeys(event.run))
    runs = [Row(dict(e.run), e.types or None, e.timestamp) for e in kept]
    data: dict[str, Any] = _typed_columns(runs, list(names))
    data["_stet_func"] = [e.func for e in kept]
    for column in ("error", "traceback", "attempt", "host", "job", "duration"):
        data[column] = [e.details.get(column) for e in kept]
    data["_stet_timestamp"] = pd.to_datetime(
        [e.timestamp for e in kept], utc=True, format="ISO8601"
    )
    return pd.DataFrame(data)
