"""A real Dask cluster with process workers sharing one store (SPEC S5, S6), also
when one of its workers is killed in the middle of a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

import stet
from _dask_kill import slow_run
from stet.backends import get_backend

SCRIPT = Path(__file__).parent.parent / "examples" / "dask_sweep.py"


@pytest.fixture(params=["sqlite", "csv", "postgres"])
def dask_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return str(tmp_path / f"runs.{request.param}")


def test_dask_sweep_then_resume_runs_nothing(dask_store: str, tmp_path: Path) -> None:
    def sweep() -> str:
        out = subprocess.run(
            [sys.executable, str(SCRIPT), dask_store],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert "ran 20 of 20 runs" in sweep()
    assert len(get_backend(dask_store).load()) == 20
    assert "ran 0 of 20 runs; 20 were already done" in sweep()
    assert len(get_backend(dask_store).load()) == 20


# -- a worker killed in the middle of a run ------------------------------------------

KEYS = 30
WORKERS = 3
#: Generous: a loaded 2-core machine can take many seconds to start or reschedule workers.
TIMEOUT = 240.0


def _events(log: Path) -> list[tuple[str, int, int]]:
    """The log's ("start" | "end", key, pid) lines, in order, while workers append to it
    (a last line without its newline yet is left for the next read)."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().split("\n")[:-1]:
        kind, key, pid = line.split()
        out.append((kind, int(key), int(pid)))
    return out


def _running(log: Path) -> list[tuple[int, int]]:
    """(key, pid) of the runs that have started and not ended."""
    open_runs: list[tuple[int, int]] = []
    for kind, key, pid in _events(log):
        if kind == "start":
            open_runs.append((key, pid))
        else:
            open_runs.remove((key, pid))
    return open_runs


def _wait_for(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {TIMEOUT:.0f} s waiting for {what}")
        time.sleep(0.02)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="kill -9 needs POSIX signals")
@pytest.mark.parametrize("claim", [False, True], ids=["plain", "claim"])
def test_worker_killed_mid_run(dask_store: str, claim: bool, tmp_path: Path) -> None:
    """SIGKILL a Dask worker process while it is inside a run; Dask reruns that run on
    another worker. Each run must be recorded once, and a run may start twice only
    because its first start was cut short."""
    from dask.distributed import Client, LocalCluster, wait

    log = tmp_path / "log.txt"
    gate = tmp_path / "gate"
    run = stet.once(store=dask_store, key=["k"], claim=claim, quiet=True)(slow_run)

    # (distributed's LocalCluster, Client and wait have no annotations for mypy to check.)
    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        worker_pids: dict[str, int] = client.run(os.getpid)
        futures = client.map(run, range(KEYS), log=str(log), gate=str(gate), pure=False)

        # Every run that has started is held at the gate: pick one, kill its worker.
        _wait_for(
            lambda: any(pid in worker_pids.values() for _, pid in _running(log)),
            "a worker to start a run",
        )
        killed_key, victim = next(kp for kp in _running(log) if kp[1] in worker_pids.values())
        victim_address = next(a for a, pid in worker_pids.items() if pid == victim)
        os.kill(victim, signal.SIGKILL)
        _wait_for(
            lambda: victim_address not in client.scheduler_info()["workers"],
            "the scheduler to notice the killed worker",
        )
        gate.touch()
        wait(futures, timeout=TIMEOUT)  # type: ignore[no-untyped-call]
        results = client.gather(futures)
        assert sorted(results) == list(range(KEYS))  # each rerun really ran, none skipped

        # A second pass over the grid is all skips.
        before = log.read_text()
        again = client.map(run, range(KEYS), log=str(log), gate=str(gate), pure=False)
        wait(again, timeout=TIMEOUT)  # type: ignore[no-untyped-call]
        assert client.gather(again) == [None] * KEYS
        assert log.read_text() == before

    events = _events(log)
    ends = [(key, pid) for kind, key, pid in events if kind == "end"]
    starts = [(key, pid) for kind, key, pid in events if kind == "start"]
    cut_short = [(key, pid) for key, pid in starts if (key, pid) not in ends]
    # The killed run never ended, and no other run was cut short: a key started twice
    # only because its first start was killed.
    assert cut_short == [(killed_key, victim)]
    # Every key ran to its end exactly once: the killed one on another worker.
    assert Counter(key for key, _ in ends) == Counter(range(KEYS))
    assert next(pid for key, pid in ends if key == killed_key) != victim

    backend = get_backend(dask_store)
    rows = backend.load()
    assert Counter(row["k"] for row in rows) == Counter(str(k) for k in range(KEYS))
    assert backend.in_progress() == []
