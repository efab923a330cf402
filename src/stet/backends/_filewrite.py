"""Before and around a write to a file store: may we write, and what a crash left.

`check_writable` runs before the first body of a decorated function, so an unwritable
store never costs a run. `repair_torn` deals with a record an earlier crash left half
written: stet's own cut append is moved aside (never deleted), anything else is left
untouched and reported.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING

from stet._errors import StoreError, StoreWarning
from stet.backends._atomic import BINARY, disk_error, nearest_directory, real_path, write_all
from stet.backends._records import utc_now

if TYPE_CHECKING:
    from stet.backends._filestore import FileBackend

__all__ = ["check_writable", "repair_torn"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def check_writable(store: FileBackend) -> None:
    """Raise StoreError now if a record could not be written (see BaseBackend)."""
    store._ensure_process()
    if store._writable_checked:
        return
    target = real_path(store.file)
    for path in dict.fromkeys((target, real_path(store.log_file))):
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not st.st_mode & 0o222 or not os.access(path, os.W_OK):
            raise StoreError(
                f"stet: {store.file} is read-only, so stet cannot record runs in it. Make "
                "it writable (chmod u+w) to go on recording, or choose another store."
            )
    directory = os.path.dirname(target) or "."
    existing = nearest_directory(target)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StoreError(
            f"stet: cannot record runs in {store.file}: the directory {existing} is not "
            "writable (stet needs it for the lock file and for rewriting the store). "
            "Make it writable, or choose a store in a writable directory."
        )
    if existing == directory and not store.lock.writable():
        raise StoreError(
            f"stet: cannot record runs in {store.file}: the lock file {store.lock.path} "
            "cannot be opened for writing. Make it writable for everyone who records "
            "into this store (it holds no data), or delete it."
        )
    store._writable_checked = True


def repair_torn(store: FileBackend) -> None:
    """Move an interrupted append out of the way before appending after it.

    The cut bytes are kept in ``<store>.stet-torn`` and a warning names it. A tail
    that does not look like stet's own interrupted append is not touched: StoreError.
    """
    _, tail = store._check_tail(store._end, store._state)
    closing = store._closing(store._state)
    side = store.log_file + ".stet-torn"
    note = f"# {utc_now()}: {len(tail)} bytes cut from the end of {store.file}\n"
    try:
        # Never through a link planted there: it would append to somebody's file.
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | BINARY | _NOFOLLOW
        fd = os.open(side, flags, 0o666)
        try:
            write_all(fd, note.encode() + tail + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise disk_error(side, exc, "The store was not changed.") from None
    fd = store._writer_fd()
    try:
        os.ftruncate(fd, store._end)
        if closing:
            write_all(fd, closing, store._end)
        st = os.fstat(fd)
    except OSError as exc:
        raise disk_error(store.file, exc, "Nothing was recorded.") from None
    store._sig = (st.st_ino, st.st_size, st.st_mtime_ns)
    store._torn = False
    warnings.warn(
        f"stet: {store.file} ended in an incomplete record (a write cut by a crash); "
        f"its {len(tail)} bytes were moved to {side}",
        StoreWarning,
        stacklevel=2,
    )
