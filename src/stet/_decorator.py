"""The ``@stet.once`` decorator: binding arguments, picking the key, skipping, recording."""

from __future__ import annotations

import functools
import inspect
import itertools
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from typing import Any, ParamSpec, Protocol, TypeVar, cast, overload

from stet._identity import (
    Identity,
    check_name,
    digest_of,
    digest_part,
    identity_of,
    identity_pair,
    text_digest_of,
    text_part,
)
from stet.backends import BaseBackend, is_url, open_store
from stet.backends._base import Lookup, Row, describe, utc_now
from stet.backends._claims import Claim, Outcome, Owner

__all__ = ["DEFAULT_STORE", "OnceFunction", "once"]

P = ParamSpec("P")
T = TypeVar("T")
R_co = TypeVar("R_co", covariant=True)

#: The store used when ``once`` is given none: a CSV file in the current directory.
DEFAULT_STORE = "_stet_store.csv"

#: Seconds a claim lasts without a heartbeat (``once(claim=True)``).
DEFAULT_LEASE = 60.0

#: Skip lines printed per function before stet stops announcing each one.
SKIP_LINES = 10

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class OnceFunction(Protocol[P, R_co]):
    """A function decorated with `once`: callable as before, plus helpers.

    ``R_co`` is what a call returns: ``T | None`` for a function returning ``T`` (None
    when the run is skipped), ``Coroutine[Any, Any, T | None]`` for an ``async def``.

    Attributes:
        store: absolute path of the store recording this function's runs.
        key: the names of the parameters that identify a run.
    """

    store: str
    key: tuple[str, ...]
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
        """Forget the completed run these arguments identify, so it runs again."""
        ...

    def pending(self, grid: Any) -> Iterator[Any]:
        """Yield the points of ``grid`` whose run has not completed."""
        ...


def _quiet_from_env() -> bool | None:
    text = os.environ.get("STET_QUIET", "").strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    return None


def _say(text: str) -> None:
    """Print a line; characters the console cannot show are escaped, never fatal."""
    try:
        print(text, file=sys.stdout)
    except UnicodeEncodeError:
        encoding = getattr(sys.stdout, "encoding", None) or "ascii"
        print(text.encode(encoding, "backslashreplace").decode(encoding), file=sys.stdout)


class _Runner:
    """Everything ``once`` knows about one decorated function.

    It pickles as its configuration (function, store, key, quiet, claim, lease); the
    backend is looked up again in the process that unpickles it.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        store: str | os.PathLike[str],
        key: Iterable[str] | str | None,
        quiet: bool | None,
        claim: bool = False,
        lease: float = DEFAULT_LEASE,
    ) -> None:
        if lease <= 0:
            raise ValueError(f"stet: lease must be a positive number of seconds, got {lease!r}")
        self.claim = claim
        self.lease = float(lease)
        self.func = func
        self.store = os.fspath(store)
        self.key_spec: tuple[str, ...] | None = (
            None if key is None else (key,) if isinstance(key, str) else tuple(key)
        )
        self.quiet = quiet
        qualname = getattr(func, "__qualname__", getattr(func, "__name__", repr(func)))
        self.name = qualname.rsplit("<locals>.", 1)[-1]  # "Model.fit", not "main.<locals>..."
        self.signature = inspect.signature(func)
        params = list(self.signature.parameters.values())
        names = [p.name for p in params]
        if self.key_spec is None:
            skip_first = bool(params) and names[0] in ("self", "cls")
            self.key = tuple(names[1:] if skip_first else names)
        else:
            unknown = [k for k in self.key_spec if k not in names]
            if unknown:
                raise ValueError(
                    f"stet: key names {unknown} are not parameters of {self.name}; its "
                    f"parameters are: {', '.join(names) or '(none)'}"
                )
            if len(set(self.key_spec)) != len(self.key_spec):
                raise ValueError(f"stet: key {list(self.key_spec)} repeats a name")
            self.key = self.key_spec
        for name in self.key:
            check_name(name, f"the key of {self.name}")
        # Calls that pass every parameter positionally skip inspect's slower binding.
        self._positions = (
            tuple(names.index(k) for k in self.key)
            if all(p.kind in _POSITIONAL for p in params)
            else None
        )
        self._arity = len(params)
        self._skips = 0
        self._backend: BaseBackend | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {
            "func": self.func,
            "store": self.store,
            "key": self.key_spec,
            "quiet": self.quiet,
            "claim": self.claim,
            "lease": self.lease,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    @property
    def backend(self) -> BaseBackend:
        if self._backend is None:
            self._backend = open_store(self.store)
        return self._backend

    def identity(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Identity:
        """The identity of the run a call with ``args`` and ``kwargs`` makes."""
        if self._positions is not None and not kwargs and len(args) == self._arity:
            values = dict(zip(self.key, [args[i] for i in self._positions], strict=True))
        else:
            try:
                bound = self.signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{self.name}(): {exc}") from None
            bound.apply_defaults()
            arguments = bound.arguments
            values = {k: arguments[k] for k in self.key}
        return identity_of(values, f"{self.name}()")

    def skipped(self, ident: Identity, busy: Claim | None = None) -> None:
        quiet = self.quiet if self.quiet is not None else _quiet_from_env()
        if quiet:
            return
        self._skips += 1
        if quiet is None and self._skips > SKIP_LINES:
            if self._skips == SKIP_LINES + 1:
                _say(
                    f"[stet] Skipping more completed runs of {self.name} without a line "
                    "each (STET_QUIET=0 shows every skip, STET_QUIET=1 none)"
                )
            return
        shown = describe(ident, limit=60)
        if busy is not None:
            owner = busy.owner
            _say(
                f"[stet] Skipping {self.name}({shown}): another worker is running it "
                f"({owner.host}, pid {owner.pid})"
            )
            return
        _say(f"[stet] Skipping {self.name}({shown})")

    def begin(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> _Call | None:
        """Decide whether a call runs: None to skip it, else the run to wrap it in."""
        ident = self.identity(args, kwargs)
        backend = self.backend
        if backend.contains(ident):
            self.skipped(ident)
            return None
        if not self.claim:
            return _Call(backend, ident, None, 0.0)
        owner = Owner.new()
        outcome, current = backend.claim(ident, owner, self.lease)
        if outcome is Outcome.DONE:
            self.skipped(ident)
            return None
        if outcome is Outcome.BUSY:
            self.skipped(ident, current)
            return None
        return _Call(backend, ident, owner, self.lease)

    def pending(self, grid: Any) -> Iterator[Any]:
        """The points of ``grid`` whose run has not completed, checked in batches."""
        materialize: Callable[[Any], Any]
        if isinstance(grid, Mapping):
            names = list(grid)
            axes = [list(grid[name]) for name in names]
            pairs: Iterable[tuple[Any, Lookup]] = self._product(names, axes)

            def materialize(index: Any) -> Any:
                return {name: axes[i][index[i]] for i, name in enumerate(names)}
        else:
            pairs = ((point, self._point_identity(point)) for point in grid)

            def materialize(point: Any) -> Any:
                return point

        backend = self.backend
        while batch := list(itertools.islice(pairs, 4096)):
            done = backend.completed([ident for _, ident in batch])
            for (point, _), finished in zip(batch, done, strict=True):
                if not finished:
                    yield materialize(point)

    def _point_identity(self, point: Any) -> Identity:
        if isinstance(point, Mapping):
            return self.identity((), point)
        if isinstance(point, tuple):
            return self.identity(point, {})
        return self.identity((point,), {})

    def _product(
        self, names: list[str], axes: list[list[Any]]
    ) -> Iterator[tuple[Any, Identity | _GridPoint]]:
        """Index tuples of a dict-of-lists grid, with each point's identity.

        Each value is canonicalised once per axis, not once per point, so a grid of a
        million points costs about a microsecond a point.
        """
        params = self.signature.parameters
        unknown = [n for n in names if n not in params]
        if unknown or any(
            p.kind is p.VAR_KEYWORD or p.kind is p.VAR_POSITIONAL for p in params.values()
        ):
            for index in itertools.product(*(range(len(axis)) for axis in axes)):
                point = {name: axes[i][index[i]] for i, name in enumerate(names)}
                yield index, self.identity((), point)
            return
        fixed: dict[str, tuple[str, str]] = {}
        for key in self.key:
            if key not in names:
                default = params[key].default
                if default is inspect.Parameter.empty:
                    raise TypeError(
                        f"{self.name}(): the grid has no values for parameter {key!r}, "
                        "which has no default"
                    )
                fixed[key] = identity_pair(key, default, self.name)
        # Each key parameter's digest pieces are computed once per axis value; a point
        # then only joins its pieces (sorted by name) and hashes them.
        axis_of = {name: i for i, name in enumerate(names)}
        typed: list[tuple[list[str], int | None]] = []
        by_text: list[tuple[list[str], int | None]] = []
        for key in sorted(self.key):
            if key in axis_of:
                i = axis_of[key]
                pairs = [identity_pair(key, v, self.name) for v in axes[i]]
                typed.append(([digest_part(key, tag, text) for tag, text in pairs], i))
                by_text.append(([text_part(key, text) for _, text in pairs], i))
            else:
                tag, text = fixed[key]
                typed.append(([digest_part(key, tag, text)], None))
                by_text.append(([text_part(key, text)], None))
        for index in itertools.product(*(range(len(axis)) for axis in axes)):
            parts = [p[0 if i is None else index[i]] for p, i in typed]
            yield index, _GridPoint(digest_of(parts), index, by_text)


class _GridPoint:
    """A grid point's digest, and its text-only digest computed only when asked.

    Stores holding records matched by text alone (written by 0.0.x, or imported) also
    look points up by ``legacy``; most stores never ask for it.
    """

    __slots__ = ("by_text", "digest", "index")

    def __init__(
        self,
        digest: bytes,
        index: tuple[int, ...],
        by_text: list[tuple[list[str], int | None]],
    ) -> None:
        self.digest = digest
        self.index = index
        self.by_text = by_text

    @property
    def legacy(self) -> bytes:
        index = self.index
        return text_digest_of([p[0 if i is None else index[i]] for p, i in self.by_text])


class _Call:
    """One run that is going ahead: records it if the body returns normally.

    With claims it also keeps the claim alive while the body runs (a heartbeat
    thread) and releases the claim if the body raises.
    """

    def __init__(
        self, backend: BaseBackend, ident: Identity, owner: Owner | None, lease: float
    ) -> None:
        self.backend = backend
        self.ident = ident
        self.owner = owner
        self.beat = None if owner is None else _Heartbeat(backend, ident, owner, lease)

    def __enter__(self) -> None:
        if self.beat is not None:
            self.beat.start()

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if self.beat is not None:
            self.beat.stop()
        if kind is not None:
            if self.owner is not None:
                self.backend.release(self.ident, self.owner)
            return  # nothing recorded: the exception propagates and the run stays to do
        if self.owner is None:
            self.backend.add(self.ident, utc_now())
        else:
            self.backend.complete(self.ident, self.owner, utc_now())


class _Heartbeat(threading.Thread):
    """Renews a claim's lease every third of the lease until stopped."""

    def __init__(self, backend: BaseBackend, ident: Identity, owner: Owner, lease: float) -> None:
        super().__init__(name="stet-heartbeat", daemon=True)
        self.backend = backend
        self.identity = ident
        self.owner = owner
        self.lease = lease
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.lease / 3):
            try:
                if not self.backend.renew(self.identity, self.owner, self.lease):
                    return  # taken over after the lease ran out: nothing left to renew
            except Exception:
                continue

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def _build(runner: _Runner) -> Any:
    """The wrapper function for a runner (sync or async), with its helpers attached."""
    func = runner.func
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            call = runner.begin(args, kwargs)
            if call is None:
                return None
            with call:
                return await cast(Callable[..., Awaitable[Any]], func)(*args, **kwargs)

        wrapper: Any = async_wrapper
    else:

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            call = runner.begin(args, kwargs)
            if call is None:
                return None
            with call:
                return func(*args, **kwargs)

        wrapper = sync_wrapper

    def has(*args: Any, **kwargs: Any) -> bool:
        return runner.backend.contains(runner.identity(args, kwargs))

    def reset(*args: Any, **kwargs: Any) -> bool:
        ident = runner.identity(args, kwargs)

        def same_run(row: Row) -> bool:
            digest, by_text = row.digest()
            return digest == (ident.legacy if by_text else ident.digest)

        return bool(runner.backend.discard(same_run))

    def pending(grid: Any) -> Iterator[Any]:
        return runner.pending(grid)

    wrapper.store = runner.store
    wrapper.key = runner.key
    wrapper.has = has
    wrapper.is_done = has
    wrapper.reset = reset
    wrapper.pending = pending
    wrapper._stet_runner = runner
    return wrapper


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
    *,
    store: str | os.PathLike[str] = DEFAULT_STORE,
    key: Iterable[str] | str | None = None,
    quiet: bool | None = None,
    claim: bool = False,
    lease: float = DEFAULT_LEASE,
) -> _Decorator: ...


def once(
    func: Callable[..., Any] | None = None,
    /,
    *,
    store: str | os.PathLike[str] = DEFAULT_STORE,
    key: Iterable[str] | str | None = None,
    quiet: bool | None = None,
    claim: bool = False,
    lease: float = DEFAULT_LEASE,
) -> Any:
    """Run a function once per parameter combination, across restarts.

    Use it bare (``@stet.once``) or with options (``@stet.once(store="runs.sqlite")``).
    Each call binds its arguments to parameter names (defaults applied), takes the key
    parameters, and skips the call, returning None, if the store records that key as
    completed. Otherwise it calls the function and, only if it returns normally,
    records the key with a UTC timestamp. ``async def`` functions are recorded when
    the coroutine completes.

    Args:
        func: the function, when used bare.
        store: the store file (``.csv``, ``.json``, ``.sqlite``/``.db``, ``.parquet``),
            relative paths resolved against the current directory when decorating; or a
            ``postgresql://user@host/db`` URL for workers on many machines.
        key: parameter names that identify a run (default: all but ``self``/``cls``).
        quiet: True hides skip lines, False prints every one; None (default) follows
            the ``STET_QUIET`` environment variable, else prints the first ten per
            function and then one line saying further skips are not shown.
        claim: for several workers sharing one store (array jobs, many copies of a
            script): claim each run before starting it, so that no run is started twice
            while its first worker is alive. Others skip a claimed run; the claim turns
            into a record on success and is released on an exception. A claim whose
            worker died is taken over: at once if it was a process on this host, else
            when its lease expires.
        lease: seconds a claim stays valid without a heartbeat; a running call renews
            it every ``lease / 3`` seconds.

    Raises:
        ValueError: at decoration time, for a key naming a parameter the function does
            not have, or a store with an unknown file ending.

    Example:
        >>> import stet
        >>> @stet.once(store="runs.csv", key=["alpha", "seed"])
        ... def train(alpha, seed, verbose=False):
        ...     return alpha * seed
    """
    store_path = os.fspath(store) if is_url(store) else os.path.abspath(os.fspath(store))
    open_store(store_path)  # an unknown ending or missing pyarrow fails now, not mid-sweep

    def decorate(f: Callable[..., Any]) -> Any:
        return _build(_Runner(f, store_path, key, quiet, claim, lease))

    if func is not None:
        return decorate(func)
    return decorate
