"""Decorated functions and backends travel to worker processes (SPEC S5, picklable).

Real scripts run with subprocess: the decorated function is either imported from
``tests/sweep_module.py`` or defined in the script's ``__main__``. Each script first
calls the function in the parent (so a backend, its index and any SQLite connection
exist before the workers start), then maps it over a pool. Every execution appends a
line to a side file; running the same script again must execute nothing.
"""

from __future__ import annotations

import importlib
import json
import pickle
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import cloudpickle  # type: ignore[import-untyped]
import pytest

import stet
from _helpers import CAN_FORK, NO_FORK, child_env, run_python
from stet.backends import get_backend

N = 12

SCRIPT = r"""
import json
import os
import sys
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

import stet
from filelock import FileLock

STORE = os.environ["STET_SWEEP_STORE"]
LOG = os.environ["STET_SWEEP_LOG"]

if os.environ["SWEEP_WHERE"] == "module":
    from sweep_module import experiment
else:

    @stet.once(store=STORE, quiet=True)
    def experiment(x: int, tag: str = "a") -> int:
        # Appends from two processes can overwrite each other on Windows (its C runtime
        # seeks to the end, then writes), so the log has a lock of its own.
        with FileLock(LOG + ".lock"), open(LOG, "a", encoding="utf-8") as fh:
            fh.write(f"{x} {tag} {os.getpid()}\n")
        return x * 2


def main(mode: str, n: int) -> None:
    xs = list(range(n))
    first = experiment(-1)  # the parent uses its store before the workers start
    if mode in ("fork", "spawn"):
        with mp.get_context(mode).Pool(2) as pool:
            results = pool.map(experiment, xs)
    elif mode == "executor":
        with ProcessPoolExecutor(2) as ex:
            results = list(ex.map(experiment, xs))
    elif mode == "executor-spawn":
        with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
            results = list(ex.map(experiment, xs))
    elif mode == "loky":
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=2, backend="loky")(delayed(experiment)(x) for x in xs)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print("RESULTS " + json.dumps([first, results]), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
"""


def _run_sweep(
    tmp_path: Path, store: Path, where: str, mode: str
) -> tuple[object, list[object], list[int]]:
    """Run the script once; return (parent's result, workers' results, log lines)."""
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT)
    log = tmp_path / "executions.log"
    env = child_env(
        STET_SWEEP_STORE=str(store), STET_SWEEP_LOG=str(log), SWEEP_WHERE=where, STET_QUIET="1"
    )
    proc = run_python([str(script), mode, str(N)], cwd=tmp_path, env=env, timeout=180)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")]
    assert len(lines) == 1, proc.stdout
    first, results = json.loads(lines[0][len("RESULTS ") :])
    executed = (
        [int(line.split()[0]) for line in log.read_text().splitlines()] if log.exists() else []
    )
    return first, results, executed


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("fork", marks=pytest.mark.skipif(not CAN_FORK, reason=NO_FORK)),
        "spawn",
        "executor",  # the platform's default start method
        "executor-spawn",
        "loky",
    ],
)
@pytest.mark.parametrize("where", ["module", "main"])
def test_sweep_in_worker_pool_then_rerun_executes_nothing(
    tmp_path: Path, store: Path, where: str, mode: str
) -> None:
    first, results, executed = _run_sweep(tmp_path, store, where, mode)
    assert first == -2
    assert results == [2 * x for x in range(N)]
    assert sorted(executed) == [-1, *range(N)], "each run executes exactly once"

    rows = get_backend(store).load()
    assert sorted(int(r["x"]) for r in rows) == [-1, *range(N)]

    # The same script again: everything is skipped, in the parent and in the workers.
    first, results, executed_again = _run_sweep(tmp_path, store, where, mode)
    assert first is None
    assert results == [None] * N
    assert executed_again == executed, "a completed run was executed again"
    assert len(get_backend(store).load()) == N + 1


# -- pickle round trips in this process ----------------------------------------------


@pytest.fixture
def sweep_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``tests/sweep_module.py`` imported against a store in this test's directory."""
    monkeypatch.setenv("STET_SWEEP_STORE", str(tmp_path / "module_runs.csv"))
    monkeypatch.setenv("STET_SWEEP_LOG", str(tmp_path / "module.log"))
    sys.modules.pop("sweep_module", None)
    module = importlib.import_module("sweep_module")
    try:
        yield module
    finally:
        sys.modules.pop("sweep_module", None)


def test_pickle_round_trips_a_module_level_decorated_function(
    sweep_module: ModuleType, tmp_path: Path
) -> None:
    f = sweep_module.experiment
    assert f(3) == 6
    data = pickle.dumps(f)
    assert len(data) < 200, "a module function pickles by reference"
    g = pickle.loads(data)
    assert g is f
    assert g(3) is None  # skipped: already recorded
    assert g(4) == 8
    assert (tmp_path / "module.log").read_text().count("\n") == 2
    assert get_backend(tmp_path / "module_runs.csv").has({"x": 4, "tag": "a"})


def test_cloudpickle_by_value_carries_only_configuration(store: Path) -> None:
    """What loky and Dask do with a function defined in __main__ or a notebook."""
    secret = f"SECRET-{uuid.uuid4().hex}"

    @stet.once(store=store, key=["name"], quiet=True)
    def experiment(name: str, verbose: bool = False) -> str:
        return name.upper()

    assert experiment(secret) == secret.upper()
    assert experiment.has(secret)  # the index now holds the secret's digest
    data = cloudpickle.dumps(experiment)
    assert secret.encode() not in data, "the pickle carries recorded runs"
    copy = cloudpickle.loads(data)
    assert copy.store == experiment.store
    assert copy.key == ("name",)
    assert copy(secret) is None  # the copy reads the same store: skipped
    assert copy("other") == "OTHER"
    assert experiment.has("other")


NOTEBOOK = r"""
import sys
import cloudpickle
import stet

LOG = sys.argv[2]  # a notebook global: travels with the function

@stet.once(store=sys.argv[1], quiet=True)
def cell_experiment(alpha, seed=0):
    with open(LOG, "a") as fh:
        fh.write(f"{alpha} {seed}\n")
    return alpha * 10 + seed

cell_experiment(1)          # recorded before the function is shipped
with open(sys.argv[3], "wb") as fh:
    cloudpickle.dump(cell_experiment, fh)
"""

WORKER = r"""
import sys
import cloudpickle

with open(sys.argv[1], "rb") as fh:
    f = cloudpickle.load(fh)
print([f(1), f(2), f(2), f(alpha=3, seed=1)])
"""


def test_notebook_function_runs_in_a_process_that_never_defined_it(
    tmp_path: Path, store: Path
) -> None:
    (tmp_path / "notebook.py").write_text(NOTEBOOK)
    (tmp_path / "worker.py").write_text(WORKER)
    log = tmp_path / "log.txt"
    payload = tmp_path / "f.pkl"
    run_python(["notebook.py", str(store), str(log), str(payload)], cwd=tmp_path)
    env = child_env(STET_QUIET="1")
    out = run_python(["worker.py", str(payload)], cwd=tmp_path, env=env).stdout
    assert out.strip() == "[None, 20, None, 31]"
    assert log.read_text().splitlines() == ["1 0", "2 0", "3 1"]
    again = run_python(["worker.py", str(payload)], cwd=tmp_path, env=env).stdout
    assert again.strip() == "[None, None, None, None]"
    assert log.read_text().splitlines() == ["1 0", "2 0", "3 1"]


def test_pickled_backend_carries_only_configuration(store: Path) -> None:
    secret = f"SECRET-{uuid.uuid4().hex}"
    backend = get_backend(store)
    backend.record({"name": secret, "n": 1})
    backend.record({"name": "plain", "n": 2})
    assert backend.has({"name": secret, "n": 1})  # index, lock and connection exist
    assert len(backend.load()) == 2
    data = pickle.dumps(backend)
    assert secret.encode() not in data, "the pickle carries recorded runs"
    assert b"plain" not in data
    assert len(data) < 400, f"{len(data)} bytes: more than a path"
    copy = pickle.loads(data)
    assert type(copy) is type(backend)
    assert copy.path == backend.path
    assert copy.has({"name": secret, "n": 1})
    copy.record({"name": "from the copy", "n": 3})
    assert backend.has({"name": "from the copy", "n": 3})
    assert pickle.loads(pickle.dumps(copy)).has({"name": "plain", "n": 2})
