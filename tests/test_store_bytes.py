"""stet never deletes bytes it did not write (SPEC S5).

What a file store may end in, and what stet must do with it:

- a last CSV line typed by hand without its line end, a complete record: it is a
  record, and stays byte for byte when the next record is appended after it;
- stet's own append cut by a crash: the cut bytes move to ``<store>.stet-torn`` and a
  `stet.StoreWarning` names that file;
- anything else (binary bytes, more fields than the header, a JSON array cut in a
  layout stet does not write): a StoreError naming the file, from every operation and
  before a decorated body runs, and every byte stays.

And a store another tool rewrote in place is read again, never resumed from the
offset where this process stopped reading.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

import stet
from _helpers import read_standard, snapshot
from stet.backends import get_backend

STAMP = "2025-01-01T00:00:00.000001+00:00"


def _side_files(store: Path) -> list[str]:
    """Files next to the store other than the store itself, its journal and its lock."""
    mine = {store.name, store.name + ".lock", store.name + ".journal"}
    return sorted(p.name for p in store.parent.iterdir() if p.name not in mine)


# -- a last line typed by hand ---------------------------------------------------------


def test_a_last_csv_line_typed_without_its_line_end_is_kept_byte_for_byte(
    tmp_path: Path,
) -> None:
    store = tmp_path / "runs.csv"
    get_backend(store).record({"i": 1})
    with store.open("ab") as fh:
        fh.write(b"2,,i=int,2024-01-01,,,,")  # typed by hand: a short ISO date, no line end
    before = store.read_bytes()
    ran: list[int] = []

    @stet.once(store=store, quiet=True)
    def f(i: int) -> None:
        ran.append(i)

    f(2)
    f(3)
    assert ran == [3]
    after = store.read_bytes()
    assert after.startswith(before + b"\r\n"), "the typed line was changed"
    assert after.count(b"\r\n") == before.count(b"\r\n") + 2
    assert [r["i"] for r in read_standard(store)] == ["1", "2", "3"]
    assert read_standard(store)[1]["_stet_timestamp"] == "2024-01-01"
    assert _side_files(store) == []


def test_a_last_line_typed_into_a_0_0_x_csv_is_kept(tmp_path: Path) -> None:
    """A 0.0.x store (written by pandas, ``\\n`` line ends, no ``_stet_`` columns but the
    timestamp) gets stet's columns on the next record: a rewrite, keeping every record."""
    store = tmp_path / "runs.csv"
    store.write_bytes(b"alpha,seed,_stet_timestamp\n0.1,1,2024-01-01\n0.2,1,2024-01-02")
    ran: list[float] = []

    @stet.once(store=store, quiet=True)
    def f(alpha: float, seed: int) -> None:
        ran.append(alpha)

    f(0.1, 1)
    f(0.2, 1)
    f(0.3, 1)
    assert ran == [0.3]
    rows = read_standard(store)
    assert [(r["alpha"], str(r["_stet_timestamp"])[:10]) for r in rows[:2]] == [
        ("0.1", "2024-01-01"),
        ("0.2", "2024-01-02"),
    ]
    assert rows[2]["alpha"] == "0.3"


# -- a JSON array cut in a layout stet does not write -------------------------------------


def _indented_rows() -> bytes:
    rows = [{"i": str(i), "_stet_types": "i=int", "_stet_timestamp": STAMP} for i in range(4)]
    return json.dumps(rows, indent=2).encode()


def _cuts() -> list[tuple[str, bytes]]:
    full = _indented_rows()
    return [
        ("middle", full[: len(full) // 2]),
        ("after-an-object", full[: full.index(b"},") + 2]),
        ("inside-a-string", full[: full.index(b"2025") + 3]),
        ("closing-bracket-missing", full[:-1]),
    ]


OPERATIONS = ["has", "load", "record", "decorated"]


def _operate(store: Path, op: str, ran: list[int]) -> object:
    if op == "has":
        return get_backend(store).has({"i": 1})
    if op == "load":
        return get_backend(store).load()
    if op == "record":
        get_backend(store).record({"i": 7})
        return None

    @stet.once(store=store, quiet=True)
    def f(i: int) -> None:
        ran.append(i)

    return f(8)


@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize(("cut", "data"), _cuts(), ids=[name for name, _ in _cuts()])
def test_a_truncated_json_array_stet_did_not_write_is_refused_and_kept(
    tmp_path: Path, cut: str, data: bytes, op: str
) -> None:
    """What 0.0.x left after a crash in the middle of rewriting its JSON store."""
    store = tmp_path / "runs.json"
    store.write_bytes(data)
    ran: list[int] = []
    with pytest.raises(stet.StoreError) as info:
        _operate(store, op, ran)
    assert str(store) in str(info.value)
    assert ran == [], "the body ran although its run could not be recorded"
    assert store.read_bytes() == data
    assert _side_files(store) == []


# -- stet's own append, cut by a crash ---------------------------------------------------


def _cut_appends(store: Path) -> tuple[bytes, bytes, int]:
    """Record three runs, then one more; return the file (the journal, for Parquet)
    before and after that last append, and where the append started."""
    backend = get_backend(store)
    backend.record({"n": 0, "v": "first"})  # Parquet: into the .parquet file itself
    for n, value in enumerate(['quote " and, comma', "new\nline"], 1):
        backend.record({"n": n, "v": value})
    log = _log(store)
    before = log.read_bytes()
    backend.record({"n": 3, "v": "ünï\r\ncode, the last one"})
    after = log.read_bytes()
    pairs = enumerate(zip(before, after, strict=False))
    start = next((i for i, (a, b) in pairs if a != b), len(before))
    return before, after, start


def _log(store: Path) -> Path:
    """The file records are appended to."""
    return Path(f"{store}.journal") if store.suffix == ".parquet" else store


@pytest.mark.parametrize("ext", [".csv", ".json", ".parquet"])
def test_stets_own_interrupted_append_is_moved_aside_with_a_warning(
    tmp_path: Path, ext: str
) -> None:
    store = tmp_path / f"runs{ext}"
    before, after, start = _cut_appends(store)
    log = _log(store)
    written = after[start:]
    old_tail = before[start:]  # what the append wrote over (JSON: the closing bracket)
    # Cuts inside the record (a cut right before a CSV line end leaves a whole record).
    for k in (1, len(written) // 3, len(written) // 2, len(written) - 40):
        torn = before[:start] + written[:k] + old_tail[k:]
        log.write_bytes(torn)
        side = Path(f"{log}.stet-torn")
        side.unlink(missing_ok=True)
        fresh = get_backend(store)
        assert [r["n"] for r in fresh.load()] == ["0", "1", "2"], k
        assert log.read_bytes() == torn, "reading changed the file"
        with pytest.warns(stet.StoreWarning, match=re.escape(str(side))):
            fresh.record({"n": 9, "v": "after the crash"})
        kept = side.read_bytes()
        assert kept.startswith(b"# ") and kept.endswith(torn[start:] + b"\n"), k
        assert [r["n"] for r in get_backend(store).load()] == ["0", "1", "2", "9"]
        assert [r["n"] for r in read_standard(store)] == ["0", "1", "2", "9"]
        # back to the state before the crash, for the next cut
        store.unlink()
        log.unlink(missing_ok=True)
        before, after, start = _cut_appends(store)


# -- garbage at the end ------------------------------------------------------------------

BINARY = b"\x89PNG\x00\xff\xfe garbage \x80\x81"

# Regression (fixed): a torn tail is judged only when the next record is written:
# reading ignores bytes after the last complete record whatever they are, so load() and
# has() accept a store ending in garbage, and a decorated call runs its body before the
# write refuses it
# Regression (fixed): JSON store: any tail starting with a comma counts as stet's own
# cut append, so garbage after ',\\n' is moved to .stet-torn instead of refused


def _csv_binary(store: Path) -> None:
    with store.open("ab") as fh:
        fh.write(BINARY)


def _csv_more_fields(store: Path) -> None:
    with store.open("ab") as fh:
        fh.write(f"9,,i=int,{STAMP},,,,,surplus,fields".encode())


def _csv_more_fields_line(store: Path) -> None:
    with store.open("ab") as fh:
        fh.write(f"9,,i=int,{STAMP},,,,,surplus,fields\r\n".encode())


def _json_binary_after_array(store: Path) -> None:
    with store.open("ab") as fh:
        fh.write(BINARY)


def _json_binary_after_comma(store: Path) -> None:
    data = store.read_bytes().rstrip()
    assert data.endswith(b"]")
    store.write_bytes(data[:-1].rstrip() + b",\n" + BINARY)


def _journal_binary(store: Path) -> None:
    with _log(store).open("ab") as fh:
        fh.write(BINARY)


def _journal_not_an_object(store: Path) -> None:
    with _log(store).open("ab") as fh:
        fh.write(b'["9", "i=int"]')


#: (name, ending, how to spoil a store of three records, operations that fail today)
GARBAGE: list[tuple[str, str, Callable[[Path], None]]] = [
    ("binary", ".csv", _csv_binary),
    ("more-fields-than-the-header", ".csv", _csv_more_fields),
    ("more-fields-with-line-end", ".csv", _csv_more_fields_line),
    ("binary-after-the-array", ".json", _json_binary_after_array),
    ("binary-after-a-comma", ".json", _json_binary_after_comma),
    ("binary", ".parquet", _journal_binary),
    ("not-an-object", ".parquet", _journal_not_an_object),
]


def _garbage_params() -> list[object]:
    params: list[object] = []
    for name, ext, spoil in GARBAGE:
        for op in OPERATIONS:
            params.append(pytest.param(ext, spoil, op, id=f"{name}{ext}-{op}"))
    return params


@pytest.mark.parametrize(("ext", "spoil", "op"), _garbage_params())
def test_garbage_at_the_end_is_refused_and_kept(
    tmp_path: Path, ext: str, spoil: Callable[[Path], None], op: str
) -> None:
    store = tmp_path / f"runs{ext}"
    backend = get_backend(store)
    for i in range(3):
        backend.record({"i": i})
    spoil(store)
    before = snapshot(store), snapshot(_log(store))
    ran: list[int] = []
    with pytest.raises(stet.StoreError) as info:
        _operate(store, op, ran)
    assert str(store) in str(info.value)
    assert ran == [], "the body ran although its run could not be recorded"
    assert (snapshot(store), snapshot(_log(store))) == before, "stet changed the bytes"
    assert _side_files(store) == []


# -- a store rewritten in place by another tool ---------------------------------------------

_TIMESTAMP = re.compile(rb"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00")


def _rewrite_in_place(store: Path, victim: bytes, grow: bool) -> None:
    """What another tool may do: replace the run ``victim`` by ``intruder`` (a record of
    the same length, with its own timestamp) and, if ``grow``, add the run ``appended``
    after it; written into the same file (same inode), so that its size is at least
    what this process had read, and with a later modification time."""
    log = _log(store)
    data = log.read_bytes()
    at = data.index(victim)
    start = data.rfind(b"\n", 0, at) + 1
    end = data.index(b"\n", at)
    record = data[start:end]  # a CSV line (with its \r), a JSON object, a journal line
    stamp = _TIMESTAMP.search(record)
    assert stamp is not None
    old = stamp.group()
    new = record.replace(victim, b"intruder").replace(old, b"2031-02-03T04:05:06.000007+00:00")
    if grow:
        extra = record.replace(victim, b"appended").replace(
            old, b"2031-02-03T04:05:07.000008+00:00"
        )
        new += (b",\n" if store.suffix == ".json" and new.endswith(b"}") else b"\n") + extra
    rewritten = data[:start] + new + data[end:]
    assert len(rewritten) >= len(data)
    st = log.stat()
    with log.open("r+b") as fh:  # in place: the same inode
        fh.write(rewritten)
        fh.truncate()
    os.utime(log, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert log.stat().st_ino == st.st_ino


# Regression (fixed): a change that keeps the file's size is read as if it could be an
# append: only the 32 bytes before the resume offset are compared, so an earlier record
# rewritten in place with the same length goes unnoticed


@pytest.mark.parametrize(
    ("victim", "grow"),
    [
        ("victim-1", False),
        ("victim-1", True),
        ("victim-0", False),
    ],
    ids=["last-record-same-size", "last-record-and-one-more", "first-record-same-size"],
)
@pytest.mark.parametrize("ext", [".csv", ".json", ".parquet"])
def test_a_store_rewritten_in_place_is_read_again_not_resumed_from_the_old_offset(
    tmp_path: Path, ext: str, victim: str, grow: bool
) -> None:
    """Regression guard for the incremental read: it may resume where it stopped only
    if the bytes before that point are still the ones it read."""
    store = tmp_path / f"runs{ext}"
    writer = get_backend(store)
    names = ["in-base1", "victim-0", "keep-000", "victim-1"]  # Parquet: the first in the file
    for name in names:
        writer.record({"name": name})
    running = get_backend(store)  # a process that has read the store
    assert running.has({"name": victim}) and not running.has({"name": "intruder"})
    _rewrite_in_place(store, victim.encode(), grow)
    assert not running.has({"name": victim}), "a run removed from the store is still done"
    assert running.has({"name": "intruder"}), "a run added to the store is missing"
    assert running.has({"name": "appended"}) is grow
    kept = [n for n in names if n != victim]
    assert all(running.has({"name": n}) for n in kept)
    expected = [("intruder" if n == victim else n) for n in names] + ["appended"] * grow
    assert [r["name"] for r in get_backend(store).load()] == expected
