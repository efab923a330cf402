"""Adding row groups to a Parquet file without rewriting the rows it holds.

A Parquet file is ``PAR1``, its row groups, a footer, the footer's length and ``PAR1``.
The footer (a Thrift struct in the compact protocol) lists every column chunk by its
byte offset. So a small batch of rows can join a large file as a new row group: keep
the file's bytes up to its footer, add the row group pyarrow wrote for the batch (as a
small file of its own), and write a footer listing the old row groups and the new one,
with the new one's offsets moved to where its bytes now lie. Nothing is decoded or
encoded again but the footers, so a fold into a file of a million rows costs the copy
of its bytes instead of a full rewrite.

Only what this needs is read: the compact protocol in general, and the few offset
fields of row groups and column chunks by their field ids in ``parquet.thrift``. A
footer with anything this does not know how to move (page indexes, bloom filters,
encryption, column chunks in other files) is not joined: the caller rewrites the file.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FooterError", "append_row_groups"]

_MAGIC = b"PAR1"
# Thrift compact protocol type ids.
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)
_INTS = (_I16, _I32, _I64)

# Field ids in parquet.thrift.
_FILE_NUM_ROWS, _FILE_SCHEMA, _FILE_ROW_GROUPS, _FILE_ORDERS = 3, 2, 4, 7
_FILE_KNOWN = {1, 2, 3, 4, 5, 6, 7}  # 8, 9: encryption
_GROUP_COLUMNS, _GROUP_FILE_OFFSET, _GROUP_ORDINAL = 1, 5, 7
_CHUNK_FILE_OFFSET, _CHUNK_META = 2, 3
_CHUNK_KNOWN = {2, 3}  # 1: another file; 4-7: page indexes; 8, 9: encryption
_META_OFFSETS = {9, 10, 11}  # data, index and dictionary page offsets
_META_KNOWN = set(range(1, 14)) | {16, 17}  # 14, 15: a bloom filter (offset not moved)

# A struct is a list of [field id, type id, value]; a list or set is [element type, items].
Struct = list[list[Any]]


class FooterError(ValueError):
    """The bytes are not a Parquet footer this module can join."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise FooterError("a varint longer than 10 bytes")

    def value(self, kind: int) -> Any:
        if kind in (_TRUE, _FALSE):  # a bool inside a list or map: one byte
            return self.byte() == _TRUE
        if kind == _BYTE:
            return self.byte()
        if kind in _INTS:
            n = self.varint()
            return (n >> 1) ^ -(n & 1)
        if kind in (_DOUBLE, _BINARY):
            size = 8 if kind == _DOUBLE else self.varint()
            raw = self.data[self.pos : self.pos + size]
            if len(raw) != size:
                raise FooterError("the footer ends inside a value")
            self.pos += size
            return raw
        if kind in (_LIST, _SET):
            head = self.byte()
            size, item = head >> 4, head & 0x0F
            if size == 15:
                size = self.varint()
            return [item, [self.value(item) for _ in range(size)]]
        if kind == _MAP:
            size = self.varint()
            kinds = self.byte() if size else 0
            key, val = kinds >> 4, kinds & 0x0F
            return [kinds, [(self.value(key), self.value(val)) for _ in range(size)]]
        if kind == _STRUCT:
            return self.struct()
        raise FooterError(f"unknown Thrift type {kind}")

    def struct(self) -> Struct:
        fields: Struct = []
        last = 0
        while True:
            head = self.byte()
            if head == 0:
                return fields
            kind, delta = head & 0x0F, head >> 4
            if delta:
                field = last + delta
            else:
                n = self.varint()
                field = (n >> 1) ^ -(n & 1)
            value = kind == _TRUE if kind in (_TRUE, _FALSE) else self.value(kind)
            fields.append([field, kind, value])
            last = field


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def varint(self, n: int) -> None:
        while n > 0x7F:
            self.out.append((n & 0x7F) | 0x80)
            n >>= 7
        self.out.append(n)

    def zigzag(self, n: int) -> None:
        self.varint((n << 1) ^ (n >> 63))

    def value(self, kind: int, value: Any) -> None:
        if kind in (_TRUE, _FALSE):
            self.out.append(_TRUE if value else _FALSE)
        elif kind == _BYTE:
            self.out.append(value)
        elif kind in _INTS:
            self.zigzag(value)
        elif kind == _DOUBLE:
            self.out += value
        elif kind == _BINARY:
            self.varint(len(value))
            self.out += value
        elif kind in (_LIST, _SET):
            item, items = value
            if len(items) < 15:
                self.out.append(len(items) << 4 | item)
            else:
                self.out.append(0xF0 | item)
                self.varint(len(items))
            for one in items:
                self.value(item, one)
        elif kind == _MAP:
            kinds, pairs = value
            self.varint(len(pairs))
            if pairs:
                self.out.append(kinds)
            for key, val in pairs:
                self.value(kinds >> 4, key)
                self.value(kinds & 0x0F, val)
        else:
            self.struct(value)

    def struct(self, fields: Struct) -> None:
        last = 0
        for field, kind, value in fields:
            wire = (_TRUE if value else _FALSE) if kind in (_TRUE, _FALSE) else kind
            if 0 < field - last <= 15:
                self.out.append((field - last) << 4 | wire)
            else:
                self.out.append(wire)
                self.zigzag(field)
            if kind not in (_TRUE, _FALSE):
                self.value(kind, value)
            last = field
        self.out.append(0)


def _footer(data: bytes) -> tuple[Struct, int]:
    """The decoded footer of a Parquet file, and the offset where it starts."""
    if len(data) < 12 or data[:4] != _MAGIC or data[-4:] != _MAGIC:
        raise FooterError("not a Parquet file (no PAR1 at both ends)")
    size = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - size
    if start < 4:
        raise FooterError("the footer length points before the start of the file")
    reader = _Reader(data[start : len(data) - 8])
    try:
        footer = reader.struct()
    except IndexError:
        raise FooterError("the footer ends inside a struct") from None
    except RecursionError:
        raise FooterError("the footer nests structs without end") from None
    if reader.pos != size:
        raise FooterError("the footer is not one struct")
    if any(field not in _FILE_KNOWN for field, _, _ in footer):
        raise FooterError("an encrypted or newer footer")
    return footer, start


def _get(fields: Struct, field: int) -> Any:
    for one in fields:
        if one[0] == field:
            return one[2]
    return None


def _set(fields: Struct, field: int, kind: int, value: Any) -> None:
    for one in fields:
        if one[0] == field:
            one[2] = value
            return
    fields.append([field, kind, value])
    fields.sort(key=lambda one: one[0])


def _move(fields: Struct, offsets: set[int], shift: int) -> None:
    for one in fields:
        if one[0] in offsets:
            one[2] += shift


def _move_group(group: Struct, shift: int) -> None:
    """Move the byte offsets of ``group`` by ``shift``, or raise if one is unknown."""
    _move(group, {_GROUP_FILE_OFFSET}, shift)
    for chunk in _get(group, _GROUP_COLUMNS)[1]:
        if any(field not in _CHUNK_KNOWN for field, _, _ in chunk):
            raise FooterError("a column chunk with a page index or in another file")
        meta = _get(chunk, _CHUNK_META)
        if meta is None or any(field not in _META_KNOWN for field, _, _ in meta):
            raise FooterError("a column chunk with a bloom filter or without metadata")
        _move(chunk, {_CHUNK_FILE_OFFSET}, shift)
        _move(meta, _META_OFFSETS, shift)


def append_row_groups(data: bytes, batch: bytes) -> bytes:
    """The Parquet file ``data`` with the row groups of the file ``batch`` after its own.

    The result's footer is ``batch``'s (its key-value metadata, so what it says about
    the rows wins) with the row groups of both and their row count.

    Raises:
        FooterError: the two files have different schemas, or one has something this
            module cannot move; nothing is lost, the caller rewrites the file instead.
    """
    try:
        return _appended(data, batch)
    except (TypeError, IndexError, KeyError, AttributeError) as exc:
        raise FooterError(f"a footer of an unexpected shape ({exc})") from None


def _appended(data: bytes, batch: bytes) -> bytes:
    old, old_end = _footer(data)
    new, new_end = _footer(batch)
    for field in (_FILE_SCHEMA, _FILE_ORDERS):
        if _get(old, field) != _get(new, field):
            raise FooterError("the two files' columns differ")
    groups = _get(old, _FILE_ROW_GROUPS)[1] + _get(new, _FILE_ROW_GROUPS)[1]
    shift = old_end - len(_MAGIC)  # the batch's row groups move from 4 to old_end
    for group in _get(new, _FILE_ROW_GROUPS)[1]:
        _move_group(group, shift)
    for ordinal, group in enumerate(groups):
        if _get(group, _GROUP_ORDINAL) is not None:
            _set(group, _GROUP_ORDINAL, _I16, ordinal)
    _set(new, _FILE_ROW_GROUPS, _LIST, [_STRUCT, groups])
    rows = _get(old, _FILE_NUM_ROWS) + _get(new, _FILE_NUM_ROWS)
    _set(new, _FILE_NUM_ROWS, _I64, rows)
    writer = _Writer()
    writer.struct(new)
    footer = bytes(writer.out)
    return b"".join(
        [
            memoryview(data)[:old_end],
            batch[4:new_end],
            footer,
            len(footer).to_bytes(4, "little"),
            _MAGIC,
        ]
    )
