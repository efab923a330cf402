"""Many processes and threads sharing one store (SPEC S5, concurrency).

Real processes (fork and spawn) synchronised with Barriers and Events; where the tests
do not fork (Windows, macOS: see ``_helpers.CAN_FORK``) they are all spawned. Every
format records the full 4 processes x 4 threads x 250 keys = 4,000 records.
"""

from __future__ import annotations

import multiprocessing
import queue
from pathlib import Path
from typing import Any

import pytest

from _helpers import (
    CAN_FORK,
    FORK,
    check_row,
    read_standard,
    read_until_done,
    write_in_halves,
    write_keys,
)
from stet.backends import SqliteBackend, get_backend

PROCS = 4
THREADS = 4
KEYS = {".csv": 250, ".json": 250, ".sqlite": 250, ".parquet": 250}
TYPES = "p=int;t=int;i=int"


def _collect(results: Any, count: int, procs: list[Any], join: list[Any]) -> list[Any]:
    """Take ``count`` results off the queue (failing early if any of ``procs`` died),
    then join the processes ``join``."""
    out: list[Any] = []
    while len(out) < count:
        try:
            out.append(results.get(timeout=5))
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            assert not dead, f"worker died: exit codes {[p.exitcode for p in procs]}"
    for p in join:
        p.join(60)
        assert p.exitcode == 0, f"worker exit code {p.exitcode}"
    return out


def _assert_store_holds(store: Path, expected: set[tuple[int, int, int]]) -> None:
    """The store parses with its standard tool and holds exactly ``expected``, once each."""
    rows = read_standard(store)
    keys = [(int(str(r["p"])), int(str(r["t"])), int(str(r["i"]))) for r in rows]
    assert len(keys) == len(expected), f"{len(keys)} records, expected {len(expected)}"
    assert len(set(keys)) == len(keys), "duplicate records"
    assert set(keys) == expected
    for row in rows:
        assert row["_stet_types"] == TYPES
        assert check_row(row, ("p", "t", "i"), TYPES) is None, row
    # stet itself, in a fresh backend, agrees and skips every one of them.
    fresh = get_backend(store)
    loaded = fresh.load()
    assert len(loaded) == len(expected)
    assert all(fresh.has({"p": p, "t": t, "i": i}) for p, t, i in expected)
    assert not fresh.has({"p": 0, "t": 0, "i": -1})


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("mode", "start"), [("backend", FORK), ("decorator", "spawn")])
def test_processes_and_threads_record_every_key_once(
    store: Path, ext: str, mode: str, start: str
) -> None:
    keys = KEYS[ext]
    ctx: Any = multiprocessing.get_context(start)
    barrier = ctx.Barrier(PROCS)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=write_keys, args=(str(store), p, THREADS, keys, mode, barrier, results))
        for p in range(PROCS)
    ]
    for p in procs:
        p.start()
    outcomes = _collect(results, PROCS, procs, procs)

    errors = [e for _, _, _, errs in outcomes for e in errs]
    assert not errors, "\n".join(errors)
    executed = sum(o[1] for o in outcomes)
    skipped = sum(o[2] for o in outcomes)
    total = PROCS * THREADS * keys
    assert executed == total
    # decorator mode: each process then called another process's keys: all skipped.
    assert skipped == (total if mode == "decorator" else 0)
    expected = {(p, t, i) for p in range(PROCS) for t in range(THREADS) for i in range(keys)}
    _assert_store_holds(store, expected)


@pytest.mark.timeout(120)
def test_readers_never_see_a_torn_record(store: Path, ext: str) -> None:
    """Readers ``load()`` in a loop while writers record; every row they see is whole."""
    writers_n, threads, readers_n = 2, 2, 2
    keys = 200 if ext != ".parquet" else 30
    total = writers_n * threads * keys
    fork: Any = multiprocessing.get_context(FORK)
    spawn = multiprocessing.get_context("spawn")
    # Events and the Barrier come from the spawn context; they work in forked children too.
    writers = spawn.Barrier(writers_n)
    half_seen = spawn.Event()
    done = spawn.Event()
    results = spawn.Queue()
    reader_procs = [
        (spawn if r == 0 else fork).Process(
            target=read_until_done, args=(str(store), r, total, half_seen, done, results)
        )
        for r in range(readers_n)
    ]
    writer_procs = [
        fork.Process(
            target=write_in_halves,
            args=(str(store), w, threads, keys, writers, half_seen, results),
        )
        for w in range(writers_n)
    ]
    for p in reader_procs + writer_procs:
        p.start()
    outcomes = _collect(results, writers_n, writer_procs + reader_procs, writer_procs)
    done.set()
    outcomes += _collect(results, readers_n, reader_procs, reader_procs)

    errors = [e for *_, errs in outcomes for e in errs]
    assert not errors, "\n".join(errors)
    reader_stats = [o[2] for o in outcomes if o[0] == "reader"]
    assert len(reader_stats) == readers_n
    # Each reader loaded at least: the half-way state (the writers waited for it) and
    # the final state; the in-process reader threads loaded at least once.
    assert any(partial >= 1 for _, partial in reader_stats), reader_stats
    assert all(loads >= 1 for loads, _ in reader_stats)
    expected = {(w, t, i) for w in range(writers_n) for t in range(threads) for i in range(keys)}
    _assert_store_holds(store, expected)


@pytest.mark.timeout(120)
def test_many_processes_create_a_new_store_at_once(tmp_path: Path, ext: str) -> None:
    """The first records of a sweep: N processes start together on a store that does
    not exist yet (a cluster array job starting). Repeated, as the race is short."""
    # The race is short: SQLite's first open switches the new database to WAL mode.
    procs_n, trials = 8, {".csv": 15, ".json": 15, ".sqlite": 80, ".parquet": 10}[ext]
    if not CAN_FORK:
        trials = min(trials, 10)  # spawning 8 interpreters per trial is slow
    ctx: Any = multiprocessing.get_context(FORK)
    for trial in range(trials):
        store = tmp_path / f"new{trial}{ext}"
        barrier = ctx.Barrier(procs_n)
        results = ctx.Queue()
        procs = [
            ctx.Process(target=write_keys, args=(str(store), p, 1, 1, "backend", barrier, results))
            for p in range(procs_n)
        ]
        for p in procs:
            p.start()
        outcomes = _collect(results, procs_n, procs, procs)
        errors = [e for *_, errs in outcomes for e in errs]
        assert not errors, f"trial {trial}:\n" + "\n".join(errors)
        _assert_store_holds(store, {(p, 0, 0) for p in range(procs_n)})


# Regression: while other processes create a SQLite store and its table, a connection
# being opened saw the table in sqlite_master, and its next statement (the check for
# records to upgrade) was told "no such table": the record failed with a StoreError.
# Seen in about one of a hundred rounds of four processes opening a new store at once
# (test_processes_and_threads_record_every_key_once caught it in CI); SQLite cannot be
# made to do it on demand, so the second statement is made to fail once here.
#
# Regression, the same with another thread: while it happened, another thread of the
# process (the in-process reader of test_readers_never_see_a_torn_record, in a full run
# of the suite) emptied the backend's shared list of columns to read the schema again.
# The opening connection judged by that list that it had never seen the table, and the
# record failed with "cannot use ... as a SQLite store: no such table: stet_records".
# The other thread's step is taken at the moment the race needs it.


@pytest.mark.parametrize("another_thread", [False, True], ids=["alone", "another-thread-forgets"])
def test_a_new_sqlite_connection_told_no_such_table_after_seeing_it_looks_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, another_thread: bool
) -> None:
    import sqlite3

    from stet.backends import _sqliteopen

    store = tmp_path / "runs.sqlite"
    get_backend(store).record({"a": 1})
    real_upgrade = _sqliteopen.upgrade
    fresh = get_backend(store)
    assert isinstance(fresh, SqliteBackend)
    failures = [sqlite3.OperationalError("no such table: stet_records")]

    def upgrade_once_stale(*args: Any) -> None:
        if failures:
            if another_thread:
                fresh._columns = []  # another thread, about to read the schema again
            raise failures.pop()
        real_upgrade(*args)

    monkeypatch.setattr(_sqliteopen, "upgrade", upgrade_once_stale)
    fresh.record({"a": 2})
    assert not failures
    assert fresh.has({"a": 1}) and fresh.has({"a": 2})


# Regression: a record that widens the SQLite table (a new key name) read the table's
# columns into the list the process's threads share, then asked that list whether the
# table existed. Emptied meanwhile by another thread (a load reading the schema), it
# said no: "CREATE TABLE" of a table that was there, and the record failed. The other
# thread's step is taken here right after the columns were read.


def test_a_record_widening_the_sqlite_table_while_another_thread_forgets_the_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stet.backends import _sqlitetable

    store = tmp_path / "runs.sqlite"
    backend = get_backend(store)
    backend.record({"a": 1})
    real_check = _sqlitetable.check_case

    def check_as_another_thread_forgets(store_: Any, names: Any, columns: Any = None) -> None:
        real_check(store_, names, columns)
        store_._columns = []  # another thread, about to read the schema again

    monkeypatch.setattr(_sqlitetable, "check_case", check_as_another_thread_forgets)
    backend.record({"a": 2, "b": 3})
    assert backend.has({"a": 1}) and backend.has({"a": 2, "b": 3})
    assert sorted(row["a"] for row in backend.load()) == ["1", "2"]
