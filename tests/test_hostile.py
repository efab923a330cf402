"""Hostile parameter names and values (SPEC S3, S4).

Values with quotes, separators, newlines, SQL, very long or non-ASCII text are stored
faithfully and skipped when a fresh process runs the sweep again; names that are not
identifiers or collide with stet's ``_stet_`` columns are rejected with a ValueError;
the store never contains pickles.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import stet
from _helpers import read_standard, run_python, settled_snapshot
from stet.backends import get_backend

HOSTILE = [
    'He said "hi"',
    "it's",
    "a,b,c",
    '"',
    '""',
    "'",
    "new\nline",
    "carriage\rreturn",
    "crlf\r\nend",
    "\n",
    "\r\n",
    " ",
    "  leading and trailing  ",
    "\ttab",
    "'); DROP TABLE stet_records; --",
    '"); DROP TABLE stet_records; --',
    "1; DELETE FROM stet_records",
    "x' OR '1'='1",
    "x" * 100_000,
    "naïve café",
    "日本語のテキスト",
    "emoji 🎉🚀",
    "\u2028line\u2029separators",
    "\ufeffbom first",
    "right-to-left \u202e override",
    "back\\slash \\n not a newline",
    "null",
    "NULL",
    "None",
    "NA",
    "nan",
    "",
    "[1, 2]",
    '{"a": 1}',
    "]",
    "}\n]",
    '"}\n]\n[',
    "=1+1",
    "a=int;b=str",
    "_stet_timestamp",
    "\x07bell \x1b[31mred\x1b[0m",
    "#comment",
]

SWEEP = r"""
import json
import sys

import stet

store, values_file, log = sys.argv[1], sys.argv[2], sys.argv[3]
with open(values_file, encoding="utf-8") as fh:
    values = json.load(fh)

@stet.once(store=store, quiet=True)
def experiment(value):
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"{values.index(value)}\n")
    return True

print(json.dumps([experiment(v) for v in values]))
"""

CHECK = r"""
import json
import sys

from stet.backends import get_backend

store, values_file = sys.argv[1], sys.argv[2]
with open(values_file, encoding="utf-8") as fh:
    values = json.load(fh)
backend = get_backend(store)
print(json.dumps([backend.has(v) for v in values]))
"""


def _write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def _no_pickles(store: Path) -> None:
    """The store holds only text: no pickle bytes, no binary columns.

    Only a text file is searched for pickle markers: the pages of a SQLite database and
    the compressed pages of a Parquet file may hold any two bytes by chance, so there
    the column types say that every value is text.
    """
    if store.suffix in (".csv", ".json"):
        data = store.read_bytes()
        for marker in (b"\x80\x02", b"\x80\x03", b"\x80\x04\x95", b"\x80\x05\x95", b"cbuiltins"):
            assert marker not in data, f"pickle marker {marker!r} in {store}"
        data.decode("utf-8")  # plain UTF-8 text
    elif store.suffix == ".sqlite":
        conn = sqlite3.connect(store)
        try:
            columns = [r[1] for r in conn.execute("PRAGMA table_info(stet_records)")]
            for column in columns:
                kinds = {
                    r[0]
                    for r in conn.execute(f'SELECT DISTINCT typeof("{column}") FROM stet_records')
                }
                assert kinds <= {"text", "null"}, f"column {column} holds {kinds}"
        finally:
            conn.close()
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pq.read_schema(store)
        for field in schema:
            assert pa.types.is_string(field.type), field  # stet writes string columns


def test_hostile_values_stored_faithfully_and_skipped_in_a_fresh_process(
    tmp_path: Path, store: Path
) -> None:
    values = _write_json(tmp_path / "values.json", HOSTILE)
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP)
    log = tmp_path / "log.txt"
    args = [str(script), str(store), str(values), str(log)]

    first = json.loads(run_python(args, cwd=tmp_path).stdout)
    assert first == [True] * len(HOSTILE)
    assert log.read_text().split() == [str(i) for i in range(len(HOSTILE))]

    # stet reads back exactly the text it was given
    rows = get_backend(store).load()
    assert [r["value"] for r in rows] == HOSTILE
    assert all(r["_stet_types"] == "value=str" for r in rows)
    # and so does the format's standard tool
    assert [r["value"] for r in read_standard(store)] == HOSTILE
    _no_pickles(store)

    # a fresh process running the same sweep skips every one
    again = json.loads(run_python(args, cwd=tmp_path).stdout)
    assert again == [None] * len(HOSTILE)
    assert log.read_text().split() == [str(i) for i in range(len(HOSTILE))]


def test_hostile_values_through_backend_record(tmp_path: Path, store: Path) -> None:
    backend = get_backend(store)
    for i, value in enumerate(HOSTILE):
        backend.record({"value": value, "i": i})
    keys = [{"value": v, "i": i} for i, v in enumerate(HOSTILE)]
    check = tmp_path / "check.py"
    check.write_text(CHECK)
    found = run_python(
        [str(check), str(store), str(_write_json(tmp_path / "keys.json", keys))], cwd=tmp_path
    ).stdout
    assert json.loads(found) == [True] * len(HOSTILE)
    near = [{"value": v + " ", "i": i} for i, v in enumerate(HOSTILE)]
    near += [{"value": v, "i": i + 1} for i, v in enumerate(HOSTILE)]
    found = run_python(
        [str(check), str(store), str(_write_json(tmp_path / "near.json", near))], cwd=tmp_path
    ).stdout
    assert json.loads(found) == [False] * len(near), "a different value counted as done"
    assert [(r["value"], r["i"]) for r in read_standard(store)] == [
        (v, str(i)) for i, v in enumerate(HOSTILE)
    ]
    # the SQL fragments did nothing: the table and all its rows are still there
    assert len(get_backend(store).load()) == len(HOSTILE)


def test_structured_values_stored_as_text_not_pickles(store: Path) -> None:
    import numpy as np

    ran: list[int] = []

    @stet.once(store=store, quiet=True)
    def experiment(config: Any, n: int) -> None:
        ran.append(n)

    configs: list[Any] = [
        {"lr": 0.1, "layers": (64, 64), "name": "'); DROP TABLE stet_records; --"},
        ["a,b", 'c"d', None, 1.5, True],
        (Path("/tmp/some dir/x.csv"), b"\x80\x04\x95bytes"),
        np.float64(0.1),
        frozenset({"x", "y"}),
    ]
    for n, config in enumerate(configs):
        experiment(config, n)
    for n, config in enumerate(configs):
        experiment(config, n)
    assert ran == list(range(len(configs)))
    _no_pickles(store)
    assert len(read_standard(store)) == len(configs)


# -- separator characters --------------------------------------------------------------


def test_control_characters_in_values_never_make_two_runs_collide(store: Path) -> None:
    """Values are free text, so no character in them may act as a separator between
    parameters: these two calls differ, and the second must run (SPEC S4)."""
    ran: list[tuple[str, str]] = []

    @stet.once(store=store, quiet=True)
    def experiment(a: str, b: str) -> None:
        ran.append((a, b))

    experiment("X\x1fb\x1estr\x1eY", "Z")
    experiment("X", "Y\x1fb\x1estr\x1eZ")
    assert len(ran) == 2, "a different run was skipped as already completed"


def test_control_characters_never_make_two_key_sets_collide(store: Path) -> None:
    """Two functions sharing a store: a one-parameter call must not match a
    two-parameter record through a value that spells out the second parameter."""
    ran: list[str] = []

    @stet.once(store=store, quiet=True)
    def pair(a: str, b: str) -> None:
        ran.append("pair")

    @stet.once(store=store, quiet=True)
    def single(a: str) -> None:
        ran.append("single")

    pair("X", "Z")
    single("X\x1fb\x1estr\x1eZ")
    assert ran == ["pair", "single"], "a different run was skipped as already completed"
    assert get_backend(store).has({"a": "X\x1fb\x1estr\x1eZ"})


# -- NUL and unencodable text ----------------------------------------------------------


def test_nul_character_is_stored_faithfully(tmp_path: Path, store: Path) -> None:
    """Found by experiment: every store keeps a NUL inside a value (CSV and JSON as
    text, SQLite through bound parameters, Parquet as string data)."""
    values = ["a\x00b", "\x00", "trailing\x00"]
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP)
    log = tmp_path / "log.txt"
    args = [str(script), str(store), str(_write_json(tmp_path / "v.json", values)), str(log)]
    assert json.loads(run_python(args, cwd=tmp_path).stdout) == [True, True, True]
    assert [r["value"] for r in get_backend(store).load()] == values
    assert [r["value"] for r in read_standard(store)] == values
    assert json.loads(run_python(args, cwd=tmp_path).stdout) == [None, None, None]


def test_unencodable_text_is_rejected_before_running(store: Path) -> None:
    """A lone surrogate cannot be written as UTF-8 by any store. It must be rejected
    with an error naming the parameter, before the experiment runs, leaving the
    store as it was; it must not surface later as a bare codec error."""
    backend = get_backend(store)
    backend.record({"value": "fine"})
    before = settled_snapshot(store)
    ran: list[str] = []

    @stet.once(store=store, quiet=True)
    def experiment(value: str) -> None:
        ran.append(value)

    with pytest.raises((TypeError, ValueError)) as info:
        experiment("x\ud800y")
    assert "value" in str(info.value), f"the error does not name the parameter: {info.value!r}"
    assert ran == [], "the experiment ran although its run could not be recorded"
    with pytest.raises((TypeError, ValueError)) as info:
        get_backend(store).record({"value": "x\ud800y"})
    assert "value" in str(info.value), f"the error does not name the parameter: {info.value!r}"
    assert settled_snapshot(store) == before
    assert [r["value"] for r in get_backend(store).load()] == ["fine"]


# -- names -------------------------------------------------------------------------------

BAD_NAMES: list[Any] = [
    "_stet_timestamp",
    "_stet_types",
    "_stet_key",
    "_stet_claim",
    "_stet_",
    "a b",
    "1a",
    "a-b",
    "",
    "a,b",
    'a"b',
    "a;b",
    "a=b",
    "x\n",
    "DROP TABLE stet_records; --",
    '"); DROP TABLE stet_records; --',
    "é-x",
    5,
    None,
    ("a",),
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_names_are_rejected_by_backend_record(store: Path, name: Any) -> None:
    get_backend(store).record({"ok": 1})
    before = settled_snapshot(store)
    with pytest.raises(ValueError) as info:
        get_backend(store).record({name: 1, "ok": 2})
    assert repr(name) in str(info.value), f"the message does not show the name: {info.value}"
    with pytest.raises(ValueError):
        get_backend(store).has({name: 1})
    assert settled_snapshot(store) == before
    assert not get_backend(store).has({"ok": 2})


def test_bad_name_on_a_new_store_creates_nothing(tmp_path: Path, ext: str) -> None:
    store = tmp_path / "sub" / f"runs{ext}"
    with pytest.raises(ValueError, match="_stet_timestamp"):
        get_backend(store).record({"_stet_timestamp": "2025-01-01"})
    assert not store.exists()


def test_reserved_parameter_names_are_rejected_at_decoration(store: Path) -> None:
    def experiment(_stet_types: int) -> None:
        pass

    with pytest.raises(ValueError, match="_stet_types"):
        stet.once(store=store)(experiment)

    def other(a: int) -> None:
        pass

    with pytest.raises(ValueError, match="a b"):
        stet.once(store=store, key=["a b"])(other)
    assert not store.exists()


def test_sql_keywords_and_non_ascii_names_are_ordinary_names(tmp_path: Path, store: Path) -> None:
    alpha = "\u03b1"  # Greek small alpha: a valid identifier
    key = {"select": 1, "from": "x", "order": 2.5, "table": None, alpha: 2, "名前": "値"}
    get_backend(store).record(key)
    assert get_backend(store).has(key)
    rows = read_standard(store)
    assert len(rows) == 1
    assert {k: rows[0][k] for k in ("select", "from", "order", alpha, "名前")} == {
        "select": "1",
        "from": "x",
        "order": "2.5",
        alpha: "2",
        "名前": "値",
    }
    ran: list[int] = []

    @stet.once(store=store, quiet=True)
    def experiment(select: int, 名前: int) -> None:
        ran.append(select)

    experiment(1, 2)
    experiment(select=1, 名前=2)
    assert ran == [1]


#: SQLite column names ignore case, so a SQLite store cannot hold ``alpha`` and
#: ``Alpha`` as two columns: it refuses them, before the body runs, naming the store.
CASE_BLIND = (".sqlite",)

# Regression (fixed): SQLite store: on a store without a table yet, the lookup returns
# 'not done' before checking the key names, so the body runs and only the record then
# refuses names that differ only in case


def test_names_differing_only_in_case_are_different_parameters(store: Path, ext: str) -> None:
    """Python names are case-sensitive: ``alpha`` and ``Alpha`` are two parameters.
    Two functions sharing a store may use both; each is recorded and skipped on its
    own, except in a store that cannot hold both, which refuses with a clear error
    naming the store before running anything."""
    ran: list[str] = []

    @stet.once(store=store, quiet=True)
    def lower(alpha: int) -> None:
        ran.append("lower")

    @stet.once(store=store, quiet=True)
    def upper(Alpha: int) -> None:
        ran.append("upper")

    @stet.once(store=store, quiet=True)
    def both(a: int, A: int) -> None:
        ran.append("both")

    lower(1)
    if ext in CASE_BLIND:
        with pytest.raises(stet.StoreError) as info:
            upper(2)
        assert str(store) in str(info.value) and "case" in str(info.value)
        with pytest.raises(stet.StoreError) as info:
            both(1, 2)
        assert str(store) in str(info.value) and "case" in str(info.value)
        lower(2)
        assert ran == ["lower", "lower"], "an experiment ran before its store refused it"
        assert get_backend(store).has({"alpha": 1}) and get_backend(store).has({"alpha": 2})
    else:
        upper(2)
        lower(2)
        upper(2)
        assert ran == ["lower", "upper", "lower"]
        assert get_backend(store).has({"Alpha": 2})
        assert not get_backend(store).has({"Alpha": 1})
        assert get_backend(store).has({"alpha": 1})
        both(1, 2)
        both(1, 2)
        assert ran == ["lower", "upper", "lower", "both"]
        assert get_backend(store).has({"a": 1, "A": 2})


def test_names_differing_only_in_case_on_a_new_store(
    store: Path, ext: str, request: pytest.FixtureRequest
) -> None:
    """The same on a store that does not exist yet: the first call already knows."""
    ran: list[tuple[int, int]] = []

    @stet.once(store=store, quiet=True)
    def both(a: int, A: int) -> None:
        ran.append((a, A))

    if ext in CASE_BLIND:
        with pytest.raises(stet.StoreError, match="case"):
            both(1, 2)
        assert ran == [], "the experiment ran before its store refused it"
    else:
        both(1, 2)
        both(1, 2)
        assert ran == [(1, 2)]
