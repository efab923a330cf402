"""The Parquet store's file: tables of string columns, read and written.

pyarrow is imported here, and only when it is needed: to write a file of `PLAIN_ROWS`
rows or more, and to read row groups of another kind than stet writes. A process on a
small store, or one that starts from a fitting index snapshot, records a few runs and
folds them as a row group, never imports it (see `_parquetfooter`).
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
from typing import Any, NamedTuple

from stet._errors import StoreError
from stet.backends._index import SNAPSHOT_MIN
from stet.backends._parquetfooter import (
    Footer,
    FooterError,
    append_rows,
    group_texts,
    read_footer,
    write_file,
)
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
    "Layout",
    "appended",
    "encode_table",
    "file_layout",
    "groups_end",
    "merge_tables",
    "pyarrow",
    "PLAIN_ROWS",
    "Stored",
    "encode_rows",
    "read_table",
    "require_pyarrow",
    "stored_records",
    "table_of",
    "table_records",
    "text_array",
]

#: Parquet metadata key: how many journal bytes this file holds, and their SHA-256.
FOLDED = b"stet.journal"
#: Files of fewer rows are written by stet itself (see `_parquetpages`); larger ones by
#: pyarrow, which encodes a million rows far faster. Below this size there is no index
#: snapshot, so every process reads the whole file: stet reads its own in less time
#: than pyarrow takes to import.
PLAIN_ROWS = SNAPSHOT_MIN


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
    parquet, names = _open(data, bad)
    try:
        groups = range(first_group, parquet.num_row_groups)
        table = parquet.read_row_groups(groups, columns=names, use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise bad(f"not a readable Parquet file ({exc})") from None
    # pandas writes large_string or null columns; stet's own writes use string.
    folded = _folded(parquet.metadata.metadata, journal)
    return table.cast(pa.schema([(n, pa.string()) for n in names])), folded


class Layout(NamedTuple):
    """What a fold needs of the Parquet file, from one read of its footer."""

    counts: list[int]  # the rows of each row group
    folded: int  # the journal bytes it holds
    names: list[str]  # its columns, pandas' index too
    footer: Footer | None  # None: a file only pyarrow reads (stet cannot append to it)


def file_layout(data: bytes, journal: bytes, bad: Callable[[str], StoreError]) -> Layout:
    """The row groups and columns of the Parquet file, and the journal bytes it holds."""
    footer = _text_footer(data)
    if footer is not None:
        _check_names(footer.names, bad)
        return Layout(footer.counts, _folded(footer.metadata, journal), footer.names, footer)
    parquet, _ = _open(data, bad)
    meta = parquet.metadata
    counts = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    return Layout(counts, _folded(meta.metadata, journal), parquet.schema_arrow.names, None)


def _text_footer(data: bytes) -> Footer | None:
    """The footer of ``data`` when it is a flat file of text columns, else None."""
    try:
        footer = read_footer(data)
    except FooterError:
        return None
    return footer if footer.texts else None


def groups_end(data: bytes) -> tuple[int, int]:
    """Where the row groups of the Parquet file ``data`` end, and how many there are.

    Raises:
        FooterError: ``data`` has no footer stet can read.
    """
    footer = read_footer(data)
    return footer.start, len(footer.counts)


class Stored(NamedTuple):
    """Records read from the Parquet file."""

    names: list[str]  # the columns of their cells (pandas' index left out)
    records: list[Record]
    folded: int  # the journal bytes the file holds


def stored_records(
    data: bytes, journal: bytes, bad: Callable[[str], StoreError], first_group: int = 0
) -> Stored:
    """The records of the row groups from ``first_group`` on.

    Row groups of the plain kind stet writes are read without pyarrow; others with it.
    """
    footer = _text_footer(data)
    if footer is not None:
        _check_names(footer.names, bad)
        columns: list[list[str | None]] = [[] for _ in footer.names]
        for group in range(first_group, len(footer.counts)):
            texts = group_texts(data, footer, group)
            if texts is None:
                break
            for column, values in zip(columns, texts, strict=True):
                column += values
        else:
            names = [n for n in footer.names if not n.startswith("__index_level_")]
            kept = [c for n, c in zip(footer.names, columns, strict=True) if n in names]
            rows = zip(*kept, strict=True)
            records = list(read_records(names, rows, bad, "row {}".format))
            return Stored(names, records, _folded(footer.metadata, journal))
    table, folded = read_table(data, journal, bad, first_group)
    return Stored(table.column_names, list(table_records(table, bad)), folded)


def _open(data: bytes, bad: Callable[[str], StoreError]) -> tuple[Any, list[str]]:
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


def _folded(metadata: dict[bytes, bytes] | None, journal: bytes) -> int:
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


def _check_names(names: list[str], bad: Callable[[str], StoreError]) -> None:
    """Raise unless ``names`` are the columns of a file stet wrote."""
    if TIMESTAMP not in names:
        raise bad(f"its columns {names} have no {TIMESTAMP}, so it was not written by stet")
    for name in names:
        if name.startswith("_stet_") and name not in OWN:
            raise bad(f"unknown column {name!r} (written by a newer stet?)")


def _stet_columns(schema: Any, bad: Callable[[str], StoreError]) -> list[str]:
    """The columns of a Parquet file stet wrote (pandas' index left out), or raise."""
    pa, _ = pyarrow()
    names = [n for n in schema.names if not n.startswith("__index_level_")]
    _check_names(names, bad)
    for name in names:
        kind = schema.field(name).type
        if not (
            pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
        ):
            raise bad(f"column {name!r} holds {kind}, but stet stores text")
    return names


def appended(data: bytes, layout: Layout, rows: list[Row], folded: tuple[int, str]) -> bytes | None:
    """The Parquet file ``data`` with ``rows`` added as a row group of their own.

    None when they cannot simply be added (a column the file lacks, a file another tool
    wrote with other than text columns): the caller rewrites the whole file. The result
    is read back before it is trusted: its row count, and the new rows as they were
    given.
    """
    names = layout.names
    if layout.footer is None or not set(_columns_of(rows)) <= set(names):
        return None
    columns = [[row.cell(n) for row in rows] for n in names]
    try:
        whole = append_rows(data, layout.footer, columns, _folded_note(folded))
        check = read_footer(whole)
    except FooterError:
        return None
    added = len(check.counts) - 1
    if (
        sum(check.counts) != sum(layout.counts) + len(rows)
        or group_texts(whole, check, added) != columns
    ):
        return None
    return whole


def _columns_of(rows: list[Row]) -> list[str]:
    """The columns a table of ``rows`` has: key columns in order of appearance, then stet's."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row.values))
    own = [c for c in OWN if c in (TIMESTAMP,) or any(row.cell(c) for row in rows)]
    return [*keys, *own]


def table_records(table: Any, bad: Callable[[str], StoreError]) -> Iterator[Record]:
    """Validate the table's rows as records (see `read_records`)."""
    names = table.column_names
    columns = [table.column(name).to_pylist() for name in names]
    return read_records(names, zip(*columns, strict=True), bad, "row {}".format)


def table_of(rows: list[Row]) -> Any:
    """A table of ``rows``: key columns in order of appearance, then stet's own."""
    pa, _ = pyarrow()
    return pa.table({c: text_array([row.cell(c) for row in rows]) for c in _columns_of(rows)})


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
    valid = None
    if None in values:
        bits = sum(1 << i for i, v in enumerate(values) if v is not None)
        valid = pa.py_buffer(bits.to_bytes((len(values) + 7) // 8, "little"))
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


def _folded_note(folded: tuple[int, str] | None) -> dict[bytes, bytes]:
    """The key-value metadata saying the file holds the journal's first bytes."""
    if folded is None:
        return {}
    return {FOLDED: json.dumps({"bytes": folded[0], "sha256": folded[1]}).encode()}


def encode_rows(rows: list[Row], folded: tuple[int, str] | None) -> bytes:
    """The bytes of a Parquet file of ``rows``; ``folded`` notes the journal it holds."""
    if len(rows) >= PLAIN_ROWS:
        return encode_table(table_of(rows), folded)
    names = _columns_of(rows)
    columns = [[row.cell(n) for row in rows] for n in names]
    return write_file(names, columns, _folded_note(folded))


def encode_table(table: Any, folded: tuple[int, str] | None) -> bytes:
    """The bytes of a Parquet file of ``table``, written by pyarrow (see `encode_rows`)."""
    pa, pq = pyarrow()
    if folded is not None:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), **_folded_note(folded)}
        )
    sink = pa.BufferOutputStream()
    # Dictionary-encode only the columns that repeat; unique texts and timestamps
    # gain nothing from it and cost a third of the write time.
    repeat = [c for c in (FUNC, TYPES, HOST, JOB) if c in table.column_names]
    pq.write_table(table, sink, use_dictionary=repeat, compression="snappy")
    return bytes(sink.getvalue().to_pybytes())
