"""Real filesystems for the fault tests: a small tmpfs that can be filled or made read-only.

Mounting needs root on Linux; tests using these helpers skip elsewhere with
`needs_mounts`. Every mount is undone in a ``finally``, even when the test fails.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["fill", "needs_mounts", "read_only", "tmpfs"]

needs_mounts = pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0,
    reason="mounts a real tmpfs (mount -t tmpfs, remount ro): needs root on Linux",
)

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mount {' '.join(args)} failed: {done.stderr.strip()}")


@contextlib.contextmanager
def tmpfs(directory: Path, size: str = "1m") -> Iterator[Path]:
    """Mount a fresh tmpfs of ``size`` on ``directory`` (created), unmounted afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(directory))
    try:
        yield directory
    finally:
        # Descriptors this process still holds (stet keeps its lock file and writer
        # open) make a plain umount fail; a lazy one detaches the mount at once.
        done = subprocess.run(["umount", str(directory)], capture_output=True)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(directory)], check=True)


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Remount the tmpfs at ``directory`` read-only for the block, then writable again."""
    _mount("-o", "remount,ro", str(directory))
    try:
        yield
    finally:
        _mount("-o", "remount,rw", str(directory))


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` with a file until no page is left; return it.

    Pages already allocated to other files keep their unused tail: on tmpfs a file can
    still grow to the end of its last page, and not one byte further.
    """
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, PAGE, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler
