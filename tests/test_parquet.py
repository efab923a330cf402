"""The Parquet store's journal: when the sweep ends, the .parquet file holds every run.

Records go to ``<store>.journal`` first and are folded into the Parquet file: at exit,
a second after the last record, and when the journal grows. These tests run real
processes and read the result with pandas, as a researcher would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import stet
from _helpers import PYTHON, child_env
from stet.backends import get_backend

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

RECORD = """
import sys
from stet.backends import get_backend

store, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
backend = get_backend(store)
for i in range(first, first + count):
    backend.record({"i": i})
if sys.argv[4:] == ["no-pandas"]:  # the case under test: pandas never imported before exit
    assert "pandas" not in sys.modules
"""


def _record(store: Path, first: int, count: int, *extra: str) -> None:
    subprocess.run(
        [PYTHON, "-c", RECORD, str(store), str(first), str(count), *extra],
        env=child_env(),
        check=True,
        timeout=120,
    )


def _pandas_rows(store: Path) -> list[int]:
    return sorted(int(i) for i in pd.read_parquet(store)["i"])


def test_a_process_that_only_appended_folds_its_journal_at_exit(tmp_path: Path) -> None:
    """Regression: a process whose first fold came at exit built its table with
    ``pa.array``, which imports pandas; importing pandas while Python shuts down fails,
    the failure was swallowed, and the journal stayed unfolded: pandas saw fewer runs."""
    store = tmp_path / "runs.parquet"
    _record(store, 0, 1)  # creates the Parquet file
    for start in (1, 4, 7):
        _record(store, start, 3, "no-pandas")  # each appends to the journal, then exits
        assert not Path(f"{store}.journal").exists()
    assert _pandas_rows(store) == list(range(10))


def test_a_live_process_folds_a_second_after_its_last_record(tmp_path: Path) -> None:
    """A notebook kernel that ran a sweep and stays alive leaves a complete file."""
    store = tmp_path / "runs.parquet"
    _record(store, 0, 1)
    code = RECORD + "print('recorded', flush=True)\nsys.stdin.read()\n"
    proc = subprocess.Popen(
        [PYTHON, "-c", code, str(store), "1", "4"],
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "recorded\n"
        deadline = time.monotonic() + 30
        while Path(f"{store}.journal").exists():
            assert time.monotonic() < deadline, "the journal was never folded"
            time.sleep(0.05)
        assert proc.poll() is None  # folded while the process lives
        assert _pandas_rows(store) == list(range(5))
    finally:
        proc.kill()
        proc.wait()


def test_a_journal_left_by_a_killed_process_is_read_and_later_folded(tmp_path: Path) -> None:
    store = tmp_path / "runs.parquet"
    _record(store, 0, 1)
    code = RECORD + "print('recorded', flush=True)\nimport time\ntime.sleep(600)\n"
    proc = subprocess.Popen(
        [PYTHON, "-c", code, str(store), "1", "3"],
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "recorded\n"
    os.kill(proc.pid, signal.SIGKILL)  # before its idle fold (a second later)
    proc.wait()
    assert Path(f"{store}.journal").exists()
    assert _pandas_rows(store) == [0]  # the journal's runs are not in the file yet...
    seen = sorted(int(r["i"]) for r in get_backend(store).load())
    assert seen == [0, 1, 2, 3]  # ...but stet sees them
    _record(store, 4, 1)  # the next process that records folds them in, once each
    assert not Path(f"{store}.journal").exists()
    assert _pandas_rows(store) == [0, 1, 2, 3, 4]


def test_a_journal_another_process_starts_after_a_fold_is_seen_by_the_skip_path(
    tmp_path: Path,
) -> None:
    """Once folded a store has no journal, and the skip path only asks whether one
    appeared (without a stat that fails): a run another process journals must skip."""
    store = tmp_path / "runs.parquet"
    _record(store, 0, 2)  # folded at exit: no journal
    calls: list[int] = []

    @stet.once(store=store, quiet=True)
    def f(i: int) -> None:
        calls.append(i)

    f(0)
    assert not Path(f"{store}.journal").exists()
    leave_journal = RECORD.replace("if sys.argv", "import os; os._exit(0)\nif sys.argv")
    subprocess.run(
        [PYTHON, "-c", leave_journal, str(store), "7", "1"],
        env=child_env(),
        check=True,
        timeout=120,
    )
    assert Path(f"{store}.journal").exists()  # the other process never folded it
    f(7)
    f(8)
    assert calls == [8]


# Regression (found in review, never released): a journal deleted (by hand, by a sync
# tool) between the two looks of one refresh emptied what the process knew, and its
# next record then replaced the whole Parquet file by that one record.
def test_a_journal_gone_in_the_middle_of_a_refresh_does_not_replace_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stet.backends._fileread import FileReader
    from stet.backends._parquet import ParquetBackend

    store = tmp_path / "runs.parquet"
    backend = get_backend(store)
    assert isinstance(backend, ParquetBackend)
    for i in range(5):
        backend.record({"i": i})
    backend.fold()
    backend.record({"i": 5})  # into the journal
    get_backend(store).record({"i": 6})  # another writer: the journal changed
    journal = Path(backend.log_file)
    read_tail = FileReader._refresh

    def journal_deleted_first(self: FileReader) -> None:
        journal.unlink()  # after the Parquet store's own look, before the tail is read
        read_tail(self)

    monkeypatch.setattr(FileReader, "_refresh", journal_deleted_first)
    backend.record({"i": 7})
    monkeypatch.undo()
    assert _pandas_rows(store) == [0, 1, 2, 3, 4]  # the folded runs, all still there
    backend.fold()
    assert _pandas_rows(store) == [0, 1, 2, 3, 4, 7]  # (5 and 6 went with the journal)
