"""Progress (SPEC S6): pending points with a length, the first-call and summary lines,
and ``stet status --grid`` from the shell, including runs held by workers elsewhere.

The script-level messages are checked in real child processes: the summary line is
printed when the interpreter exits, which only a real process shows.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tqdm import tqdm

import stet
from _helpers import PYTHON, STET_DIR, child_env

# -- f.pending(grid) has a length ----------------------------------------------------


@pytest.fixture
def train(tmp_path: Path) -> stet.OnceFunction[..., None]:
    """``train(alpha, seed)`` on a CSV store where (0.1, 0) and (0.2, 1) completed."""

    @stet.once(tmp_path / "runs.csv", quiet=True)
    def train(alpha: float, seed: int) -> None:
        pass

    train(0.1, 0)
    train(0.2, 1)
    return train


GRID: dict[str, list[Any]] = {"alpha": [0.1, 0.2, 0.3], "seed": [0, 1, 2]}


def test_len_of_pending_is_the_number_of_points_left(train: stet.OnceFunction[..., None]) -> None:
    assert len(train.pending(GRID)) == 7
    points = [{"alpha": a, "seed": s} for a in GRID["alpha"] for s in GRID["seed"]]
    assert len(train.pending(points)) == 7
    assert len(train.pending(iter([(0.1, 0), (0.1, 1), (0.2, 1)]))) == 1  # a generator too
    assert len(train.pending({"alpha": [0.1], "seed": [0]})) == 0
    assert not train.pending({"alpha": [0.1], "seed": [0]})


def test_tqdm_gets_the_total_from_pending(train: stet.OnceFunction[..., None]) -> None:
    out = io.StringIO()
    bar = tqdm(train.pending(GRID), file=out, mininterval=0)
    assert bar.total == 7
    for point in bar:
        train(**point)
    bar.close()
    assert bar.n == 7
    assert "7/7" in out.getvalue()
    assert len(train.pending(GRID)) == 0


def test_pending_keeps_its_answer_while_the_loop_runs(train: stet.OnceFunction[..., None]) -> None:
    todo = train.pending(GRID)
    assert len(todo) == 7
    done = 0
    for point in todo:  # recording runs does not shrink the list being iterated
        train(**point)
        done += 1
    assert (done, len(todo)) == (7, 7)


def test_pending_yields_the_same_points_as_list(train: stet.OnceFunction[..., None]) -> None:
    todo = train.pending(GRID)
    assert list(todo) == list(train.pending(GRID))
    assert next(iter(todo)) == {"alpha": 0.1, "seed": 1}
    assert len(list(todo)) == len(todo)


RESUMED = """
import sys
import stet

@stet.once(sys.argv[1], quiet=True)
def train(alpha, seed):
    pass

todo = train.pending({"alpha": [0.1, 0.2], "seed": [0, 1, 2]})
print(len(todo))
for point in todo:
    train(**point)
    if point["seed"] == 1:
        break  # stopped part-way, as by a crash or a time limit
"""


def test_pending_is_the_first_thing_a_resumed_script_asks(
    any_store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    (tmp_path / "sweep.py").write_text(RESUMED, encoding="utf-8")
    counts = []
    for _ in range(3):  # three runs of the script, each a new process
        out = subprocess.run(
            [PYTHON, "sweep.py", any_store],
            cwd=tmp_path,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        counts.append(int(out.stdout))
    assert counts == [6, 4, 1]


# -- the lines a script prints ---------------------------------------------------------

SWEEP = """
import sys
import stet

quiet = {"none": None, "true": True, "false": False}[sys.argv[1]]


@stet.once("runs.csv", quiet=quiet)
def train(seed):
    if seed == int(sys.argv[2]):
        raise ValueError("diverged")


for seed in range(int(sys.argv[3])):
    try:
        train(seed)
    except ValueError:
        pass
"""


def sweep(
    cwd: Path, quiet: str, failing: int, points: int, **env: str
) -> subprocess.CompletedProcess[str]:
    (cwd / "sweep.py").write_text(SWEEP, encoding="utf-8")
    return subprocess.run(
        [PYTHON, "sweep.py", quiet, str(failing), str(points)],
        cwd=cwd,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def summary_lines(out: str) -> list[str]:
    return [
        line for line in out.splitlines() if line.startswith("[stet] train: ") and " ran" in line
    ]


def test_a_script_ends_with_one_summary_line(tmp_path: Path) -> None:
    first = sweep(tmp_path, "none", failing=5, points=1203)
    assert first.stdout.splitlines()[-1] == "[stet] train: 1,202 ran, 0 skipped, 1 failed"
    again = sweep(tmp_path, "none", failing=5, points=1206)  # three new points, 5 fails again
    assert again.stdout.splitlines()[-1] == "[stet] train: 3 ran, 1,202 skipped, 1 failed"
    assert len(summary_lines(again.stdout)) == 1


def test_the_summary_leaves_out_failed_when_nothing_failed(tmp_path: Path) -> None:
    out = sweep(tmp_path, "none", failing=-1, points=3)
    assert out.stdout.splitlines()[-1] == "[stet] train: 3 ran, 0 skipped"


@pytest.mark.parametrize(
    ("quiet", "env"),
    [("true", {}), ("none", {"STET_QUIET": "1"})],
    ids=["quiet=True", "STET_QUIET=1"],
)
def test_quiet_prints_no_summary(tmp_path: Path, quiet: str, env: dict[str, str]) -> None:
    sweep(tmp_path, quiet, failing=1, points=3, **env)
    out = sweep(tmp_path, quiet, failing=1, points=4, **env)
    assert out.stdout == ""


def test_quiet_false_prints_the_summary_whatever_stet_quiet_says(tmp_path: Path) -> None:
    out = sweep(tmp_path, "false", failing=-1, points=2, STET_QUIET="1")
    assert out.stdout.splitlines()[-1] == "[stet] train: 2 ran, 0 skipped"


def test_the_first_call_names_the_store_and_its_runs_of_this_function(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"

    @stet.once(store, quiet=True)
    def prepare(dataset: str) -> None:
        pass

    prepare("mnist")  # another function's record in the same store is not counted
    first = sweep(tmp_path, "none", failing=-1, points=3)
    assert (
        first.stdout.splitlines()[0] == f"[stet] train: store {store} holds 0 completed runs of it"
    )
    again = sweep(tmp_path, "none", failing=-1, points=4)
    lines = again.stdout.splitlines()
    assert lines[0] == f"[stet] train: store {store} holds 3 completed runs of it"
    assert sum(line.startswith("[stet] train: store ") for line in lines) == 1


def test_the_first_call_on_a_new_store_says_it_is_new(tmp_path: Path) -> None:
    out = sweep(tmp_path, "none", failing=-1, points=1)
    assert out.stdout.splitlines()[0] == (
        f"[stet] train: store {tmp_path / 'runs.csv'} (new, nothing recorded yet)"
    )


# -- stet status --grid from the shell ---------------------------------------------------


def stet_command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "stet", *args],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _fill(store: str, seeds: range) -> None:
    @stet.once(store, quiet=True)
    def train(alpha: float, seed: int) -> None:
        time.sleep(0.01)

    for seed in seeds:
        train(0.1, seed)


@pytest.mark.parametrize(
    ("given_as", "progress"),
    [
        ("json-text", "[stet] Progress: 3 / 6 done (50.0%)"),
        ("json-file", "[stet] Progress: 3 / 6 done (50.0%)"),
        ("list-of-dicts", "[stet] Progress: 4 / 6 done (66.7%)"),
    ],
)
def test_status_grid_shows_progress_and_eta(
    any_store: str, tmp_path: Path, given_as: str, progress: str
) -> None:
    _fill(any_store, range(4))  # seeds 0-3 of alpha 0.1
    grid: object = {"alpha": [0.1, 0.2], "seed": [0, 1, 2]}
    if given_as == "list-of-dicts":
        grid = [{"alpha": 0.1, "seed": s} for s in range(6)]
    text = json.dumps(grid)
    if given_as == "json-file":
        (tmp_path / "grid.json").write_text(text, encoding="utf-8")
        text = "grid.json"
    out = stet_command("status", any_store, "--grid", text, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert progress in lines
    [eta] = [line for line in lines if line.startswith("[stet] ETA: ")]
    assert eta.endswith(" s per run)")


def test_status_grid_without_eta_when_the_grid_is_done(tmp_path: Path) -> None:
    store = str(tmp_path / "runs.json")
    _fill(store, range(2))
    out = stet_command("status", store, "--grid", '{"alpha": [0.1], "seed": [0, 1]}', cwd=tmp_path)
    lines = out.stdout.splitlines()
    assert "[stet] Progress: 2 / 2 done (100.0%)" in lines
    assert not any(line.startswith("[stet] ETA") for line in lines)


@pytest.mark.parametrize(
    "grid",
    ['{"alpha": 0.1}', "[1, 2]", "{not json", "missing.json"],
    ids=["dict-of-scalar", "list-of-numbers", "bad-json", "missing-file"],
)
def test_status_grid_that_is_not_a_grid_is_a_usage_error(tmp_path: Path, grid: str) -> None:
    store = str(tmp_path / "runs.csv")
    _fill(store, range(1))
    out = stet_command("status", store, "--grid", grid, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("stet: error: --grid")
    assert "Traceback" not in out.stderr


# -- runs in progress on another host -------------------------------------------------

WORKER = """
import os, sys, time
import stet

@stet.once(sys.argv[1], claim=True, lease=600, quiet=True)
def train(alpha, seed):
    open("started", "w").close()
    deadline = time.monotonic() + 90
    while not os.path.exists("release") and time.monotonic() < deadline:
        time.sleep(0.05)

train(0.1, 5)
"""

OTHER_HOST = "node-7"


def _can_name_another_host() -> str | None:
    """Why a child cannot run under another host name (a UTS namespace), or None."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return "needs Linux and unshare(1) to run a worker under another host name"
    probe = subprocess.run(
        ["unshare", "--uts", "sh", "-c", f"hostname {OTHER_HOST} && hostname"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0 or probe.stdout.strip() != OTHER_HOST:
        return f"cannot give a child another host name here: {probe.stderr.strip()}"
    return None


@pytest.fixture
def worker_on_another_host(any_store: str, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A worker process whose host name is node-7, holding the claim on (0.1, 5)."""
    why = _can_name_another_host()
    if why is not None:
        pytest.skip(why)
    work = tmp_path / "worker"
    work.mkdir()
    (work / "worker.py").write_text(WORKER, encoding="utf-8")
    env = child_env()
    command = f"hostname {OTHER_HOST} && exec {PYTHON} worker.py '{any_store}'"
    proc = subprocess.Popen(["unshare", "--uts", "sh", "-c", command], cwd=work, env=env, text=True)
    deadline = time.monotonic() + 60
    while not (work / "started").exists():
        assert proc.poll() is None, "the worker ended before it started its run"
        assert time.monotonic() < deadline, "the worker did not start its run within 60 s"
        time.sleep(0.05)
    try:
        yield proc
    finally:
        (work / "release").touch()
        proc.wait(timeout=60)


def test_status_grid_shows_runs_in_progress_on_another_host(
    any_store: str, tmp_path: Path, worker_on_another_host: subprocess.Popen[str]
) -> None:
    _fill(any_store, range(2))
    out = stet_command(
        "status", any_store, "--grid", '{"alpha": [0.1], "seed": [0, 1, 2, 3, 4, 5]}', cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "[stet] Progress: 2 / 6 done (33.3%)" in lines  # a run in progress is not done
    assert "[stet] 1 runs in progress (claimed by live workers)" in lines
    [held] = [line for line in lines if line.startswith("[stet]   ")]
    pid = worker_on_another_host.pid  # exec keeps the pid: the worker is this process
    assert held.startswith(f"[stet]   alpha=0.1, seed=5 on {OTHER_HOST} (pid {pid}), lease ")
    assert held.endswith(" s left")


def test_a_run_held_on_another_host_is_skipped_here(
    any_store: str,
    worker_on_another_host: subprocess.Popen[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls: list[int] = []

    @stet.once(any_store, claim=True)
    def train(alpha: float, seed: int) -> None:
        calls.append(seed)

    assert list(train.pending({"alpha": [0.1], "seed": [4, 5]})) == [{"alpha": 0.1, "seed": 4}]
    train(0.1, 5)
    assert calls == []
    pid = worker_on_another_host.pid
    assert (
        f"[stet] Skipping train(alpha=0.1, seed=5): another worker is running it "
        f"({OTHER_HOST}, pid {pid})"
    ) in capsys.readouterr().out.splitlines()


def test_children_import_this_checkout() -> None:
    out = subprocess.run(
        [PYTHON, "-c", "import stet; print(stet.__file__)"],
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert Path(out.stdout.strip()).parent == STET_DIR / "stet"
    assert os.fspath(STET_DIR) in child_env()["PYTHONPATH"].split(os.pathsep)
