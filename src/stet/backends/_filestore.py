"""The writing half of every file store: records, rewrites, claims and the ledger.

A record is one write at the end of the file, under the lock, and nothing is read back.
Anything that must rewrite the file writes a temporary file, fsyncs it and renames it
over the store (through a symbolic link, if the store is one). Reading, change
detection and the index are `stet.backends._fileread`.

A format (CSV, JSON, the Parquet journal) implements a few byte-level methods:
`_parse` (records from some offset on), `_encode` (a whole file), `_append_bytes`
(one record's bytes) and `_interrupted` (whether an incomplete tail is stet's own cut
append). Everything else, and every guarantee, lives in these two modules.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stet._identity import Identity
from stet.backends._atomic import BINARY, atomic_write, disk_error, write_all
from stet.backends._fileclaims import FileClaims
from stet.backends._fileformat import Parsed, Reread
from stet.backends._fileread import GUARD, FileReader
from stet.backends._filewrite import check_writable, repair_torn
from stet.backends._index import SNAPSHOT_MIN
from stet.backends._locking import Descriptor
from stet.backends._records import OWN, Row, utc_now

__all__ = ["FileBackend", "Parsed", "Reread", "call_if_alive"]

_NOT_RECORDED = "The run was not recorded, and the store is as it was."


class FileBackend(FileReader):
    """Base class of the file stores; a format implements the byte-level methods."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.claims = FileClaims(self)

    # -- process-local state -----------------------------------------------------

    def _start_process(self) -> None:
        # The descriptor for writes, and its inode (one inherited over a fork is closed
        # when this drops it).
        self._writer: Descriptor | None = None
        self._writer_ino = -1
        self._writable_checked = False
        self.claims.forget()
        super()._start_process()

    def _forget(self) -> None:
        super()._forget()
        self._columns_of: Any = None  # the header _column_set was made from
        self._column_set: set[str] = set()

    # -- writing ---------------------------------------------------------------------

    def failures(self, ident: Identity) -> int:
        return self.claims.failures(f"{ident.digest:032x}")

    def check_writable(self) -> None:
        check_writable(self)

    def _prepare_write(self) -> None:
        """Before writing: refuse a read-only store, create the store's directory."""
        self.check_writable()
        if self._sig is not None:
            return  # the file was there at the last look: so is its directory
        directory = os.path.dirname(self.file)
        if directory and not os.path.isdir(directory):
            try:
                os.makedirs(directory, exist_ok=True)  # created on first record
            except OSError as exc:
                raise disk_error(self.file, exc, "Nothing was recorded.") from None

    def add(self, ident: Identity, extra: Mapping[str, str] | None = None) -> bool:
        self._prepare_write()
        added: bool = self._locked(lambda: self._add_locked([ident], extra) > 0)
        return added

    def add_many(self, idents: Sequence[Identity]) -> int:
        if not idents:
            return 0
        self._prepare_write()
        count: int = self._locked(lambda: self._add_locked(idents, None))
        return count

    def _add_locked(self, idents: Sequence[Identity], extra: Mapping[str, str] | None) -> int:
        self._refresh()
        new: list[Identity] = []
        seen: set[int] = set()
        for ident in idents:
            if not self._index.has(ident) and ident.digest not in seen:
                seen.add(ident.digest)
                new.append(ident)
        if not new:
            return 0
        stamp = utc_now()
        rows = [Row.of(ident, stamp, extra) for ident in new]
        if self._torn:
            repair_torn(self)  # first: neither an append nor a rewrite may lose it
        if self._needs_new_file():
            self._rewrite(rows, _NOT_RECORDED)  # indexes the rows it writes
        elif self._needs_rewrite(rows):
            self._rewrite([*self._all_rows(), *rows], _NOT_RECORDED)
        else:
            self._append(rows)
            for ident in new:
                self._index.add_identity(ident)
            self._count += len(new)
        if not self._exit_snapshot:
            self._exit_snapshot = True
            # Weakly: a store nobody uses any more is let go (with its descriptors).
            atexit.register(call_if_alive, weakref.WeakMethod(self._snapshot_at_exit))
        if self._count >= max(SNAPSHOT_MIN, 2 * self._snapshot_count):
            self._snapshot_now()
        return len(new)

    def _append(self, rows: list[Row]) -> None:
        """Write ``rows`` at the end of the file in one write; restore the file on error."""
        data, at, end_after, state = self._append_bytes(rows, self._end, self._state)
        fd = self._writer_fd()
        try:
            write_all(fd, data, at)
            st = os.fstat(fd)
            if st.st_size > at + len(data):  # the old closing text was longer
                os.ftruncate(fd, at + len(data))
                st = os.fstat(fd)
        except OSError as exc:
            self._restore(fd, at)
            raise disk_error(self.file, exc, _NOT_RECORDED) from None
        self._guard = (self._guard + data[: end_after - at])[-GUARD:]
        self._end = end_after
        self._state = state
        self._sig = (st.st_ino, st.st_size, st.st_mtime_ns)

    def _restore(self, fd: int, at: int) -> None:
        """Undo a failed append at ``at``: cut what was written, put back the closing text."""
        closing = self._closing(self._state)
        try:
            os.ftruncate(fd, at)
            if closing:
                write_all(fd, closing, at)
        except OSError:
            self._sig = None  # cannot tell what is there now: read it again next time

    def _writer_fd(self) -> int:
        """The descriptor records are written through (reopened if the file was replaced)."""
        ino = self._sig[0] if self._sig is not None else -1
        if self._writer is None or self._writer_ino != ino:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            try:
                fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | BINARY, 0o666)
            except OSError as exc:
                raise disk_error(self.file, exc, "The run was not recorded.") from None
            self._writer = Descriptor(fd)
            self._writer_ino = os.fstat(fd).st_ino
        return self._writer.fd

    def _rewrite(self, rows: list[Row], what: str = "Nothing was changed.") -> None:
        """Replace the whole file with ``rows`` (atomically). Caller holds the lock."""
        data, state = self._encode(rows, self._state)
        atomic_write(self.log_file, data, store=self.file, what=what)
        self.snapshot.remove()
        self._forget()
        self._index.add_rows(rows)
        self._count = len(rows)
        st = os.stat(self.log_file)
        self._state = state
        self._sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        self._end = len(data) - len(self._closing(state))
        self._guard = data[: self._end][-GUARD:]

    def _needs_new_file(self) -> bool:
        """Whether the next record must create the file (missing, or without a header)."""
        return self._sig is None or not self._state

    def _needs_rewrite(self, rows: list[Row]) -> bool:
        """Whether adding ``rows`` needs the whole file rewritten (new columns)."""
        if not self.fixed_columns:
            return False
        columns = self._state.get("columns", [])
        if self._columns_of is not columns:  # a set of the columns, made once per header
            self._columns_of, self._column_set = columns, {*columns}
        known = self._column_set
        return not known.issuperset(OWN) or any(not known.issuperset(row.values) for row in rows)

    def discard(self, predicate: Callable[[Row], bool]) -> list[Row]:
        if not self.exists():
            return []
        self._prepare_write()

        def remove() -> list[Row]:
            self._refresh()
            if self._torn:
                repair_torn(self)
            keep: list[Row] = []
            removed: list[Row] = []
            for row in self._all_rows():
                (removed if predicate(row) else keep).append(row)
            if removed:
                self._rewrite(keep)
            return removed

        found: list[Row] = self._locked(remove)
        return found

    def drop(self) -> None:
        if not self.exists():
            return
        self._prepare_write()

        def remove() -> None:
            if os.path.islink(self.file):
                # A shared file linked into this project: empty it through the link.
                self._rewrite([])
            for path in dict.fromkeys((self.file, self.log_file)):  # (Parquet: its journal)
                if not os.path.islink(path):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
            self.snapshot.remove()
            self.claims.ledger.remove()  # its failures go with the store
            self._forget()

        self._locked(remove)

    # -- claims and the ledger live in side files (see _fileclaims) -------------------

    def claim(self, ident: Identity, owner: Any, lease: float) -> Any:
        return self.claims.claim(ident, owner, lease)

    def renew(self, held: Sequence[Any]) -> list[Identity]:
        return self.claims.renew(held)

    def release(self, ident: Identity, owner: Any) -> None:
        self.claims.release(ident, owner)

    def complete(self, ident: Identity, owner: Any, extra: Mapping[str, str] | None = None) -> bool:
        return self.claims.complete(ident, owner, extra)

    def in_progress(self) -> list[Any]:
        return self.claims.live()

    def busy(self, owner: Any = None) -> set[int]:
        return self.claims.busy(owner)

    def note(self, event: Any) -> None:
        self.claims.note(event)

    def events(self) -> list[Any]:
        return self.claims.events()


def call_if_alive(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    """Call ``method`` unless its object was let go (an exit hook that keeps no store)."""
    found = method()
    if found is not None:
        found()
