"""A Parquet file's footer, read, and a row group added without rewriting the file.

A Parquet file is ``PAR1``, its row groups, a footer, the footer's length and ``PAR1``.
The footer (a Thrift struct, see `_parquetthrift`) lists every column chunk by its byte
offset. So a small batch of rows can join a large file as a new row group: keep the
file's bytes up to its footer, write the batch's column chunks after them
(`_parquetpages`), and write a footer listing the old row groups and the new one.
Nothing already in the file is decoded or encoded again but the footer, so a fold into
a file of a million rows costs the copy of its bytes instead of a full rewrite, and
needs no pyarrow.

Only what this needs is read: the schema of a flat file of text columns, the row
groups' row counts and the key-value metadata. A file with anything else (nested or
non-text columns, encryption) is not joined: the caller rewrites it with pyarrow.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from stet.backends._parquetpages import decode_chunk, encode_chunk
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
    put,
)

__all__ = ["Footer", "FooterError", "append_rows", "group_texts", "read_footer", "write_file"]

_MAGIC = b"PAR1"

# Field ids in parquet.thrift.
_FILE_SCHEMA, _FILE_NUM_ROWS, _FILE_ROW_GROUPS, _FILE_METADATA = 2, 3, 4, 5
_FILE_KNOWN = {1, 2, 3, 4, 5, 6, 7}  # 8, 9: encryption
_GROUP_COLUMNS, _GROUP_NUM_ROWS = 1, 3
_CHUNK_META = 3
_SCHEMA_TYPE, _SCHEMA_REPETITION, _SCHEMA_NAME, _SCHEMA_CHILDREN = 1, 3, 4, 5
_SCHEMA_CONVERTED, _SCHEMA_LOGICAL = 6, 10
_BYTE_ARRAY, _OPTIONAL, _UTF8, _LOGICAL_STRING = 6, 1, 0, 1


class Footer(NamedTuple):
    """What stet reads of a Parquet file's footer.

    Shared by every reader of the same footer (see `read_footer`): never changed.
    """

    fields: Struct  # the footer itself, as read
    start: int  # where it starts: where the row groups end
    counts: list[int]  # the rows of each row group
    names: list[str]  # the columns
    texts: bool  # every column is an optional UTF-8 text, as stet writes them
    metadata: dict[bytes, bytes]  # the key-value metadata


#: The last footer read, by its bytes and the file's length. One process reads the same
#: footer several times in a row (the snapshot's check, the read, the snapshot's note,
#: the fold), and reading one of 64 row groups takes 15 ms in Python.
_last: tuple[int, bytes, Footer] | None = None


def read_footer(data: bytes) -> Footer:
    """The footer of the Parquet file ``data``.

    Raises:
        FooterError: not a Parquet file, or one whose footer is damaged, encrypted,
            newer than this module or of nested columns.
    """
    try:
        return _read(data)
    except FooterError:
        raise
    except (TypeError, IndexError, KeyError, AttributeError, ValueError) as exc:
        raise FooterError(f"a footer of an unexpected shape ({exc})") from None


def _read(data: bytes) -> Footer:
    global _last
    if len(data) < 12 or data[:4] != _MAGIC or data[-4:] != _MAGIC:
        raise FooterError("not a Parquet file (no PAR1 at both ends)")
    size = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - size
    if start < 4:
        raise FooterError("the footer length points before the start of the file")
    raw = data[start : len(data) - 8]
    last = _last
    if last is not None and last[0] == len(data) and last[1] == raw:
        return last[2]
    reader = Reader(raw)
    try:
        fields = reader.struct()
    except IndexError:
        raise FooterError("the footer ends inside a struct") from None
    except RecursionError:
        raise FooterError("the footer nests structs without end") from None
    if reader.pos != size:
        raise FooterError("the footer is not one struct")
    if any(field not in _FILE_KNOWN for field, _, _ in fields):
        raise FooterError("an encrypted or newer footer")
    root, *columns = get(fields, _FILE_SCHEMA)[1]
    if get(root, _SCHEMA_CHILDREN) != len(columns) or any(
        get(c, _SCHEMA_CHILDREN) for c in columns
    ):
        raise FooterError("nested columns")
    counts = []
    for group in get(fields, _FILE_ROW_GROUPS)[1]:
        rows, chunks = get(group, _GROUP_NUM_ROWS), get(group, _GROUP_COLUMNS)
        if not (isinstance(rows, int) and rows >= 0 and len(chunks[1]) == len(columns)):
            raise FooterError("a row group without its row count or a chunk per column")
        counts.append(rows)
    pairs = (get(fields, _FILE_METADATA) or [0, []])[1]
    metadata = {bytes(get(kv, 1)): bytes(get(kv, 2) or b"") for kv in pairs}
    names = [str(get(c, _SCHEMA_NAME), "utf-8") for c in columns]
    footer = Footer(fields, start, counts, names, all(map(_is_text, columns)), metadata)
    _last = (len(data), bytes(raw), footer)
    return footer


def _is_text(column: Struct) -> bool:
    logical = get(column, _SCHEMA_LOGICAL)
    return (
        get(column, _SCHEMA_TYPE) == _BYTE_ARRAY
        and get(column, _SCHEMA_REPETITION) == _OPTIONAL
        and (
            get(column, _SCHEMA_CONVERTED) == _UTF8
            or (logical is not None and [f for f, _, _ in logical] == [_LOGICAL_STRING])
        )
    )


def group_texts(data: bytes, footer: Footer, group: int) -> list[list[str | None]] | None:
    """The columns of row group ``group``, each a list of texts (None: null).

    None when one of its column chunks is not of the plain kind `_parquetpages` reads.
    """
    if not footer.texts:
        return None
    columns = []
    row_group = get(footer.fields, _FILE_ROW_GROUPS)[1][group]
    for chunk in get(row_group, _GROUP_COLUMNS)[1]:
        meta = get(chunk, _CHUNK_META) if isinstance(chunk, list) else None
        values = None if not isinstance(meta, list) else decode_chunk(data, meta)
        if values is None or len(values) != footer.counts[group]:
            return None
        columns.append(values)
    return columns


def append_rows(
    data: bytes, footer: Footer, columns: list[list[str | None]], metadata: dict[bytes, bytes]
) -> bytes:
    """The Parquet file ``data`` with a row group of ``columns`` after its own.

    Args:
        data: a Parquet file of text columns.
        footer: its footer, as `read_footer` read it.
        columns: the new rows' texts, a list per column of the file, in its order.
        metadata: the key-value metadata of the result, in place of the file's. What
            pyarrow and pandas keep there (their schema, pandas' index) describes the
            old rows only; pyarrow reads the columns' types from the Parquet schema
            just as well.

    Raises:
        FooterError: ``data`` is not such a file, or ``columns`` do not fit it; nothing
            is lost, the caller rewrites the file instead.
    """
    if not footer.texts or len(columns) != len(footer.names):
        raise FooterError("the file's columns are not the batch's")
    rows = len(columns[0]) if columns else 0
    if not rows or any(len(c) != rows for c in columns):
        raise FooterError("columns of different lengths")
    parts: list[Any] = [memoryview(data)[: footer.start]]
    chunks = []
    pos = footer.start
    for name, values in zip(footer.names, columns, strict=True):
        raw, chunk = encode_chunk(name, values, pos)
        parts.append(raw)
        chunks.append(chunk)
        pos += len(raw)
    group = [
        [_GROUP_COLUMNS, LIST, [STRUCT, chunks]],
        [2, I64, sum(get(get(c, _CHUNK_META), 6) for c in chunks)],  # uncompressed
        [_GROUP_NUM_ROWS, I64, rows],
        [5, I64, footer.start],
        [6, I64, pos - footer.start],  # as stored
    ]
    fields = [list(field) for field in footer.fields]  # (the caller's stays as it was)
    groups = get(fields, _FILE_ROW_GROUPS)[1]
    put(fields, _FILE_ROW_GROUPS, LIST, [STRUCT, [*groups, group]])
    put(fields, _FILE_NUM_ROWS, I64, sum(footer.counts) + rows)
    put(fields, _FILE_METADATA, LIST, [STRUCT, _pairs(metadata)])
    writer = Writer()
    writer.struct(fields)
    parts += [writer.out, len(writer.out).to_bytes(4, "little"), _MAGIC]
    return b"".join(parts)


def _pairs(metadata: dict[bytes, bytes]) -> list[Struct]:
    """``metadata`` as the footer's list of ``KeyValue`` structs."""
    return [[[1, BINARY, k], [2, BINARY, v]] for k, v in metadata.items()]


def write_file(
    names: list[str], columns: list[list[str | None]], metadata: dict[bytes, bytes]
) -> bytes:
    """A Parquet file of text columns ``names`` holding ``columns``, as one row group.

    The schema is what pyarrow writes for string columns; the row group is written as
    `append_rows` adds one (see `_parquetpages`), so no pyarrow is needed.
    """
    from stet import __version__  # (here: stet imports its backends as it starts)

    schema: list[Struct] = [[[_SCHEMA_REPETITION, I32, 0], [_SCHEMA_NAME, BINARY, b"schema"]]]
    schema[0].append([_SCHEMA_CHILDREN, I32, len(names)])
    for name in names:
        schema.append(
            [
                [_SCHEMA_TYPE, I32, _BYTE_ARRAY],
                [_SCHEMA_REPETITION, I32, _OPTIONAL],
                [_SCHEMA_NAME, BINARY, name.encode("utf-8")],
                [_SCHEMA_CONVERTED, I32, _UTF8],
                [_SCHEMA_LOGICAL, STRUCT, [[_LOGICAL_STRING, STRUCT, []]]],
            ]
        )
    fields: Struct = [
        [1, I32, 2],  # the format version pyarrow writes
        [_FILE_SCHEMA, LIST, [STRUCT, schema]],
        [_FILE_NUM_ROWS, I64, 0],
        [_FILE_ROW_GROUPS, LIST, [STRUCT, []]],
        [_FILE_METADATA, LIST, [STRUCT, _pairs(metadata)]],
        [6, BINARY, f"stet version {__version__}".encode()],  # created_by
        [7, LIST, [STRUCT, [[[1, STRUCT, []]] for _ in names]]],  # order texts by bytes
    ]
    writer = Writer()
    writer.struct(fields)
    empty = b"".join([_MAGIC, writer.out, len(writer.out).to_bytes(4, "little"), _MAGIC])
    if not columns or not columns[0]:
        return empty
    return append_rows(empty, read_footer(empty), columns, metadata)
