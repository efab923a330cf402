"""Machinery shared by every file store: locking, change detection, index, rewrite.

A file store keeps, per process, an index (a dict) of 16-byte digests of the completed runs (about
80 bytes a record). The hot path of a decorated call is ``contains``: one ``os.stat``
and a set lookup, with no lock, as long as the file has not changed. When it has, the
store takes the lock and reads only the bytes appended since it last looked (or the
whole file, if it was replaced or shrank). Records are appended in one ``write`` call;
anything that must rewrite the file writes a temporary file, fsyncs it and renames it
over the store, so a crash at any instant leaves either the old or the new file.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from filelock import FileLock, Timeout

from stet._errors import StoreError, StoreLockTimeout
from stet._identity import Identity
from stet.backends._base import (
    RESERVED,
    BaseBackend,
    CellPlan,
    ClaimBook,
    Index,
    Lookup,
    Row,
    index_records,
    index_rows,
)
from stet.backends._claims import Claim, pid_alive

__all__ = ["FileBackend", "Parsed", "atomic_write"]

_GUARD = 32  # bytes before the resume offset that must be unchanged to read only the tail


def _lock_timeout() -> float:
    text = os.environ.get("STET_LOCK_TIMEOUT", "")
    try:
        return float(text) if text else 120.0
    except ValueError:
        raise ValueError(f"stet: STET_LOCK_TIMEOUT={text!r} is not a number of seconds") from None


@dataclass
class Parsed:
    """What a format's parser found in a file (or in the bytes appended to it).

    Attributes:
        rows: the completed runs read (possibly a generator: iterate once).
        columns: the store's column names in file order (key columns and stet's own).
        resume: offset at which bytes appended later start, or None if the format
            cannot be read incrementally.
        torn: offset of an incomplete final record left by an interrupted write, to be
            cut off before the next append; None when the file ends cleanly.
        records: optionally, the validated records as ``(cells, plan, timestamp)``;
            the index digests these instead of building ``rows`` (faster).
    """

    rows: Iterable[Row]
    columns: list[str] = field(default_factory=list)
    resume: int | None = None
    torn: int | None = None
    records: Iterable[tuple[Any, CellPlan, str]] | None = None
    empty: bool = False

    def index_into(self, typed: Index, legacy: Index) -> None:
        """Add this parse's records to the index (consumes it)."""
        if self.records is not None:
            index_records(self.records, typed, legacy)
        else:
            index_rows(self.rows, typed, legacy)


def atomic_write(path: str, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: write a temporary file, fsync, rename.

    A crash at any point leaves either the old file or the new one, never a mix.
    ``durable=False`` skips the fsyncs, for files that may be lost on power failure.
    """
    directory = os.path.dirname(path) or "."
    _remove_orphans(directory, os.path.basename(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.stet-tmp")
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | BINARY, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    _replace(tmp, path)
    if durable:
        _fsync_dir(directory)


#: Windows opens files made by os.open in text mode (turning \n into \r\n) unless told.
BINARY = getattr(os, "O_BINARY", 0)


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


class _FileClaims:
    """The claims of a file store during one locked section."""

    def __init__(self, backend: FileBackend, claims: dict[str, Claim]) -> None:
        self.backend = backend
        self.claims = claims
        self.dirty = False

    def done(self, ident: Identity) -> bool:
        return self.backend._known(ident)

    def get(self, key: str) -> Claim | None:
        return self.claims.get(key)

    def put(self, claim: Claim) -> None:
        self.claims[claim.key] = claim
        self.dirty = True

    def delete(self, key: str) -> None:
        if self.claims.pop(key, None) is not None:
            self.dirty = True

    def all(self) -> list[Claim]:
        return list(self.claims.values())

    def record(self, ident: Identity, timestamp: str) -> None:
        self.backend.add(ident, timestamp)


class FileBackend(BaseBackend):
    """Base class of the file stores; a format implements the byte-level methods.

    A subclass implements `_parse` (a whole file), `_serialize` (a whole
    file) and, for formats that can grow in place, `_parse_tail` and
    `_append`. Everything else, and every guarantee, lives here.
    """

    #: Human name of the format, used in messages.
    format_name = "file"
    #: Whether records can be added without rewriting the file.
    appendable = True
    #: Whether the file declares its columns up front (a header or schema), so a record
    #: with a new key parameter means rewriting the file with the column added.
    fixed_columns = True

    # Per-process state, (re)built by _start_fresh: what this process last read.
    _index: Index  # digests of typed records
    _legacy: Index  # digests of records matched by text alone (0.0.x, imported)
    _sig: tuple[int, int, int] | None  # inode, size, mtime of the file when read
    _resume: int | None  # where appended bytes start
    _guard: bytes  # the bytes just before _resume, to tell an append from a rewrite
    _torn: int | None  # start of an interrupted final record, cut before appending
    _columns: list[str]
    _empty: bool

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.lock_path = self.path + ".lock"
        self.claims_path = self.path + ".claims"

    # -- process-local state -----------------------------------------------------

    def _start_process(self) -> None:
        self._mutex = threading.RLock()
        self._flock: FileLock | None = None
        self._start_fresh()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold this process's mutex and the cross-process file lock."""
        self._ensure_process()
        with self._mutex:
            if self._flock is None:
                timeout = _lock_timeout()
                # mode 0o666: a lock file left behind must not lock out other users
                self._flock = FileLock(
                    self.lock_path, timeout=timeout, mode=0o666, thread_local=False
                )
            try:
                self._flock.acquire()
            except Timeout:
                raise StoreLockTimeout(
                    f"stet: could not lock {self.lock_path} within "
                    f"{self._flock.timeout:g} s: another process holds it. Wait for it, "
                    "or raise STET_LOCK_TIMEOUT (seconds)."
                ) from None
            except PermissionError as exc:
                if os.path.exists(self.lock_path):
                    raise StoreError(
                        f"stet: cannot open the lock file {self.lock_path} ({exc.strerror}): "
                        "it was left by another user. It holds no data: delete it, or make "
                        "it writable for everyone who records into this store."
                    ) from None
                raise StoreError(
                    f"stet: cannot create the lock file {self.lock_path} ({exc.strerror}); "
                    "the store's directory must be writable"
                ) from None
            try:
                yield
            finally:
                self._flock.release()

    # -- change detection --------------------------------------------------------

    def _stat(self) -> os.stat_result | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            raise StoreError(
                f"stet: {self.path}: a parent of the store is not a directory"
            ) from None
        if not os.path.isfile(self.path):
            raise StoreError(
                f"stet: {self.path} is not a regular file (a directory?); point the store "
                f"at a {self.format_name} file"
            )
        return st

    def _sync(self) -> None:
        """Bring the index up to date if the file changed; no lock if it did not."""
        self._ensure_process()
        try:
            st = os.stat(self.path)
            sig: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except (FileNotFoundError, NotADirectoryError):
            sig = None
        if sig != self._sig:
            with self._locked():
                self._refresh()

    def _refresh(self) -> None:
        """Read what changed since the last look. Caller holds the lock."""
        st = self._stat()
        if st is None:
            self._start_fresh()
            return
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        if sig == self._sig:
            return
        old = self._sig
        if (
            old is not None
            and self._resume is not None
            and st.st_ino == old[0]
            and st.st_size >= old[1]
            and self._torn is None
        ):
            start = max(self._resume - len(self._guard), 0)
            data = self._read(start)
            if data[: len(self._guard)] == self._guard:
                parsed = self._parse_tail(data[len(self._guard) :], self._resume)
                if parsed is not None:
                    parsed.index_into(self._index, self._legacy)
                    self._remember(parsed, sig)
                    return
        parsed = self._parse_file(self._read(0))
        self._index = {}
        self._legacy = {}
        parsed.index_into(self._index, self._legacy)
        self._remember(parsed, sig)

    def _start_fresh(self) -> None:
        """Forget what was read: the state of a store that does not exist yet."""
        self._index = {}
        self._legacy = {}
        self._sig = None
        self._resume = None
        self._guard = b""
        self._torn = None
        self._columns = []
        self._empty = True

    def _remember(self, parsed: Parsed, sig: tuple[int, int, int]) -> None:
        if parsed.columns:
            self._columns = parsed.columns
        self._empty = parsed.empty
        self._sig = sig
        self._resume = parsed.resume
        self._torn = parsed.torn
        self._guard = self._read_guard(parsed.resume)

    def _read_guard(self, resume: int | None) -> bytes:
        if resume is None or resume == 0:
            return b""
        start = max(resume - _GUARD, 0)
        with open(self.path, "rb") as f:
            f.seek(start)
            return f.read(resume - start)

    def _read(self, start: int) -> bytes:
        try:
            with open(self.path, "rb") as f:
                f.seek(start)
                return f.read()
        except PermissionError as exc:
            raise StoreError(f"stet: cannot read {self.path}: {exc.strerror}") from None

    def _parse_file(self, data: bytes) -> Parsed:
        if not data.strip():
            return Parsed([], [], None, empty=True)
        return self._parse(data)

    def _after_write(self, resume: int | None) -> None:
        st = os.stat(self.path)
        self._sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        self._resume = resume
        self._torn = None
        self._empty = False
        self._guard = self._read_guard(resume)

    def bad(self, problem: str) -> StoreError:
        """An error naming this store and what is wrong with it."""
        return StoreError(
            f"stet: cannot use {self.path} as a {self.format_name} store: {problem}. "
            "stet has not modified the file; fix or move it, or choose another store."
        )

    # -- BaseBackend interface ---------------------------------------------------

    def exists(self) -> bool:
        return self._stat() is not None

    def contains(self, ident: Identity) -> bool:
        self._sync()
        return self._known(ident)

    def completed(self, idents: Sequence[Lookup]) -> list[bool]:
        self._sync()  # once per batch, not once per identity
        index, legacy = self._index, self._legacy
        if legacy:
            return [i.digest in index or i.legacy in legacy for i in idents]
        return [i.digest in index for i in idents]

    def _known(self, ident: Identity) -> bool:
        """Whether the index holds ``ident`` (typed, or by text alone)."""
        return ident.digest in self._index or bool(self._legacy and ident.legacy in self._legacy)

    def _prepare_write(self) -> None:
        """Before writing: create the store's directory, or refuse a read-only store.

        The mode bits are checked rather than trusted to fail: a rewrite replaces the
        file by renaming, which a read-only file does not prevent (and root may write
        anything), yet a researcher who made a store read-only meant "leave it be".
        """
        self._ensure_process()
        st = self._stat()
        if st is None:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)  # created on first record
        elif not st.st_mode & 0o222:
            raise StoreError(
                f"stet: {self.path} is read-only, so stet cannot record runs in it. Make it "
                "writable (chmod u+w) to go on recording, or choose another store."
            )

    def add(self, ident: Identity, timestamp: str) -> bool:
        self._prepare_write()
        with self._locked():
            self._refresh()
            if self._known(ident):
                return False
            row = Row.of(ident, timestamp)
            columns_change = self.fixed_columns and any(
                c not in self._columns for c in (*ident.names, *RESERVED)
            )
            if self._sig is None or self._empty:
                self._rewrite([row], self._merge_columns([], ident.names))
            elif columns_change or not self.appendable:
                self._rewrite_adding(row, self._merge_columns(self._columns, ident.names))
            else:
                if self._torn is not None:
                    os.truncate(self.path, self._torn)
                    self._torn = None
                resume = self._append(row, self._columns, self._resume)
                self._after_write(resume)
            (self._legacy if ident.is_text else self._index)[ident.digest] = None
            return True

    def rows(self) -> list[Row]:
        if self._stat() is None:
            return []  # nothing to read: and no lock file (or directory) is created
        with self._locked():
            if self._stat() is None:
                self._start_fresh()
                return []
            return list(self._parse_file(self._read(0)).rows)

    def discard(self, predicate: Callable[[Row], bool]) -> list[Row]:
        if self._stat() is None:
            return []
        self._prepare_write()
        with self._locked():
            self._refresh()
            if self._sig is None:
                return []
            parsed = self._parse_file(self._read(0))
            keep: list[Row] = []
            removed: list[Row] = []
            for row in parsed.rows:
                (removed if predicate(row) else keep).append(row)
            if removed or parsed.torn is not None:
                columns = parsed.columns or self._merge_columns([], ())
                self._rewrite(keep, columns)
                self._index = {}
                self._legacy = {}
                index_rows(keep, self._index, self._legacy)
            return removed

    def key_columns(self) -> list[str]:
        if self._stat() is None:
            return []
        with self._locked():
            self._refresh()
            if self._columns:
                return [c for c in self._columns if not c.startswith("_stet_")]
        return super().key_columns()

    # -- claims --------------------------------------------------------------------

    @contextmanager
    def _claims(self) -> Iterator[ClaimBook]:
        """Claims live in ``<store>.claims`` (JSON), read and written under the lock."""
        self._prepare_write()
        with self._locked():
            self._refresh()
            book = _FileClaims(self, self._load_claims())
            yield book
            if book.dirty:
                data = {key: claim.to_json() for key, claim in book.claims.items()}
                text = json.dumps(data, indent=1, sort_keys=True).encode("utf-8")
                # Claims are short-lived and rebuilt by live workers, so no fsync.
                atomic_write(self.claims_path, text, durable=False)

    def in_progress(self) -> list[Claim]:
        if not os.path.exists(self.claims_path):
            return []  # no worker ever claimed a run here: no need to lock
        with self._locked():  # read only: works on a store made read-only too
            return [c for c in self._load_claims().values() if not c.stale()]

    def _load_claims(self) -> dict[str, Claim]:
        try:
            with open(self.claims_path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(raw)
            return {key: Claim.from_json(key, value) for key, value in data.items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise StoreError(
                f"stet: cannot read the claims file {self.claims_path}: it is not a JSON "
                "object of claims. stet has not modified it; delete it if no worker is "
                "running (it only lists runs in progress)."
            ) from None

    # -- helpers for formats -----------------------------------------------------

    @staticmethod
    def _merge_columns(columns: list[str], names: tuple[str, ...]) -> list[str]:
        """Existing key columns, then new key names, then stet's own columns."""
        keys = [c for c in columns if c not in RESERVED]
        keys += [n for n in names if n not in keys]
        return keys + list(RESERVED)

    def _rewrite_adding(self, row: Row, columns: list[str]) -> None:
        """Rewrite the whole file with ``row`` added (new columns, or no append)."""
        rows = self._parse_file(self._read(0)).rows
        self._rewrite([*rows, row], columns)

    def _rewrite(self, rows: list[Row], columns: list[str]) -> None:
        data, resume = self._serialize(rows, columns)
        atomic_write(self.path, data)
        self._columns = columns
        self._after_write(resume)

    # -- what each format implements --------------------------------------------

    def _parse(self, data: bytes) -> Parsed:
        """Parse a whole, non-empty file; raise `bad` errors for anything odd."""
        raise NotImplementedError

    def _parse_tail(self, data: bytes, start: int) -> Parsed | None:
        """Parse bytes appended at offset ``start``; None to fall back to a full read."""
        return None

    def _serialize(self, rows: list[Row], columns: list[str]) -> tuple[bytes, int | None]:
        """The bytes of a whole file holding ``rows``, and its resume offset."""
        raise NotImplementedError

    def _append(self, row: Row, columns: list[str], resume: int | None) -> int | None:
        """Add ``row`` to the end of the file in one write; return the new resume offset."""
        raise NotImplementedError
