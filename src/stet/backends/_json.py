"""The JSON store: an array of objects, one per line, grown in place before the ``]``."""

from __future__ import annotations

import json
import os
from typing import Any

from stet._identity import parse_types
from stet.backends._base import TIMESTAMP, TYPES, Row
from stet.backends._filestore import FileBackend, Parsed

__all__ = ["JsonBackend"]

_SPACE = b" \t\r\n"


class JsonBackend(FileBackend):
    """Completed runs in a JSON array of objects whose values are all strings.

    Each object holds the record's key parameters, ``_stet_types`` and
    ``_stet_timestamp``. stet writes one object per line and adds a record by writing
    over the closing ``]``, so it never rewrites the file to add a run.
    """

    suffixes = (".json",)
    format_name = "JSON"

    def _parse(self, data: bytes) -> Parsed:
        try:
            value = json.loads(data)
        except UnicodeDecodeError:
            raise self.bad("the file is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            torn = self._torn_end(data)
            if torn is None:
                raise self.bad(
                    f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
                ) from None
            parsed = self._parse(data[:torn] + b"\n]")
            return Parsed(parsed.rows, parsed.columns, torn, torn)
        if not isinstance(value, list):
            raise self.bad(f"expected a JSON array of records, found a JSON {type(value).__name__}")
        rows = [self._row(item, n) for n, item in enumerate(value, 1)]
        return Parsed(rows, self._columns_of(rows), self._closing(data))

    def _parse_tail(self, data: bytes, start: int) -> Parsed | None:
        # Appended text looks like `,\n{...},\n{...}\n]\n` (no comma after `[`).
        body = data.rstrip(_SPACE)
        if not body.endswith(b"]"):
            return None
        body = body[:-1].lstrip(_SPACE)
        if body.startswith(b","):
            body = body[1:]
        try:
            items = json.loads(b"[" + body + b"]")
        except ValueError:
            return None
        rows = [self._row(item, n) for n, item in enumerate(items, 1)]
        return Parsed(
            rows, self._columns_of(rows, self._columns), start + len(data.rstrip(_SPACE)) - 1
        )

    @staticmethod
    def _torn_end(data: bytes) -> int | None:
        """Where the records end if only the last line is a cut-off write, else None.

        stet writes one object per line, so an interrupted append leaves a partial last
        line and no closing bracket; everything before it must still parse.
        """
        body = data.rstrip(_SPACE)
        cut = body.rfind(b"\n")
        if cut < 0 or body.endswith(b"]"):
            return None
        head = body[:cut].rstrip(_SPACE).rstrip(b",").rstrip(_SPACE)
        if not (head.endswith(b"}") or head.endswith(b"[")):
            return None
        try:
            json.loads(head + b"\n]")
        except ValueError:
            return None
        return len(head)

    @staticmethod
    def _closing(data: bytes) -> int:
        return len(data.rstrip(_SPACE)) - 1

    @staticmethod
    def _columns_of(rows: list[Row], known: list[str] | None = None) -> list[str]:
        seen: dict[str, None] = dict.fromkeys(c for c in known or () if not c.startswith("_stet_"))
        for row in rows:
            seen.update(dict.fromkeys(row.values))
        return [*seen, TYPES, TIMESTAMP]

    def _row(self, item: Any, n: int) -> Row:
        if not isinstance(item, dict):
            raise self.bad(f"element {n} of the array is not an object")
        stamp = item.get(TIMESTAMP)
        if not isinstance(stamp, str) or not stamp:
            raise self.bad(f"element {n} has no {TIMESTAMP} string")
        types = item.get(TYPES)
        values: dict[str, str] = {}
        for name, value in item.items():
            if name in (TYPES, TIMESTAMP):
                continue
            if name.startswith("_stet_"):
                raise self.bad(f"element {n} has an unknown field {name!r} (a newer stet?)")
            if not isinstance(value, str):
                raise self.bad(
                    f"element {n} field {name!r} is a JSON {type(value).__name__}; stet "
                    "stores every value as a string"
                )
            values[name] = value
        if types is None:
            return Row(values, None, stamp)
        try:
            names, _ = parse_types(types)
        except (ValueError, TypeError):
            raise self.bad(f"element {n} has an invalid {TYPES} {types!r}") from None
        if set(names) != values.keys():
            raise self.bad(f"element {n}: its fields do not match its {TYPES} {types!r}")
        return Row({k: values[k] for k in names}, types, stamp)

    @staticmethod
    def _object(row: Row) -> str:
        obj = dict(row.values)
        if row.types is not None:
            obj[TYPES] = row.types
        obj[TIMESTAMP] = row.timestamp
        return json.dumps(obj, ensure_ascii=False)

    def _serialize(self, rows: list[Row], columns: list[str]) -> tuple[bytes, int | None]:
        if not rows:
            return b"[]\n", 1
        data = ("[\n" + ",\n".join(self._object(r) for r in rows) + "\n]\n").encode("utf-8")
        return data, len(data) - 2

    def _append(self, row: Row, columns: list[str], resume: int | None) -> int | None:
        if resume is None:
            raise self.bad("internal: no position for the closing bracket")
        fd = os.open(self.path, os.O_RDWR)
        try:
            # `[` directly before the `]` (maybe with space) means the array is empty.
            head = os.pread(fd, min(resume, 64), max(resume - 64, 0)).rstrip(_SPACE)
            sep = "\n" if head.endswith(b"[") else ",\n"
            data = (sep + self._object(row) + "\n]\n").encode("utf-8")
            size = os.fstat(fd).st_size
            os.pwrite(fd, data, resume)
            if size > resume + len(data):
                os.ftruncate(fd, resume + len(data))
            return resume + len(data) - 2
        finally:
            os.close(fd)
