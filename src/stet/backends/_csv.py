"""The CSV store: a header row, then one row per completed run, appended in place."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Sequence
from typing import Any

from stet.backends._base import TIMESTAMP, TYPES, CellPlan, Row, read_records, rows_of
from stet.backends._filestore import BINARY, FileBackend, Parsed

__all__ = ["CsvBackend"]

_BOM = b"\xef\xbb\xbf"


def _complete_end(data: bytes) -> int:
    """Offset just past the last newline that ends a whole CSV record.

    A newline inside a quoted field does not end a record; with RFC 4180 quoting a
    record is complete exactly when it holds an even number of quote characters.
    """
    if b'"' not in data:
        return data.rfind(b"\n") + 1
    end = pos = 0
    odd = False
    for line in data.split(b"\n")[:-1]:
        pos += len(line) + 1
        if line.count(b'"') % 2:
            odd = not odd
        if not odd:
            end = pos
    return end


def _timestamp_complete(text: str) -> bool:
    # stet writes 32-character timestamps; a shorter one ending the file was cut short.
    return len(text) == 32 and text.endswith("+00:00")


class CsvBackend(FileBackend):
    """Completed runs in a CSV file readable by ``pandas.read_csv`` and spreadsheets.

    Columns: one per key parameter, then ``_stet_types`` and ``_stet_timestamp``. Every
    cell is text; a cell is empty where a record does not have that key parameter
    (``_stet_types`` lists the parameters each record has).
    """

    suffixes = (".csv",)
    format_name = "CSV"

    def _decode(self, data: bytes, where: str) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.bad(f"{where} is not UTF-8 text (byte {exc.start})") from None

    def _parse(self, data: bytes) -> Parsed:
        offset = len(_BOM) if data.startswith(_BOM) else 0
        first = data.find(b"\n", offset)
        if first < 0:
            raise self.bad("the file has no complete header line")
        header = next(csv.reader([self._decode(data[offset:first], "the header")]))
        self._check_header(header)
        parsed = self._parse_records(data[first + 1 :], first + 1, header)
        parsed.columns = header
        return parsed

    def _parse_tail(self, data: bytes, start: int) -> Parsed | None:
        return self._parse_records(data, start, self._columns)

    def _check_header(self, header: list[str]) -> None:
        if len(set(header)) != len(header):
            raise self.bad(f"the header repeats a column name: {header}")
        if TIMESTAMP not in header:
            raise self.bad(
                f"the header {header} has no {TIMESTAMP} column, so it was not written by stet"
            )
        for name in header:
            if name.startswith("_stet_") and name not in (TYPES, TIMESTAMP):
                raise self.bad(f"unknown column {name!r} (written by a newer stet?)")
            if not name.startswith("_stet_") and not name.isidentifier():
                raise self.bad(f"column {name!r} is not a parameter name")

    def _parse_records(self, data: bytes, start: int, header: list[str]) -> Parsed:
        end = _complete_end(data)
        text = self._decode(data[:end], "a record")
        torn: int | None = None
        resume = start + end
        rest = data[end:]
        if rest.strip():
            # The file does not end with a newline: either a whole record written by
            # hand without one, or the start of a record whose write was interrupted.
            try:
                last = list(self._records(rest.decode("utf-8"), header, start + end))
            except (ValueError, UnicodeDecodeError):
                last = []
            if len(last) == 1 and (last[0][1].legacy or _timestamp_complete(last[0][2])):
                text += rest.decode("utf-8")
                resume = start + len(data)
            else:
                torn = start + end
        return Parsed(
            rows=rows_of(self._records(text, header, start)),
            resume=resume,
            torn=torn,
            records=self._records(text, header, start),
        )

    def _records(
        self, text: str, header: list[str], start: int
    ) -> Iterator[tuple[Sequence[Any], CellPlan, str]]:
        """Validate each record; yield its cells, its plan and its timestamp."""
        return read_records(
            header,
            csv.reader(io.StringIO(text, newline="")),
            self.bad,
            f"record {{}} after byte {start}".format,
            all_text=True,
        )

    @staticmethod
    def _line(row: Row, columns: list[str]) -> list[str]:
        cells = [row.values.get(c, "") for c in columns]
        cells[columns.index(TYPES)] = row.types or ""
        cells[columns.index(TIMESTAMP)] = row.timestamp
        return cells

    def _serialize(self, rows: list[Row], columns: list[str]) -> tuple[bytes, int | None]:
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(columns)
        writer.writerows(self._line(row, columns) for row in rows)
        data = out.getvalue().encode("utf-8")
        return data, len(data)

    def _append(self, row: Row, columns: list[str], resume: int | None) -> int | None:
        out = io.StringIO(newline="")
        csv.writer(out, lineterminator="\r\n").writerow(self._line(row, columns))
        data = out.getvalue().encode("utf-8")
        with open(self.path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    data = b"\n" + data  # a hand-written last line without a newline
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | BINARY)
        try:
            # One write call normally; a short write (disk full, size limit) is
            # continued, and its error raised, so a torn record is never "recorded".
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        return size + len(data)
