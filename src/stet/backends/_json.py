"""The JSON store: an array of objects, one per line, grown in place before the ``]``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from stet._identity import parse_types
from stet.backends._base import TIMESTAMP, TYPES, CellPlan, Row, rows_of
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

    fixed_columns = False

    def _parse(self, data: bytes) -> Parsed:
        try:
            items = self._chunks(data)
        except ValueError:
            items = None
        if items is None:
            try:
                value = json.loads(data)
            except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError
                torn = self._torn_end(data)
                if torn is None:
                    if isinstance(exc, json.JSONDecodeError):
                        raise self.bad(
                            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
                        ) from None
                    raise self.bad("the file is not UTF-8 text") from None
                parsed = self._parse(data[:torn] + b"\n]")
                return Parsed(parsed.rows, [], torn, torn, parsed.records)
            if not isinstance(value, list):
                raise self.bad(
                    f"expected a JSON array of records, found a JSON {type(value).__name__}"
                )
            items = [value]
        return self._parsed(items, self._closing(data))

    @staticmethod
    def _chunks(data: bytes) -> list[list[Any]] | None:
        """Parse stet's own layout (one object per line) in pieces, to bound memory.

        A raw newline never occurs inside a JSON string, so splitting before a line
        that starts with ``{`` never cuts a value; anything else is parsed whole.
        """
        body = data.strip(_SPACE)
        if not (body.startswith(b"[") and body.endswith(b"]")):
            return None
        inner = body[1:-1]
        chunks: list[list[Any]] = []
        pos = 0
        step = 1 << 20
        while pos < len(inner):
            cut = inner.find(b"\n{", pos + step)
            piece = inner[pos : cut if cut >= 0 else len(inner)].strip(_SPACE)
            if cut >= 0:
                # Only the comma separating this piece from the next one goes; a
                # trailing comma before the `]` stays and fails, as JSON must.
                piece = piece.removesuffix(b",")
            if piece:
                chunks.append(json.loads(b"[" + piece + b"]"))
            if cut < 0:
                break
            pos = cut + 1
        return chunks

    def _parsed(self, chunks: list[list[Any]], resume: int) -> Parsed:
        return Parsed(
            rows=rows_of(self._records(chunks)),
            resume=resume,
            records=self._records(chunks),
        )

    def _records(self, chunks: list[list[Any]]) -> Iterator[tuple[dict[str, Any], CellPlan, str]]:
        """Validate each object; yield it with the plan that reads it."""
        plans: dict[str, CellPlan] = {}
        n = 0
        for chunk in chunks:
            for item in chunk:
                n += 1
                if not isinstance(item, dict):
                    raise self.bad(f"element {n} of the array is not an object")
                stamp = item.get(TIMESTAMP)
                if not isinstance(stamp, str) or not stamp:
                    raise self.bad(f"element {n} has no {TIMESTAMP} string")
                types = item.get(TYPES)
                if types is None:
                    names = tuple(k for k in item if k != TIMESTAMP)
                    plan = CellPlan(names, None, names)
                else:
                    found = plans.get(types) if isinstance(types, str) else None
                    if found is None:
                        try:
                            names, tags = parse_types(types)
                        except (ValueError, TypeError, AttributeError):
                            raise self.bad(
                                f"element {n} has an invalid {TYPES} {types!r}"
                            ) from None
                        found = plans[types] = CellPlan(names, tags, names, types)
                    plan = found
                    if len(item) != len(plan.names) + 2 or not all(k in item for k in plan.names):
                        raise self.bad(
                            f"element {n}: its fields do not match its {TYPES} {types!r}"
                        )
                for name in plan.names:
                    if type(item[name]) is not str:
                        if name.startswith("_stet_"):
                            raise self.bad(
                                f"element {n} has an unknown field {name!r} (a newer stet?)"
                            )
                        raise self.bad(
                            f"element {n} field {name!r} is a JSON {type(item[name]).__name__}; "
                            "stet stores every value as a string"
                        )
                if plan.legacy:
                    for name in plan.names:
                        if name.startswith("_stet_"):
                            raise self.bad(
                                f"element {n} has an unknown field {name!r} (a newer stet?)"
                            )
                yield item, plan, stamp

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
        return self._parsed([items], start + self._closing(data))

    @staticmethod
    def _torn_end(data: bytes) -> int | None:
        r"""Where the records end if only an interrupted append spoiled the file.

        stet appends by writing ``,\n{...}\n]\n`` just after the last object (or
        ``\n{...}\n]\n`` just after the ``[`` of an empty array). A cut write leaves a
        valid array prefix followed by the start of that text and maybe a remnant of the
        old ``]``. Returns the end of that prefix, or None if the file does not look so.
        """
        body = data.rstrip(_SPACE)
        end = len(body)
        for _ in range(16):  # the cut record itself may contain a few `}`
            cut = body.rfind(b"}", 0, end)
            if cut < 0:
                break
            if data[cut + 1 :].startswith(b","):
                try:
                    json.loads(body[: cut + 1] + b"\n]")
                except ValueError:
                    pass
                else:
                    return cut + 1
            end = cut
        start = len(data) - len(data.lstrip(_SPACE))
        if data[start : start + 1] == b"[" and b"}" not in data:
            rest = data[start + 1 :]
            if rest.startswith(b"\n") and rest.strip(_SPACE)[:1] in (b"", b"{"):
                return start + 1  # the first append into an empty array was cut
        return None

    @staticmethod
    def _closing(data: bytes) -> int:
        r"""Where the next record goes: just after the last object (or the ``[``).

        Appending writes ``,\n{...}\n]\n`` from there, over the old ``\n]\n``.
        """
        bracket = len(data.rstrip(_SPACE)) - 1
        return len(data[:bracket].rstrip(_SPACE))

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
        return data, len(data) - 3  # before the final "\n]\n"

    def _append(self, row: Row, columns: list[str], resume: int | None) -> int | None:
        if resume is None:
            raise self.bad("internal: no position for the closing bracket")
        with open(self.path, "r+b") as fh:
            # What precedes the insertion point is `[` for an empty array, else `}`.
            fh.seek(max(resume - 1, 0))
            sep = "\n" if fh.read(1) == b"[" else ",\n"
            data = (sep + self._object(row) + "\n]\n").encode("utf-8")
            size = fh.seek(0, os.SEEK_END)
            fh.seek(resume)
            fh.write(data)  # one write call: overwrites the old "\n]\n" and extends
            fh.flush()
            if size > resume + len(data):
                fh.truncate(resume + len(data))
            return resume + len(data) - 3
