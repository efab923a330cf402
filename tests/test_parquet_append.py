"""A fold of a few records adds a row group instead of rewriting the Parquet file.

The footer module is checked against pyarrow's own files (byte for byte, and read back
by pyarrow and pandas); the store is checked as a researcher meets it: real processes
record and exit, pandas reads the file, and a new process skips what is done.
"""

from __future__ import annotations

import hashlib
import subprocess
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
from stet.backends._parquetfooter import (  # noqa: E402
    FooterError,
    _footer,
    _Writer,
    append_row_groups,
)

RECORD = """
import sys
from stet.backends import ParquetBackend

store, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
backend = ParquetBackend(store)
for i in range(first, first + count):
    backend.record({"i": i})
assert "pandas" not in sys.modules  # the fold at exit must not need pandas
"""


def _file(table: Any, **options: Any) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return bytes(sink.getvalue().to_pybytes())


def _read(data: bytes) -> Any:
    return pq.ParquetFile(pa.BufferReader(data)).read()


TEXT = st.one_of(st.none(), st.text(max_size=12))


def _table(columns: list[str], rows: list[list[str | None]]) -> Any:
    return pa.table({c: pa.array([r[i] for r in rows], pa.string()) for i, c in enumerate(columns)})


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
    footer, start = _footer(data)
    writer = _Writer()
    writer.struct(footer)
    assert bytes(writer.out) == data[start:-8]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(TEXT, min_size=2, max_size=2), min_size=1, max_size=30),
    st.lists(st.lists(TEXT, min_size=2, max_size=2), min_size=1, max_size=30),
    st.sampled_from([{}, {"use_dictionary": ["b"]}, {"row_group_size": 7}]),
)
def test_appended_row_groups_read_back_as_both_files_rows_in_order(
    first: list[list[str | None]], second: list[list[str | None]], options: dict[str, Any]
) -> None:
    old = _table(["a", "b"], first)
    new = _table(["a", "b"], second).replace_schema_metadata({b"note": b"the new footer's"})
    whole = append_row_groups(_file(old, **options), _file(new))
    back = _read(whole)
    assert back.to_pylist() == old.to_pylist() + new.to_pylist()
    assert back.schema.metadata[b"note"] == b"the new footer's"
    assert pq.ParquetFile(pa.BufferReader(whole)).metadata.num_rows == len(first) + len(second)


def test_an_appended_file_keeps_the_old_file_s_bytes_and_pandas_reads_it(
    tmp_path: Path,
) -> None:
    old = _file(_table(["a"], [[str(i)] for i in range(100)]))
    whole = append_row_groups(old, _file(_table(["a"], [["x"], [None]])))
    start = _footer(old)[1]
    assert whole[:start] == old[:start]
    (tmp_path / "f.parquet").write_bytes(whole)
    column = pd.read_parquet(tmp_path / "f.parquet")["a"]
    assert column.tolist()[-3:-1] == ["99", "x"] and column.isna().tolist()[-3:] == [0, 0, 1]


@pytest.mark.parametrize(
    "batch",
    [
        _file(_table(["a", "c"], [["1", "2"]])),  # another column
        _file(pa.table({"a": pa.array([1], pa.int64())})),  # another type
        _file(_table(["a"], [["1"]]), write_page_index=True),  # offsets not in the footer
        b"PAR1 not a footer PAR1",
        b"",
    ],
    ids=["column", "type", "page-index", "garbage", "empty"],
)
def test_files_that_cannot_simply_be_joined_are_refused(batch: bytes) -> None:
    old = _file(_table(["a"], [["0"]]))
    with pytest.raises(FooterError):
        append_row_groups(old, batch)


def test_a_footer_without_its_list_of_row_groups_is_refused() -> None:
    data = _file(_table(["a"], [["0"]]))
    footer, start = _footer(data)
    writer = _Writer()
    writer.struct([field for field in footer if field[0] != 4])  # 4: row_groups
    without = data[:start] + bytes(writer.out) + len(writer.out).to_bytes(4, "little") + b"PAR1"
    with pytest.raises(FooterError):
        append_row_groups(without, data)


def test_a_cut_footer_is_refused() -> None:
    data = _file(_table(["a"], [["0"]]))
    cut = data[:-20] + data[-8:]  # the length now points into the middle of a struct
    with pytest.raises(FooterError):
        append_row_groups(cut, data)


# -- the store -----------------------------------------------------------------------------


def _record(store: Path, first: int, count: int) -> None:
    subprocess.run(
        [PYTHON, "-c", RECORD, str(store), str(first), str(count)],
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
    start = _footer(before)[1]
    assert after[:start] == before[:start]  # the old rows' bytes were copied, not rewritten
    assert _groups(store) == 2
    assert _rows(store) == list(range(203))
    backend = ParquetBackend(store)
    assert all(backend.has({"i": i}) for i in (0, 199, 200, 202))
    assert not backend.has({"i": 203})


def test_a_fold_of_an_eighth_of_the_store_or_more_rewrites_it_as_one_row_group(
    tmp_path: Path,
) -> None:
    store = tmp_path / "runs.parquet"
    _fill(store, 80)
    _record(store, 80, 10)  # 10 of 90 rows: more than an eighth
    assert _groups(store) == 1
    assert _rows(store) == list(range(90))


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


def test_a_footer_of_structs_nested_without_end_is_refused() -> None:
    nested = b"\x1c" * 100_000  # field 1, a struct, holding field 1, a struct, ...
    data = b"PAR1" + nested + len(nested).to_bytes(4, "little") + b"PAR1"
    with pytest.raises(FooterError):
        append_row_groups(data, data)
