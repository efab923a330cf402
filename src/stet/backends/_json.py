"""The JSON store: an array of objects, one per line, grown in place before the ``]``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from json.encoder import encode_basestring
from typing import Any

from stet._identity import parse_types
from stet.backends._fileformat import Parsed, Reread
from stet.backends._filestore import FileBackend
from stet.backends._records import FUNC, OWN, TIMESTAMP, TYPES, CellPlan, Record, Row

__all__ = ["JsonBackend", "object_records", "object_text"]

_SPACE = b" \t\r\n"
_CLOSING = "\n]\n"


def _closing_at(data: bytes) -> int:
    r"""Where the next record goes: just after the last object (or the ``[``)."""
    bracket = len(data.rstrip(_SPACE)) - 1
    return len(data[:bracket].rstrip(_SPACE))


def _stet_layout(prefix: bytes) -> bool:
    """Whether ``prefix`` is an array opened by ``[`` with one object per line (stet's own)."""
    lines = prefix.strip(_SPACE).split(b"\n")
    if lines[0].strip(_SPACE) != b"[":
        return False
    for line in lines[1:]:
        line = line.strip(_SPACE)
        if not (line.startswith(b"{") and (line.endswith(b"}") or line.endswith(b"},"))):
            return False
    return True


def _with_lines(data: bytes) -> tuple[list[list[Any]], list[int] | None]:
    """The array's elements and the line each starts on, for any layout of the array."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return [json.loads(data)], None
    decoder = json.JSONDecoder()
    items: list[Any] = []
    lines: list[int] = []
    pos = text.index("[") + 1
    line, counted = 1, 0
    while True:
        while text[pos] in " \t\r\n,":
            pos += 1
        if text[pos] == "]":
            return [items], lines
        line += text.count("\n", counted, pos)
        counted = pos
        item, pos = decoder.raw_decode(text, pos)
        items.append(item)
        lines.append(line)


def object_records(
    chunks: list[list[Any]], lines: list[int] | None, bad: Callable[[str], Exception]
) -> Iterator[Record]:
    """Validate JSON objects holding records; yield each with the plan that reads it.

    Shared by the JSON store and the Parquet store's journal. ``lines`` gives the line
    of each object, where known, for messages.
    """
    plans: dict[tuple[Any, Any], CellPlan] = {}
    n = 0
    for chunk in chunks:
        for item in chunk:
            n += 1
            where = f"line {lines[n - 1]}" if lines else f"element {n} of the array"
            if not isinstance(item, dict):
                raise bad(f"{where} is not an object")
            stamp = item.get(TIMESTAMP)
            if not isinstance(stamp, str) or not stamp:
                raise bad(f"{where} has no {TIMESTAMP} string")
            types = item.get(TYPES)
            func = item.get(FUNC)
            if func is not None and not isinstance(func, str):
                raise bad(f"{where} has a {FUNC} that is not a string")
            plan = plans.get((types, func))
            if plan is None:
                plan = plans[(types, func)] = _plan(item, types, func or None, where, bad)
            for name in item:
                if name.startswith("_stet_") and name not in OWN:
                    raise bad(f"{where} has an unknown field {name!r} (a newer stet?)")
            if plan.types is not None and sum(not k.startswith("_stet_") for k in item) != len(
                plan.names
            ):
                raise bad(f"{where}: its fields do not match its {TYPES} {types!r}")
            for name in plan.names:
                value = item.get(name)
                if type(value) is not str:
                    raise bad(
                        f"{where} field {name!r} is "
                        + ("missing" if value is None else f"a JSON {type(value).__name__}")
                        + "; stet stores every value as a string"
                    )
            yield item, plan, stamp


def _plan(
    item: dict[str, Any], types: Any, func: str | None, where: str, bad: Callable[[str], Exception]
) -> CellPlan:
    if types is None:
        names = tuple(k for k in item if not k.startswith("_stet_"))
        return CellPlan(names, None, names, None, func)
    try:
        parse_types(types)
        return CellPlan.for_types(types, func)
    except (ValueError, TypeError, AttributeError):
        raise bad(f"{where} has an invalid {TYPES} {types!r}") from None


#: JSON text of a str, as ``json.dumps(..., ensure_ascii=False)`` writes it (in C).
_quote = encode_basestring
_HEADS = {column: f"{_quote(column)}: " for column in OWN}


def object_text(row: Row) -> str:
    """One record as a JSON object on one line (key texts, then stet's columns).

    The text ``json.dumps`` gives, made directly for str cells (a new encoder per
    record was a tenth of the record path); a number typed into the file stays one.
    """
    quote = _quote
    parts = [
        f"{quote(name)}: {quote(text) if text.__class__ is str else _dumps(text)}"
        for name, text in row.values.items()
    ]
    for column in OWN:
        value = row.cell(column)
        if value is not None and (value or column in (TYPES, TIMESTAMP)):
            text = quote(value) if value.__class__ is str else _dumps(value)
            parts.append(_HEADS[column] + text)
    return "{" + ", ".join(parts) + "}"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class JsonBackend(FileBackend):
    """Completed runs in a JSON array of objects whose values are all strings.

    Each object holds the record's key parameters and stet's columns (``_stet_func``,
    ``_stet_types``, ``_stet_timestamp``, ...). stet writes one object per line and adds
    a record by writing over the closing ``]``, so it never rewrites the file to add a
    run.
    """

    suffixes = (".json",)
    format_name = "JSON"
    fixed_columns = False

    def _parse(self, data: bytes, start: int, state: dict[str, Any]) -> Parsed:
        if start:
            return self._parse_tail(data, start, state)
        if not data.strip(_SPACE):
            return Parsed([], [], 0)
        chunks = self._chunks(data)
        torn = False
        end = _closing_at(data)
        if chunks is None:
            try:
                value = json.loads(data)
            except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError
                cut = self._torn_end(data)
                if cut is None:
                    if isinstance(exc, json.JSONDecodeError):
                        raise self.bad(
                            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
                        ) from None
                    raise self.bad("the file is not UTF-8 text") from None
                parsed = self._parse(data[:cut] + b"\n]", 0, {})
                parsed.end, parsed.torn = cut, True
                parsed.state["closing"] = ""
                return parsed
            if not isinstance(value, list):
                raise self.bad(
                    f"expected a JSON array of records, found a JSON {type(value).__name__}"
                )
            chunks = [value]
            layout = False
        else:
            layout = True
        count = sum(len(c) for c in chunks)
        lines: list[int] | None = None
        if layout and data.count(b"\n", 0, end) == count:
            lines = list(range(2, count + 2))  # stet's layout: object n on line n + 1
        elif count:
            chunks, lines = _with_lines(data)  # another layout (re-saved by a tool)
        state = {
            "empty": count == 0,
            "line": count + 2,
            "closing": data[end:].decode("utf-8", "replace"),
        }
        return Parsed([], object_records(chunks, lines, self.bad), end, torn, state, lines)

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
        try:
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
        except ValueError:
            return None
        return chunks

    def _parse_tail(self, data: bytes, start: int, state: dict[str, Any]) -> Parsed:
        # Appended text looks like `,\n{...},\n{...}\n]\n` (no comma after `[`).
        body = data.rstrip(_SPACE)
        items: list[Any] | None = None
        if body.endswith(b"]"):
            inner = body[:-1].strip(_SPACE).removeprefix(b",")
            try:
                items = json.loads(b"[" + inner + b"]")
            except ValueError:
                items = None
        if items is None:
            raise Reread  # cut mid-append, or rewritten: read the whole file
        line = int(state.get("line", 2))
        end = start + _closing_at(data) if items else start
        lines = list(range(line, line + len(items)))
        after = {
            "empty": bool(state.get("empty")) and not items,
            "line": line + len(items),
            "closing": data[end - start :].decode("utf-8", "replace"),
        }
        return Parsed([], object_records([items], lines, self.bad), end, False, after, lines)

    @staticmethod
    def _torn_end(data: bytes) -> int | None:
        r"""Where the records end if only an interrupted append of stet's spoiled the file.

        stet appends by writing ``,\n{...}\n]\n`` just after the last object (or
        ``\n{...}\n]\n`` just after the ``[`` of an empty array). A cut write leaves a
        prefix in stet's layout followed by the start of that text. Returns the end of
        that prefix, or None for anything else (a truncated file of another layout,
        which stet must not "repair").
        """
        body = data.rstrip(_SPACE)
        end = len(body)
        for _ in range(16):  # the cut record itself may contain a few `}`
            cut = body.rfind(b"}", 0, end)
            if cut < 0:
                break
            if data[cut + 1 : cut + 2] == b",":
                try:
                    json.loads(body[: cut + 1] + b"\n]")
                except ValueError:
                    pass
                else:
                    if not _stet_layout(body[: cut + 1]):
                        return None
                    # A cut append is the last write: it leaves at most one object
                    # unfinished. More lines that start objects after the valid prefix
                    # mean a record spoiled in the middle of the file (by hand).
                    later = body[cut + 2 :].split(b"\n")
                    if sum(line.lstrip(_SPACE).startswith(b"{") for line in later) > 1:
                        return None
                    return cut + 1
            end = cut
        start = len(data) - len(data.lstrip(_SPACE))
        if data[start : start + 1] == b"[" and b"}" not in data:
            rest = data[start + 1 :]
            if rest.startswith(b"\n{") or not rest.strip(_SPACE):
                return start + 1  # the first append into an empty array was cut
        return None

    def _interrupted(self, tail: bytes, state: dict[str, Any]) -> bool:
        body = tail.rstrip(_SPACE)
        if body.endswith(b"]"):  # what the cut write had not yet overwritten of the old "]"
            body = body[:-1].rstrip(_SPACE)
        # What stet writes after the last object: ",\n{...}" (or "\n{...}" after "["),
        # the object on one line as json.dumps writes it: UTF-8 text without control
        # characters (the cut may split a multi-byte character at the very end).
        rest = body.removeprefix(b",").lstrip(_SPACE)
        if rest and not rest.startswith(b"{"):
            return False
        for cut in range(4):
            try:
                text = rest[: len(rest) - cut].decode("utf-8")
            except UnicodeDecodeError:
                continue
            return not any(ch < " " for ch in text)
        return False

    def _closing(self, state: dict[str, Any]) -> bytes:
        return str(state.get("closing", _CLOSING)).encode("utf-8")

    def _encode(self, rows: list[Row], state: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        if not rows:
            return b"[]\n", {"empty": True, "line": 2, "closing": "]\n"}
        text = "[\n" + ",\n".join(object_text(r) for r in rows) + _CLOSING
        return text.encode("utf-8"), {"empty": False, "line": len(rows) + 2, "closing": _CLOSING}

    def _append_bytes(
        self, rows: list[Row], end: int, state: dict[str, Any]
    ) -> tuple[bytes, int, int, dict[str, Any]]:
        sep = "\n" if state.get("empty", True) else ",\n"
        data = (sep + ",\n".join(object_text(r) for r in rows) + _CLOSING).encode("utf-8")
        after = {"empty": False, "line": int(state.get("line", 2)) + len(rows), "closing": _CLOSING}
        return data, end, end + len(data) - len(_CLOSING), after
