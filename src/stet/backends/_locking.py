"""The cross-process lock of a file store, safe against interrupts at any instant.

The lock is ``<store>.lock``, locked with filelock's `lock_descriptor` (``flock`` on
POSIX, ``LockFileEx`` on Windows) on a descriptor held open, which costs about a
microsecond instead of opening the lock file for every section. Each thread holds its
own descriptor: the operating system then excludes threads of one process from each
other as it excludes processes, and no Python-level mutex is needed (a mutex acquired
just before a Ctrl-C could stay held for good).

A KeyboardInterrupt or SystemExit can arrive between any two bytecodes, including
inside the release. Every locked section therefore unlocks in a ``finally`` and again
in an outer handler, so a single interrupt can never leave the lock held.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from filelock import lock_descriptor, unlock_descriptor

from stet._errors import StoreError, StoreLockTimeout

__all__ = ["Descriptor", "StoreLock", "forks", "lock_timeout"]

T = TypeVar("T")

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)

# Bumped in a forked child: process-local state (descriptors, connections, caches) is
# rebuilt when this differs from the value it was built under. Cheaper than os.getpid()
# on every call.
_forks = [0]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _forks.__setitem__(0, _forks[0] + 1))


def forks() -> int:
    """How many forks lie between this process and the one that imported stet."""
    return _forks[0]


def lock_timeout() -> float:
    """Seconds to wait for a store's lock: ``STET_LOCK_TIMEOUT``, else 120."""
    text = os.environ.get("STET_LOCK_TIMEOUT", "")
    try:
        return float(text) if text else 120.0
    except ValueError:
        raise ValueError(f"stet: STET_LOCK_TIMEOUT={text!r} is not a number of seconds") from None


def _unlock_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        unlock_descriptor(fd)


class Descriptor:
    """An open file descriptor, closed once nothing refers to it any more.

    A backend dropped by its user, or a thread that ended, would otherwise leave its
    descriptors open for the life of the process (a long notebook session, a test run).
    Every close goes through `close`, so a number the system has since reused for
    another file is never closed by mistake.
    """

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    __del__ = close


class _Held(threading.local):
    descriptor: Descriptor | None = None
    forks: int = -1
    readonly: bool = False


class StoreLock:
    """The lock file of one store; `run` calls a function while holding it.

    On a store whose directory cannot be written and that has no lock file yet (an
    archived sweep, a colleague's results), there is nothing to lock: readers go ahead
    unlocked, which is safe because nobody can write there either, and a writer gets
    a `StoreError` naming the directory.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._held = _Held()

    def _descriptor(self) -> int | None:
        held = self._held
        descriptor = held.descriptor
        if descriptor is not None:
            if held.forks == _forks[0]:
                return descriptor.fd
            # Inherited over a fork: the same open file as the parent's, so locking it
            # would not exclude the parent. Close our copy (the parent keeps its lock).
            descriptor.close()
        held.descriptor = None
        held.forks = _forks[0]
        held.readonly = False
        fd = self._open()
        if fd is not None:
            held.descriptor = Descriptor(fd)
        return fd

    def _open(self) -> int | None:
        if os.name == "nt" and os.path.islink(self.path):
            raise self._symlink()
        flags = _NOFOLLOW | _CLOEXEC | _BINARY
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | flags, 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._symlink() from None
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                if exc.errno == errno.ENOENT and not os.path.isdir(
                    os.path.dirname(self.path) or "."
                ):
                    return None  # no directory yet: no store to guard either
                raise StoreError(f"stet: cannot open the lock file {self.path}: {exc}") from None
            try:
                fd = os.open(self.path, os.O_RDONLY | flags)  # flock works on it too
            except OSError:
                self._held.readonly = True
                return None
            self._held.readonly = True
            return fd
        try:
            # Lock files made by one user must not lock out the others (umask aside).
            if os.fstat(fd).st_mode & 0o777 != 0o666:
                os.fchmod(fd, 0o666)
        except (OSError, AttributeError):
            pass
        return fd

    def _symlink(self) -> StoreError:
        return StoreError(
            f"stet: the lock file {self.path} is a symbolic link. stet does not follow "
            "it (locking through a planted link can damage the file it points to); "
            "delete the link and run again."
        )

    def writable(self) -> bool:
        """Whether this process can take the lock for writing (the lock file opened)."""
        self._descriptor()
        return not self._held.readonly

    def run(self, func: Callable[[], T]) -> T:
        """Call ``func`` holding the lock (or unlocked where there is nothing to lock).

        Raises:
            StoreLockTimeout: when another process holds the lock for too long.
        """
        fd = self._descriptor()
        if fd is None:
            return func()
        try:
            try:
                self._acquire(fd)
                return func()
            finally:
                unlock_descriptor(fd)
        except BaseException:
            _unlock_quietly(fd)  # again: an interrupt may have cut the first release
            raise

    def _acquire(self, fd: int) -> None:
        if lock_descriptor(fd, blocking=False):
            return
        # Contended: poll with a short, growing pause, so a lock held for the few
        # microseconds of a record is taken soon after it is released.
        timeout = lock_timeout()
        deadline = time.monotonic() + timeout
        pause = 20e-6
        while not lock_descriptor(fd, blocking=False):
            if time.monotonic() > deadline:
                raise StoreLockTimeout(
                    f"stet: could not lock {self.path} within {timeout:g} s: another "
                    "process holds it. Wait for it, or raise STET_LOCK_TIMEOUT (seconds)."
                )
            time.sleep(pause)
            pause = min(pause * 1.5, 0.002)

    def forget(self) -> None:
        """Close this thread's descriptor (the lock file is about to be removed)."""
        held = self._held
        if held.descriptor is not None:
            held.descriptor.close()
        held.descriptor = None
        held.forks = -1
