"""What stet reads of a Parquet store's file and what it writes, with or without pyarrow.

stet reads the footer, and the row groups it wrote itself, in pure Python
(`_parquetfooter`), and writes small files and the row groups a fold appends the same
way; pyarrow (`_parquettable`) reads the rest and writes large files. So a short process
on a store stet wrote never imports pyarrow (0.2 s, and 30 ms more at exit): a small
store is read whole, a large one from its index snapshot and the row groups added since.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

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
from stet.backends._parquettable import (
    cells,
    columns_of,
    encode_table,
    folded_note,
    journal_held,
    merge_tables,
    pyarrow_file,
    read_table,
    stet_names,
    table_of,
    table_records,
)
from stet.backends._records import Record, Row, read_records, rows_of

__all__ = [
    "MAX_GROUPS",
    "PLAIN_ROWS",
    "Layout",
    "Stored",
    "appended",
    "encode_rows",
    "file_layout",
    "folded_file",
    "groups_end",
    "stored_records",
]

#: Files of fewer rows are written by stet itself (see `_parquetpages`); larger ones by
#: pyarrow, which encodes a million rows far faster. Below this size there is no index
#: snapshot, so every process reads the whole file: stet reads its own in less time
#: than pyarrow takes to import.
PLAIN_ROWS = SNAPSHOT_MIN
#: Row groups a fold may append to; past them it writes the file anew as one.
MAX_GROUPS = 64


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
        stet_names(footer.names, bad)  # (Layout keeps pandas' index: a fold writes it)
        return Layout(footer.counts, journal_held(footer.metadata, journal), footer.names, footer)
    parquet, _ = pyarrow_file(data, bad)
    meta = parquet.metadata
    counts = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    return Layout(counts, journal_held(meta.metadata, journal), parquet.schema_arrow.names, None)


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
        names = stet_names(footer.names, bad)
        columns: list[list[str | None]] = [[] for _ in footer.names]
        for group in range(first_group, len(footer.counts)):
            texts = group_texts(data, footer, group)
            if texts is None:
                break
            for column, values in zip(columns, texts, strict=True):
                column += values
        else:
            kept = [c for n, c in zip(footer.names, columns, strict=True) if n in names]
            rows = zip(*kept, strict=True)
            records = list(read_records(names, rows, bad, "row {}".format))
            return Stored(names, records, journal_held(footer.metadata, journal))
    table, folded = read_table(data, journal, bad, first_group)
    return Stored(table.column_names, list(table_records(table, bad)), folded)


def folded_file(
    data: bytes,
    journal: bytes,
    layout: Layout | None,
    new: list[Row],
    folded: tuple[int, str],
    bad: Callable[[str], StoreError],
) -> tuple[bytes, bool] | None:
    """The Parquet file after a fold, and whether ``new`` was only appended to it.

    A few rows (under an eighth of the file, or any number while the file stays under
    `PLAIN_ROWS` rows) join it as a row group of their own, as long as it has fewer than
    `MAX_GROUPS`: its bytes are copied, not decoded and written again. More, or a file
    stet cannot add to, and the whole file is written anew as one row group. None:
    there is nothing to write.

    Args:
        data: the Parquet file (empty: none).
        journal: the journal's bytes.
        layout: what `file_layout` says of ``data``; None when there is no file.
        new: the journal's rows the file lacks.
        folded: the journal bytes the new file holds, and their SHA-256.
        bad: makes the error that names the store.
    """
    rows_after = (sum(layout.counts) if layout else 0) + len(new)
    # A small file too: rewriting it would decode and encode every row in Python.
    few = rows_after < PLAIN_ROWS or len(new) * 8 < rows_after - len(new)
    if new and layout and len(layout.counts) < MAX_GROUPS and few:
        whole = appended(data, layout, new, folded)
        if whole is not None:
            return whole, True
    if layout is None or rows_after < PLAIN_ROWS:
        old = stored_records(data, journal, bad) if data else None
        rows = [*rows_of(old.names, old.records), *new] if old else new
        if not rows:
            return None
        return encode_rows(rows, folded, old.names if old else ()), False
    tables = [read_table(data, journal, bad)[0]]  # a large file: merged by pyarrow
    if new:
        tables.append(table_of(new))
    return encode_table(merge_tables(tables), folded), False


def appended(data: bytes, layout: Layout, rows: list[Row], folded: tuple[int, str]) -> bytes | None:
    """The Parquet file ``data`` with ``rows`` added as a row group of their own.

    None when they cannot simply be added (a column the file lacks, a file another tool
    wrote with other than text columns): the caller rewrites the whole file. The result
    is read back before it is trusted: its row count, and the new rows as they were
    given.
    """
    names = layout.names
    if layout.footer is None or not set(columns_of(rows)) <= set(names):
        return None
    columns = cells(rows, names)
    try:
        whole = append_rows(data, layout.footer, columns, folded_note(folded))
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


def encode_rows(
    rows: list[Row], folded: tuple[int, str] | None, known: Sequence[str] = ()
) -> bytes:
    """The bytes of a Parquet file of ``rows``; ``folded`` notes the journal it holds.

    Args:
        rows: the records.
        folded: the journal bytes the file holds, and their SHA-256.
        known: the columns of the file these rows come from: they keep their order
            and stay, even where every row is null.
    """
    if len(rows) < PLAIN_ROWS:
        names = columns_of(rows, known)
        columns = cells(rows, names)
        with contextlib.suppress(FooterError):  # a text too large for stet's pages
            return write_file(names, columns, folded_note(folded))
    return encode_table(table_of(rows, known), folded)
