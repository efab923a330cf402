"""Column chunks of optional UTF-8 strings, written and read without pyarrow.

The simplest pages the Parquet format has: one version-1 data page per chunk, values in
PLAIN encoding (a 4-byte little-endian length, then the bytes), definition levels (1: a
value, 0: null) in the RLE / bit-packed hybrid encoding with a 4-byte length before
them, the page compressed with GZIP (zlib, in the standard library, which every Parquet
reader supports). This is all stet needs to write a small file or add a row group
(`encode_chunk`), and to read them back (`decode_chunk`); pyarrow, its import and its
shutdown cost stay out of short processes.

`decode_chunk` reads any chunk made only of such pages, uncompressed or GZIP, whoever
wrote it, and answers None for anything else (dictionary pages, other codecs,
version-2 pages): the caller then reads the file with pyarrow, which also reports what
is wrong with a damaged one.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
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

__all__ = ["decode_chunk", "encode_chunk", "presence_bits"]

# Values of parquet.thrift's enums and field ids of its structs.
_BYTE_ARRAY, _UNCOMPRESSED, _GZIP, _DATA_PAGE = 6, 0, 2, 0
_LEVEL = 1  # zlib's fastest: texts of a sweep repeat, and most of the gain is had
_GZIP_WBITS = 31  # zlib's window bits for a gzip stream (RFC 1952), as Parquet's GZIP
_PLAIN, _RLE = 0, 3
_META_TYPE, _META_CODEC, _META_VALUES, _META_DATA_PAGE, _META_DICT_PAGE = 1, 4, 5, 9, 11
_PAGE_TYPE, _PAGE_SIZE, _PAGE_STORED, _PAGE_DATA = 1, 2, 3, 5
_DATA_VALUES, _DATA_ENCODING, _DATA_LEVELS = 1, 2, 3
_LENGTH = struct.Struct("<I")
_PAGE_MAX = 2**31 - 1  # page sizes are Thrift i32s


def _varint(n: int) -> bytes:
    writer = Writer()
    writer.varint(n)
    return bytes(writer.out)


def presence_bits(values: Sequence[str | None]) -> bytes:
    """A bit per value, set where it is not None, the first in the lowest bit.

    Parquet's bit-packed levels and Arrow's validity bitmaps alike. Made from a string
    of digits: summing ``1 << i`` takes time growing with the square of the length.
    """
    digits = "".join(["0" if v is None else "1" for v in reversed(values)])
    return int(digits or "0", 2).to_bytes((len(values) + 7) // 8, "little")


def _levels(values: list[str | None]) -> bytes:
    """The definition levels of ``values``: one run when all agree, else bit-packed."""
    n = len(values)
    nulls = values.count(None)
    if nulls in (0, n):
        return _varint(n << 1) + (b"\x00" if nulls else b"\x01")
    groups = (n + 7) // 8  # eight levels of one bit per byte
    return _varint(groups << 1 | 1) + presence_bits(values)


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
    if len(page) > _PAGE_MAX // 2:  # (compressed, it may not shrink)
        raise FooterError(f"a column {name!r} of {len(page)} bytes, too large for one page")
    packer = zlib.compressobj(_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    stored = packer.compress(page) + packer.flush()
    kinds = [[_DATA_VALUES, I32, len(values)], [_DATA_ENCODING, I32, _PLAIN]]
    kinds += [[_DATA_LEVELS, I32, _RLE], [4, I32, _RLE]]  # 4: repetition levels (none)
    header = Writer()
    header.struct(
        [
            [_PAGE_TYPE, I32, _DATA_PAGE],
            [_PAGE_SIZE, I32, len(page)],
            [_PAGE_STORED, I32, len(stored)],
            [_PAGE_DATA, STRUCT, kinds],
        ]
    )
    chunk = bytes(header.out) + stored
    meta = [
        [_META_TYPE, I32, _BYTE_ARRAY],
        [2, LIST, [I32, [_PLAIN, _RLE]]],
        [3, LIST, [BINARY, [name.encode("utf-8")]]],
        [_META_CODEC, I32, _GZIP],
        [_META_VALUES, I64, len(values)],
        [6, I64, len(header.out) + len(page)],  # uncompressed size
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
    except (
        FooterError,
        IndexError,
        ValueError,
        TypeError,
        RecursionError,
        struct.error,
        zlib.error,
    ):
        return None


def _decode(data: memoryview, meta: Struct) -> list[str | None] | None:
    if (
        get(meta, _META_TYPE) != _BYTE_ARRAY
        or get(meta, _META_CODEC) not in (_UNCOMPRESSED, _GZIP)
        or get(meta, _META_DICT_PAGE) is not None
    ):
        return None
    packed = get(meta, _META_CODEC) == _GZIP
    total = get(meta, _META_VALUES)
    pos = get(meta, _META_DATA_PAGE)
    out: list[str | None] = []
    while len(out) < total:
        reader = Reader(data)
        reader.pos = pos
        header = reader.struct()
        page = get(header, _PAGE_DATA)
        size, stored = get(header, _PAGE_SIZE), get(header, _PAGE_STORED)
        if (
            not 0 <= size <= _PAGE_MAX
            or not 0 <= stored <= _PAGE_MAX
            or get(header, _PAGE_TYPE) != _DATA_PAGE
            or page is None
            or (size != stored and not packed)
            or get(page, _DATA_ENCODING) != _PLAIN
            or get(page, _DATA_LEVELS) != _RLE
        ):
            return None
        end = reader.pos + stored
        if end > len(data):
            return None
        stored_bytes = data[reader.pos : end]
        body = _gunzip(stored_bytes, size) if packed else bytes(stored_bytes)
        _page_values(body, get(page, _DATA_VALUES), out)
        pos = end
    return out if len(out) == total else None


def _gunzip(stored: memoryview, size: int) -> bytes:
    """The ``size`` bytes the GZIP stream ``stored`` holds; raise if it holds others."""
    unpacker = zlib.decompressobj(_GZIP_WBITS)
    page = unpacker.decompress(stored, size + 1)  # (no more: a damaged size cannot blow up)
    if len(page) != size or not unpacker.eof or unpacker.unused_data:
        raise ValueError("a compressed page that does not hold its size")
    return page


def _page_values(body: bytes, count: int, out: list[Any]) -> None:
    """Append the ``count`` texts (None: null) of one data page's ``body`` to ``out``."""
    (size,) = _LENGTH.unpack_from(body, 0)
    present = _read_levels(memoryview(body)[4 : 4 + size], count)
    pos, end = 4 + size, len(body)
    # The hot loop of reading a small store: names bound locally, bytes (not a
    # memoryview) sliced, as that decodes in half the time.
    unpack, append = _LENGTH.unpack_from, out.append
    for here in present:
        if here:
            start = pos + 4
            pos = start + unpack(body, pos)[0]
            if pos > end:
                raise ValueError("a value runs past its page")
            append(body[start:pos].decode("utf-8"))
        else:
            append(None)
    if pos != end:
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
            if reader.pos + groups > len(raw) or groups > (count - len(levels) + 7) // 8:
                raise ValueError("bit-packed levels past their bytes, or more than values")
            bits = int.from_bytes(raw[reader.pos : reader.pos + groups], "little")
            reader.pos += groups
            levels += [bool(bits >> i & 1) for i in range(groups * 8)]
        else:  # a run of one level
            level = reader.byte()
            if level > 1 or head >> 1 > count - len(levels):
                raise ValueError("a definition level above 1, or more levels than values")
            levels += [bool(level)] * (head >> 1)
    if reader.pos != len(raw):
        raise ValueError("bytes left over after the definition levels")
    return levels[:count]
