"""Machinery shared by every file store: lock, change detection, index, writes.

A file store keeps, per process, an index of the digests of its completed runs. The hot
path of a decorated call is `FileBackend.contains`: one ``os.stat`` and a dict lookup,
as long as the file has not changed. When it has, the store takes the lock and reads
only the bytes appended since it last looked (or the whole file, helped by the index
snapshot, if it was replaced). A record is one write at the end of the file, under the
lock, and nothing is read back. Anything that must rewrite the file writes a temporary
file, fsyncs it and renames it over the store (through a symbolic link, if the store is
one).

A format (CSV, JSON, the Parquet journal) implements a few byte-level methods:
`_parse` (records from some offset on), `_encode` (a whole file), `_append_bytes`
(one record's bytes) and `_interrupted` (whether an incomplete tail is stet's own cut
append). Everything else, and every guarantee, lives here.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stet._errors import StoreError
from stet._identity import Identity
from stet.backends._atomic import BINARY, atomic_write, disk_error, real_path, write_all
from stet.backends._base import BaseBackend, Lookup
from stet.backends._fileclaims import FileClaims
from stet.backends._fileformat import FileFormat, Parsed, Reread
from stet.backends._filewrite import check_writable, repair_torn
from stet.backends._index import SNAPSHOT_MIN, Index, Snapshot
from stet.backends._locking import StoreLock, _forks
from stet.backends._records import OWN, Row, rows_of, utc_now

__all__ = ["FileBackend", "Parsed", "Reread"]

_NOT_RECORDED = "The run was not recorded, and the store is as it was."
_GUARD = 32  # bytes before the resume offset that must be unchanged to read only the tail


class FileBackend(FileFormat, BaseBackend):
    """Base class of the file stores; a format implements the byte-level methods."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.log_file = self.file  # the file records are appended to
        # stet's own files go beside the store's real file: two links to one shared
        # store must take one lock (and share claims, journal and index).
        self.side = real_path(self.file)
        self.lock = StoreLock(self.side + ".lock")
        self.snapshot = Snapshot(self.side + ".stet-index")
        self.claims = FileClaims(self)

    # -- process-local state -----------------------------------------------------

    def _start_process(self) -> None:
        self._writer: int | None = None  # descriptor for writes, and its inode
        self._writer_ino = -1
        self._writable_checked = False
        self._exit_snapshot = False  # the exit hook that saves the index is registered
        self.claims.forget()
        self._forget()

    def _forget(self) -> None:
        """Forget what was read: the state of a store that does not exist yet."""
        self._index = Index()
        self._sig: tuple[int, int, int] | None = None  # inode, size, mtime when read
        self._end = 0  # where complete records end
        self._guard = b""  # the bytes before _end, to tell an append from a rewrite
        self._torn = False  # an incomplete record follows _end
        self._state: dict[str, Any] = {}
        self._count = 0  # records read or written, for the snapshot policy
        self._snapshot_count = 0  # records the snapshot on disk holds (as far as we know)
        self._columns_of: Any = None
        self._column_set: set[str] = set()

    def _locked(self, func: Callable[[], Any]) -> Any:
        self._ensure_process()
        return self.lock.run(func)

    # -- change detection --------------------------------------------------------

    def _stat(self) -> os.stat_result | None:
        try:
            st = os.stat(self.log_file)
        except FileNotFoundError:
            if os.path.islink(self.log_file):
                raise StoreError(
                    f"stet: {self.file} is a symbolic link to a missing file "
                    f"({os.readlink(self.log_file)}); restore the target or remove the link"
                ) from None
            return None
        except NotADirectoryError:
            raise StoreError(
                f"stet: {self.file}: a parent of the store is not a directory"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(
                f"stet: {self.file} is not a regular file (a directory?); point the store "
                f"at a {self.format_name} file"
            )
        return st

    def _sync(self) -> None:
        """Bring the index up to date if the file changed; no lock if it did not."""
        self._ensure_process()
        try:
            st = os.stat(self.log_file)
            sig: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except (FileNotFoundError, NotADirectoryError):
            sig = None
        if sig != self._sig:
            self._locked(self._refresh)

    def _refresh(self) -> None:
        """Read what changed since the last look. Caller holds the lock."""
        st = self._stat()
        if st is None:
            self._forget()
            return
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        if sig == self._sig:
            return
        old = self._sig
        if old is not None and st.st_ino == old[0] and st.st_size >= self._end > 0:
            data = self._read(self._end - len(self._guard))
            if data.startswith(self._guard):
                new = data[len(self._guard) :]
                try:
                    parsed = self._parse(new, self._end, self._state)
                    self._count += self._index.add_records(parsed.records)
                except Reread:
                    pass
                else:
                    guard = (self._guard + new[: parsed.end - self._end])[-_GUARD:]
                    self._remember(parsed, sig, guard)
                    return
        self._full_read(sig)

    def _full_read(self, sig: tuple[int, int, int]) -> None:
        data = self._read(0)
        self._forget()
        saved = self.snapshot.load(data)
        if saved is not None:
            index, covered, state = saved
            try:
                parsed = self._parse(data[covered:], covered, state)
                tail = index.add_records(parsed.records)
            except Reread:
                pass  # the bytes after the snapshot are not whole records: read it all
            else:
                self._index, self._count = index, len(index)
                self._snapshot_count = self._count
                self._remember(parsed, sig, data[max(parsed.end - _GUARD, 0) : parsed.end])
                if tail > max(SNAPSHOT_MIN, self._count // 4):
                    self._save_snapshot(data)
                return
        parsed = self._parse(data, 0, {})
        self._count = self._index.add_records(parsed.records)
        self._remember(parsed, sig, data[max(parsed.end - _GUARD, 0) : parsed.end])
        if self._count >= SNAPSHOT_MIN:
            self._save_snapshot(data)

    def _save_snapshot(self, data: bytes) -> None:
        if self.lock.writable():
            self.snapshot.save(self._index, data, self._end, self._state)
            self._snapshot_count = self._count

    def _snapshot_now(self) -> None:
        """Save the index of a store that grew through this process. Caller holds the lock.

        Called when the store has doubled since the last snapshot (so the cost of reading
        and hashing it stays a constant share per record) and when a process that
        recorded exits: the next process then starts from the snapshot.
        """
        if self._sig is not None and not self._torn and self._count >= SNAPSHOT_MIN:
            data = self._read(0)
            if len(data) >= self._end:
                self._save_snapshot(data)

    def _snapshot_at_exit(self) -> None:
        def save() -> None:
            self._refresh()
            self._snapshot_now()

        with contextlib.suppress(Exception):
            if self._count > self._snapshot_count:
                self._locked(save)

    def _remember(self, parsed: Parsed, sig: tuple[int, int, int], guard: bytes) -> None:
        """Keep where ``parsed`` left off, and the bytes just before that point."""
        self._state = parsed.state
        self._sig = sig
        self._guard = guard
        self._end = parsed.end
        self._torn = parsed.torn

    def _read(self, start: int) -> bytes:
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(start)
                return fh.read()
        except OSError as exc:
            raise StoreError(f"stet: cannot read {self.file}: {exc.strerror or exc}") from None

    def bad(self, problem: str) -> StoreError:
        """An error naming this store and what is wrong with it."""
        return StoreError(
            f"stet: cannot use {self.file} as a {self.format_name} store: {problem}. "
            "stet has not modified the file; fix or move it, or choose another store."
        )

    # -- BaseBackend interface ---------------------------------------------------

    def exists(self) -> bool:
        return self._stat() is not None

    def contains(self, ident: Lookup) -> bool:
        # The skip path of every decorated call: _sync spelled out, one stat and a lookup.
        if self._forks != _forks[0]:
            self._ensure_process()
        try:
            st = os.stat(self.log_file)
            sig: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except (FileNotFoundError, NotADirectoryError):
            sig = None
        if sig != self._sig:
            self._locked(self._refresh)
        return self._index.has(ident)

    def completed(self, idents: Sequence[Lookup]) -> list[bool]:
        self._sync()  # once per batch, not once per run
        has = self._index.has
        return [has(i) for i in idents]

    def index(self, size: int = 0) -> Index:
        self._sync()
        return self._index

    def count(self, func: str | None = None) -> int | None:
        self._sync()
        if self._sig is None and not self.exists():
            return None
        if func is None:
            return len(self._index)
        return self._index.funcs.get(func, 0)

    def functions(self) -> set[str]:
        self._sync()
        return {func for func in self._index.funcs if func is not None}

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
            atexit.register(self._snapshot_at_exit)
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
        self._guard = (self._guard + data[: end_after - at])[-_GUARD:]
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
                os.close(self._writer)
                self._writer = None
            try:
                self._writer = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | BINARY, 0o666)
            except OSError as exc:
                raise disk_error(self.file, exc, "The run was not recorded.") from None
            self._writer_ino = os.fstat(self._writer).st_ino
        return self._writer

    def _all_rows(self) -> list[Row]:
        """Every record, read now from the file. Caller holds the lock."""
        data = self._read(0)
        parsed = self._parse(data, 0, {})
        return list(rows_of(parsed.header, parsed.records, parsed.lines))

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
        self._guard = data[: self._end][-_GUARD:]

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

    def rows(self) -> list[Row]:
        if not self.exists():
            return []  # nothing to read: and no lock file (or directory) is created

        def read() -> list[Row]:
            if not self.exists():
                return []
            return self._all_rows()

        found: list[Row] = self._locked(read)
        return found

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
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.file)
                self._forget()
            self.snapshot.remove()
            self.claims.ledger.remove()  # its failures go with the store

        self._locked(remove)

    def key_columns(self) -> list[str]:
        if not self.exists():
            return []

        def columns() -> list[str]:
            self._refresh()
            known = self._state.get("columns")
            if known is not None:
                return [c for c in known if not c.startswith("_stet_")]
            seen: dict[str, None] = {}
            for row in self._all_rows():
                seen.update(dict.fromkeys(row.values))
            return list(seen)

        found: list[str] = self._locked(columns)
        return found

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
