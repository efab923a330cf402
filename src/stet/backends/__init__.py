"""Stores of completed runs, one module per format behind `BaseBackend`.

``get_backend(path)`` picks the store by file name ending. The backend classes are
imported on first use, so ``import stet`` stays fast and pyarrow is needed only for
Parquet.
"""

from __future__ import annotations

import importlib
import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stet.backends._base import BaseBackend
from stet.backends._records import Row

if TYPE_CHECKING:
    from stet.backends._csv import CsvBackend
    from stet.backends._json import JsonBackend
    from stet.backends._parquet import ParquetBackend
    from stet.backends._postgres import PostgresBackend
    from stet.backends._sqlite import SqliteBackend

__all__ = [
    "BaseBackend",
    "CsvBackend",
    "JsonBackend",
    "ParquetBackend",
    "PostgresBackend",
    "Row",
    "SqliteBackend",
    "SUFFIXES",
    "get_backend",
    "is_url",
    "open_store",
]

# File name ending -> (module, class). A new store is one module and one line here.
_REGISTRY: dict[str, tuple[str, str]] = {
    ".csv": ("stet.backends._csv", "CsvBackend"),
    ".json": ("stet.backends._json", "JsonBackend"),
    ".sqlite": ("stet.backends._sqlite", "SqliteBackend"),
    ".db": ("stet.backends._sqlite", "SqliteBackend"),
    ".parquet": ("stet.backends._parquet", "ParquetBackend"),
}
# URL scheme -> (module, class), for stores that are servers rather than files.
_SCHEMES: dict[str, tuple[str, str]] = {
    "postgresql": ("stet.backends._postgres", "PostgresBackend"),
    "postgres": ("stet.backends._postgres", "PostgresBackend"),
}
_CLASSES = {cls: module for module, cls in (*_REGISTRY.values(), *_SCHEMES.values())}


def is_url(store: str | os.PathLike[str]) -> bool:
    """Whether ``store`` names a server (``scheme://...``) rather than a file."""
    return "://" in os.fspath(store)


#: The file name endings stet knows, in the order the docs list them.
SUFFIXES = tuple(_REGISTRY)


def __getattr__(name: str) -> Any:
    module = _CLASSES.get(name)
    if module is None:
        raise AttributeError(f"module 'stet.backends' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def _backend_class(path: str) -> type[BaseBackend]:
    if is_url(path):
        scheme = path.split("://", 1)[0].lower()
        entry = _SCHEMES.get(scheme)
        if entry is None:
            raise ValueError(
                f"stet: unknown store URL scheme {scheme!r}; use postgresql://..., or a "
                f"file ending in one of {', '.join(SUFFIXES)}"
            )
    else:
        suffix = os.path.splitext(path)[1].lower()
        found = _REGISTRY.get(suffix)
        if found is None:
            raise ValueError(
                f"Unsupported store extension {suffix or '(none)'!r} for {path!r}: stet "
                f"stores end in one of {', '.join(SUFFIXES)} (or are a postgresql:// URL)"
            )
        entry = found
    module, cls = entry
    backend: type[BaseBackend] = getattr(importlib.import_module(module), cls)
    return backend


def get_backend(path: str | os.PathLike[str]) -> BaseBackend:
    """Return a new backend for the store at ``path``, chosen by its file ending.

    ``path`` may also be a ``postgresql://`` URL (needs ``pip install "stet[postgres]"``).

    Raises:
        ValueError: for an ending stet does not know; the message lists the known ones.
        ImportError: for ``.parquet`` without pyarrow, saying how to install it.
    """
    text = os.fspath(path)
    return _backend_class(text)(text)


#: The backends decorated functions use, while some function uses them (a notebook that
#: redefines its functions over and over must not keep every old store open).
_open: weakref.WeakValueDictionary[str, BaseBackend] = weakref.WeakValueDictionary()


def open_store(store: str | os.PathLike[str]) -> BaseBackend:
    """The backend for ``store`` shared by everything in this process.

    Decorated functions naming the same file share one backend, so they share its
    index and never lock against each other. Relative paths are resolved against the
    current directory now.
    """
    key = os.fspath(store) if is_url(store) else str(Path(os.fspath(store)).absolute())
    backend = _open.get(key)
    if backend is None:
        backend = get_backend(key)
        _open[key] = backend
    return backend
