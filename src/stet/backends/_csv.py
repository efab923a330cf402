"""The CSV store: a header row, then one row per completed run, appended in place."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from typing import Any

from stet._canonical import format_types
from stet.backends._fileformat import Parsed
from stet.backends._filestore import FileBackend
from stet.backends._records import FUNC, OWN, TIMESTAMP, TYPES, Row, read_records

__all__ = ["CsvBackend", "check_header"]

_BOM = b"\xef\xbb\xbf"
_NEEDS_QUOTES = re.compile(r'["\r\n]')


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


def _allow_fields(size: int) -> None:
    # Python's csv module refuses fields over 131,072 characters by default; a key value
    # stet accepted must be readable again. The limit is process-wide and only raised.
    if csv.field_size_limit() < size:
        csv.field_size_limit(size)


def check_header(header: list[str], bad: Any) -> None:
    """Refuse a header stet did not write (or a newer stet did)."""
    if len(set(header)) != len(header):
        raise bad(f"the header repeats a column name: {header}")
    if TIMESTAMP not in header:
        raise bad(f"the header {header} has no {TIMESTAMP} column, so it was not written by stet")
    for name in header:
        if name.startswith("_stet_") and name not in OWN:
            raise bad(f"unknown column {name!r} (written by a newer stet?)")
        if not name.startswith("_stet_") and not name.isidentifier():
            raise bad(f"column {name!r} is not a parameter name")


class CsvBackend(FileBackend):
    """Completed runs in a CSV file readable by ``pandas.read_csv`` and spreadsheets.

    Columns: one per key parameter, then stet's own (``_stet_func``, ``_stet_types``,
    ``_stet_timestamp``, ...). Every cell is text; a cell is empty where a record does
    not have that key parameter (``_stet_types`` lists the parameters each record has).
    """

    suffixes = (".csv",)
    format_name = "CSV"

    def _decode(self, data: bytes, line: int) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            at = line + data[: exc.start].count(b"\n")
            raise self.bad(f"line {at} is not UTF-8 text") from None

    def _parse(self, data: bytes, start: int, state: dict[str, Any]) -> Parsed:
        line = int(state.get("line", 1))
        body_at = 0
        if start == 0:
            if not data.strip():
                return Parsed([], [], 0)  # an empty file: an empty store
            offset = len(_BOM) if data.startswith(_BOM) else 0
            first = data.find(b"\n", offset)
            if first < 0:
                raise self.bad("the file has no complete header line")
            text = self._decode(data[offset:first], 1)
            header = next(csv.reader([text.rstrip("\r")]))
            check_header(header, self.bad)
            body_at, line = first + 1, 2
        else:
            header = list(state["columns"])
        body = data[body_at:]
        complete = _complete_end(body)
        rest = body[complete:]
        text = self._decode(body[:complete], line)
        end = start + body_at + complete
        newline = ""
        torn = False
        if rest.strip():
            # No line end after the last record: a whole record typed by hand without
            # one is a record; anything else is an incomplete record.
            last = self._whole_record(rest, header)
            if last is not None:
                text += last
                end = start + len(data)
                newline = "\n" if rest.endswith(b"\r") else "\r\n"
            else:
                torn = True
                if not self._interrupted(rest, {"columns": header}):
                    at = line + text.count("\n")
                    raise self.bad(
                        f"line {at} does not hold a complete record, and what follows it "
                        "is not a write cut by a crash (an unbalanced quote, or an edit "
                        f"by hand?). Fix line {at}"
                    )
        elif rest:
            torn = True  # blanks without a line end: not a record
        _allow_fields(len(text))
        new_state = {
            "columns": header,
            "line": line + text.count("\n") + (1 if newline else 0),
            "newline": newline,
        }
        starts: list[int] = []
        records = self._records(text, header, line, starts)
        return Parsed(header, records, end, torn, new_state, starts)

    def _whole_record(self, rest: bytes, header: list[str]) -> str | None:
        _allow_fields(len(rest))  # a field holds at most as many characters as bytes
        try:
            text = rest.decode("utf-8")
            cells = list(csv.reader(io.StringIO(text, newline=""), strict=True))
            if len(cells) != 1:
                return None
            list(read_records(header, cells, ValueError))
        except (ValueError, csv.Error, UnicodeDecodeError):
            return None
        from datetime import datetime

        try:
            datetime.fromisoformat(cells[0][header.index(TIMESTAMP)])
        except ValueError:
            return None  # a timestamp cut short: the write was interrupted
        return text

    def _records(self, text: str, header: list[str], line: int, starts: list[int]) -> Iterator[Any]:
        """Validate each record; yield its cells, plan and timestamp.

        ``starts`` receives the line each record starts on, as the records are read.
        """
        reader = csv.reader(io.StringIO(text, newline=""))

        def cells() -> Iterator[list[str]]:
            before = 0
            for fields in reader:
                if fields:
                    starts.append(line + before)
                    yield fields
                before = reader.line_num

        def where(n: int) -> str:
            return f"line {starts[n - 1]}"

        return read_records(header, cells(), self.bad, where, all_text=True)

    def _interrupted(self, tail: bytes, state: dict[str, Any]) -> bool:
        for cut in range(4):  # the write may have cut a multi-byte character
            try:
                text = tail[: len(tail) - cut].decode("utf-8")
                break
            except UnicodeDecodeError:
                continue
        else:
            return False
        if text.count('"') % 2:
            text += '"'  # cut inside a quoted value: close it to count the fields
        _allow_fields(len(text))
        try:
            rows = list(csv.reader(io.StringIO(text, newline="")))
        except csv.Error:
            return False
        # A prefix of one record: one row, with no more fields than the header.
        header = list(state.get("columns", ()))
        if len(rows) > 1 or any(len(r) > len(header) for r in rows):
            return False
        # One open quote can swallow the rest of the file into "one row": a record
        # spoiled by hand in the middle. A cut append is the last write, so no whole
        # record of stet's (balanced quotes, a valid timestamp) follows its first line.
        later = text.split("\n")[1:]
        return not any(
            line.count('"') % 2 == 0 and self._whole_record(line.encode(), header) is not None
            for line in later
            if line.strip()
        )

    @staticmethod
    def _lines(rows: list[Row], columns: list[str]) -> str:
        out: list[str] = []
        for row in rows:
            types = row.types
            if types is None:
                # A 0.0.x record: its empty cells in columns added since must not read as
                # the value "", so name its key cells (matched by text, as before).
                names = tuple(row.values)
                types = format_types(names, ("text",) * len(names))
            known = {
                **row.values,
                FUNC: row.func or "",
                TYPES: types,
                TIMESTAMP: row.timestamp,
                **row.extra,
            }
            cells = [known.get(c, "") for c in columns]
            line = ",".join(cells)
            if line.count(",") != len(cells) - 1 or _NEEDS_QUOTES.search(line):
                buffer = io.StringIO(newline="")
                csv.writer(buffer, lineterminator="\r\n").writerow(cells)
                out.append(buffer.getvalue())
            else:
                out.append(line + "\r\n")
        return "".join(out)

    def _encode(self, rows: list[Row], state: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        keys = [c for c in state.get("columns", []) if not c.startswith("_stet_")]
        for row in rows:
            keys += [n for n in row.values if n not in keys]
        columns = [*keys, *OWN]
        header = io.StringIO(newline="")
        csv.writer(header, lineterminator="\r\n").writerow(columns)
        text = header.getvalue() + self._lines(rows, columns)
        return text.encode("utf-8"), {"columns": columns, "line": 2 + len(rows), "newline": ""}

    def _append_bytes(
        self, rows: list[Row], end: int, state: dict[str, Any]
    ) -> tuple[bytes, int, int, dict[str, Any]]:
        text = state.get("newline", "") + self._lines(rows, state["columns"])
        data = text.encode("utf-8")
        after = {**state, "newline": "", "line": int(state.get("line", 2)) + len(rows)}
        return data, end, end + len(data), after
