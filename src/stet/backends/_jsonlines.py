"""Side files of JSON objects, one per line, appended under the store's lock.

A file store keeps its claims (``<store>.claims``) and its ledger
(``<store>.ledger.jsonl``) in such files. A process remembers how far it has read and
reads only what was appended since (or all of it, after the file was rewritten). A last
line without its line end is an append cut by a crash: readers leave it, the next
writer cuts it off (the file is stet's own, and the cut line never completed).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from typing import Any

from stet._errors import StoreError
from stet.backends._atomic import BINARY, atomic_write, disk_error, write_all

__all__ = ["JsonLines"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_GUARD = 16


class JsonLines:
    """One side file: read what was appended since the last look, append, rewrite.

    Not thread-safe on its own: callers hold the store's lock, which also excludes
    the other threads of this process.
    """

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self.what = what  # e.g. "claims file", for messages
        self.forget()

    def forget(self) -> None:
        """Forget what was read (a new process, or the file was removed)."""
        self._sig: tuple[int, int, int] | None = None
        self._end = 0  # where complete lines end
        self._guard = b""  # the bytes before _end, to tell an append from a rewrite
        self._size = 0

    def exists(self) -> bool:
        """Whether the file exists."""
        return os.path.lexists(self.path)

    def read_new(self) -> tuple[bool, list[dict[str, Any]]]:
        """Objects appended since the last call.

        Returns:
            ``(fresh, items)``: ``fresh`` is True when ``items`` are the whole file
            (first read, or the file was rewritten or removed since), False when they
            only follow what was read before.

        Raises:
            StoreError: for a line that is not a JSON object (names file and line).
        """
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            self.forget()
            return True, []
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        if sig == self._sig:
            return False, []
        old = self._sig
        if old is not None and st.st_ino == old[0] and st.st_size >= self._end > 0:
            data = self._read(self._end - len(self._guard))
            if data.startswith(self._guard):
                new = data[len(self._guard) :]
                complete = new.rfind(b"\n") + 1
                items = self._parse(new[:complete], None)
                self._end += complete
                self._guard = (self._guard + new[:complete])[-_GUARD:]
                self._sig, self._size = sig, st.st_size
                return False, items
        data = self._read(0)
        complete = data.rfind(b"\n") + 1
        items = self._parse(data[:complete], 1)
        self._end = complete
        self._guard = data[:complete][-_GUARD:]
        self._sig, self._size = sig, st.st_size
        return True, items

    def _read(self, start: int) -> bytes:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(start)
                return fh.read()
        except OSError as exc:
            raise StoreError(f"stet: cannot read the {self.what} {self.path}: {exc}") from None

    def _parse(self, data: bytes, first_line: int | None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for n, line in enumerate(data.split(b"\n")[:-1]):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                item = None
            if not isinstance(item, dict):
                where = f"line {first_line + n}" if first_line else "a line appended lately"
                raise StoreError(
                    f"stet: cannot read the {self.what} {self.path}: {where} is not a JSON "
                    "object. stet has not modified the file; it holds only stet's own "
                    "bookkeeping: move it away if no worker is running."
                )
            items.append(item)
        return items

    def append(self, items: Iterable[dict[str, Any]], store: str) -> None:
        """Append ``items`` as lines; call `read_new` first, under the same lock.

        A line an earlier crash left unfinished (bytes after the last line end) is cut
        off: the file is stet's own, and that line never completed.

        Raises:
            StoreError: when the disk is full; the file is left as it was.
        """
        data = "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items).encode("utf-8")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | BINARY, 0o666)
        except OSError as exc:
            raise disk_error(store, exc, f"The {self.what} was not changed.") from None
        try:
            st = os.fstat(fd)
            known = self._sig is not None and (st.st_ino, st.st_size) == self._sig[:2]
            at = self._end if known else st.st_size
            try:
                write_all(fd, data, at)
                if st.st_size > at + len(data):
                    os.ftruncate(fd, at + len(data))
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, at)
                raise disk_error(store, exc, f"The {self.what} was not changed.") from None
            after = os.fstat(fd)
        finally:
            os.close(fd)
        if known or (self._sig is None and at == 0):
            self._guard = (self._guard + data)[-_GUARD:] if known else data[-_GUARD:]
            self._end = at + len(data)
            self._sig, self._size = (after.st_ino, after.st_size, after.st_mtime_ns), after.st_size

    def rewrite(self, items: Iterable[dict[str, Any]]) -> None:
        """Replace the file with ``items`` (atomically; a link there is replaced, not followed)."""
        data = "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items).encode("utf-8")
        atomic_write(self.path, data, durable=False, follow=False)
        self.forget()

    def remove(self) -> None:
        """Delete the file."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.forget()
