"""The ``@stet.once`` decorator: skip a call whose run completed, record it otherwise.

The pieces live in their own modules: `stet._binding` (arguments to the run),
`stet._messages` (what is printed), `stet._claiming` (recording, claims, failures) and
`stet._grid` (``pending``). This module wires them into the decorated function.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from stet._binding import Binder
from stet._claiming import Call, extra_of
from stet._grid import Pending
from stet._identity import check_func_name
from stet._messages import Reporter, describe_short
from stet.backends import BaseBackend, is_url, open_store
from stet.backends._claims import Outcome, Owner
from stet.backends._ledger import reset_event

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


class _Runner:
    """What ``once`` knows about one decorated function.

    It pickles as its configuration; the store is opened again in the process that
    unpickles it.
    """

    def __init__(self, func: Callable[..., Any], options: dict[str, Any]) -> None:
        self.options = options
        self.func = func
        lease = float(options["lease"])
        if not lease > 0:
            raise ValueError(f"stet: lease must be a positive number of seconds, got {lease!r}")
        attempts = options["max_attempts"]
        if attempts is not None and (not isinstance(attempts, int) or attempts < 1):
            raise ValueError(f"stet: max_attempts must be a positive int, got {attempts!r}")
        self.lease = lease
        self.claim = bool(options["claim"])
        self.max_attempts: int | None = attempts
        self.store: str = options["store"]
        qualname = getattr(func, "__qualname__", getattr(func, "__name__", repr(func)))
        default_name = qualname.rsplit("<locals>.", 1)[-1]  # "Model.fit", not "main.<locals>..."
        self.name = check_func_name(options["name"] or default_name)
        # Kept with the configuration: a copy unpickled elsewhere records the same name.
        self.options = {**options, "name": self.name}
        self.binder = Binder(func, self.name, options["key"], options["ignore"])
        self.meta = extra_of(options["meta"])
        self.reporter = Reporter(self.name, options["quiet"])
        self._backend: BaseBackend | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"func": self.func, "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["func"], state["options"])  # type: ignore[misc]

    @property
    def backend(self) -> BaseBackend:
        if self._backend is None:
            self._backend = open_store(self.store)
        return self._backend

    def begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call | None:
        """Decide whether a call runs: None to skip it, else the run to wrap it in."""
        ident = self.binder.identity(args, kwargs)
        backend = self.backend
        reporter = self.reporter
        if not reporter.announced:
            reporter.first_call(backend.location, backend.count(self.name))
        if backend.contains(ident):
            reporter.skipped(describe_short(ident))
            return None
        attempt = 1
        if self.max_attempts is not None:
            failures = backend.failures(ident)
            if failures >= self.max_attempts:
                reporter.skipped(
                    describe_short(ident),
                    why=f"it failed {failures} times (max_attempts={self.max_attempts}); "
                    f"{self.name}.reset(...) lets it run again",
                )
                return None
            attempt = failures + 1
        backend.check_writable()  # before the body: an unwritable store costs no run
        if not self.claim:
            return Call(backend, ident, None, self.lease, self.meta, reporter, attempt)
        owner = Owner.new()
        outcome, current = backend.claim(ident, owner, self.lease)
        if outcome is Outcome.DONE:
            reporter.skipped(describe_short(ident))
            return None
        if outcome is Outcome.BUSY:
            reporter.skipped(describe_short(ident), busy=current)
            return None
        return Call(backend, ident, owner, self.lease, self.meta, reporter, attempt)

    def reset(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        ident = self.binder.identity(args, kwargs)
        backend = self.backend
        targets = {ident.digest, ident.plain, ident.legacy}
        removed = backend.discard(lambda row: row.digest() in targets)
        try:
            if backend.failures(ident):
                backend.note(reset_event(ident))
        except NotImplementedError:
            pass
        return bool(removed)

    def pending(self, grid: Any) -> Pending:
        busy = self.backend.busy() if self.claim else None
        return Pending(self.binder, self.backend, grid, busy)

    def describe(self) -> str:
        backend = self.backend
        try:
            done = f"{backend.count(self.name) or 0:,} completed"
        except Exception:
            done = "store unreadable"
        return (
            f"<stet.once {self.name}({', '.join(self.binder.key)}) store={backend.location} {done}>"
        )


def _resolve(module: str, qualname: str) -> Any:
    """``module.qualname``, or None where that name does not lead anywhere."""
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found


class _Once:
    """The decorated function: calls the original unless its run completed."""

    __wrapped__: Callable[..., Any]
    __name__: str
    __qualname__: str

    def __init__(self, runner: _Runner) -> None:
        self._stet_runner = runner
        functools.update_wrapper(self, runner.func)
        self.store = runner.store
        self.key = runner.binder.key
        self.name = runner.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        call = self._stet_runner.begin(args, kwargs)
        if call is None:
            return None
        try:
            result = self.__wrapped__(*args, **kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        call.succeeded()
        return result

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return _Bound(self, instance)

    def __repr__(self) -> str:
        return self._stet_runner.describe()

    def __reduce__(self) -> Any:
        runner = self._stet_runner
        module, qualname = self.__module__, self.__qualname__
        if _resolve(module, qualname) is self:
            if module != "__main__":
                return (_by_reference, (module, qualname))
            # A script's function: pickle (multiprocessing) takes the undecorated function
            # by name, and its name now leads to this wrapper. Naming it after the
            # wrapper's __wrapped__ lets pickle find it; cloudpickle (notebooks, Dask,
            # loky, Ray) copies a __main__ function by value and ignores the name.
            runner.func.__qualname__ = f"{qualname}.__wrapped__"
        return (_rebuild, (runner,))

    def has(self, *args: Any, **kwargs: Any) -> bool:
        runner = self._stet_runner
        return runner.backend.contains(runner.binder.identity(args, kwargs))

    is_done = has

    def reset(self, *args: Any, **kwargs: Any) -> bool:
        return self._stet_runner.reset(args, kwargs)

    def pending(self, grid: Any) -> Pending:
        return self._stet_runner.pending(grid)


class _OnceAsync(_Once):
    """The decorated ``async def``: the run is recorded when the coroutine completes."""

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        call = self._stet_runner.begin(args, kwargs)
        if call is None:
            return None
        try:
            result = await self.__wrapped__(*args, **kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        call.succeeded()
        return result


class _Bound:
    """A decorated method bound to an instance (``obj.method``)."""

    def __init__(self, once: _Once, instance: object) -> None:
        self._once = once
        self._instance = instance
        self.__wrapped__ = once.__wrapped__
        self.__name__ = once.__name__
        self.__qualname__ = once.__qualname__
        self.__doc__ = once.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._once(self._instance, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._once, name)

    def __repr__(self) -> str:
        return f"<bound {self._once!r} of {self._instance!r}>"

    def has(self, *args: Any, **kwargs: Any) -> bool:
        return self._once.has(self._instance, *args, **kwargs)

    is_done = has

    def reset(self, *args: Any, **kwargs: Any) -> bool:
        return self._once.reset(self._instance, *args, **kwargs)


def _by_reference(module: str, qualname: str) -> Any:
    importlib.import_module(module)
    return _resolve(module, qualname)


def _rebuild(runner: _Runner) -> _Once:
    return _wrap(runner)


def _wrap(runner: _Runner) -> _Once:
    if inspect.iscoroutinefunction(runner.func):
        wrapper: _Once = _OnceAsync(runner)
        if hasattr(inspect, "markcoroutinefunction"):
            inspect.markcoroutinefunction(wrapper)
        else:  # Python 3.11: asyncio.iscoroutinefunction looks for this marker
            wrapper._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]
        return wrapper
    return _Once(runner)


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
        return _wrap(_Runner(f, options))

    if func is not None:
        return decorate(func)
    return decorate
