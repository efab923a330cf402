"""Stores stet cannot use (SPEC S5, bad input).

Each bad store must give a clear error naming the file, through the backend API and
through a decorated call, and the bytes on disk must be exactly as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

import stet
from _helpers import (
    EXTENSIONS,
    PYTHON,
    child_env,
    in_unprivileged_child,
    read_standard,
    run_python,
    snapshot,
)
from stet.backends import ParquetBackend, get_backend

STAMP = "2025-01-01T00:00:00.000001+00:00"


# -- building bad stores --------------------------------------------------------------


def make_store(path: Path, n: int) -> None:
    """A valid store of ``n`` records written by stet in another process, with
    SQLite's write-ahead log folded into the database file."""
    code = (
        "import sys\nfrom stet.backends import get_backend\n"
        "b = get_backend(sys.argv[1])\n"
        "for i in range(int(sys.argv[2])):\n"
        "    b.record({'i': i, 'v': 'value-%d' % i * 3})\n"
    )
    run_python(["-c", code, str(path), str(n)], cwd=path.parent)
    if path.suffix == ".sqlite":
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    for extra in (path.parent / (path.name + "-wal"), path.parent / (path.name + "-shm")):
        extra.unlink(missing_ok=True)


def _binary(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\xfd garbage \x00\x01\n\x80\x81")


def _text(path: Path) -> None:
    path.write_text("Dear diary,\nthis is not a store of completed runs.\n")


def _truncated(path: Path) -> None:
    make_store(path, 200)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _json_object(path: Path) -> None:
    path.write_text(json.dumps({"i": "1", "_stet_types": "i=int", "_stet_timestamp": STAMP}))


def _json_numbers(path: Path) -> None:
    path.write_text("[1, 2, 3]\n")


def _json_non_strings(path: Path) -> None:
    path.write_text(json.dumps([{"i": 1, "_stet_types": "i=int", "_stet_timestamp": STAMP}]))


def _csv_other_header(path: Path) -> None:
    path.write_text("name,value\nfoo,1\nbar,2\n")


def _csv_ragged(path: Path) -> None:
    path.write_text(
        "i,_stet_types,_stet_timestamp\n"
        f"1,i=int,{STAMP}\n"
        f"2,i=int,{STAMP},surprise\n"
        f"3,i=int,{STAMP}\n"
    )


def _sqlite_other_table(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE results (x INTEGER, y TEXT)")
    conn.execute("INSERT INTO results VALUES (1, 'a')")
    conn.commit()
    conn.close()


def _sqlite_other_schema(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE stet_records (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO stet_records (name) VALUES ('alpha')")
    conn.commit()
    conn.close()


def _parquet_other_shape(path: Path) -> None:
    pd.DataFrame({"x": [1, 2, 3], "y": [0.5, 0.25, 0.125]}).to_parquet(path, index=False)


def _parquet_numbers(path: Path) -> None:
    pd.DataFrame({"i": [1, 2], "_stet_timestamp": [STAMP, STAMP]}).to_parquet(path, index=False)


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "inside.txt").write_text("a file in the directory that sits where the store should")


CASES: list[tuple[str, tuple[str, ...], Callable[[Path], None]]] = [
    ("binary-garbage", EXTENSIONS, _binary),
    ("text-garbage", EXTENSIONS, _text),
    ("truncated", (".sqlite", ".parquet"), _truncated),
    ("json-object", (".json",), _json_object),
    ("json-array-of-numbers", (".json",), _json_numbers),
    ("json-non-string-values", (".json",), _json_non_strings),
    ("csv-other-header", (".csv",), _csv_other_header),
    ("csv-ragged-row", (".csv",), _csv_ragged),
    ("sqlite-without-table", (".sqlite",), _sqlite_other_table),
    ("sqlite-other-schema", (".sqlite",), _sqlite_other_schema),
    ("parquet-other-shape", (".parquet",), _parquet_other_shape),
    ("parquet-number-column", (".parquet",), _parquet_numbers),
    ("directory", EXTENSIONS, _directory),
]
OPERATIONS = ["has", "record", "load", "decorated"]


def _case_params() -> list[object]:
    return [
        pytest.param(name, ext, build, op, id=f"{name}{ext}-{op}")
        for name, exts, build in CASES
        for ext in exts
        for op in OPERATIONS
    ]


def _attempt(path: Path, op: str, ran: list[int]) -> None:
    if op == "has":
        get_backend(path).has({"i": 1})
    elif op == "record":
        get_backend(path).record({"i": 1})
    elif op == "load":
        get_backend(path).load()
    else:

        @stet.once(store=path)
        def experiment(i: int) -> None:
            ran.append(i)

        experiment(1)


def _leftovers(directory: Path, store: Path) -> list[str]:
    """Files stet left next to the store, other than its lock file and SQLite's
    shared-memory/WAL companions."""
    allowed = {store.name, store.name + ".lock", store.name + "-wal", store.name + "-shm"}
    return sorted(p.name for p in directory.iterdir() if p.name not in allowed)


@pytest.mark.parametrize(("case", "ext", "build", "op"), _case_params())
def test_bad_store_gives_clear_error_and_keeps_bytes(
    tmp_path: Path, case: str, ext: str, build: Callable[[Path], None], op: str
) -> None:
    directory = tmp_path / "stores"
    directory.mkdir()
    path = directory / f"runs{ext}"
    build(path)
    before = snapshot(path)
    ran: list[int] = []
    with pytest.raises(stet.StoreError) as info:
        _attempt(path, op, ran)
    assert str(path) in str(info.value), f"the message does not name the file: {info.value}"
    assert snapshot(path) == before, "stet changed the bytes of a store it could not use"
    assert ran == [], "the experiment ran although its store is unusable"
    assert _leftovers(directory, path) == []


# -- truncated text stores: what a crash looks like, so the complete prefix loads ------


@pytest.mark.parametrize("ext", [".csv", ".json"])
def test_truncated_text_store_loads_its_complete_prefix(tmp_path: Path, ext: str) -> None:
    """A CSV or JSON file cut anywhere looks exactly like a torn append: stet loads
    the records before the cut (never a damaged one) and changes nothing by reading."""
    path = tmp_path / f"runs{ext}"
    make_store(path, 200)
    full = get_backend(path).load()
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) // 3 + 7, len(data) - 5):
        path.write_bytes(data[:cut])
        rows = get_backend(path).load()
        assert 0 < len(rows) < len(full)
        assert rows == full[: len(rows)]
        assert get_backend(path).has({"i": 0, "v": "value-0" * 3})
        assert not get_backend(path).has({"i": len(full) - 1, "v": f"value-{len(full) - 1}" * 3})
        assert path.read_bytes() == data[:cut], "reading changed the file"


# -- empty files: just work ------------------------------------------------------------


def test_empty_file_just_works(store: Path) -> None:
    store.write_bytes(b"")
    assert get_backend(store).load() == []
    assert not get_backend(store).has({"i": 1})
    ran: list[int] = []

    @stet.once(store=store)
    def experiment(i: int) -> None:
        ran.append(i)

    experiment(1)
    experiment(1)
    get_backend(store).record({"i": 2})
    assert ran == [1]
    assert [r["i"] for r in get_backend(store).load()] == ["1", "2"]
    assert [r["i"] for r in read_standard(store)] == ["1", "2"]


def test_empty_sqlite_database_just_works(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    sqlite3.connect(path).close()  # a valid database with no tables
    assert get_backend(path).load() == []
    assert not get_backend(path).has({"i": 1})
    get_backend(path).record({"i": 1})
    assert [r["i"] for r in read_standard(path)] == ["1"]


# -- read-only files and directories ---------------------------------------------------

#: Windows has no POSIX users to drop root to, and no mode bits on directories.
posix_permissions = pytest.mark.skipif(
    sys.platform == "win32", reason="needs POSIX users (os.getuid/setuid) and mode bits"
)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory the unprivileged child (user nobody when running as root) can enter."""
    path = Path(tempfile.mkdtemp(dir="/tmp" if os.getuid() == 0 else None))
    os.chmod(path, 0o777)
    try:
        yield path
    finally:
        os.chmod(path, 0o700)
        for sub in path.rglob("*"):
            if sub.is_dir():
                os.chmod(sub, 0o700)
        shutil.rmtree(path)


def _warm_up(directory: Path, ext: str) -> None:
    """Import everything a store of this format needs before the child drops root."""
    warm = directory / f"warm{ext}"
    backend = get_backend(warm)
    backend.record({"i": 1})
    backend.load()


def _ops_in_child(path: Path) -> dict[str, tuple[str, str, object]]:
    """Run load, has, record and a decorated call on ``path`` as an unprivileged user."""

    def one(op: str) -> Callable[[], object]:
        def action() -> object:
            if op == "load":
                return [r["i"] for r in get_backend(path).load()]
            if op == "has":
                return get_backend(path).has({"i": 0, "v": "value-0" * 3})
            if op == "record":
                get_backend(path).record({"i": 999, "v": "new"})
                return None
            if op == "record-new-key":  # a new column: CSV and Parquet rewrite the file
                get_backend(path).record({"other": 1})
                return None

            @stet.once(store=path)
            def experiment(i: int, v: str) -> str:
                return "ran"

            return experiment(998, "new")

        return action

    ops = ("load", "has", "record", "record-new-key", "decorated")
    return {op: in_unprivileged_child(one(op)) for op in ops}


def _assert_clear_write_error(path: Path, outcome: tuple[str, str, object]) -> None:
    kind, exc_type, message = outcome
    assert kind == "error", f"writing to a read-only store succeeded: {outcome}"
    assert exc_type == "StoreError", outcome
    assert str(path) in str(message), f"the message does not name the file: {outcome}"


@posix_permissions
def test_read_only_file(open_dir: Path, ext: str) -> None:
    path = open_dir / f"runs{ext}"
    make_store(path, 5)
    _warm_up(open_dir, ext)
    for extra in open_dir.glob(f"runs{ext}.lock"):
        extra.unlink()
    os.chmod(path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    before = path.read_bytes()
    outcomes = _ops_in_child(path)
    # Reading a read-only store works (looking at results someone else produced).
    assert outcomes["load"] == ("ok", "", [str(i) for i in range(5)]), outcomes["load"]
    assert outcomes["has"] == ("ok", "", True), outcomes["has"]
    # Writing to it is a clear error naming the file, and changes nothing.
    failures = []
    for op in ("record", "record-new-key", "decorated"):
        try:
            _assert_clear_write_error(path, outcomes[op])
        except AssertionError as exc:
            failures.append(f"{op}: {exc}")
    assert not failures, "\n".join(failures)
    assert path.read_bytes() == before
    assert stat.S_IMODE(path.stat().st_mode) == 0o444


@posix_permissions
def test_read_only_directory(open_dir: Path, ext: str) -> None:
    store_dir = open_dir / "ro"
    store_dir.mkdir()
    path = store_dir / f"runs{ext}"
    make_store(path, 5)
    _warm_up(open_dir, ext)
    for extra in store_dir.glob(f"runs{ext}.lock"):
        extra.unlink()
    os.chmod(path, 0o666)
    os.chmod(store_dir, 0o555)
    before = snapshot(store_dir)
    outcomes = _ops_in_child(path)
    # Reading works: a read-only directory still serves skips, load and status (S5).
    assert outcomes["load"] == ("ok", "", [str(i) for i in range(5)]), outcomes["load"]
    assert outcomes["has"] == ("ok", "", True), outcomes["has"]
    # Recording does not, on any store: stet needs the directory for its lock file and
    # for rewriting the store (SQLite: for its journal). A clear error, nothing changed.
    for op in ("record", "record-new-key", "decorated"):
        kind, exc_type, message = outcomes[op]
        assert (kind, exc_type) == ("error", "StoreError"), outcomes[op]
        assert str(path) in str(message) and "writable" in str(message), outcomes[op]
    assert snapshot(store_dir) == before


# -- the body never runs when its run cannot be recorded -------------------------------


def _new_store_in_read_only_directory(root: Path, ext: str) -> Path:
    directory = root / "ro"
    directory.mkdir()
    os.chmod(directory, 0o555)
    return directory / f"runs{ext}"


def _missing_directory_under_a_read_only_one(root: Path, ext: str) -> Path:
    directory = root / "ro"
    directory.mkdir()
    os.chmod(directory, 0o555)
    return directory / "results" / f"runs{ext}"


def _read_only_store_file(root: Path, ext: str) -> Path:
    path = root / f"runs{ext}"
    make_store(path, 3)
    if ext == ".parquet":
        backend = get_backend(path)
        assert isinstance(backend, ParquetBackend)
        backend.fold()  # everything in the .parquet file: no journal
    for lock in root.glob("*.lock"):
        lock.unlink()
    os.chmod(path, 0o444)
    return path


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and directory (None) below ``root``, but lock files (reading
    takes the lock; a lock file holds no data) and SQLite's WAL companions (SQLite makes
    them to read a WAL database)."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
        if not p.name.endswith((".lock", "-wal", "-shm"))
    }


@posix_permissions
@pytest.mark.parametrize(
    "situation",
    [
        _new_store_in_read_only_directory,
        _missing_directory_under_a_read_only_one,
        _read_only_store_file,
    ],
    ids=["new-store-in-a-read-only-directory", "missing-directory", "read-only-store-file"],
)
def test_the_body_never_runs_when_its_run_cannot_be_recorded(
    open_dir: Path, ext: str, situation: Callable[[Path, str], Path]
) -> None:
    """Checked before the first body runs: an hour of compute must not end in an error
    saying its result cannot be recorded (SPEC S2). The error names the path and the fix."""
    _warm_up(open_dir, ext)
    root = open_dir / "store"
    root.mkdir()
    os.chmod(root, 0o777)  # writable by the unprivileged user: only the situation is not
    path = situation(root, ext)
    before = _tree(root)

    def action() -> tuple[list[int], str, str]:
        ran: list[int] = []

        @stet.once(store=path, quiet=True)
        def experiment(i: int) -> None:
            ran.append(i)

        try:
            experiment(1)
        except Exception as exc:
            return ran, type(exc).__name__, str(exc)
        return ran, "", ""

    kind, _, outcome = in_unprivileged_child(action)
    assert kind == "ok", outcome
    assert isinstance(outcome, tuple)
    ran, exc_type, message = outcome
    assert ran == [], "the body ran although its run could not be recorded"
    assert exc_type == "StoreError", outcome
    assert str(path) in message, f"the message does not name the store: {message}"
    assert "writable" in message, f"the message does not say how to fix it: {message}"
    assert _tree(root) == before, "stet changed or created files"


def test_missing_directory_is_created_on_first_record(tmp_path: Path, ext: str) -> None:
    path = tmp_path / "a" / "b" / f"runs{ext}"
    assert get_backend(path).load() == []
    assert not get_backend(path).has({"i": 1})
    assert not path.parent.exists(), "reading created the directory"
    get_backend(path).record({"i": 1})
    assert [r["i"] for r in read_standard(path)] == ["1"]


def test_unparseable_store_in_fresh_process_names_file(tmp_path: Path, ext: str) -> None:
    """The same through a script: a traceback whose last line names the file."""
    path = tmp_path / f"runs{ext}"
    _text(path)
    before = path.read_bytes()
    script = tmp_path / "sweep.py"
    script.write_text(
        "import sys, stet\n@stet.once(store=sys.argv[1])\ndef f(i):\n    print('ran', i)\nf(1)\n"
    )
    import subprocess

    proc = subprocess.run(
        [PYTHON, str(script), str(path)],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "ran" not in proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert "StoreError" in last and str(path) in last, proc.stderr
    assert path.read_bytes() == before


# -- errors say where: the file and the line --------------------------------------------


def _hand_edit(path: Path, line: int, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` on 1-based ``line`` of ``path``, as an editor would."""
    lines = path.read_bytes().split(b"\n")
    assert old in lines[line - 1], lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path.write_bytes(b"\n".join(lines))


def _records(path: Path, n: int) -> None:
    backend = get_backend(path)
    for i in range(n):
        backend.record({"i": i, "s": "x"})


# Regression (fixed): _utilities._timestamps: pandas refuses the text but
# datetime.fromisoformat accepts any character between date and time, so no line is
# found and the raw pandas ValueError escapes instead of a StoreError


@pytest.mark.parametrize("ext", [".csv", ".json"])
@pytest.mark.parametrize(
    "typo",
    [
        pytest.param((b"-", b"-13-", 1), id="month-13"),
        pytest.param((b"T", b"Q", 0), id="separator"),
    ],
)
def test_mistyped_timestamp_names_the_file_and_line(
    tmp_path: Path, ext: str, typo: tuple[bytes, bytes, int]
) -> None:
    path = tmp_path / f"runs{ext}"
    _records(path, 5)
    line = 4  # CSV: the header, then records 0, 1, 2; JSON: "[", then records 0, 1, 2
    text = path.read_bytes().split(b"\n")[line - 1]
    stamp_at = text.index(b"20", text.index(b"_stet_timestamp") if ext == ".json" else 0)
    old, new, month = typo
    if month:
        edited = text[:stamp_at] + text[stamp_at:].replace(
            text[stamp_at + 4 : stamp_at + 8], b"-13-", 1
        )
    else:
        edited = text[:stamp_at] + text[stamp_at:].replace(old, new, 1)
    _hand_edit(path, line, text, edited)
    with pytest.raises(stet.StoreError) as info:
        stet.load(path)
    message = str(info.value)
    assert str(path) in message and f"line {line}" in message, message


def test_corrupt_csv_names_the_line_not_a_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    _records(path, 5)
    _hand_edit(path, 4, b",x,", b",x,,")
    with pytest.raises(stet.StoreError) as info:
        get_backend(path).load()
    message = str(info.value)
    assert str(path) in message and "line 4" in message, message
    assert not any(word in message for word in ("byte", "offset", "char ")), message


# Regression (fixed): a hand edit that spoiled one record in the middle of the file was
# taken for an append cut by a crash: load silently returned only the records before it,
# and the next record moved every later record to <store>.stet-torn.


@pytest.mark.parametrize(
    ("ext", "line", "old", "new"),
    [
        pytest.param(
            ".csv",
            4,
            b",x,",
            b',"x,',
            id="csv-unbalanced-quote",
        ),
        pytest.param(
            ".json",
            4,
            b'"s": "x"',
            b'"s": "x',
            id="json-missing-quote",
        ),
    ],
)
def test_record_spoiled_by_hand_in_the_middle_is_an_error_naming_its_line(
    tmp_path: Path, ext: str, line: int, old: bytes, new: bytes
) -> None:
    path = tmp_path / f"runs{ext}"
    _records(path, 10)
    _hand_edit(path, line, old, new)
    before = path.read_bytes()
    with pytest.raises(stet.StoreError) as info:
        get_backend(path).load()
    assert str(path) in str(info.value) and f"line {line}" in str(info.value), str(info.value)
    with pytest.raises(stet.StoreError):
        get_backend(path).record({"i": 99, "s": "x"})
    assert path.read_bytes() == before
    assert not Path(f"{path}.stet-torn").exists()


# Regression (fixed): records were numbered as if one object per line whenever the array
# parsed, also in a file re-saved with indent=2, so the message named a wrong line.
def test_json_store_reformatted_by_a_tool_names_the_right_line(tmp_path: Path) -> None:
    path = tmp_path / "runs.json"
    _records(path, 5)
    items = json.loads(path.read_text())
    items[2]["i"] = 2  # a number where stet keeps text
    path.write_text(json.dumps(items, indent=2) + "\n")
    lines = path.read_text().split("\n")
    start = lines.index('    "i": 2,')  # 0-based line of the value: its object opens just before
    assert lines[start - 1].strip() == "{"
    with pytest.raises(stet.StoreError) as info:
        get_backend(path).load()
    message = str(info.value)
    assert f"line {start}" in message, message  # the line where element 3 starts
