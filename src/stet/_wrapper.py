"""The decorated function itself: a callable that skips completed runs, with helpers.

It is an object rather than a plain function so that it can show its store, key and
progress (``repr``), and pickle as its configuration. Plain ``pickle`` (multiprocessing)
finds it by name; cloudpickle (notebooks, Dask, loky, Ray) carries it by value.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Any

from stet._grid import Pending
from stet._runner import Runner

__all__ = ["wrap"]


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

    def __init__(self, runner: Runner) -> None:
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


def _rebuild(runner: Runner) -> _Once:
    return wrap(runner)


def wrap(runner: Runner) -> _Once:
    if inspect.iscoroutinefunction(runner.func):
        wrapper: _Once = _OnceAsync(runner)
        if hasattr(inspect, "markcoroutinefunction"):
            inspect.markcoroutinefunction(wrapper)
        else:  # Python 3.11: asyncio.iscoroutinefunction looks for this marker
            import asyncio  # here: asyncio costs a third of `import stet`, async users have it

            wrapper._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]
        return wrapper
    return _Once(runner)
