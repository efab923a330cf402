"""The ``@stet.once`` decorator: skip a call whose run completed, record it otherwise.

This module is the public entry: `once` and the `OnceFunction` protocol. The pieces
live in their own modules: `stet._binding` (arguments to the run), `stet._runner`
(what one call does), `stet._claiming` (recording, claims, failures),
`stet._messages` (what is printed), `stet._grid` (``pending``) and `stet._wrapper`
(the decorated function object).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from stet._grid import Pending
from stet._runner import Runner
from stet._wrapper import wrap
from stet.backends import is_url, open_store

__all__ = ["DEFAULT_LEASE", "DEFAULT_STORE", "OnceFunction", "once"]

P = ParamSpec("P")
T = TypeVar("T")
R_co = TypeVar("R_co", covariant=True)

#: The store used when ``once`` is given none: a CSV file in the current directory.
DEFAULT_STORE = "_stet_store.csv"

#: Seconds a claim lasts without a heartbeat (``once(claim=True)``).
DEFAULT_LEASE = 60.0


class OnceFunction(Protocol[P, R_co]):
    """A function decorated with `once`: callable as before, plus helpers.

    ``R_co`` is what a call returns: ``T | None`` for a function returning ``T`` (None
    when the run is skipped), ``Coroutine[Any, Any, T | None]`` for an ``async def``.

    Attributes:
        store: absolute path (or URL) of the store recording this function's runs.
        key: the names of the parameters that identify a run.
        name: the function name its runs are recorded under.
    """

    store: str
    key: tuple[str, ...]
    name: str
    __name__: str
    __qualname__: str

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        """The undecorated function."""
        ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def __get__(self, instance: object, owner: type | None = None) -> OnceFunction[..., R_co]:
        """Bind as a method (``self``/``cls`` are not part of the default key)."""
        ...

    def has(self, *args: Any, **kwargs: Any) -> bool:
        """Whether the run these arguments identify has completed."""
        ...

    def is_done(self, *args: Any, **kwargs: Any) -> bool:
        """Same as `has`."""
        ...

    def reset(self, *args: Any, **kwargs: Any) -> bool:
        """Forget the run these arguments identify (and its failures): it runs again."""
        ...

    def pending(self, grid: Any) -> Pending:
        """The points of ``grid`` whose run has not completed (``len()`` works)."""
        ...


class _Decorator(Protocol):
    """What ``once(...)`` with options returns: a decorator."""

    @overload
    def __call__(
        self, func: Callable[P, Coroutine[Any, Any, T]], /
    ) -> OnceFunction[P, Coroutine[Any, Any, T | None]]: ...

    @overload
    def __call__(self, func: Callable[P, T], /) -> OnceFunction[P, T | None]: ...


@overload
def once(
    func: Callable[P, Coroutine[Any, Any, T]], /
) -> OnceFunction[P, Coroutine[Any, Any, T | None]]: ...


@overload
def once(func: Callable[P, T], /) -> OnceFunction[P, T | None]: ...


@overload
def once(
    store: str | os.PathLike[str] = DEFAULT_STORE,
    /,
    *,
    key: Iterable[str] | str | None = None,
    ignore: Iterable[str] | str | None = None,
    name: str | None = None,
    quiet: bool | None = None,
    claim: bool = False,
    lease: float = DEFAULT_LEASE,
    meta: Mapping[str, Any] | None = None,
    max_attempts: int | None = None,
) -> _Decorator: ...


@overload
def once(
    *,
    store: str | os.PathLike[str] = DEFAULT_STORE,
    key: Iterable[str] | str | None = None,
    ignore: Iterable[str] | str | None = None,
    name: str | None = None,
    quiet: bool | None = None,
    claim: bool = False,
    lease: float = DEFAULT_LEASE,
    meta: Mapping[str, Any] | None = None,
    max_attempts: int | None = None,
) -> _Decorator: ...


def once(
    func: Any = None,
    /,
    *,
    store: str | os.PathLike[str] | None = None,
    key: Iterable[str] | str | None = None,
    ignore: Iterable[str] | str | None = None,
    name: str | None = None,
    quiet: bool | None = None,
    claim: bool = False,
    lease: float = DEFAULT_LEASE,
    meta: Mapping[str, Any] | None = None,
    max_attempts: int | None = None,
) -> Any:
    """Run a function once per parameter combination, across restarts.

    Use it bare (``@stet.once``), with options (``@stet.once(store="runs.sqlite")``),
    or with the store as its only positional argument (``@stet.once("runs.csv")``).
    Each call binds its arguments to parameter names (defaults applied), takes the key
    parameters, and skips the call, returning None, if the store records that run of
    this function as completed. Otherwise it calls the function and, only if it returns
    normally, records the run with a UTC timestamp, its duration, host and cluster job.
    ``async def`` functions are recorded when the coroutine completes.

    Args:
        func: the function, when used bare; or the store, when given positionally.
        store: the store file (``.csv``, ``.json``, ``.sqlite``/``.db``, ``.parquet``),
            relative paths resolved against the current directory when decorating; or a
            ``postgresql://user@host/db`` URL for workers on many machines.
        key: parameter names that identify a run (default: all but ``self``/``cls``).
        ignore: parameter names to leave out of the key (the complement of ``key``).
        name: the function name runs are recorded under (default: the function's
            qualified name). Give the old name to keep a renamed function's history, or
            one name to several functions that should share their runs.
        quiet: True hides skip lines and the summary, False prints every skip line;
            None (default) follows the ``STET_QUIET`` environment variable, else prints
            the first ten skips per function, then one line saying the rest are hidden.
        claim: for several workers sharing one store (array jobs, many copies of a
            script): claim each run before starting it, so that no run is started twice
            while its first worker is alive. Others skip a claimed run; the claim turns
            into a record on success and is released on an exception. A claim whose
            worker died is taken over: at once if it was a process on this machine,
            else when its lease expires.
        lease: seconds a claim stays valid without a heartbeat; a process holding
            claims renews them every third of the shortest lease.
        meta: your own fields recorded with each completed run (``_stet_meta``, JSON),
            such as ``{"commit": "3f2a1c0"}``.
        max_attempts: stop retrying a run after this many failures; it is then
            skipped, saying why, until ``f.reset(...)``. Default: retry every time.

    Raises:
        ValueError: at decoration time, for a key naming a parameter the function does
            not have, or a store with an unknown file ending.

    Example:
        >>> import stet
        >>> @stet.once(store="runs.csv", key=["alpha", "seed"])
        ... def train(alpha, seed, verbose=False):
        ...     return alpha * seed
    """
    if isinstance(func, (str, os.PathLike)):
        if store is not None:
            raise TypeError("stet: once() got the store twice, positionally and as store=")
        store, func = func, None
    elif func is not None and not callable(func):
        raise TypeError(
            f"stet: once() takes a function, or the store as a path; got {type(func).__name__}. "
            'Write @stet.once(store="runs.csv").'
        )
    where = os.fspath(store if store is not None else DEFAULT_STORE)
    store_path = where if is_url(where) else os.path.abspath(where)
    open_store(store_path)  # an unknown ending or missing pyarrow fails now, not mid-sweep
    options = {
        "store": store_path,
        "key": key,
        "ignore": ignore,
        "name": name,
        "quiet": quiet,
        "claim": claim,
        "lease": lease,
        "meta": dict(meta) if meta else None,
        "max_attempts": max_attempts,
    }

    def decorate(f: Callable[..., Any]) -> Any:
        return wrap(Runner(f, options))

    if func is not None:
        return decorate(func)
    return decorate
