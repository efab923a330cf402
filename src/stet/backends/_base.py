"""The interface every store implements, and the parts all of them share."""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, ClassVar, NamedTuple, Protocol, cast

from stet._identity import (
    Identity,
    canonical,
    check_name,
    digester,
    identity_of,
    legacy_digest,
    parse_types,
)
from stet.backends._claims import Claim, Outcome, Owner

__all__ = ["BaseBackend", "ClaimBook", "Lookup", "Row", "utc_now"]

TIMESTAMP = "_stet_timestamp"
TYPES = "_stet_types"
RESERVED = (TYPES, TIMESTAMP)


def utc_now() -> str:
    """The current UTC time as ISO 8601 text with microseconds (always 32 characters)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Row(NamedTuple):
    """One completed run as stored.

    Attributes:
        values: key parameter name to canonical text, for this record's keys only.
        types: the ``_stet_types`` cell, or None for a record written by stet 0.0.x.
        timestamp: when the run completed (UTC, ISO 8601).
    """

    values: dict[str, str]
    types: str | None
    timestamp: str

    @classmethod
    def of(cls, ident: Identity, timestamp: str) -> Row:
        """The row recording ``ident`` at ``timestamp``."""
        return cls(ident.as_dict(), ident.types, timestamp)

    def digest(self) -> tuple[bytes, bool]:
        """Return the index digest of this row and whether it is a legacy (0.0.x) row."""
        if self.types is None:
            return legacy_digest(tuple(self.values), tuple(self.values.values())), True
        plan = CellPlan.for_types(self.types)
        return plan.digest(self.values), plan.legacy

    def as_dict(self) -> dict[str, str]:
        """The row as ``backend.load()`` returns it: key texts plus stet's columns."""
        out = dict(self.values)
        if self.types is not None:
            out[TYPES] = self.types
        out[TIMESTAMP] = self.timestamp
        return out


def describe(ident: Identity, limit: int | None = None) -> str:
    """A readable one-line description of a run: ``alpha=0.1, name='x'``.

    Args:
        ident: the run.
        limit: cut each value's text to this many characters (ending in ``...``).
    """

    def shown(tag: str, text: str) -> str:
        value = repr(text) if tag == "str" else text
        if limit is not None and len(value) > limit:
            return value[: limit - 3] + "..."
        return value

    return ", ".join(
        f"{n}={shown(g, t)}" for n, g, t in zip(ident.names, ident.tags, ident.texts, strict=True)
    )


class Lookup(Protocol):
    """What a batched lookup needs of an identity: its typed and text-only digests."""

    @property
    def digest(self) -> bytes:
        """The typed digest."""
        ...

    @property
    def legacy(self) -> bytes:
        """The digest under text-only matching (may be computed on demand)."""
        ...


class ClaimBook(Protocol):
    """A store's claims during one atomic section (see ``BaseBackend._claims``)."""

    def done(self, ident: Identity) -> bool:
        """Whether the run completed."""
        ...

    def get(self, key: str) -> Claim | None:
        """The claim on the run with this key digest, if any."""
        ...

    def put(self, claim: Claim) -> None:
        """Create or replace a claim."""
        ...

    def delete(self, key: str) -> None:
        """Remove a claim."""
        ...

    def all(self) -> list[Claim]:
        """Every claim, live or stale."""
        ...

    def record(self, ident: Identity, timestamp: str) -> None:
        """Record the run as completed (no-op if it is)."""
        ...


def row_matches(row: Row, key: Mapping[str, Any]) -> bool:
    """Whether ``row`` records exactly the key ``key`` (same names, equal values).

    A ``str`` value in ``key`` matches by text alone, so ``{"alpha": "0.1"}`` (as 0.0.x
    docs taught) finds the run of ``alpha=0.1``; any other value must also have the same
    type family as the recorded one.
    """
    if row.values.keys() != key.keys():
        return False
    tags: dict[str, str] = {}
    if row.types is not None:
        names, tag_list = parse_types(row.types)
        tags = dict(zip(names, tag_list, strict=True))
    for name, value in key.items():
        if isinstance(value, str):
            if row.values[name] != value:
                return False
            continue
        tag, text = canonical(value)
        if row.values[name] != text or tags.get(name, "text") not in (tag, "text"):
            return False
    return True


class BaseBackend(ABC):
    """A store of completed runs.

    Subclasses implement five small methods: `contains` and `add` (the
    decorator's hot path, given a precomputed `Identity`),
    `rows`, `discard` and `exists`. The public methods ``has``,
    ``record``, ``load``, ``remove`` and ``clear`` are built on them here, once.

    A backend pickles as its configuration only; locks, connections and caches are
    rebuilt in the process that uses it (checked by pid, so a fork is safe too).
    """

    #: File name endings this backend serves (``".csv"``), used by ``get_backend``.
    suffixes: tuple[str, ...] = ()

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._pid = -1

    # -- per-process state -------------------------------------------------------

    def _ensure_process(self) -> None:
        """Rebuild process-local state when first used, or used after a fork."""
        pid = os.getpid()
        if self._pid != pid:
            self._pid = pid
            self._start_process()

    @abstractmethod
    def _start_process(self) -> None:
        """Create locks, connections and caches for the current process."""

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    @property
    def location(self) -> str:
        """Where the store is, safe to print (a URL without its password)."""
        return self.path

    # -- the interface each store implements -------------------------------------

    @abstractmethod
    def exists(self) -> bool:
        """Whether the store exists yet (it is created on the first record)."""

    @abstractmethod
    def contains(self, ident: Identity) -> bool:
        """Whether a completed run with exactly this identity is recorded."""

    def completed(self, idents: Sequence[Lookup]) -> list[bool]:
        """For each identity, whether its run completed (stores may batch the lookups)."""
        return [self.contains(cast(Identity, ident)) for ident in idents]

    @abstractmethod
    def add(self, ident: Identity, timestamp: str) -> bool:
        """Record a completed run; return False if it was already recorded."""

    @abstractmethod
    def rows(self) -> list[Row]:
        """Every completed run, in the order recorded."""

    @abstractmethod
    def discard(self, predicate: Callable[[Row], bool]) -> list[Row]:
        """Remove every row for which ``predicate`` is true; return the removed rows."""

    def key_columns(self) -> list[str]:
        """The key parameter names seen in this store, in first-seen order."""
        seen: dict[str, None] = {}
        for row in self.rows():
            seen.update(dict.fromkeys(row.values))
        return list(seen)

    # -- the public API (stet 0.0.x compatible) ----------------------------------

    def has(self, key_dict: Mapping[str, Any]) -> bool:
        """Whether a run with exactly this key is recorded.

        Args:
            key_dict: parameter name to value, as Python values or as their text.
        """
        ident = self._identity(key_dict)
        if self.contains(ident):
            return True
        if any(isinstance(v, str) for v in key_dict.values()):
            return any(row_matches(row, key_dict) for row in self.rows())
        return False

    def record(self, key_dict: Mapping[str, Any]) -> None:
        """Record a completed run of ``key_dict`` now (no-op if already recorded)."""
        self.add(self._identity(key_dict), utc_now())

    def load(self) -> list[dict[str, str]]:
        """Every record as a dict: key texts, ``_stet_types`` and ``_stet_timestamp``."""
        return [row.as_dict() for row in self.rows()]

    def remove(self, key_dict: Mapping[str, Any]) -> int:
        """Remove the records whose key equals ``key_dict``; return how many."""
        self._identity(key_dict)  # validate names and values before touching the store
        return len(self.discard(lambda row: row_matches(row, key_dict)))

    def clear(self) -> None:
        """Remove every record, keeping an empty store."""
        self.discard(lambda row: True)

    # -- claims, for cooperating workers (``once(claim=True)``) ----------------------

    def _claims(self) -> AbstractContextManager[ClaimBook]:
        """Open this store's claims for one atomic read-modify-write.

        Everything done through the returned book, including recording a completed run,
        happens as one step no other worker can interleave with.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support claims")

    def claim(self, ident: Identity, owner: Owner, lease: float) -> tuple[Outcome, Claim | None]:
        """Try to claim the run ``ident`` for ``owner`` for ``lease`` seconds.

        Returns:
            ``(DONE, None)`` if it completed already, ``(BUSY, claim)`` with the live
            claim of another worker, or ``(CLAIMED, claim)`` when the caller now holds
            it (a stale claim of a dead worker is taken over).
        """
        key = ident.digest.hex()
        with self._claims() as book:
            if book.done(ident):
                return Outcome.DONE, None
            current = book.get(key)
            if current is not None and not current.held_by(owner) and not current.stale():
                return Outcome.BUSY, current
            mine = Claim(key, describe(ident), owner, time.time() + lease)
            book.put(mine)
            return Outcome.CLAIMED, mine

    def renew(self, ident: Identity, owner: Owner, lease: float) -> bool:
        """Extend ``owner``'s claim on ``ident``; False if it no longer holds it."""
        key = ident.digest.hex()
        with self._claims() as book:
            current = book.get(key)
            if current is None or not current.held_by(owner):
                return False
            book.put(Claim(key, current.run, owner, time.time() + lease))
            return True

    def release(self, ident: Identity, owner: Owner) -> None:
        """Give up ``owner``'s claim on ``ident`` (the run failed): others may run it."""
        key = ident.digest.hex()
        with self._claims() as book:
            current = book.get(key)
            if current is not None and current.held_by(owner):
                book.delete(key)

    def complete(self, ident: Identity, owner: Owner, timestamp: str) -> None:
        """Record the run ``ident`` as completed and drop the claim, in one step."""
        key = ident.digest.hex()
        with self._claims() as book:
            book.record(ident, timestamp)
            current = book.get(key)
            if current is not None and current.held_by(owner):
                book.delete(key)

    def in_progress(self) -> list[Claim]:
        """The live claims: runs some worker is running now."""
        with self._claims() as book:
            return [c for c in book.all() if not c.stale()]

    def _identity(self, key_dict: Mapping[str, Any]) -> Identity:
        if not isinstance(key_dict, Mapping):
            raise TypeError(
                f"stet: expected a dict of parameter names to values, got {type(key_dict).__name__}"
            )
        for name in key_dict:
            check_name(name, f"the key for {self.path}")
        return identity_of(key_dict)


#: The in-memory index of a file store: digests of completed runs. A dict, not a set:
#: CPython's garbage collector skips a dict holding only bytes and None, but would walk
#: a million-entry set on every full collection.
Index = dict[bytes, None]


class CellPlan:
    """How to read one kind of stored record out of its cells.

    Records with the same ``_stet_types`` cell (or legacy records of one file) share a
    plan: which cell holds which key parameter, and how to digest them for the index.
    ``positions`` index the cells: list positions for CSV rows, names for JSON objects.
    """

    __slots__ = ("digest", "legacy", "names", "positions", "types")

    _by_types: ClassVar[dict[str, CellPlan]] = {}

    def __init__(
        self,
        names: tuple[str, ...],
        tags: tuple[str, ...] | None,
        positions: Sequence[Any],
        types: str | None = None,
    ) -> None:
        self.types = types  # the _stet_types cell these records carry (None: 0.0.x)
        self.names = names
        self.positions = tuple(positions)
        self.legacy = tags is None or "text" in tags  # matched by text alone
        self.digest: Callable[[Any], bytes] = digester(names, tags, self.positions)

    @classmethod
    def for_types(cls, types: str) -> CellPlan:
        """The plan reading a mapping of name to text with this ``_stet_types`` cell.

        Raises:
            ValueError: for an invalid types cell.
        """
        plan = cls._by_types.get(types)
        if plan is None:
            names, tags = parse_types(types)
            plan = cls(names, tags, names, types)
            if len(cls._by_types) < 10_000:
                cls._by_types[types] = plan
        return plan

    def values(self, cells: Any) -> dict[str, str]:
        """Key parameter name to text, for a record with these cells."""
        return {n: cells[i] for n, i in zip(self.names, self.positions, strict=True)}


def read_records(
    header: Sequence[str],
    records: Iterable[Sequence[Any]],
    bad: Callable[[str], Exception],
    where: Callable[[int], str] = "record {}".format,
    all_text: bool = False,
) -> Iterator[tuple[Sequence[Any], CellPlan, str]]:
    """Validate stored records laid out in columns; yield each with its plan and stamp.

    Shared by every store that keeps records as rows of cells (CSV lines, SQLite rows,
    Parquet rows). A cell that is empty or None means the record lacks that parameter;
    a record without a ``_stet_types`` cell was written by stet 0.0.x and its key is
    every column it has a value in.

    Args:
        header: column names, in cell order.
        records: the rows of cells.
        bad: builds the error to raise, given what is wrong.
        where: describes record number n for messages.
        all_text: the cells are known to be strings (CSV), so skip checking that.
    """
    ncols = len(header)
    ts_at = header.index(TIMESTAMP)
    types_at = header.index(TYPES) if TYPES in header else -1
    key_at = {name: i for i, name in enumerate(header) if not name.startswith("_stet_")}
    plans: dict[str, tuple[CellPlan, tuple[int, ...]]] = {}
    legacy_plans: dict[tuple[int, ...], CellPlan] = {}
    for n, fields in enumerate(records, 1):
        if len(fields) != ncols:
            if not fields:
                continue  # a blank line
            raise bad(f"{where(n)} has {len(fields)} fields where the header has {ncols}")
        stamp = fields[ts_at]
        if not stamp:
            raise bad(f"{where(n)} has an empty {TIMESTAMP}")
        types = fields[types_at] if types_at >= 0 else None
        if not types:
            present = tuple(i for i in key_at.values() if fields[i] is not None)
            legacy = legacy_plans.get(present)
            if legacy is None:
                names = tuple(header[i] for i in present)
                legacy = legacy_plans[present] = CellPlan(names, None, present)
            yield fields, legacy, stamp
            continue
        entry = plans.get(types)
        if entry is None:
            try:
                names, tags = parse_types(types)
                positions = [key_at[k] for k in names]
            except (ValueError, KeyError, TypeError):
                raise bad(f"{where(n)} has an invalid {TYPES} cell {types!r}") from None
            others = tuple(i for k, i in key_at.items() if k not in names)
            entry = plans[types] = (CellPlan(names, tags, positions, types), others)
        plan, others = entry
        for i in others:
            if fields[i]:
                raise bad(
                    f"{where(n)} has a value for {header[i]!r}, which its {TYPES} cell "
                    "does not list"
                )
        if not all_text:
            for i in plan.positions:
                if type(fields[i]) is not str:
                    raise bad(f"{where(n)} has no value for {header[i]!r}, which its {TYPES} lists")
        yield fields, plan, stamp


def rows_of(records: Iterable[tuple[Any, CellPlan, str]]) -> Iterator[Row]:
    """The rows of validated records (see `read_records`)."""
    for cells, plan, stamp in records:
        yield Row(plan.values(cells), plan.types, stamp)


def index_rows(rows: Iterable[Row], typed: Index, legacy: Index) -> None:
    """Add the digests of ``rows`` to the typed and text-only indexes."""
    for row in rows:
        digest, is_legacy = row.digest()
        (legacy if is_legacy else typed)[digest] = None


def index_records(
    records: Iterable[tuple[Any, CellPlan, str]], typed: Index, legacy: Index
) -> None:
    """Digest validated records straight into the indexes."""
    for cells, plan, _ in records:
        (legacy if plan.legacy else typed)[plan.digest(cells)] = None
