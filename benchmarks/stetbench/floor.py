"""The floor: the least a decorator must do per call, written by hand.

stet's skip and record costs are reported as ratios to these, measured in the same
run on the same keys (S8):

- `SkipFloor`: ``inspect.Signature.bind`` + ``apply_defaults`` (every call style, the
  all-positional one too), a tuple of the key values, one dict lookup. A decorator that
  treats ``f(1, 2)``, ``f(a=1, seed=2)`` and a defaulted argument as the same run cannot
  do less in Python.
- `RecordFloor`: the same, then the body, then one line (key values and a UTC ISO
  timestamp, which every record carries) appended with ``os.write`` to a file opened
  once, under an exclusive lock taken on a held-open descriptor
  (``filelock.lock_descriptor`` when filelock has it, else ``fcntl.flock``). No fsync:
  stet's appends do not fsync either. It proves nothing about crash safety or other
  processes' appends; it is what the cheapest correct append costs on this machine.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _lock_functions() -> tuple[Callable[[int], Any], Callable[[int], Any], str]:
    """Lock and unlock for a held-open descriptor, and what provides them."""
    try:
        from filelock import lock_descriptor, unlock_descriptor  # filelock >= 3.30

        return lock_descriptor, unlock_descriptor, "filelock.lock_descriptor"
    except ImportError:
        import fcntl

        def lock(fd: int) -> None:
            fcntl.flock(fd, fcntl.LOCK_EX)

        def unlock(fd: int) -> None:
            fcntl.flock(fd, fcntl.LOCK_UN)

        return lock, unlock, "fcntl.flock"


class SkipFloor:
    """A decorator skipping the runs in ``done`` (bind, defaults, tuple key, dict lookup)."""

    def __init__(self, key: Iterable[str] | None = None) -> None:
        self.key = None if key is None else tuple(key)
        self.done: dict[tuple[Any, ...], None] = {}

    def mark(self, points: Iterable[tuple[Any, ...]]) -> None:
        """Mark these key tuples as completed runs."""
        self.done.update(dict.fromkeys(points))

    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(func)
        names = self.key or tuple(signature.parameters)
        done = self.done
        bind = signature.bind

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = bound.arguments
            if tuple([arguments[n] for n in names]) in done:
                return None
            return func(*args, **kwargs)

        return wrapper


class RecordFloor(SkipFloor):
    """`SkipFloor`, plus: run the body, append one line under a held-open lock."""

    def __init__(self, path: Path, key: Iterable[str] | None = None) -> None:
        super().__init__(key)
        self.path = path
        self.lock, self.unlock, self.lock_kind = _lock_functions()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.lock_fd)

    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(func)
        names = self.key or tuple(signature.parameters)
        done = self.done
        bind = signature.bind
        fd, lock_fd, lock, unlock = self.fd, self.lock_fd, self.lock, self.unlock
        write = os.write

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = bound.arguments
            key = tuple([arguments[n] for n in names])
            if key in done:
                return None
            result = func(*args, **kwargs)
            stamp = datetime.now(UTC).isoformat(timespec="microseconds")
            line = ",".join([*map(str, key), stamp]) + "\n"
            lock(lock_fd)
            try:
                write(fd, line.encode())
            finally:
                unlock(lock_fd)
            done[key] = None
            return result

        return wrapper
