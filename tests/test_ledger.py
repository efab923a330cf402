"""The failure ledger (SPEC S6): a call that raises is noted, and never counts as done.

Each test runs on every store (the four file formats and a PostgreSQL table) where the
behaviour is the same everywhere. The ledger is read back both through stet and as it
is stored: ``<store>.ledger.jsonl`` next to a file store, the table ``stet_ledger`` of a
SQLite store and ``<table>_ledger`` next to a PostgreSQL table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import stet
from _helpers import child_env
from stet.backends import get_backend

HOST = socket.gethostname()

#: The columns of ``stet.load(store, failed=True)`` after the key columns.
FAILURE_COLUMNS = [
    "_stet_func",
    "error",
    "traceback",
    "attempt",
    "host",
    "job",
    "duration",
    "_stet_timestamp",
]


def raw_ledger(store: str) -> list[dict[str, Any]]:
    """The ledger's events as stored, read without stet (oldest first).

    Each event is a dict with ``event``, ``run``, ``func`` and the details (``error``,
    ``traceback``, ``attempt``, ``host``, ``job``, ``duration``).
    """
    if store.startswith("postgresql://"):
        import psycopg

        server, _, table = store.rpartition("?table=")
        with psycopg.connect(server) as conn:
            found = conn.execute(
                f'SELECT event, run, func, details FROM "{table}_ledger" ORDER BY id'
            ).fetchall()
        return [
            {"event": e, "run": json.loads(r), "func": f, **json.loads(d)} for e, r, f, d in found
        ]
    if store.endswith(".sqlite"):
        database = sqlite3.connect(store)
        try:
            rows = database.execute(
                "SELECT event, run, func, details FROM stet_ledger ORDER BY rowid"
            ).fetchall()
        finally:
            database.close()
        return [
            {"event": e, "run": json.loads(r), "func": f, **json.loads(d)} for e, r, f, d in rows
        ]
    ledger = Path(store + ".ledger.jsonl")
    lines = ledger.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def failures_of(store: str) -> list[dict[str, Any]]:
    return [event for event in raw_ledger(store) if event["event"] == "failure"]


# -- a call that raises --------------------------------------------------------------


def test_a_failure_is_noted_with_its_details(any_store: str) -> None:
    @stet.once(any_store, quiet=True)
    def train(alpha: float, seed: int) -> None:
        time.sleep(0.05)
        raise ValueError(f"no convergence for seed={seed}")

    with pytest.raises(ValueError, match="no convergence for seed=3"):
        train(0.1, 3)
    [event] = failures_of(any_store)
    assert event["run"] == {"alpha": "0.1", "seed": "3"}
    assert event["func"] == "train"
    assert event["error"] == "ValueError: no convergence for seed=3"
    # The tail of the traceback: where it failed, down to the exception line.
    assert 'raise ValueError(f"no convergence for seed={seed}")' in event["traceback"]
    assert event["traceback"].endswith("ValueError: no convergence for seed=3\n")
    assert event["attempt"] == 1
    assert event["host"] == HOST
    assert 0.05 <= event["duration"] < 30


def test_a_failed_run_runs_again_and_is_not_recorded(any_store: str) -> None:
    calls: list[int] = []

    @stet.once(any_store, quiet=True)
    def train(seed: int) -> int:
        calls.append(seed)
        if len(calls) < 3:
            raise RuntimeError("diverged")
        return seed

    for _ in range(2):
        with pytest.raises(RuntimeError):
            train(1)
        assert not train.has(1)
    assert train(1) == 1  # the third attempt succeeds
    assert calls == [1, 1, 1]
    assert train(1) is None  # and only now is the run done
    assert len(get_backend(any_store).load()) == 1
    assert len(failures_of(any_store)) == 2


def test_failures_never_count_as_completed(any_store: str) -> None:
    @stet.once(any_store, quiet=True)
    def train(seed: int) -> None:
        if seed % 2:
            raise ValueError("odd seed")

    for seed in range(4):
        with contextlib.suppress(ValueError):
            train(seed)
    assert [row["seed"] for row in get_backend(any_store).load()] == ["0", "2"]
    assert list(stet.load(any_store)["seed"]) == [0, 2]
    assert stet.status(any_store).completed == 2
    assert list(train.pending({"seed": range(4)})) == [{"seed": 1}, {"seed": 3}]
    assert not train.has(1)


def test_status_counts_failures_and_distinct_runs(
    any_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    @stet.once(any_store, quiet=True)
    def train(seed: int) -> None:
        if seed >= 2:
            raise ValueError("bad seed")

    for seed in (0, 1, 2, 2, 3):
        with contextlib.suppress(ValueError):
            train(seed)
    capsys.readouterr()
    summary = stet.status(any_store)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "[stet] 2 completed experiments recorded, 3 failed (2 distinct runs)"
    assert (summary.completed, summary.failed, summary.failed_runs) == (2, 3, 2)


def test_status_without_failures_prints_as_before(
    any_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    @stet.once(any_store, quiet=True)
    def train(seed: int) -> None:
        pass

    train(1)
    capsys.readouterr()
    stet.status(any_store)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "[stet] 1 completed experiments recorded"


def test_load_failed_returns_the_failures_as_a_dataframe(any_store: str) -> None:
    @stet.once(any_store, quiet=True)
    def train(alpha: float, seed: int) -> None:
        if seed == 1:
            raise ValueError(f"seed {seed} diverged")

    for alpha in (0.1, 0.2):
        for seed in (0, 1):
            with contextlib.suppress(ValueError):
                train(alpha, seed)
    failed = stet.load(any_store, failed=True)
    assert list(failed.columns) == ["alpha", "seed", *FAILURE_COLUMNS]
    assert failed[["alpha", "seed"]].astype(str).values.tolist() == [["0.1", "1"], ["0.2", "1"]]
    assert list(failed["error"]) == ["ValueError: seed 1 diverged"] * 2
    assert list(failed["host"]) == [HOST, HOST]
    assert list(failed["attempt"]) == [1, 1]
    assert isinstance(failed["_stet_timestamp"].dtype, pd.DatetimeTZDtype)
    # The completed runs are not in it, and the failures are not in stet.load.
    assert len(stet.load(any_store)) == 2


def test_load_failed_of_a_store_without_failures_is_empty(any_store: str) -> None:
    @stet.once(any_store, quiet=True)
    def train(seed: int) -> None:
        pass

    train(1)
    failed = stet.load(any_store, failed=True)
    assert len(failed) == 0
    assert list(failed.columns) == FAILURE_COLUMNS


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_an_interrupted_call_is_not_a_failure(any_store: str, stop: type[BaseException]) -> None:
    calls: list[int] = []

    @stet.once(any_store, quiet=True)
    def train(seed: int) -> None:
        calls.append(seed)
        if seed == 1:
            raise stop()

    train(0)  # (so that the store exists for status)
    with pytest.raises(stop):
        train(1)
    assert stet.status(any_store).failed == 0
    assert len(stet.load(any_store, failed=True)) == 0
    with pytest.raises(stop):
        train(1)  # not recorded either: it runs again
    assert calls == [0, 1, 1]


def test_a_failure_under_a_claim_releases_it(any_store: str) -> None:
    @stet.once(any_store, quiet=True, claim=True)
    def train(seed: int) -> None:
        raise OSError("scratch disk full")

    with pytest.raises(OSError):
        train(1)
    assert get_backend(any_store).in_progress() == []
    assert [e["error"] for e in failures_of(any_store)] == ["OSError: scratch disk full"]
    with pytest.raises(OSError):
        train(1)  # released: this worker (or another) may run it again


def test_an_async_failure_is_noted_when_the_coroutine_raises(store: Path) -> None:
    @stet.once(store, quiet=True)
    async def fetch(url: str) -> str:
        await asyncio.sleep(0)
        raise ConnectionError(f"cannot reach {url}")

    coroutine = fetch("https://example.org")
    assert not Path(str(store) + ".ledger.jsonl").exists() or failures_of(str(store)) == []
    with pytest.raises(ConnectionError):
        asyncio.run(coroutine)
    [event] = failures_of(str(store))
    assert event["error"] == "ConnectionError: cannot reach https://example.org"


def test_a_csv_store_with_failures_reads_as_completed_runs_only(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"

    @stet.once(store, quiet=True)
    def train(alpha: float, seed: int) -> None:
        if seed == 1:
            raise ValueError("diverged")

    for seed in (0, 1, 2):
        with contextlib.suppress(ValueError):
            train(0.5, seed)
    frame = pd.read_csv(store)
    assert frame[["alpha", "seed"]].values.tolist() == [[0.5, 0], [0.5, 2]]
    assert not any("error" in column or "fail" in column for column in frame.columns)
    assert (tmp_path / "runs.csv.ledger.jsonl").is_file()


def test_reset_of_the_whole_store_removes_its_ledger(
    any_store: str, request: pytest.FixtureRequest
) -> None:

    @stet.once(any_store, quiet=True)
    def train(seed: int) -> None:
        if seed == 1:
            raise ValueError("diverged")

    train(0)
    with pytest.raises(ValueError):
        train(1)
    stet.reset(any_store, yes=True)
    get_backend(any_store).record({"seed": 2})  # (so that there is a store to look at)
    assert stet.status(any_store).failed == 0


def test_a_decorated_function_keeps_working_after_its_store_is_reset(
    any_store: str, request: pytest.FixtureRequest
) -> None:
    calls: list[int] = []

    @stet.once(any_store, quiet=True)
    def train(seed: int) -> None:
        calls.append(seed)

    train(1)
    stet.reset(any_store, yes=True)  # as a notebook does before running a sweep afresh
    train(1)
    assert calls == [1, 1]
    assert train.has(1)


def test_a_store_whose_every_run_failed_so_far_shows_its_failures(
    any_store: str, request: pytest.FixtureRequest
) -> None:

    @stet.once(any_store, quiet=True)
    def train(seed: int) -> None:
        raise ImportError("No module named 'torch'")  # a sweep broken from its first call

    for seed in (1, 2):
        with pytest.raises(ImportError):
            train(seed)
    assert (stet.status(any_store).completed, stet.status(any_store).failed) == (0, 2)
    assert list(stet.load(any_store, failed=True)["seed"].astype(str)) == ["1", "2"]


# -- max_attempts ----------------------------------------------------------------------


def test_max_attempts_skips_a_run_saying_why_until_reset(
    any_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[int] = []

    def body(seed: int) -> None:
        calls.append(seed)
        if seed == 7:
            raise ValueError("out of memory")

    train = stet.once(any_store, max_attempts=2)(body)
    train(0)
    calls.clear()
    for _ in range(2):
        with pytest.raises(ValueError):
            train(7)
    capsys.readouterr()
    assert train(7) is None  # the third call does not run the body
    assert calls == [7, 7]
    assert capsys.readouterr().out.splitlines() == [
        "[stet] Skipping body(seed=7): it failed 2 times (max_attempts=2); "
        "body.reset(...) lets it run again"
    ]
    # A restart (a new decorated function on the same store) still skips it.
    again = stet.once(any_store, max_attempts=2, quiet=True)(body)
    assert again(7) is None
    assert calls == [7, 7]
    # Until the run is reset: then it gets max_attempts fresh attempts.
    again.reset(7)
    for _ in range(2):
        with pytest.raises(ValueError):
            again(7)
    assert again(7) is None
    assert calls == [7, 7, 7, 7]


def test_reset_lets_a_run_that_only_ever_failed_run_again(
    any_store: str, request: pytest.FixtureRequest
) -> None:
    calls: list[int] = []

    @stet.once(any_store, quiet=True, max_attempts=1)
    def train(seed: int) -> None:
        calls.append(seed)
        raise ValueError("bad seed")

    with pytest.raises(ValueError):
        train(1)
    assert train(1) is None  # given up on
    assert train.reset(1) is False  # no record removed; its failures no longer count
    with pytest.raises(ValueError):
        train(1)
    assert calls == [1, 1]


def test_attempts_are_numbered_without_max_attempts(
    any_store: str, request: pytest.FixtureRequest
) -> None:

    @stet.once(any_store, quiet=True)
    def train(seed: int) -> None:
        raise ValueError("bad seed")

    for _ in range(3):
        with pytest.raises(ValueError):
            train(1)
    assert [event["attempt"] for event in failures_of(any_store)] == [1, 2, 3]


def test_max_attempts_counts_each_run_separately(any_store: str) -> None:
    calls: list[int] = []

    @stet.once(any_store, quiet=True, max_attempts=1)
    def train(seed: int) -> None:
        calls.append(seed)
        if seed == 1:
            raise ValueError("bad seed")

    for seed in (1, 2, 1, 2, 3):
        with contextlib.suppress(ValueError):
            train(seed)
    assert calls == [1, 2, 3]


def test_max_attempts_numbers_the_attempts(any_store: str) -> None:
    @stet.once(any_store, quiet=True, max_attempts=3)
    def train(seed: int) -> None:
        if seed == 1:
            raise ValueError("bad seed")

    train(0)
    for _ in range(3):
        with pytest.raises(ValueError):
            train(1)
    assert [event["attempt"] for event in failures_of(any_store)] == [1, 2, 3]
    assert list(stet.load(any_store, failed=True)["attempt"]) == [1, 2, 3]


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_max_attempts_must_be_a_positive_int(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ValueError, match="max_attempts must be a positive int"):

        @stet.once(tmp_path / "runs.csv", max_attempts=bad)
        def train(seed: int) -> None:
            pass


# -- in a real script --------------------------------------------------------------

SCRIPT = """
import stet

@stet.once("runs.csv", quiet=True)
def train(seed):
    raise RuntimeError(f"seed {seed} failed")

try:
    train(1)
except RuntimeError:
    pass
"""


@pytest.mark.parametrize(
    ("slurm", "job"),
    [
        (
            {"SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "7", "SLURM_JOB_ID": "4250"},
            "4242_7",
        ),
        ({"SLURM_JOB_ID": "981"}, "981"),
        ({}, ""),
    ],
    ids=["array-task", "job", "no-cluster"],
)
def test_a_failure_in_a_script_notes_its_cluster_job(
    tmp_path: Path, slurm: dict[str, str], job: str
) -> None:
    env = {k: v for k, v in child_env().items() if not k.startswith("SLURM_")}
    env.update(slurm)
    (tmp_path / "sweep.py").write_text(SCRIPT, encoding="utf-8")
    subprocess.run([sys.executable, "sweep.py"], cwd=tmp_path, env=env, check=True, timeout=120)
    [event] = failures_of(str(tmp_path / "runs.csv"))
    assert event["job"] == job
    assert event["host"] == HOST


# -- known problems ------------------------------------------------------------------


def test_max_attempts_says_why_also_after_many_skips(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    @stet.once(store, max_attempts=1)
    def train(seed: int) -> None:
        if seed == 99:
            raise ValueError("diverged")

    with pytest.raises(ValueError):
        train(99)
    for seed in range(20):
        train(seed)
    for seed in range(20):
        train(seed)  # a resume: twenty completed runs skipped
    capsys.readouterr()
    train(99)
    assert capsys.readouterr().out.splitlines() == [
        "[stet] Skipping train(seed=99): it failed 1 times (max_attempts=1); "
        "train.reset(...) lets it run again"
    ]


class UnprintableError(Exception):
    """An exception whose message cannot be made (its ``__str__`` fails)."""

    def __str__(self) -> str:
        raise RuntimeError("cannot describe this error")


def test_the_caller_sees_the_bodys_exception_even_if_it_cannot_be_printed(store: Path) -> None:
    @stet.once(store, quiet=True)
    def train(seed: int) -> None:
        raise UnprintableError()

    with pytest.raises(UnprintableError):
        train(1)


def test_load_failed_types_key_columns_like_load(store: Path) -> None:
    @stet.once(store, quiet=True)
    def train(alpha: float, seed: int) -> None:
        if seed == 1:
            raise ValueError("diverged")

    for seed in (0, 1):
        with contextlib.suppress(ValueError):
            train(0.5, seed)
    failed = stet.load(store, failed=True)
    done = stet.load(store)
    assert (failed["alpha"].dtype, failed["seed"].dtype) == (
        done["alpha"].dtype,
        done["seed"].dtype,
    )


def test_status_counts_only_failures_of_runs_not_completed(any_store: str) -> None:
    attempts: list[int] = []

    @stet.once(any_store, quiet=True)
    def train(seed: int) -> None:
        attempts.append(seed)
        if attempts.count(seed) == 1 and seed == 1:
            raise TimeoutError("node preempted")  # fails once, then completes

    for seed in (0, 1, 1, 2):
        with contextlib.suppress(TimeoutError):
            train(seed)
    summary = stet.status(any_store)
    assert (summary.completed, summary.failed, summary.failed_runs) == (3, 0, 0)
