"""Writing files so that a crash, a full disk or a symbolic link never costs data.

A whole-file rewrite writes a temporary file beside the real file, fsyncs it and renames
it over the real file, so a crash at any instant leaves the old file or the new one.
A store that is a symbolic link (a shared results file linked into each project) is
rewritten where the link points, so the link stays and every project sees the change.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time

from stet._errors import StoreError

__all__ = ["BINARY", "atomic_write", "disk_error", "nearest_directory", "real_path", "write_all"]

#: Windows opens files made by os.open in text mode (turning \n into \r\n) unless told.
BINARY = getattr(os, "O_BINARY", 0)

_DISK = (
    (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG)
    if hasattr(errno, "EDQUOT")
    else (
        errno.ENOSPC,
        errno.EIO,
        errno.EFBIG,
    )
)


def real_path(path: str) -> str:
    """The file ``path`` names, following symbolic links (``path`` itself if none)."""
    return os.path.realpath(path) if os.path.islink(path) else path


def nearest_directory(path: str) -> str:
    """The directory of ``path``, or its nearest ancestor that exists (for access checks)."""
    directory = os.path.dirname(path) or "."
    while not os.path.isdir(directory):
        parent = os.path.dirname(directory) or "."
        if parent == directory:
            break
        directory = parent
    return directory


def disk_error(store: str, exc: OSError, what: str) -> StoreError:
    """The error for a failed write to ``store``: says which and what was not done."""
    if exc.errno in _DISK:
        reason = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EFBIG) else exc.strerror
        if hasattr(errno, "EDQUOT") and exc.errno == errno.EDQUOT:
            reason = "the disk quota is exhausted"
        return StoreError(
            f"stet: could not write {store}: {reason} ({exc.strerror}). {what} Free some "
            "space and run again; the store holds every run recorded before."
        )
    return StoreError(f"stet: could not write {store}: {exc.strerror or exc}. {what}")


def write_all(fd: int, data: bytes, at: int | None = None) -> None:
    """Write all of ``data`` (at offset ``at``, or the current position), or raise.

    A short write (a full disk, a file size limit) is continued, so its error is raised
    rather than lost.
    """
    view = memoryview(data)
    if at is not None and hasattr(os, "pwrite"):
        while view:
            done = os.pwrite(fd, view, at)
            view = view[done:]
            at += done
        return
    if at is not None:
        os.lseek(fd, at, os.SEEK_SET)
    while view:
        view = view[os.write(fd, view) :]


def atomic_write(
    path: str,
    data: bytes,
    durable: bool = True,
    store: str | None = None,
    follow: bool = True,
    what: str = "Nothing was changed.",
) -> None:
    """Replace the file at ``path`` (through a symbolic link) with ``data``, atomically.

    Args:
        path: the file; a symbolic link is followed and its target replaced.
        data: the new content.
        durable: fsync the file and its directory (skipped for files that may be lost
            on a power failure, such as caches).
        store: the store to name in errors (default ``path``).
        follow: replace the target of a symbolic link at ``path``; False replaces the
            link itself (stet's side files: a link planted there is never followed).
        what: what the error says was not done (``"The run was not recorded."``).

    Raises:
        StoreError: when the disk is full or the write fails; ``path`` is untouched.
    """
    target = real_path(path) if follow else path
    directory = os.path.dirname(target) or "."
    name = os.path.basename(target)
    _remove_orphans(directory, name)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.stet-tmp")
    try:
        mode = os.stat(target).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | BINARY, mode)
    except OSError as exc:
        raise disk_error(store or path, exc, what) from None
    try:
        try:
            write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        _replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise disk_error(store or path, exc, what) from None
        raise
    if durable:
        _fsync_dir(directory)


def _replace(tmp: str, path: str) -> None:
    """``os.replace``, retried briefly when Windows refuses it.

    There another program holding the store open (a spreadsheet, a virus scanner)
    makes the rename fail for a moment.
    """
    for attempt in range(50):
        try:
            os.replace(tmp, path)
            return
        except PermissionError:
            if os.name != "nt" or attempt == 49:
                raise
            time.sleep(0.02 * (attempt + 1))


def _remove_orphans(directory: str, name: str) -> None:
    """Delete temporary files of earlier rewrites whose process was killed."""
    from stet.backends._liveness import pid_alive

    prefix, suffix = f".{name}.", ".stet-tmp"
    try:
        entries = [e for e in os.listdir(directory) if e.startswith(prefix) and e.endswith(suffix)]
    except OSError:
        return
    for entry in entries:
        pid = entry[len(prefix) : -len(suffix)]
        if pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, entry))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: str) -> None:
    # Makes the rename itself durable; directories cannot be opened on Windows.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
