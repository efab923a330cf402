"""The reading half of every file store: change detection, the index and its snapshot.

A file store keeps, per process, an index of the digests of its completed runs. The hot
path of a decorated call is `FileReader.contains`: a dict lookup, and an ``os.stat`` to
see whether the file changed, unless the run was found done within `FRESH` seconds of
the last look. When it has changed, the store takes the lock and reads only the bytes
appended since it last looked (or the whole file, helped by the index snapshot, if it
was replaced). The writing half is `stet.backends._filestore`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
import time
from collections.abc import Callable, Sequence
from typing import Any

from stet._errors import StoreError
from stet.backends._atomic import real_path
from stet.backends._base import BaseBackend, Lookup
from stet.backends._fileformat import FileFormat, Parsed, Reread
from stet.backends._index import SNAPSHOT_MIN, Index, Snapshot
from stet.backends._locking import StoreLock, _forks
from stet.backends._records import Row, rows_of

__all__ = ["GUARD", "FileReader", "file_sig"]

GUARD = 32  # bytes before the resume offset that must be unchanged to read only the tail
#: Seconds after a look at the file during which a run found done in the index is
#: trusted without looking again. Only a removal (``stet reset``) can undo a completed
#: run: one made by another process (or by hand) is seen this much later at most, one
#: made in this process at once (see `_looks`). A run not found is always looked for.
FRESH = 0.001
#: A new number at each locked operation on any file store of this process: a change
#: made through another backend object of the same store must be seen by the next call,
#: not later. (Numbers from a counter, not ``+= 1``: two threads could write one value.)
_looks = [0]
_ticks = itertools.count(1)


def file_sig(path: str) -> tuple[int, int, int] | None:
    """What tells a file's versions apart: inode, size, modification time (None: absent)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class FileReader(FileFormat, BaseBackend):
    """What every file store does to read: keep its index in step with the file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.log_file = self.file  # the file records are appended to
        # stet's own files go beside the store's real file: two links to one shared
        # store must take one lock (and share claims, journal and index).
        self.side = real_path(self.file)
        self.lock = StoreLock(self.side + ".lock")
        self.snapshot = Snapshot(self.side + ".stet-index")

    # -- process-local state -----------------------------------------------------

    def _start_process(self) -> None:
        self._exit_snapshot = False  # the exit hook that saves the index is registered
        self._fresh_until = 0.0  # until when a run found done is trusted without a stat
        self._seen = -1  # _looks[0] at the last look at the file
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

    def _locked(self, func: Callable[[], Any]) -> Any:
        self._ensure_process()
        try:
            return self.lock.run(func)
        finally:
            _looks[0] = next(_ticks)

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
        self._look()

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
        # Only a file that grew may hold an append; one that kept its size was rewritten.
        grew = old is not None and st.st_ino == old[0] and st.st_size > old[1]
        if grew and st.st_size >= self._end > 0:
            data = self._read(self._end - len(self._guard))
            if data.startswith(self._guard):
                new = data[len(self._guard) :]
                try:
                    parsed = self._parse(new, self._end, self._state)
                    self._count += self._index.add_records(parsed.records)
                except Reread:
                    pass
                else:
                    guard = (self._guard + new[: parsed.end - self._end])[-GUARD:]
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
                saved_runs = len(index)
                parsed = self._parse(data[covered:], covered, state)
                tail = index.add_records(parsed.records)
            except Reread:
                pass  # the bytes after the snapshot are not whole records: read it all
            else:
                self._index, self._count = index, len(index)
                self._snapshot_count = saved_runs
                self._remember(parsed, sig, data[max(parsed.end - GUARD, 0) : parsed.end])
                if tail > max(SNAPSHOT_MIN, self._count // 4):
                    self._save_snapshot(data)
                return
        parsed = self._parse(data, 0, {})
        self._count = self._index.add_records(parsed.records)
        self._remember(parsed, sig, data[max(parsed.end - GUARD, 0) : parsed.end])
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
        recorded a sixteenth of the snapshot's runs or more exits: the next process then
        starts from the snapshot.
        """
        if self._sig is not None and not self._torn and self._count >= SNAPSHOT_MIN:
            data = self._read(0)
            if len(data) >= self._end:
                self._save_snapshot(data)

    def _snapshot_at_exit(self) -> None:
        def save() -> None:
            self._refresh()
            self._snapshot_now()

        # Runs after the snapshot cost the next process a parse of their lines; only
        # once they are a sixteenth of it is writing every digest again cheaper.
        with contextlib.suppress(Exception):
            if self._count - self._snapshot_count > self._snapshot_count // 16:
                self._locked(save)

    def _remember(self, parsed: Parsed, sig: tuple[int, int, int], guard: bytes) -> None:
        """Keep where ``parsed`` left off, and the bytes just before that point."""
        if parsed.torn:
            self._check_tail(parsed.end, parsed.state)
        self._state = parsed.state
        self._sig = sig
        self._guard = guard
        self._end = parsed.end
        self._torn = parsed.torn

    def _check_tail(self, end: int, state: dict[str, Any]) -> tuple[bytes, bytes]:
        """The bytes after the last complete record, with and without the closing text.

        Those bytes (from ``end`` on) must be stet's own append, cut by a crash.

        Raises:
            StoreError: for anything else (edited by hand, written by another tool):
                stet never reads, moves or cuts bytes it did not write.
        """
        data = self._read(end)
        closing = self._closing(state)
        tail = data[: len(data) - len(closing)] if closing and data.endswith(closing) else data
        if not self._interrupted(tail, state):
            with open(self.log_file, "rb") as fh:
                line = fh.read(end).count(b"\n")
            raise self.bad(
                f"it ends in {len(data)} bytes after line {line} that are not a complete "
                "record, nor one stet was writing when it was stopped (edited by hand, or "
                "written by another tool?). Complete or delete them"
            )
        return data, tail

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

    # -- reading ---------------------------------------------------------------------

    def exists(self) -> bool:
        return self._stat() is not None

    def contains(self, ident: Lookup) -> bool:
        # The skip path of every decorated call. A stat costs more than the rest of a
        # skip: a run found done just after a look at the file skips it (see FRESH).
        # perf_counter, not monotonic: on Windows before 3.13 monotonic ticks per 16 ms.
        if self._forks != _forks[0]:
            self._ensure_process()
        now = time.perf_counter()
        if self._index.has(ident) and now < self._fresh_until and self._seen == _looks[0]:
            return True
        looks = _looks[0]
        self._look()
        self._fresh_until, self._seen = now + FRESH, looks
        return self._index.has(ident)

    def _look(self) -> None:
        """Read what changed in the file since the last look, if anything (one stat)."""
        if file_sig(self.log_file) != self._sig:
            self._locked(self._refresh)

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
        return self._index.funcs.get(func, 0) + self._index.funcs.get(None, 0)

    def functions(self) -> set[str]:
        self._sync()
        return {func for func in self._index.funcs if func is not None}

    def _all_rows(self) -> list[Row]:
        """Every record, read now from the file. Caller holds the lock."""
        data = self._read(0)
        parsed = self._parse(data, 0, {})
        if parsed.torn:
            self._check_tail(parsed.end, parsed.state)
        return list(rows_of(parsed.header, parsed.records, parsed.lines))

    def rows(self) -> list[Row]:
        if not self.exists():
            return []  # nothing to read: and no lock file (or directory) is created

        def read() -> list[Row]:
            if not self.exists():
                return []
            return self._all_rows()

        found: list[Row] = self._locked(read)
        return found

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
