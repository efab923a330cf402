"""The Parquet store's file through pyarrow: tables of string columns, read and written.

pyarrow is imported here, and only when it is needed (see `_parquetfile`). What both
ways of reading and writing share is here too: which columns stet writes, and the
metadata note of the journal bytes a file holds.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import importlib.util
import itertools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

from stet._errors import StoreError
from stet.backends._parquetpages import presence_bits
from stet.backends._records import (
    FUNC,
    HOST,
    JOB,
    OWN,
    TIMESTAMP,
    TYPES,
    Record,
    Row,
    read_records,
)

__all__ = [
    "FOLDED",
    "cells",
    "columns_of",
    "encode_table",
    "folded_note",
    "journal_held",
    "merge_tables",
    "pyarrow",
    "pyarrow_file",
    "read_table",
    "require_pyarrow",
    "stet_names",
    "table_of",
    "table_records",
    "text_array",
]

#: Parquet metadata key: how many journal bytes this file holds, and their SHA-256.
FOLDED = b"stet.journal"


_INSTALL = 'stet: the Parquet store needs pyarrow. Install it with: pip install "stet[parquet]"'


def require_pyarrow() -> None:
    """Raise the ImportError that says how to install pyarrow, if it is not installed.

    Without importing it (about 0.2 s), which a short process may never need.
    """
    try:
        found = importlib.util.find_spec("pyarrow") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ImportError(_INSTALL)


def pyarrow() -> tuple[ModuleType, ModuleType]:
    """Pyarrow and pyarrow.parquet, or an ImportError that says how to install them."""
    try:
        import pyarrow
        import pyarrow.compute  # here, not first inside the store lock: cast needs it
        import pyarrow.parquet
    except ImportError:
        raise ImportError(_INSTALL) from None
    return pyarrow, pyarrow.parquet


def read_table(
    data: bytes, journal: bytes, bad: Callable[[str], StoreError], first_group: int = 0
) -> tuple[Any, int]:
    """The Parquet file's table, and how many bytes of ``journal`` it already holds.

    Args:
        data: the Parquet file's bytes.
        journal: the journal's bytes.
        bad: makes the error that names the store.
        first_group: read the row groups from this one on (the earlier ones are known).
    """
    pa, _ = pyarrow()
    parquet, names = pyarrow_file(data, bad)
    try:
        groups = range(first_group, parquet.num_row_groups)
        table = parquet.read_row_groups(groups, columns=names, use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise bad(f"not a readable Parquet file ({exc})") from None
    # pandas writes large_string or null columns; stet's own writes use string.
    folded = journal_held(parquet.metadata.metadata, journal)
    return table.cast(pa.schema([(n, pa.string()) for n in names])), folded


def pyarrow_file(data: bytes, bad: Callable[[str], StoreError]) -> tuple[Any, list[str]]:
    """The Parquet file and its columns (pandas' index left out), checked as stet's."""
    pa, pq = pyarrow()
    try:
        # ParquetFile, not read_table: read_table loads pyarrow.dataset, and with it
        # pandas. No threads: a pyarrow thread pool still running at interpreter
        # exit can abort the process ("terminate called").
        parquet = pq.ParquetFile(pa.BufferReader(data))
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise bad(f"not a readable Parquet file ({exc})") from None
    return parquet, _stet_columns(schema, bad)


def journal_held(metadata: dict[bytes, bytes] | None, journal: bytes) -> int:
    """How many bytes of ``journal`` the file's key-value metadata says it holds (0: none).

    Read from the Parquet footer's metadata, not from pyarrow's schema: a fold that
    appends a row group updates the first and drops the second.
    """
    if metadata and FOLDED in metadata:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            info = json.loads(metadata[FOLDED])
            size = int(info["bytes"])
            if hashlib.sha256(journal[:size]).hexdigest() == info["sha256"]:
                return size
    return 0


def stet_names(columns: Sequence[str], bad: Callable[[str], StoreError]) -> list[str]:
    """The ``columns`` of a file stet wrote, pandas' index left out; raise if not stet's."""
    names = [n for n in columns if not n.startswith("__index_level_")]
    if TIMESTAMP not in names:
        raise bad(f"its columns {names} have no {TIMESTAMP}, so it was not written by stet")
    for name in names:
        if name.startswith("_stet_") and name not in OWN:
            raise bad(f"unknown column {name!r} (written by a newer stet?)")
    return names


def _stet_columns(schema: Any, bad: Callable[[str], StoreError]) -> list[str]:
    """The columns of a Parquet file stet wrote (pandas' index left out), or raise."""
    pa, _ = pyarrow()
    names = stet_names(schema.names, bad)
    for name in names:
        kind = schema.field(name).type
        if not (
            pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
        ):
            raise bad(f"column {name!r} holds {kind}, but stet stores text")
    return names


def columns_of(rows: list[Row], known: Sequence[str] = ()) -> list[str]:
    """The columns of a table of ``rows``, the ``known`` ones first.

    Key columns in order of appearance, then stet's own.
    """
    keys = dict.fromkeys(c for c in known if c not in OWN)
    for row in rows:
        keys.update(dict.fromkeys(row.values))
    own = [c for c in OWN if c == TIMESTAMP or c in known or any(row.cell(c) for row in rows)]
    return [*keys, *own]


def table_records(table: Any, bad: Callable[[str], StoreError]) -> Iterator[Record]:
    """Validate the table's rows as records (see `read_records`)."""
    names = table.column_names
    columns = [table.column(name).to_pylist() for name in names]
    return read_records(names, zip(*columns, strict=True), bad, "row {}".format)


def cells(rows: list[Row], columns: Sequence[str]) -> list[list[str | None]]:
    """The texts of ``rows`` in each of ``columns`` (None: the row has none there)."""
    return [[row.cell(c) for row in rows] for c in columns]


def table_of(rows: list[Row], known: Sequence[str] = ()) -> Any:
    """A table of ``rows``, its columns as `columns_of` orders them."""
    pa, _ = pyarrow()
    columns = columns_of(rows, known)
    texts = cells(rows, columns)
    return pa.table({c: text_array(t) for c, t in zip(columns, texts, strict=True)})


def text_array(values: list[str | None]) -> Any:
    """A pyarrow string array of ``values`` (None: null), built from its buffers.

    Not ``pa.array``: it imports pandas to ask whether a list is a pandas object, and
    importing pandas while Python shuts down fails ("can't register atexit after
    shutdown"), which left the journal of a process that folded only at exit unfolded.
    """
    pa, _ = pyarrow()
    encoded = [b"" if v is None else v.encode("utf-8") for v in values]
    data = b"".join(encoded)
    if len(data) >= 2**31:  # past 32-bit offsets: rare enough to take the slow road
        return pa.array(values, type=pa.string())
    offsets = array.array("i", [0, *itertools.accumulate(map(len, encoded))])
    if sys.byteorder == "big":
        offsets.byteswap()  # Arrow buffers are little-endian
    valid = pa.py_buffer(presence_bits(values)) if None in values else None
    return pa.StringArray.from_buffers(
        len(values), pa.py_buffer(offsets.tobytes()), pa.py_buffer(data), valid
    )


def merge_tables(tables: Sequence[Any]) -> Any:
    """One table of all rows; a column some tables lack is null in their rows."""
    pa, _ = pyarrow()
    columns: list[str] = []
    for table in tables:
        columns += [c for c in table.column_names if c not in columns and c not in OWN]
    columns += [c for c in OWN if any(c in t.column_names for t in tables)]
    aligned = [
        pa.table(
            {
                c: t.column(c) if c in t.column_names else pa.nulls(t.num_rows, pa.string())
                for c in columns
            }
        )
        for t in tables
    ]
    return pa.concat_tables(aligned).combine_chunks()


def folded_note(folded: tuple[int, str] | None) -> dict[bytes, bytes]:
    """The key-value metadata saying the file holds the journal's first bytes."""
    if folded is None:
        return {}
    return {FOLDED: json.dumps({"bytes": folded[0], "sha256": folded[1]}).encode()}


def encode_table(table: Any, folded: tuple[int, str] | None) -> bytes:
    """The bytes of a Parquet file of ``table``, written by pyarrow (see `encode_rows`)."""
    pa, pq = pyarrow()
    if folded is not None:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), **folded_note(folded)}
        )
    sink = pa.BufferOutputStream()
    # Dictionary-encode only the columns that repeat; unique texts and timestamps
    # gain nothing from it and cost a third of the write time.
    repeat = [c for c in (FUNC, TYPES, HOST, JOB) if c in table.column_names]
    pq.write_table(table, sink, use_dictionary=repeat, compression="snappy")
    return bytes(sink.getvalue().to_pybytes())
