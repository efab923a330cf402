"""The backend API and the store formats (SPEC S2, S3)."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stet
from stet.backends import (
    BaseBackend,
    CsvBackend,
    JsonBackend,
    ParquetBackend,
    SqliteBackend,
    get_backend,
)
from stet.backends._json import object_text
from stet.backends._records import Row


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("r.csv", CsvBackend),
        ("r.json", JsonBackend),
        ("r.sqlite", SqliteBackend),
        ("r.db", SqliteBackend),
        ("r.parquet", ParquetBackend),
        ("R.CSV", CsvBackend),
    ],
)
def test_get_backend_by_extension(tmp_path: Path, name: str, cls: type[BaseBackend]) -> None:
    backend = get_backend(tmp_path / name)
    assert isinstance(backend, cls)
    assert isinstance(backend, BaseBackend)


@pytest.mark.parametrize("name", ["runs.txt", "runs", "runs.csv.bak", "runs.xlsx"])
def test_get_backend_rejects_unknown_extension(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"\.csv, \.json, \.sqlite, \.db, \.parquet"):
        get_backend(tmp_path / name)


def test_record_has_load_remove_clear(store: Path) -> None:
    backend = get_backend(store)
    assert not backend.has({"a": 1})
    assert backend.load() == []
    backend.record({"a": 1, "b": "x"})
    backend.record({"a": 2, "b": "y"})
    backend.record({"a": 1, "b": "x"})  # already there: no duplicate
    assert backend.has({"a": 1, "b": "x"})
    assert backend.has({"b": "x", "a": 1})
    assert not backend.has({"a": 1})
    rows = backend.load()
    assert [(r["a"], r["b"]) for r in rows] == [("1", "x"), ("2", "y")]
    assert all(r["_stet_timestamp"].endswith("+00:00") for r in rows)
    # A string given to the backend API is matched by text, as 0.0.x taught.
    assert rows[0]["_stet_types"] == "a=int;b=text"
    assert backend.remove({"a": 1, "b": "x"}) == 1
    assert backend.remove({"a": 1, "b": "x"}) == 0
    assert not backend.has({"a": 1, "b": "x"})
    assert backend.has({"a": 2, "b": "y"})
    backend.clear()
    assert backend.load() == []
    assert not backend.has({"a": 2, "b": "y"})
    backend.record({"a": 3})
    assert get_backend(store).has({"a": 3})


def test_has_accepts_text_values_like_0_0_x(store: Path) -> None:
    backend = get_backend(store)
    backend.record({"alpha": 0.1, "seed": 2})
    assert backend.has({"alpha": "0.1", "seed": "2"})
    assert backend.has({"alpha": 0.1, "seed": 2})
    assert not backend.has({"alpha": 0.1, "seed": "3"})
    assert not backend.has({"alpha": 0.1})


def test_standard_tools_read_the_store(store: Path, ext: str) -> None:
    @stet.once(store=store)
    def f(alpha: float, name: str) -> None:
        pass

    f(0.1, "NA")
    f(0.2, "")
    f(0.3, 'a,"b"\nc')
    names = ["NA", "", 'a,"b"\nc']
    if ext == ".csv":
        frame = pd.read_csv(store, dtype=str, keep_default_na=False)
        with store.open(newline="") as fh:
            assert [row["name"] for row in csv.DictReader(fh)] == names
    elif ext == ".json":
        frame = pd.DataFrame(json.loads(store.read_text("utf-8")))
    elif ext == ".sqlite":
        with sqlite3.connect(store) as conn:
            frame = pd.read_sql("SELECT alpha, name, _stet_timestamp FROM stet_records", conn)
    else:
        get_backend(store).fold()  # type: ignore[attr-defined]  # as at exit
        frame = pd.read_parquet(store)
    assert list(frame["alpha"]) == ["0.1", "0.2", "0.3"]
    assert list(frame["name"]) == names
    assert "_stet_timestamp" in frame.columns


def test_absent_key_is_not_an_empty_string(store: Path) -> None:
    backend = get_backend(store)
    backend.record({"x": "1", "y": ""})
    backend.record({"x": "1"})
    assert backend.has({"x": "1", "y": ""})
    assert backend.has({"x": "1"})
    backend2 = get_backend(store)  # a fresh reader of the file
    assert [sorted(r) for r in backend2.load()] == [
        ["_stet_timestamp", "_stet_types", "x", "y"],
        ["_stet_timestamp", "_stet_types", "x"],
    ]


def _write_legacy(path: Path, ext: str, rows: list[dict[str, str]]) -> None:
    """A store as stet 0.0.x wrote it: every value str(value), no _stet_types."""
    frame = pd.DataFrame(rows)
    if ext == ".csv":
        frame.to_csv(path, index=False)
    elif ext == ".json":
        path.write_text(json.dumps(rows, indent=2))
    elif ext == ".sqlite":
        with sqlite3.connect(path) as conn:
            frame.to_sql("stet_records", conn, index=False)
        conn.close()
    else:
        frame.to_parquet(path, index=False)


def test_stores_written_by_0_0_x_keep_working(store: Path, ext: str) -> None:
    stamp = "2025-01-01T00:00:00.000001+00:00"
    legacy = [
        {"alpha": "0.1", "seed": "1", "_stet_timestamp": stamp},
        {"alpha": "0.2", "seed": "1", "_stet_timestamp": stamp},
        {"alpha": "None", "seed": "2", "_stet_timestamp": stamp},
    ]
    _write_legacy(store, ext, legacy)
    calls: list[tuple[object, int]] = []

    @stet.once(store=store, quiet=True)
    def f(alpha: object, seed: int) -> None:
        calls.append((alpha, seed))

    f(0.1, 1)
    f(0.2, seed=1)
    f(None, 2)
    assert calls == []
    f(0.3, 1)
    f(0.1, 2)
    assert calls == [(0.3, 1), (0.1, 2)]
    # The old rows are still there, still matched, after new rows were added.
    fresh = get_backend(store)
    assert len(fresh.load()) == 5
    assert fresh.has({"alpha": 0.2, "seed": 1})
    assert stet.reset(store, {"alpha": "0.2", "seed": "1"}) == 1
    assert not fresh.has({"alpha": 0.2, "seed": 1})


def test_key_columns_added_later(store: Path) -> None:
    backend = get_backend(store)
    backend.record({"a": 1})
    backend.record({"b": 2})
    backend.record({"a": 1, "b": 2})
    fresh = get_backend(store)
    assert fresh.key_columns() == ["a", "b"]
    assert fresh.has({"a": 1}) and fresh.has({"b": 2}) and fresh.has({"a": 1, "b": 2})
    assert not fresh.has({"a": 2})


def test_backend_pickles_as_configuration(store: Path) -> None:
    import pickle

    backend = get_backend(store)
    backend.record({"a": 1})
    clone = pickle.loads(pickle.dumps(backend))
    assert type(clone) is type(backend)
    assert clone.path == backend.path
    assert clone.has({"a": 1})


# The JSON store writes each record's object text itself (not through json.dumps, which
# built an encoder per record); the text must stay exactly what json.dumps writes.


@settings(max_examples=200, deadline=None)
@given(
    values=st.dictionaries(
        st.text(min_size=1).filter(lambda name: not name.startswith("_stet_")),
        st.text(),
        min_size=1,
        max_size=4,
    ),
    func=st.none() | st.text(),
    meta=st.none() | st.text() | st.integers() | st.floats(allow_nan=False),  # typed in
)
def test_json_record_text_is_what_json_dumps_writes(
    values: dict[str, str], func: str | None, meta: str | float | None
) -> None:
    extra: dict[str, Any] = {} if meta is None else {"_stet_meta": meta}
    row = Row(values, "types", "2026-11-30T00:00:00Z", func, extra)
    expected: dict[str, Any] = dict(values)
    if func:
        expected["_stet_func"] = func
    expected |= {"_stet_types": "types", "_stet_timestamp": "2026-11-30T00:00:00Z"}
    if meta:
        expected["_stet_meta"] = meta
    assert object_text(row) == json.dumps(expected, ensure_ascii=False)
    assert json.loads(object_text(row)) == expected


def test_a_number_typed_into_a_json_store_survives_a_rewrite(tmp_path: Path) -> None:
    """Regression: the record writer took every cell for a str, so a store whose file
    holds a number someone typed in could no longer be rewritten (by a reset of one
    run); the file was left as it was, but the reset failed."""
    store = tmp_path / "runs.json"

    @stet.once(store=store, quiet=True)
    def f(a: int) -> None:
        pass

    f(1)
    f(2)
    records = json.loads(store.read_text())
    records[0]["_stet_duration"] = 1.5
    store.write_text(json.dumps(records))
    assert stet.reset(store, {"a": 2}, yes=True) == 1
    (kept,) = json.loads(store.read_text())
    assert kept["a"] == "1" and kept["_stet_duration"] == 1.5
    f(2)
    assert [r["a"] for r in json.loads(store.read_text())] == ["1", "2"]
