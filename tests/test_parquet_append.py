"""A fold of a few records adds a row group instead of rewriting the Parquet file.

The footer module is checked against pyarrow's own files (byte for byte, and read back
by pyarrow and pandas); the store is checked as a researcher meets it: real processes
record and exit, pandas reads the file, and a new process skips what is done.
"""

from __future__ import annotations

import copy
import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _helpers import PYTHON, child_env
from stet.backends import ParquetBackend

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pd = pytest.importorskip("pandas")

from stet.backends._index import SNAPSHOT_MIN  # noqa: E402
from stet.backends._parquetfile import PLAIN_ROWS  # noqa: E402
from stet.backends._parquetfooter import (  # noqa: E402
    FooterError,
    append_rows,
    group_texts,
    read_footer,
    write_file,
)
from stet.backends._parquetpages import (  # noqa: E402
    decode_chunk,
    encode_chunk,
    presence_bits,
)
from stet.backends._parquettable import text_array  # noqa: E402
from stet.backends._parquetthrift import Writer  # noqa: E402

RECORD = """
import sys
from stet.backends import ParquetBackend

store, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
backend = ParquetBackend(store)
for i in range(first, first + count):
    backend.record({"i": i})
assert "pandas" not in sys.modules  # the fold at exit must not need pandas
"""

#: A short process on a store with an index snapshot: it must not need pyarrow, neither
#: to read the store nor to fold its records at exit (checked after the fold).
RECORD_WITHOUT_PYARROW = (
    """
import atexit, sys

def check():
    if "pyarrow" in sys.modules:
        print("pyarrow was imported", flush=True)
        import os
        os._exit(3)

atexit.register(check)  # registered first, so it runs last: after stet's fold
"""
    + RECORD
)


def _file(table: Any, **options: Any) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return bytes(sink.getvalue().to_pybytes())


def _read(data: bytes) -> Any:
    return pq.ParquetFile(pa.BufferReader(data)).read()


TEXT = st.one_of(st.none(), st.text(max_size=12))
ROWS = st.lists(st.lists(TEXT, min_size=2, max_size=2), min_size=1, max_size=40)


def _table(columns: list[str], rows: list[list[str | None]]) -> Any:
    return pa.table({c: pa.array([r[i] for r in rows], pa.string()) for i, c in enumerate(columns)})


def _columns(rows: list[list[str | None]]) -> list[list[str | None]]:
    return [list(column) for column in zip(*rows, strict=True)]


def _append(data: bytes, rows: list[list[str | None]], **metadata: str) -> bytes:
    meta = {k.encode(): v.encode() for k, v in metadata.items()}
    return append_rows(data, read_footer(data), _columns(rows), meta)


# -- the footer ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "options"),
    [
        (["a"], {}),
        (["a", "b", "c"], {"use_dictionary": ["b"], "compression": "snappy"}),
        ([f"c{i}" for i in range(20)], {"row_group_size": 3}),  # long lists, many groups
        (["é", "ü x"], {"compression": "none"}),
    ],
)
def test_a_footer_pyarrow_wrote_reads_and_writes_back_byte_for_byte(
    columns: list[str], options: dict[str, Any]
) -> None:
    rows = [[f"{c}-{i}" if i % 3 else None for c in columns] for i in range(10)]
    data = _file(_table(columns, rows), **options)
    footer = read_footer(data)
    assert footer.names == columns and footer.texts
    assert sum(footer.counts) == 10
    writer = Writer()
    writer.struct(footer.fields)
    assert bytes(writer.out) == data[footer.start : -8]


@settings(max_examples=40, deadline=None)
@given(
    ROWS,
    ROWS,
    st.sampled_from(
        [{}, {"use_dictionary": ["b"]}, {"row_group_size": 7}, {"compression": "none"}]
    ),
)
def test_appended_row_groups_read_back_as_both_files_rows_in_order(
    first: list[list[str | None]], second: list[list[str | None]], options: dict[str, Any]
) -> None:
    old = _table(["a", "b"], first).replace_schema_metadata({b"note": b"old"})
    whole = _append(_file(old, **options), second, note="new")
    back = pq.ParquetFile(pa.BufferReader(whole))
    assert back.read().to_pylist() == old.to_pylist() + _table(["a", "b"], second).to_pylist()
    assert back.metadata.metadata == {b"note": b"new"}  # only: the old ones describe old rows
    assert back.metadata.num_rows == len(first) + len(second)
    footer = read_footer(whole)
    assert group_texts(whole, footer, len(footer.counts) - 1) == _columns(second)


@settings(max_examples=60, deadline=None)
@given(ROWS, st.integers(1, 4), st.sampled_from(["none", "gzip"]))
def test_plain_row_groups_pyarrow_wrote_read_back_without_it(
    rows: list[list[str | None]], size: int, codec: str
) -> None:
    data = _file(
        _table(["a", "b"], rows), use_dictionary=False, compression=codec, row_group_size=size
    )
    footer = read_footer(data)
    read = [group_texts(data, footer, g) for g in range(len(footer.counts))]
    assert [row for texts in read if texts for row in zip(*texts, strict=True)] == [
        tuple(r) for r in rows
    ]


@given(st.lists(TEXT, max_size=200))
def test_presence_bits_set_the_bit_of_each_value_that_is_there(values: list[str | None]) -> None:
    bits = presence_bits(values)
    assert len(bits) == (len(values) + 7) // 8
    assert [bool(bits[i // 8] >> i % 8 & 1) for i in range(len(values))] == [
        v is not None for v in values
    ]
    assert text_array(values).to_pylist() == values  # (pyarrow reads them as its bitmap)


def test_row_groups_of_another_kind_are_left_to_pyarrow() -> None:
    rows = [["x", None]] * 50
    for options in (
        {"compression": "snappy", "use_dictionary": False},
        {"use_dictionary": True, "compression": "none"},
        {"use_dictionary": False, "compression": "none", "data_page_version": "2.0"},
    ):
        data = _file(_table(["a", "b"], rows), **options)
        assert group_texts(data, read_footer(data), 0) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=20), st.data())
def test_a_damaged_chunk_is_left_to_pyarrow_not_misread(
    values: list[str | None], data: st.DataObject
) -> None:
    chunk, column = encode_chunk("a", values, 4)
    whole = b"PAR1" + chunk
    meta = column[1][2]
    assert decode_chunk(whole, meta) == values
    at = data.draw(st.integers(4, len(whole) - 1))
    damaged = whole[:at] + bytes([whole[at] ^ data.draw(st.integers(1, 255))]) + whole[at + 1 :]
    back = decode_chunk(damaged, meta)
    # A flipped byte inside a text may still read as text; anything else must be refused.
    assert back is None or (
        len(back) == len(values) and all(v is None or isinstance(v, str) for v in back)
    )
    assert decode_chunk(whole[:at], meta) is None  # cut short


def _page(levels: bytes, values: bytes, count: int, size_field: int | None = None) -> Any:
    """A file of one hand-made data page, and its chunk's metadata."""
    body = len(levels).to_bytes(4, "little") + levels + values
    size = len(body) if size_field is None else size_field
    header = Writer()
    header.struct(
        [
            [1, 5, 0],
            [2, 5, size],
            [3, 5, size],
            [5, 12, [[1, 5, count], [2, 5, 0], [3, 5, 3], [4, 5, 3]]],
        ]
    )
    data = b"PAR1" + bytes(header.out) + body
    meta = [[1, 5, 6], [4, 5, 0], [5, 6, count], [9, 6, 4]]
    return data, meta


@pytest.mark.parametrize(
    ("levels", "size_field"),
    [
        (b"\xfe\xff\xff\xff\xff\x1f\x01", None),  # a run of 2**40 levels
        (b"\xff\xff\xff\xff\xff\x1f\xff", None),  # 2**39 bit-packed groups
        (b"\x02\x01", 2**40),  # a page of a terabyte
        (b"\x02\x01", -5),  # of a negative size
    ],
    ids=["long-run", "many-groups", "huge-page", "negative-page"],
)
def test_a_page_that_claims_more_than_it_holds_is_refused_at_once(
    levels: bytes, size_field: int | None
) -> None:
    data, meta = _page(levels, b"\x01\x00\x00\x00x", 1, size_field)
    assert decode_chunk(data, meta) is None
    good, meta = _page(b"\x02\x01", b"\x01\x00\x00\x00x", 1)
    assert decode_chunk(good, meta) == ["x"]  # (the same page, sound)


def test_a_text_too_large_for_stet_s_pages_is_written_by_pyarrow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stet.backends import _parquetpages

    monkeypatch.setattr(_parquetpages, "_PAGE_MAX", 1000)  # (2 GiB, really)
    store = tmp_path / "runs.parquet"
    backend = ParquetBackend(store)
    backend.record({"i": "x" * 2000})
    assert _codec(store) == "SNAPPY"
    assert pd.read_parquet(store)["i"].tolist() == ["x" * 2000]


def test_a_small_file_keeps_its_column_order_when_runs_are_folded_into_it(
    tmp_path: Path,
) -> None:
    store = tmp_path / "runs.parquet"
    backend = ParquetBackend(store)
    backend.record({"a": 1, "c": 1})
    backend.record({"a": 2, "b": 2})
    backend.fold()
    frame = pd.read_parquet(store)
    order = ["a", "b", "c", *[c for c in frame.columns if c.startswith("_stet_")]]
    frame[order].to_parquet(store, index=False)  # someone tidies the columns
    backend = ParquetBackend(store)
    backend.record({"a": 3})
    backend.fold()
    assert pd.read_parquet(store).columns.tolist() == order
    assert sorted(pd.read_parquet(store)["a"]) == ["1", "2", "3"]


def test_an_appended_file_keeps_the_old_file_s_bytes_and_pandas_reads_it(
    tmp_path: Path,
) -> None:
    old = _file(_table(["a"], [[str(i)] for i in range(100)]))
    whole = append_rows(old, read_footer(old), [["x", None]], {})
    start = read_footer(old).start
    assert whole[:start] == old[:start]
    (tmp_path / "f.parquet").write_bytes(whole)
    column = pd.read_parquet(tmp_path / "f.parquet")["a"]
    assert column.tolist()[-3:-1] == ["99", "x"] and column.isna().tolist()[-3:] == [0, 0, 1]


@pytest.mark.parametrize(
    ("data", "columns"),
    [
        (_file(pa.table({"a": pa.array([1], pa.int64())})), [["1"]]),  # not text
        (_file(_table(["a"], [["1"]])), [["1"], ["2"]]),  # another column
        (_file(_table(["a"], [["1"]])), [[]]),  # no rows
        (_file(pa.table({"s": pa.array([{"x": "1"}])})), [["1"]]),  # nested
    ],
    ids=["type", "column", "empty", "nested"],
)
def test_rows_that_do_not_fit_the_file_are_refused(
    data: bytes, columns: list[list[str | None]]
) -> None:
    with pytest.raises(FooterError):
        append_rows(data, read_footer(data), columns, {})


def _with_footer(data: bytes, change: Callable[[Any], None]) -> bytes:
    """``data`` with its footer changed by ``change`` (on a copy: footers read are shared)."""
    footer = read_footer(data)
    fields = copy.deepcopy(footer.fields)
    change(fields)
    writer = Writer()
    writer.struct(fields)
    out = bytes(writer.out)
    return data[: footer.start] + out + len(out).to_bytes(4, "little") + b"PAR1"


def _without_field(data: bytes, field: int) -> bytes:
    return _with_footer(data, lambda fields: fields.remove(get(fields, field, whole=True)))


def _group_without(data: bytes, field: int) -> bytes:
    def change(fields: Any) -> None:
        group = get(fields, 4)[1][0]  # 4: the row groups
        group.remove(get(group, field, whole=True))

    return _with_footer(data, change)


def get(fields: Any, field: int, whole: bool = False) -> Any:
    one = next(f for f in fields if f[0] == field)
    return one if whole else one[2]


_ONE = _file(_table(["a", "b"], [["0", "1"]]))


@pytest.mark.parametrize(
    "data",
    [
        b"PAR1 not a footer PAR1",
        b"",
        _file(_table(["a"], [["0"]]))[:-20] + _file(_table(["a"], [["0"]]))[-8:],  # cut
        _without_field(_ONE, 4),  # 4: the list of row groups
        _group_without(_ONE, 1),  # 1: its column chunks
        _group_without(_ONE, 3),  # 3: its row count
        _with_footer(_ONE, lambda f: get(get(f, 4)[1][0], 1)[1].pop()),  # a chunk less
        b"PAR1" + b"\x1c" * 100_000 + (100_000).to_bytes(4, "little") + b"PAR1",  # endless
    ],
    ids=[
        "garbage",
        "empty",
        "cut",
        "no-row-groups",
        "group-without-chunks",
        "group-without-rows",
        "chunk-missing",
        "nested-without-end",
    ],
)
def test_a_damaged_footer_is_refused(data: bytes) -> None:
    with pytest.raises(FooterError):
        read_footer(data)


def test_a_footer_read_again_is_the_one_of_the_bytes_given() -> None:
    """Footers are kept once read; two files of one length must still read as their own."""
    first, second = (
        write_file(["a", "b"], [["1"], [None]], {b"k": value}) for value in (b"one", b"two")
    )
    assert len(first) == len(second)
    assert read_footer(first).metadata == {b"k": b"one"}
    assert read_footer(second).metadata == {b"k": b"two"}
    assert read_footer(first).metadata == {b"k": b"one"}


_SMALL = _file(_table(["a", "b"], [["1", None], ["2", "x"]]))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 400), st.integers(1, 255))
def test_a_footer_with_any_byte_changed_reads_or_is_refused(back: int, flip: int) -> None:
    """Never another error than FooterError: the caller then lets pyarrow read the file
    (and report what is wrong with it)."""
    at = len(_SMALL) - 9 - back % (len(_SMALL) - 12)
    damaged = bytearray(_SMALL)
    damaged[at] ^= flip
    try:
        footer = read_footer(bytes(damaged))
    except FooterError:
        return
    assert footer.start <= len(_SMALL) - 8


# -- the store -----------------------------------------------------------------------------


def _record(store: Path, first: int, count: int, script: str = RECORD) -> None:
    subprocess.run(
        [PYTHON, "-c", script, str(store), str(first), str(count)],
        env=child_env(),
        check=True,
        timeout=120,
    )


def _fill(store: Path, n: int) -> None:
    backend = ParquetBackend(store)
    backend.add_many([backend._identity({"i": i}) for i in range(n)])
    backend.fold()


def _groups(store: Path) -> int:
    return int(pq.read_metadata(store).num_row_groups)


def _rows(store: Path) -> list[int]:
    return sorted(int(i) for i in pd.read_parquet(store)["i"])


def test_a_process_that_records_a_few_runs_appends_a_row_group_at_exit(tmp_path: Path) -> None:
    store = tmp_path / "runs.parquet"
    _fill(store, 200)
    before = store.read_bytes()
    _record(store, 200, 3)
    assert not Path(f"{store}.journal").exists()
    after = store.read_bytes()
    start = read_footer(before).start
    assert after[:start] == before[:start]  # the old rows' bytes were copied, not rewritten
    assert _groups(store) == 2
    assert _rows(store) == list(range(203))
    backend = ParquetBackend(store)
    assert all(backend.has({"i": i}) for i in (0, 199, 200, 202))
    assert not backend.has({"i": 203})


def test_a_fold_of_an_eighth_of_a_large_store_or_more_rewrites_it_as_one_row_group(
    tmp_path: Path,
) -> None:
    store = tmp_path / "runs.parquet"
    _fill(store, PLAIN_ROWS)
    _record(store, PLAIN_ROWS, PLAIN_ROWS // 8)  # an eighth: folded as it is reached
    assert _groups(store) == 1
    assert _rows(store) == list(range(PLAIN_ROWS + PLAIN_ROWS // 8))


def test_any_fold_into_a_small_store_appends_a_row_group(tmp_path: Path) -> None:
    """Rewriting a small file would decode and encode every row in Python."""
    store = tmp_path / "runs.parquet"
    _fill(store, 80)
    _record(store, 80, 40)  # half the file
    assert _groups(store) == 2
    assert _rows(store) == list(range(120))


def test_row_groups_stop_growing_at_the_limit_and_the_file_is_rewritten_as_one(
    tmp_path: Path,
) -> None:
    store = tmp_path / "runs.parquet"
    _fill(store, 1000)
    backend = ParquetBackend(store)
    counts = []
    for i in range(1000, 1070):
        backend.record({"i": i})
        backend.fold()
        counts.append(_groups(store))
    assert max(counts) == 64
    assert counts[63] == 1  # the 65th fold found 64 row groups and rewrote them as one
    assert _rows(store) == list(range(1070))


def test_a_record_with_a_column_the_file_lacks_rewrites_the_file(tmp_path: Path) -> None:
    store = tmp_path / "runs.parquet"
    _fill(store, 100)
    backend = ParquetBackend(store)
    backend.record({"i": 100, "j": "new"})
    backend.fold()
    frame = pd.read_parquet(store)
    assert _groups(store) == 1
    assert frame["j"].isna().sum() == 100 and frame["j"].tolist()[-1] == "new"


def _snapshot(store: Path) -> Path:
    return Path(f"{store}.stet-index")


def test_the_index_snapshot_still_serves_after_a_row_group_is_appended(tmp_path: Path) -> None:
    store = tmp_path / "runs.parquet"
    _fill(store, SNAPSHOT_MIN)
    saved = _snapshot(store).read_bytes()
    _record(store, SNAPSHOT_MIN, 5)
    assert _groups(store) == 2
    assert _snapshot(store).read_bytes() == saved  # the fold did not write the index again
    backend = ParquetBackend(store)
    assert backend.has({"i": SNAPSHOT_MIN + 4}) and backend.has({"i": 0})
    assert not backend.has({"i": SNAPSHOT_MIN + 5})
    # The new process started from the snapshot (its records), then read one row group.
    assert backend._snapshot_count == SNAPSHOT_MIN
    assert len(backend._index) == SNAPSHOT_MIN + 5


def test_short_processes_on_a_store_with_a_snapshot_never_import_pyarrow(
    tmp_path: Path,
) -> None:
    """The first reads the snapshot and appends a row group at exit; the second also
    reads that row group; neither imports pyarrow (about 0.2 s, and 30 ms more at exit)."""
    store = tmp_path / "runs.parquet"
    _fill(store, SNAPSHOT_MIN)
    _record(store, SNAPSHOT_MIN, 5, RECORD_WITHOUT_PYARROW)
    _record(store, SNAPSHOT_MIN + 5, 5, RECORD_WITHOUT_PYARROW)
    assert _groups(store) == 3
    assert _rows(store) == list(range(SNAPSHOT_MIN + 10))
    frame = pd.read_parquet(store)
    assert frame.columns.tolist()[:1] == ["i"] and frame["_stet_timestamp"].notna().all()


def _codec(store: Path) -> str:
    return str(pq.read_metadata(store).row_group(0).column(0).compression)


def test_a_small_store_is_written_and_read_without_pyarrow(tmp_path: Path) -> None:
    """Under PLAIN_ROWS there is no snapshot and every process reads the whole file:
    stet writes it plain, so reading it needs no pyarrow either."""
    store = tmp_path / "runs.parquet"
    for first in (0, 5, 10):
        _record(store, first, 5, RECORD_WITHOUT_PYARROW)
    assert _rows(store) == list(range(15))
    assert _codec(store) == "GZIP"
    assert not Path(f"{store}.journal").exists()


def test_a_store_that_grows_past_plain_rows_is_written_compressed_by_pyarrow(
    tmp_path: Path,
) -> None:
    store = tmp_path / "runs.parquet"
    base = PLAIN_ROWS - 1000
    _fill(store, base)
    assert _codec(store) == "GZIP"
    # The journal reaches an eighth of the file after base / 8 records: a rewrite, of
    # more than PLAIN_ROWS rows; the rest is appended at exit, plain.
    _record(store, base, 3000)
    meta = pq.read_metadata(store)
    assert meta.num_row_groups == 2 and meta.row_group(0).num_rows == base + base // 8
    assert _codec(store) == "SNAPPY"
    assert meta.row_group(1).column(0).compression == "GZIP"
    assert _rows(store) == list(range(base + 3000))


def test_a_short_process_that_must_rewrite_the_file_at_exit_imports_pyarrow_then(
    tmp_path: Path,
) -> None:
    """A new key column cannot be appended as a row group: the fold at exit rewrites the
    file, importing pyarrow while the interpreter exits, and loses nothing."""
    store = tmp_path / "runs.parquet"
    _fill(store, SNAPSHOT_MIN)
    script = RECORD.replace('{"i": i}', '{"i": i, "j": "new"}')
    _record(store, SNAPSHOT_MIN, 2, script)
    assert not Path(f"{store}.journal").exists()
    frame = pd.read_parquet(store)
    assert _groups(store) == 1 and len(frame) == SNAPSHOT_MIN + 2
    assert frame["j"].tolist()[-2:] == ["new", "new"] and frame["j"].isna().sum() == SNAPSHOT_MIN


def test_a_file_restored_from_before_an_append_is_read_as_it_is(tmp_path: Path) -> None:
    """The snapshot holds the file's first row groups: with the old file back, the
    runs of the appended row group must run again, not be skipped."""
    store = tmp_path / "runs.parquet"
    _fill(store, SNAPSHOT_MIN)
    old = store.read_bytes()
    _record(store, SNAPSHOT_MIN, 5)
    store.write_bytes(old)
    backend = ParquetBackend(store)
    assert backend.has({"i": 0})
    assert not any(backend.has({"i": SNAPSHOT_MIN + k}) for k in range(5))


def test_a_file_another_tool_rewrote_after_an_append_is_read_in_full(tmp_path: Path) -> None:
    store = tmp_path / "runs.parquet"
    _fill(store, SNAPSHOT_MIN)
    _record(store, SNAPSHOT_MIN, 5)
    frame = pd.read_parquet(store)
    frame[frame["i"] != "3"].to_parquet(store)  # pandas drops run 3 and writes anew
    digest = hashlib.sha256(store.read_bytes()).hexdigest()
    backend = ParquetBackend(store)
    assert not backend.has({"i": 3})
    assert backend.has({"i": SNAPSHOT_MIN + 4})
    assert hashlib.sha256(store.read_bytes()).hexdigest() == digest  # read, not written


def test_runs_appended_to_a_file_pandas_wrote_read_back_in_pandas(tmp_path: Path) -> None:
    """pandas notes its index (a range of the old rows) in the metadata: an appended row
    group must not leave a note that no longer fits the rows."""
    store = tmp_path / "runs.parquet"
    _fill(store, 100)
    pd.read_parquet(store).to_parquet(store)  # with pandas' metadata and a RangeIndex
    _record(store, 100, 3)
    assert _groups(store) == 2
    frame = pd.read_parquet(store)
    assert sorted(int(i) for i in frame["i"]) == list(range(103))
    assert frame.index.tolist() == list(range(103))


def test_a_file_another_tool_changed_without_changing_its_shape_is_read_in_full(
    tmp_path: Path,
) -> None:
    """Same row groups, same row counts, other bytes: only the hash of the bytes the
    snapshot covers tells the change, and the changed run must not be skipped."""
    store = tmp_path / "runs.parquet"
    _fill(store, SNAPSHOT_MIN)
    frame = pd.read_parquet(store)
    frame.loc[frame["i"] == "3", "i"] = "-3"
    frame.to_parquet(store, row_group_size=SNAPSHOT_MIN)
    assert _groups(store) == 1
    backend = ParquetBackend(store)
    assert not backend.has({"i": 3})
    assert backend.has({"i": -3})
