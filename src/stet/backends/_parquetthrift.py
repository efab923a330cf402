"""Thrift's compact protocol, as Parquet files use it for footers and page headers.

Values are kept as they are on the wire, so a struct read and written back is the same
bytes: a struct is a list of ``[field id, type id, value]``, a list or set is
``[element type, items]``, a map is ``[key and value types, pairs]``. Field ids are
those of ``parquet.thrift``; what they mean is the caller's business.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BINARY",
    "BYTE",
    "DOUBLE",
    "FALSE",
    "I16",
    "I32",
    "I64",
    "LIST",
    "MAP",
    "SET",
    "STRUCT",
    "TRUE",
    "FooterError",
    "Reader",
    "Struct",
    "Writer",
    "get",
    "put",
]

# Thrift compact protocol type ids.
TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(1, 13)
_INTS = (I16, I32, I64)

Struct = list[list[Any]]


class FooterError(ValueError):
    """The bytes are not Parquet metadata stet can read, or not of a file it can add to."""


class Reader:
    """Reads values from ``data``, from ``pos`` on."""

    def __init__(self, data: bytes | memoryview) -> None:
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
        if kind in (TRUE, FALSE):  # a bool inside a list or map: one byte
            return self.byte() == TRUE
        if kind == BYTE:
            return self.byte()
        if kind in _INTS:
            n = self.varint()
            return (n >> 1) ^ -(n & 1)
        if kind in (DOUBLE, BINARY):
            size = 8 if kind == DOUBLE else self.varint()
            raw = self.data[self.pos : self.pos + size]
            if len(raw) != size:
                raise FooterError("the footer ends inside a value")
            self.pos += size
            return raw
        if kind in (LIST, SET):
            head = self.byte()
            size, item = head >> 4, head & 0x0F
            if size == 15:
                size = self.varint()
            return [item, [self.value(item) for _ in range(size)]]
        if kind == MAP:
            size = self.varint()
            kinds = self.byte() if size else 0
            key, val = kinds >> 4, kinds & 0x0F
            return [kinds, [(self.value(key), self.value(val)) for _ in range(size)]]
        if kind == STRUCT:
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
            value = kind == TRUE if kind in (TRUE, FALSE) else self.value(kind)
            fields.append([field, kind, value])
            last = field


class Writer:
    """Writes values to the bytearray ``out``."""

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
        if kind in (TRUE, FALSE):
            self.out.append(TRUE if value else FALSE)
        elif kind == BYTE:
            self.out.append(value)
        elif kind in _INTS:
            self.zigzag(value)
        elif kind == DOUBLE:
            self.out += value
        elif kind == BINARY:
            self.varint(len(value))
            self.out += value
        elif kind in (LIST, SET):
            item, items = value
            if len(items) < 15:
                self.out.append(len(items) << 4 | item)
            else:
                self.out.append(0xF0 | item)
                self.varint(len(items))
            for one in items:
                self.value(item, one)
        elif kind == MAP:
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
            wire = (TRUE if value else FALSE) if kind in (TRUE, FALSE) else kind
            if 0 < field - last <= 15:
                self.out.append((field - last) << 4 | wire)
            else:
                self.out.append(wire)
                self.zigzag(field)
            if kind not in (TRUE, FALSE):
                self.value(kind, value)
            last = field
        self.out.append(0)


def get(fields: Struct, field: int) -> Any:
    """The value of ``field`` in the struct ``fields``, or None."""
    for one in fields:
        if one[0] == field:
            return one[2]
    return None


def put(fields: Struct, field: int, kind: int, value: Any) -> None:
    """Set ``field`` of the struct ``fields``, keeping the fields in order of id."""
    for one in fields:
        if one[0] == field:
            one[2] = value
            return
    fields.append([field, kind, value])
    fields.sort(key=lambda one: one[0])
