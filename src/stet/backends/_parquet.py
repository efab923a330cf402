"""The Parquet store: a Parquet file of string columns, and a journal beside it.

Parquet cannot be appended to (the footer describing the data comes last), so records
go first to ``<store>.journal``, one JSON object per line, appended like the JSON
store's records. The journal is folded into the Parquet file (rewritten through a
temporary file and an atomic rename) once it holds an eighth of the store, and when a
process that recorded exits, so the ``.parquet`` file holds every completed run when
the sweep ends. stet itself reads both, so a run is skipped from the moment it is in
the journal; other readers (pandas) see the runs folded so far. A process killed
before it folded leaves its journal for the next process that records to fold.

A process that recorded also folds the journal a second after its last record, so a
notebook that ran a sweep leaves a complete file even while its kernel lives on.

The Parquet file remembers, in its metadata, which bytes of the journal it already
holds, so a crash between writing it and emptying the journal duplicates nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import stat
import threading
import time
import weakref
from typing import Any

from stet._errors import StoreError
from stet.backends._atomic import atomic_write
from stet.backends._fileformat import Parsed
from stet.backends._fileread import file_sig
from stet.backends._filestore import FileBackend, call_if_alive
from stet.backends._filewrite import repair_torn
from stet.backends._index import SNAPSHOT_MIN
from stet.backends._json import object_records, object_text
from stet.backends._parquetfile import encode_rows, file_layout, folded_file, stored_records
from stet.backends._parquetsnapshot import base_state, snapshot_fits
from stet.backends._parquettable import require_pyarrow
from stet.backends._records import (
    Row,
    rows_of,
)

__all__ = ["ParquetBackend"]

_FOLD_MIN = 1000  # journal records before a fold is worth it
_IDLE = 1.0  # seconds without a record after which a process folds its journal


class ParquetBackend(FileBackend):
    """Completed runs in a Parquet file readable by ``pandas.read_parquet``.

    All columns are strings: one per key parameter (null where a record lacks that
    parameter) and stet's own (``_stet_func``, ``_stet_types``, ``_stet_timestamp``, ...).
    """

    suffixes = (".parquet",)
    format_name = "Parquet"
    fixed_columns = False

    def __init__(self, path: str | os.PathLike[str]) -> None:
        require_pyarrow()  # fail at once, with the install hint, when it is missing
        super().__init__(path)
        self.log_file = self.side + ".journal"

    def _start_process(self) -> None:
        super()._start_process()
        self._fold_registered = False
        self._last_append = 0.0
        self._pending = False  # records not folded yet (no threading.Event: see below)
        self._folder: threading.Thread | None = None

    def _forget(self) -> None:
        super()._forget()
        self._base_sig: tuple[int, int, int] | None = None
        self._base_count = 0
        self._journal_count = 0
        self._snapshot_kept = False  # the snapshot on disk holds no journal bytes

    # -- reading ------------------------------------------------------------------

    def _look(self) -> None:
        # Two files to look at, the journal and the Parquet file (which another tool may
        # have replaced). Once folded there is no journal: access() tells it is still
        # missing without the cost of an exception.
        if self._sig is None:
            moved = os.access(self.log_file, os.F_OK)
        else:
            moved = file_sig(self.log_file) != self._sig
        if moved or file_sig(self.file) != self._base_sig:
            self._locked(self._refresh)

    def _refresh(self) -> None:
        base = self._regular_sig(self.file)
        journal = self._regular_sig(self.log_file)
        if (base, journal) == (self._base_sig, self._sig):
            return
        if base != self._base_sig or journal is None or self._sig is None:
            self._full_read(journal)
            return
        before = len(self._index)
        super()._refresh()  # the journal changed: read the lines appended
        self._journal_count += len(self._index) - before

    def _check_regular(self) -> None:
        self._regular_sig(self.file)
        self._regular_sig(self.log_file)

    def _regular_sig(self, path: str) -> tuple[int, int, int] | None:
        """`file_sig` of ``path``; raise if something other than a file is there."""
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(
                f"stet: {path} is not a regular file (a directory?); point the store "
                "at a Parquet file"
            )
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _full_read(self, sig: tuple[int, int, int] | None) -> None:
        base_data = self._read_file(self.file)
        journal = self._read_file(self.log_file)
        self._forget()
        saved = self.snapshot.load(journal)
        first = snapshot_fits(saved, base_data, self.bad)
        fitted = None  # the state of the snapshot read, once it proved to fit
        if saved is not None and first is not None:
            index, covered, state = saved
            fitted = state
            self._index = index
            self._snapshot_count = len(index)
            self._base_count = int(state["base_count"])
            folded = 0
            if base_data:
                stored = stored_records(base_data, journal, self.bad, first)
                folded = stored.folded
                self._base_count += index.add_records(stored.records)
            start = max(covered, folded)
            parsed = self._parse(journal[start:], start, state if start == covered else {})
            tail = index.add_records(parsed.records)
            self._journal_count = tail
            if start == covered:
                self._journal_count += int(state.get("journal_count", 0))
            self._snapshot_kept = covered == 0
        else:
            folded = 0
            if base_data:
                stored = stored_records(base_data, journal, self.bad)
                folded = stored.folded
                self._base_count = self._index.add_records(stored.records)
            parsed = self._parse(journal[folded:], folded, {})
            self._journal_count = self._index.add_records(parsed.records)
        self._count = len(self._index)
        self._base_sig = file_sig(self.file)
        guard = journal[max(parsed.end - 32, 0) : parsed.end]
        if sig is not None:
            self._remember(parsed, sig, guard)
        else:
            self._state = parsed.state
        self._state.update(base_state(base_data, self._base_count, fitted))
        unsaved = self._count - self._snapshot_count
        if self._count >= SNAPSHOT_MIN and unsaved > self._snapshot_count // 16:
            self._state["journal_count"] = self._journal_count
            self.snapshot.save(self._index, journal, parsed.end, self._state)
            self._snapshot_count = self._count
            self._snapshot_kept = parsed.end == 0

    def _save_snapshot(self, data: bytes) -> None:
        if "base" not in self._state:  # see _save_folded
            base = self._read_file(self.file)
            self._state.update(base_state(base, self._base_count, None))
        super()._save_snapshot(data)

    def _read_file(self, path: str) -> bytes:
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise StoreError(f"stet: cannot read {path}: {exc.strerror or exc}") from None

    def _all_rows(self) -> list[Row]:
        base_data = self._read_file(self.file)
        journal = self._read_file(self.log_file)
        rows: list[Row] = []
        folded = 0
        if base_data:
            stored = stored_records(base_data, journal, self.bad)
            folded = stored.folded
            rows += rows_of(stored.names, stored.records)
        parsed = self._parse(journal[folded:], folded, {})
        if parsed.torn:
            self._check_tail(parsed.end, parsed.state)
        rows += rows_of(parsed.header, parsed.records, parsed.lines)
        return rows

    # -- the journal: JSON lines ----------------------------------------------------

    def _parse(self, data: bytes, start: int, state: dict[str, Any]) -> Parsed:
        complete = data.rfind(b"\n") + 1
        body = [line for line in data[:complete].split(b"\n") if line.strip()]
        try:
            items = json.loads(b"[" + b",".join(body) + b"]")
        except ValueError:
            raise self.bad(
                f"its journal {self.log_file} holds a line that is not a JSON object"
            ) from None
        line = int(state.get("line", 1))
        lines = list(range(line, line + len(items)))
        after = {**state, "line": line + data[:complete].count(b"\n")}
        torn = bool(data[complete:])
        records = object_records([items], lines, self._journal_bad)
        return Parsed([], records, start + complete, torn, after, lines)

    def _journal_bad(self, problem: str) -> StoreError:
        return self.bad(f"{problem} of its journal {self.log_file}")

    def _interrupted(self, tail: bytes, state: dict[str, Any]) -> bool:
        return tail.lstrip().startswith(b"{") and b"\n" not in tail

    def _encode(self, rows: list[Row], state: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        return "".join(object_text(r) + "\n" for r in rows).encode("utf-8"), {"line": 1}

    def _append_bytes(
        self, rows: list[Row], end: int, state: dict[str, Any]
    ) -> tuple[bytes, int, int, dict[str, Any]]:
        data = "".join(object_text(r) + "\n" for r in rows).encode("utf-8")
        after = {**state, "line": int(state.get("line", 1)) + len(rows)}
        return data, end, end + len(data), after

    def _needs_new_file(self) -> bool:
        # Looked at on disk, not taken from _base_sig: a journal gone between two looks
        # empties what this process knows, and must not make it write a new file.
        return self._sig is None and not os.path.exists(self.file)

    # -- writing ----------------------------------------------------------------------

    def _add_locked(self, idents: Any, extra: Any) -> int:
        added = super()._add_locked(idents, extra)
        if added and self._base_sig is not None and self._sig is not None:
            self._journal_count += added
            if not self._fold_registered:
                self._fold_registered = True
                # Weakly: the folding thread keeps the store alive while records wait.
                atexit.register(call_if_alive, weakref.WeakMethod(self._fold_at_exit))
            if self._journal_count >= max(_FOLD_MIN, self._base_count // 8):
                self._fold()
            else:
                self._last_append = time.monotonic()
                self._pending = True
                if self._folder is None or not self._folder.is_alive():
                    self._folder = threading.Thread(
                        target=self._fold_when_idle, name="stet-parquet-fold", daemon=True
                    )
                    self._folder.start()
        return added

    def _fold_when_idle(self) -> None:
        """Fold the journal once no record came for a second (the sweep paused or ended).

        The recording thread only assigns plain attributes: a threading.Event (a lock
        inside) could be left held by a Ctrl-C landing in ``set()``, and the next record
        would wait for it forever.
        """
        while True:
            left = self._last_append + _IDLE - time.monotonic()
            if left > 0:
                time.sleep(left)
            elif self._pending:
                self._pending = False
                self._fold_at_exit()
            else:
                return  # the next record starts another thread

    def _rewrite(self, rows: list[Row], what: str = "Nothing was changed.") -> None:
        """Write ``rows`` as the whole Parquet file and empty the journal."""
        data = encode_rows(rows, None)
        self._write_file(data, what)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log_file)
        self._forget()
        self._index.add_rows(rows)
        self._base_count = self._count = len(rows)
        self._base_sig = file_sig(self.file)
        self._save_folded(data, appended=False)

    def _save_folded(self, data: bytes, appended: bool) -> None:
        """Snapshot the index of the Parquet file ``data`` just written (no journal).

        After rows were only appended as a row group, the snapshot on disk still fits
        (see `snapshot_fits`) and the next process reads just the new row groups; it is
        saved again once those hold a sixteenth of the store.
        """
        # What the snapshot notes of the file (a hash of all of it) is worked out when
        # one is saved: a short process that appended a row group saves none.
        self._state = {"line": 1, "base_count": self._base_count}
        if self._count < SNAPSHOT_MIN:
            self.snapshot.remove()
        elif not (
            appended
            and self._snapshot_kept
            and self._count - self._snapshot_count <= self._snapshot_count // 16
        ):
            self._state.update(base_state(data, self._base_count, None))
            self.snapshot.save(self._index, b"", 0, {**self._state, "journal_count": 0})
            self._snapshot_count = self._count
            self._snapshot_kept = True

    def _fold(self) -> None:
        """Move the journal's records into the Parquet file (see `folded_file`).

        Caller holds the lock.
        """
        if self._torn:
            repair_torn(self)
        base_data = self._read_file(self.file)
        journal = self._read_file(self.log_file)
        layout = file_layout(base_data, journal, self.bad) if base_data else None
        folded = layout.folded if layout else 0
        parsed = self._parse(journal[folded:], folded, {})
        new = list(rows_of(parsed.header, parsed.records))
        folded_now = (len(journal), hashlib.sha256(journal).hexdigest())
        result = folded_file(base_data, journal, layout, new, folded_now, self.bad)
        if result is None:
            return
        data, added = result
        self._write_file(data)
        # The Parquet file now holds the journal (its metadata says so): emptying the
        # journal may fail or be cut by a crash without losing or doubling a run.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log_file)
        self._base_count += len(new)
        self._journal_count = 0
        self._base_sig = file_sig(self.file)
        self._sig = None
        self._end = 0
        self._guard = b""
        self._save_folded(data, appended=added)

    def _fold_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            if os.path.exists(self.log_file):
                self._locked(self._fold_now)

    def _fold_now(self) -> None:
        self._refresh()
        if os.path.exists(self.log_file):
            self._fold()

    def fold(self) -> None:
        """Fold the journal into the Parquet file now (stet does this by itself)."""
        if os.path.exists(self.log_file):
            self._prepare_write()
            self._locked(self._fold_now)

    def _write_file(self, data: bytes, what: str = "Nothing was changed.") -> None:
        """Replace the Parquet file by ``data``."""
        atomic_write(self.file, data, store=self.file, what=what)

    # -- the whole store -------------------------------------------------------------

    def exists(self) -> bool:
        self._check_regular()
        return os.path.exists(self.file) or os.path.exists(self.log_file)

    def key_columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self.rows():
            seen.update(dict.fromkeys(row.values))
        return list(seen)
