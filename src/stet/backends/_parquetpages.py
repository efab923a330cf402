"""Column chunks of optional UTF-8 strings, written and read without pyarrow.

The simplest pages the Parquet format has: one version-1 data page per chunk, values in
PLAIN encoding (a 4-byte little-endian length, then the bytes), no compression, and
definition levels (1: a value, 0: null) in the RLE / bit-packed hybrid encoding with a
4-byte length before them. This is all a fold of a few records needs to add a row group
(`encode_chunk`), and all a new process needs to read back such row groups
(`decode_chunk`); pyarrow, its import and its shutdown cost stay out of short processes.

`decode_chunk` reads any chunk made only of such pages, whoever wrote it, and answers
None for anything else (dictionary pages, compression, version-2 pages): the caller
then reads the file with pyarrow, which also reports what is wrong with a damaged one.
"""

from __future__ import annotations

import struct
from typing import Any

from stet.backends._parquetthrift import (
    BINARY,
    I32,
    I64,
    LIST,
    STRUCT,
    FooterError,
    Reader,
    Struct,
    Writer,
    get,
)

__all__ = ["decode_chunk", "encode_chunk"]

# Values of parquet.thrift's enums and field ids of its structs.
_BYTE_ARRAY, _UNCOMPRESSED, _DATA_PAGE = 6, 0, 0
_PLAIN, _RLE = 0, 3
_META_TYPE, _META_CODEC, _META_VALUES, _META_DATA_PAGE, _META_DICT_PAGE = 1, 4, 5, 9, 11
_PAGE_TYPE, _PAGE_SIZE, _PAGE_STORED, _PAGE_DATA = 1, 2, 3, 5
_DATA_VALUES, _DATA_ENCODING, _DATA_LEVELS = 1, 2, 3
_LENGTH = struct.Struct("<I")


def _varint(n: int) -> bytes:
    writer = Writer()
    writer.varint(n)
    return bytes(writer.out)


def _levels(values: list[str | None]) -> bytes:
    """The definition levels of ``values``: one run when all agree, else bit-packed."""
    n = len(values)
    nulls = values.count(None)
    if nulls in (0, n):
        return _varint(n << 1) + (b"\x00" if nulls else b"\x01")
    groups = (n + 7) // 8  # eight levels of one bit per byte, the first in the lowest bit
    bits = sum(1 << i for i, v in enumerate(values) if v is not None)
    return _varint(groups << 1 | 1) + bits.to_bytes(groups, "little")


def encode_chunk(name: str, values: list[str | None], offset: int) -> tuple[bytes, Struct]:
    """The bytes of a column chunk holding ``values``, and its ``ColumnChunk`` struct.

    Args:
        name: the column's name (a top-level column).
        values: its texts; None is null.
        offset: where in the file the chunk's bytes will start.
    """
    levels = _levels(values)
    parts = [_LENGTH.pack(len(levels)), levels]
    for value in values:
        if value is not None:
            raw = value.encode("utf-8")
            parts += (_LENGTH.pack(len(raw)), raw)
    page = b"".join(parts)
    kinds = [[_DATA_VALUES, I32, len(values)], [_DATA_ENCODING, I32, _PLAIN]]
    kinds += [[_DATA_LEVELS, I32, _RLE], [4, I32, _RLE]]  # 4: repetition levels (none)
    header = Writer()
    header.struct(
        [
            [_PAGE_TYPE, I32, _DATA_PAGE],
            [_PAGE_SIZE, I32, len(page)],
            [_PAGE_STORED, I32, len(page)],
            [_PAGE_DATA, STRUCT, kinds],
        ]
    )
    chunk = bytes(header.out) + page
    meta = [
        [_META_TYPE, I32, _BYTE_ARRAY],
        [2, LIST, [I32, [_PLAIN, _RLE]]],
        [3, LIST, [BINARY, [name.encode("utf-8")]]],
        [_META_CODEC, I32, _UNCOMPRESSED],
        [_META_VALUES, I64, len(values)],
        [6, I64, len(chunk)],
        [7, I64, len(chunk)],
        [_META_DATA_PAGE, I64, offset],
    ]
    return chunk, [[2, I64, offset], [3, STRUCT, meta]]


def decode_chunk(data: bytes | memoryview, meta: Struct) -> list[str | None] | None:
    """The texts of a column chunk of ``data`` (a whole file) described by ``meta``.

    None when the chunk holds pages of another kind than `encode_chunk` writes, or
    bytes that do not add up: read it with pyarrow instead.
    """
    try:
        return _decode(memoryview(data), meta)
    except (FooterError, IndexError, ValueError, TypeError, RecursionError, struct.error):
        return None


def _decode(data: memoryview, meta: Struct) -> list[str | None] | None:
    if (
        get(meta, _META_TYPE) != _BYTE_ARRAY
        or get(meta, _META_CODEC) != _UNCOMPRESSED
        or get(meta, _META_DICT_PAGE) is not None
    ):
        return None
    total = get(meta, _META_VALUES)
    pos = get(meta, _META_DATA_PAGE)
    out: list[str | None] = []
    while len(out) < total:
        reader = Reader(data)
        reader.pos = pos
        header = reader.struct()
        page = get(header, _PAGE_DATA)
        size = get(header, _PAGE_SIZE)
        if (
            get(header, _PAGE_TYPE) != _DATA_PAGE
            or page is None
            or size != get(header, _PAGE_STORED)
            or get(page, _DATA_ENCODING) != _PLAIN
            or get(page, _DATA_LEVELS) != _RLE
        ):
            return None
        end = reader.pos + size
        if end > len(data):
            return None
        body = data[reader.pos : end]
        _page_values(body, get(page, _DATA_VALUES), out)
        pos = end
    return out if len(out) == total else None


def _page_values(body: memoryview, count: int, out: list[Any]) -> None:
    """Append the ``count`` texts (None: null) of one data page's ``body`` to ``out``."""
    (size,) = _LENGTH.unpack_from(body, 0)
    present = _read_levels(body[4 : 4 + size], count)
    pos = 4 + size
    for here in present:
        if here:
            (n,) = _LENGTH.unpack_from(body, pos)
            raw = body[pos + 4 : pos + 4 + n]
            if len(raw) != n:
                raise ValueError("a value runs past its page")
            out.append(str(raw, "utf-8"))
            pos += 4 + n
        else:
            out.append(None)
    if pos != len(body):
        raise ValueError("bytes left over after the page's values")


def _read_levels(raw: memoryview, count: int) -> list[bool]:
    """``count`` definition levels of bit width 1 (True: a value is there)."""
    reader = Reader(raw)
    levels: list[bool] = []
    while len(levels) < count:
        head = reader.varint()
        if head >> 1 == 0:
            raise ValueError("an empty run of definition levels")
        if head & 1:  # bit-packed: groups of eight levels, one byte each
            groups = head >> 1
            bits = int.from_bytes(raw[reader.pos : reader.pos + groups], "little")
            reader.pos += groups
            levels += [bool(bits >> i & 1) for i in range(groups * 8)]
        else:  # a run of one level
            level = reader.byte()
            if level > 1:
                raise ValueError("a definition level above 1")
            levels += [bool(level)] * (head >> 1)
    if reader.pos != len(raw):
        raise ValueError("bytes left over after the definition levels")
    return levels[:count]
