"""Many copies of one script on one store (SPEC S6): every run exactly once."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from _helpers import CAN_FORK, KILLED, NO_FORK, child_env
from stet.backends import get_backend

SCRIPT = Path(__file__).parent.parent / "examples" / "workers_sweep.py"


def _start(store: str, log: Path, seconds: float, count: int = 4) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), store, str(log), str(seconds), "40"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for _ in range(count)
    ]


def _events(log: Path) -> list[tuple[str, int, int]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        kind, key, pid = line.split()
        out.append((kind, int(key), int(pid)))
    return out


def _finish(
    procs: list[subprocess.Popen[str]], killed: subprocess.Popen[str] | None = None
) -> None:
    """Wait for every worker: each exits normally, but the one the test killed."""
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == (KILLED if proc is killed else 0), err


def test_four_workers_run_every_key_exactly_once(any_store: str, tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    _finish(_start(any_store, log, 0.05))
    events = _events(log)
    ends = Counter(k for kind, k, _ in events if kind == "end")
    starts = Counter(k for kind, k, _ in events if kind == "start")
    assert ends == Counter(range(40))
    assert starts == Counter(range(40))  # nothing was even started twice
    assert len({pid for _, _, pid in events}) >= 2  # the grid really was shared
    assert len(get_backend(any_store).load()) == 40
    assert get_backend(any_store).in_progress() == []


#: A worker that opens the (still empty) store, waits for the others, then walks the
#: same keys with a body that does nothing: the tightest race between a worker that
#: finishes a run and one that is about to claim it.
_RACER = """
import os, sys, time
import stet

store, barrier, log, index = sys.argv[1:5]

@stet.once(store=store, claim=True, quiet=True)
def f(k):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{k}\\n".encode())
    os.close(fd)

f.has(-1)  # open the store while it has no record at all
open(os.path.join(barrier, f"ready-{index}"), "w").close()
while not os.path.exists(os.path.join(barrier, "go")):
    time.sleep(0.001)
for k in range(60):
    f(k)
"""


def test_workers_that_opened_an_empty_store_never_rerun_a_finished_run(
    any_store: str, tmp_path: Path
) -> None:
    """Regression: a SQLite worker that had seen no records table skipped the "already
    done?" check of its claims, so it claimed and ran again runs another worker had just
    finished (1 to 3 of 60 keys ran twice with 8 workers)."""
    script, barrier, log = tmp_path / "racer.py", tmp_path / "barrier", tmp_path / "ran.txt"
    script.write_text(_RACER)
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), any_store, str(barrier), str(log), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    deadline = time.time() + 120
    while len(list(barrier.glob("ready-*"))) < len(procs):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.time() < deadline, "the workers did not all start"
        time.sleep(0.01)
    (barrier / "go").touch()
    _finish(procs)
    ran = Counter(int(line) for line in log.read_text().split())
    assert ran == Counter(range(60)), {k: n for k, n in ran.items() if n != 1}
    assert len(get_backend(any_store).load()) == 60


def test_killed_worker_key_is_run_by_a_survivor(any_store: str, tmp_path: Path) -> None:
    """On Windows stet cannot tell that the victim died (``pid_alive``), so the
    survivors take its run over once its lease (30 s in the script) runs out."""
    log = tmp_path / "log.txt"
    procs = _start(any_store, log, 0.3)
    victim = procs[0]
    deadline = time.time() + 60
    killed_key = None
    while killed_key is None and time.time() < deadline:
        running = {}
        for kind, key, pid in _events(log):
            if pid == victim.pid:
                if kind == "start":
                    running[key] = True
                else:
                    running.pop(key, None)
        if running:
            victim.kill()  # SIGKILL; TerminateProcess on Windows
            killed_key = next(iter(running))
        time.sleep(0.01)
    assert killed_key is not None, "the victim never started a run"
    _finish(procs, killed=victim)
    events = _events(log)
    survivors_ends = Counter(k for kind, k, pid in events if kind == "end" and pid != victim.pid)
    victim_ends = Counter(k for kind, k, pid in events if kind == "end" and pid == victim.pid)
    assert killed_key not in victim_ends
    assert survivors_ends[killed_key] == 1  # taken over from the dead worker
    assert survivors_ends + victim_ends == Counter(range(40))  # each key once in all
    rows = get_backend(any_store).load()
    assert len(rows) == 40


def test_claims_are_released_when_the_function_raises(any_store: str) -> None:
    script = (
        "import stet, sys\n"
        f"@stet.once(store={any_store!r}, claim=True)\n"
        "def f(x):\n"
        "    raise ValueError('no')\n"
        "try:\n"
        "    f(1)\n"
        "except ValueError:\n"
        "    pass\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, env=child_env())
    backend = get_backend(any_store)
    assert backend.in_progress() == []
    assert not backend.has({"x": 1})


@pytest.mark.parametrize(
    "context",
    [pytest.param("fork", marks=pytest.mark.skipif(not CAN_FORK, reason=NO_FORK)), "spawn"],
)
def test_pool_workers_with_claims(tmp_path: Path, context: str) -> None:
    import multiprocessing

    from _claims_pool import run_pool

    store = str(tmp_path / "runs.sqlite")
    counts = run_pool(store, multiprocessing.get_context(context))
    assert sorted(counts) == list(range(20))
    assert len(get_backend(store).load()) == 20
