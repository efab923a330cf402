"""The Parquet store: one file of string columns, rewritten atomically per record."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

from stet.backends._base import TIMESTAMP, TYPES, CellPlan, Row, read_records, rows_of
from stet.backends._filestore import FileBackend, Parsed, atomic_write

__all__ = ["ParquetBackend"]


def _pyarrow() -> tuple[ModuleType, ModuleType]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ImportError(
            'stet: the Parquet store needs pyarrow. Install it with: pip install "stet[parquet]"'
        ) from None
    return pyarrow, pyarrow.parquet


class ParquetBackend(FileBackend):
    """Completed runs in a Parquet file readable by ``pandas.read_parquet``.

    All columns are strings: one per key parameter (null where a record lacks that
    parameter), ``_stet_types`` and ``_stet_timestamp``. Parquet files cannot be
    appended to (the footer describing the data comes last), so each record rewrites
    the file through a temporary file and an atomic rename. This process keeps the
    last table it read or wrote, so a record costs one write, not a read and a write.
    """

    suffixes = (".parquet",)
    format_name = "Parquet"
    appendable = False

    def __init__(self, path: str | os.PathLike[str]) -> None:
        _pyarrow()  # fail at once, with the install hint, when pyarrow is missing
        super().__init__(path)

    def _start_process(self) -> None:
        super()._start_process()
        self._table: Any = None
        self._table_sig: tuple[int, int, int] | None = None

    def _remember(self, parsed: Parsed, sig: tuple[int, int, int]) -> None:
        super()._remember(parsed, sig)
        self._table_sig = sig

    def _parse(self, data: bytes) -> Parsed:
        pa, pq = _pyarrow()
        try:
            # ParquetFile, not read_table: read_table loads pyarrow.dataset, and with it
            # pandas. No threads: stet's tables are small, and a pyarrow thread pool still
            # running at interpreter exit can abort the process ("terminate called").
            table = pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
        except (pa.ArrowException, OSError) as exc:
            raise self.bad(f"not a readable Parquet file ({exc})") from None
        names = [n for n in table.column_names if not n.startswith("__index_level_")]
        table = table.select(names)
        if TIMESTAMP not in names:
            raise self.bad(
                f"its columns {names} have no {TIMESTAMP}, so it was not written by stet"
            )
        for name in names:
            if name.startswith("_stet_") and name not in (TYPES, TIMESTAMP):
                raise self.bad(f"unknown column {name!r} (written by a newer stet?)")
            kind = table.schema.field(name).type
            if not (
                pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
            ):
                raise self.bad(f"column {name!r} holds {kind}, but stet stores text")
        # pandas writes large_string or null columns; stet's own writes use string.
        table = table.cast(pa.schema([(n, pa.string()) for n in names]))
        self._table = table
        return self._parsed(table, names)

    def _parsed(self, table: Any, names: list[str]) -> Parsed:
        def records() -> Iterator[tuple[Sequence[Any], CellPlan, str]]:
            columns = [table.column(name).to_pylist() for name in names]
            return read_records(names, zip(*columns, strict=True), self.bad, "row {}".format)

        return Parsed(
            rows=rows_of(records()),
            columns=names,
            records=records(),
        )

    def _table_of(self, rows: list[Row], columns: list[str]) -> Any:
        pa, _ = _pyarrow()
        data: dict[str, list[str | None]] = {c: [] for c in columns}
        for row in rows:
            for c in columns:
                data[c].append(row.values.get(c))
            data[TYPES][-1] = row.types
            data[TIMESTAMP][-1] = row.timestamp
        return pa.table({c: pa.array(v, type=pa.string()) for c, v in data.items()})

    def _write(self, table: Any) -> None:
        if table.column(TIMESTAMP).num_chunks > 64:
            table = table.combine_chunks()  # many small chunks make writing slow
        atomic_write(self.path, self._encode(table))
        self._after_write(None)
        self._table = table
        self._table_sig = self._sig

    @staticmethod
    def _encode(table: Any) -> bytes:
        pa, pq = _pyarrow()
        sink = pa.BufferOutputStream()
        # Dictionary-encode only the columns that repeat; unique texts and timestamps
        # gain nothing from it and cost a third of the write time.
        pq.write_table(table, sink, use_dictionary=[TYPES], compression="snappy")
        return bytes(sink.getvalue().to_pybytes())

    def _rewrite(self, rows: list[Row], columns: list[str]) -> None:
        # In place of the byte-level _serialize: keeps the table written for next time.
        self._write(self._table_of(rows, columns))
        self._columns = columns

    def _rewrite_adding(self, row: Row, columns: list[str]) -> None:
        pa, _ = _pyarrow()
        if self._table is None or self._table_sig != self._sig:
            self._parse_file(self._read(0))
            self._table_sig = self._sig
        new = self._table_of([row], columns)
        old = self._table
        if old is None:
            self._rewrite([row], columns)
            return
        for name in columns:
            if name not in old.column_names:
                old = old.append_column(name, pa.nulls(old.num_rows, type=pa.string()))
        self._write(pa.concat_tables([old.select(columns), new]))
        self._columns = columns
