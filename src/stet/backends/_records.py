"""Stored records: the columns every store shares, and how a stored row is read.

One completed run is one record: a cell per key parameter (its canonical text), then
stet's own columns, all starting with ``_stet_``. Every store keeps its records as rows
of text cells (CSV lines, JSON objects, SQLite and PostgreSQL rows, Parquet rows), so
one reader here validates them and turns them into digests for the index.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, NamedTuple

from stet._identity import Identity, base, parse_types, piece
from stet.backends._locking import forks

__all__ = [
    "FUNC",
    "OWN",
    "PROVENANCE",
    "TIMESTAMP",
    "TYPES",
    "CellPlan",
    "Row",
    "describe",
    "read_records",
    "utc_now",
]

FUNC = "_stet_func"
TYPES = "_stet_types"
TIMESTAMP = "_stet_timestamp"
DURATION = "_stet_duration"
HOST = "_stet_host"
JOB = "_stet_job"
META = "_stet_meta"
#: What stet records about a run besides its key, in column order.
PROVENANCE = (DURATION, HOST, JOB, META)
#: stet's own columns of a record, in the order they follow the key columns.
OWN = (FUNC, TYPES, TIMESTAMP, *PROVENANCE)


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def utc_now() -> str:
    """The current UTC time as ISO 8601 text with microseconds (always 32 characters).

    The text of the whole second is kept: a record costs its microseconds only.
    """
    now = time.time()
    second = int(now)
    if _second[0] != second:
        _second[0] = second
        _second[1] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second[1]}.{int((now - second) * 1e6):06d}+00:00"


def this_job() -> str:
    """The cluster job this process runs in (Slurm ``JOBID`` or ``JOBID_TASK``), or ``""``."""
    if _job[0] != forks():  # read once per process: a job's variables do not change
        _job[0], _job[1] = forks(), _read_job()
    return str(_job[1])


_job: list[Any] = [None, ""]


def _read_job() -> str:
    env = os.environ
    array = env.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    return env.get("SLURM_JOB_ID", "")


HOSTNAME = socket.gethostname()


class Row(NamedTuple):
    """One completed run as stored.

    Attributes:
        values: key parameter name to canonical text, for this record's keys only.
        types: the ``_stet_types`` cell, or None for a record written by stet 0.0.x.
        timestamp: when the run completed (UTC, ISO 8601).
        func: the function that completed it; None matches every function.
        extra: stet's other columns that this record fills (duration, host, ...).
        line: where the record starts in its file (1-based line), for messages.
    """

    values: dict[str, str]
    types: str | None
    timestamp: str
    func: str | None = None
    extra: Mapping[str, str] = {}
    line: int | None = None

    @classmethod
    def of(cls, ident: Identity, timestamp: str, extra: Mapping[str, str] | None = None) -> Row:
        """The row recording ``ident`` at ``timestamp``."""
        return cls(ident.as_dict(), ident.types, timestamp, ident.func, extra or {})

    def digest(self) -> int:
        """The digest of this record (see `stet._identity.digest_of`)."""
        if self.types is None:
            return CellPlan.legacy(tuple(self.values), self.func).digest(self.values)
        return CellPlan.for_types(self.types, self.func).digest(self.values)

    @property
    def by_text(self) -> bool:
        """Whether the record is matched by text alone (0.0.x or imported)."""
        return self.types is None or "=text" in self.types

    def cell(self, column: str) -> str | None:
        """The stored text of any column, or None where the record has none."""
        if column in self.values:
            return self.values[column]
        if column == TYPES:
            return self.types
        if column == TIMESTAMP:
            return self.timestamp
        if column == FUNC:
            return self.func
        return self.extra.get(column)

    def as_dict(self) -> dict[str, str]:
        """The row as ``backend.load()`` returns it: key texts plus stet's columns."""
        out = dict(self.values)
        for column in OWN:
            value = self.cell(column)
            if value is not None:
                out[column] = value
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


class CellPlan:
    """How to read one kind of stored record out of its cells.

    Records with the same ``_stet_types`` and ``_stet_func`` cells (or the 0.0.x records
    of one file) share a plan: which cell holds which key parameter, and how to digest
    them for the index. ``positions`` index the cells: list positions for CSV rows,
    names for JSON objects.
    """

    __slots__ = ("base", "by_text", "func", "names", "pairs", "positions", "types")

    _cache: ClassVar[dict[tuple[str | None, str | None, Any], CellPlan]] = {}

    def __init__(
        self,
        names: tuple[str, ...],
        tags: tuple[str, ...] | None,
        positions: Sequence[Any],
        types: str | None = None,
        func: str | None = None,
    ) -> None:
        self.types = types  # the _stet_types cell these records carry (None: 0.0.x)
        self.func = func
        self.names = names
        self.positions = tuple(positions)
        self.by_text = tags is None or "text" in tags
        self.base = base(func, self.by_text)
        tag_of = ("",) * len(names) if self.by_text or tags is None else tags
        # (name, tag, where the text is): the digest XORs one piece per pair
        self.pairs = tuple(zip(names, tag_of, self.positions, strict=True))

    @classmethod
    def for_types(cls, types: str, func: str | None = None) -> CellPlan:
        """The plan reading a mapping of name to text with this ``_stet_types`` cell.

        Raises:
            ValueError: for an invalid types cell.
        """
        key = (types, func, None)
        plan = cls._cache.get(key)
        if plan is None:
            names, tags = parse_types(types)
            plan = cls(names, tags, names, types, func)
            if len(cls._cache) < 10_000:
                cls._cache[key] = plan
        return plan

    @classmethod
    def legacy(cls, names: tuple[str, ...], func: str | None = None) -> CellPlan:
        """The plan reading a 0.0.x record (no ``_stet_types``) with these key names."""
        key = (None, func, names)
        plan = cls._cache.get(key)
        if plan is None:
            plan = cls(names, None, names, None, func)
            if len(cls._cache) < 10_000:
                cls._cache[key] = plan
        return plan

    def digest(self, cells: Any) -> int:
        """The digest of the record with these cells."""
        d = self.base
        for name, tag, at in self.pairs:
            d ^= piece(name, tag, cells[at])
        return d

    def values(self, cells: Any) -> dict[str, str]:
        """Key parameter name to text, for a record with these cells."""
        return {n: cells[i] for n, i in zip(self.names, self.positions, strict=True)}


#: A validated record: its cells (a row, or a JSON object), its plan, its timestamp.
Record = tuple[Any, CellPlan, str]


def read_records(
    header: Sequence[str],
    records: Iterable[Sequence[Any]],
    bad: Callable[[str], Exception],
    where: Callable[[int], str] = "record {}".format,
    all_text: bool = False,
) -> Iterator[Record]:
    """Validate stored records laid out in columns; yield each with its plan and stamp.

    Shared by every store that keeps records as rows of cells (CSV lines, SQLite rows,
    Parquet rows). A cell that is None means the record lacks that parameter (CSV
    readers pass empty cells as None only where the format cannot hold an absent
    value). A record without a ``_stet_types`` cell was written by stet 0.0.x: its key is
    every key column it has a value in.

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
    func_at = header.index(FUNC) if FUNC in header else -1
    key_at = {name: i for i, name in enumerate(header) if not name.startswith("_stet_")}
    plans: dict[tuple[str, str | None], tuple[CellPlan, tuple[int, ...]]] = {}
    legacy_plans: dict[tuple[tuple[int, ...], str | None], CellPlan] = {}
    for n, fields in enumerate(records, 1):
        if len(fields) != ncols:
            if not fields:
                continue  # a blank line
            raise bad(f"{where(n)} has {len(fields)} fields where the header has {ncols}")
        stamp = fields[ts_at]
        if not stamp:
            raise bad(f"{where(n)} has an empty {TIMESTAMP}")
        func = fields[func_at] or None if func_at >= 0 else None
        types = fields[types_at] if types_at >= 0 else None
        if not types:
            present = tuple(i for i in key_at.values() if fields[i] is not None)
            legacy = legacy_plans.get((present, func))
            if legacy is None:
                names = tuple(header[i] for i in present)
                legacy = CellPlan(names, None, present, None, func)
                legacy_plans[(present, func)] = legacy
            yield fields, legacy, stamp
            continue
        entry = plans.get((types, func))
        if entry is None:
            try:
                names, tags = parse_types(types)
                positions = [key_at[k] for k in names]
            except (ValueError, KeyError, TypeError):
                raise bad(f"{where(n)} has an invalid {TYPES} cell {types!r}") from None
            others = tuple(i for k, i in key_at.items() if k not in names)
            entry = plans[(types, func)] = (
                CellPlan(names, tags, positions, types, func),
                others,
            )
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


def rows_of(
    header: Sequence[str], records: Iterable[Record], lines: Sequence[int] | None = None
) -> Iterator[Row]:
    """The rows of validated records (see `read_records`), with stet's other columns."""
    extra_at = [(c, i) for i, c in enumerate(header) if c in PROVENANCE]
    for n, (cells, plan, stamp) in enumerate(records):
        if isinstance(cells, dict):  # a JSON object: its fields by name
            extra = {c: cells[c] for c in PROVENANCE if cells.get(c)}
        else:
            extra = {c: cells[i] for c, i in extra_at if cells[i]}
        yield Row(
            plan.values(cells),
            plan.types,
            stamp,
            plan.func,
            extra,
            None if lines is None else lines[n],
        )
