"""Functions sharing one store (SPEC S3, S4): each has its own runs.

A record names the function that completed it (``_stet_func``), so two functions with
the same parameters never skip each other's runs. Records that name no function
(written by stet 0.0.x, by pandas, by ``stet import`` or by ``backend.record``) count
for every function with the same key names. ``once(name=...)`` sets the recorded
name: a renamed function keeps its history, two functions can share runs on purpose.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import stet
from _helpers import PYTHON, child_env, read_standard, run_python, write_0_0_x_store
from stet.backends import get_backend

#: A sweep of two functions with the same parameters on one store. It prints which
#: calls ran. ``default`` as the store means the bare ``@stet.once``.
TWO_FUNCTIONS = r"""
import json
import sys

import stet

store = sys.argv[1]
decorate = stet.once if store == "default" else stet.once(store=store, quiet=True)
ran = []

@decorate
def train(alpha, seed):
    ran.append(["train", alpha, seed])

@decorate
def evaluate(alpha, seed):
    ran.append(["evaluate", alpha, seed])

for alpha in (0.1, 0.2):
    train(alpha, 1)
    evaluate(alpha, 1)
print("RAN " + json.dumps(ran))
"""


def _ran(out: str) -> list[list[object]]:
    line = next(line for line in out.splitlines() if line.startswith("RAN "))
    ran: list[list[object]] = json.loads(line[len("RAN ") :])
    return ran


def test_evaluate_runs_on_its_first_call_after_train_with_the_default_store(
    tmp_path: Path,
) -> None:
    """Regression: two functions with the same parameters shared their runs, so
    ``evaluate(0.1, 1)`` was skipped because ``train(0.1, 1)`` had completed."""
    ran: list[str] = []

    @stet.once
    def train(alpha: float, seed: int) -> None:
        ran.append("train")

    @stet.once
    def evaluate(alpha: float, seed: int) -> None:
        ran.append("evaluate")

    train(0.1, 1)
    evaluate(0.1, 1)
    train(0.1, 1)
    evaluate(0.1, 1)
    assert ran == ["train", "evaluate"]
    rows = read_standard(tmp_path / "_stet_store.csv")
    assert [(r["alpha"], r["seed"], r["_stet_func"]) for r in rows] == [
        ("0.1", "1", "train"),
        ("0.1", "1", "evaluate"),
    ]


@pytest.mark.parametrize("where", ["default", ".csv", ".json", ".sqlite", ".parquet"])
def test_two_functions_keep_their_own_runs_across_restarts(tmp_path: Path, where: str) -> None:
    store = "default" if where == "default" else str(tmp_path / f"runs{where}")
    script = tmp_path / "sweep.py"
    script.write_text(TWO_FUNCTIONS)
    first = _ran(run_python([str(script), store], cwd=tmp_path).stdout)
    assert first == [
        ["train", 0.1, 1],
        ["evaluate", 0.1, 1],
        ["train", 0.2, 1],
        ["evaluate", 0.2, 1],
    ]
    assert _ran(run_python([str(script), store], cwd=tmp_path).stdout) == []
    path = tmp_path / "_stet_store.csv" if where == "default" else Path(store)
    rows = read_standard(path)
    assert sorted((r["_stet_func"], r["alpha"]) for r in rows) == [
        ("evaluate", "0.1"),
        ("evaluate", "0.2"),
        ("train", "0.1"),
        ("train", "0.2"),
    ]


# -- records that name no function ---------------------------------------------------


def _legacy_rows(store: Path) -> None:
    stamp = "2025-01-01T00:00:00"
    write_0_0_x_store(
        store,
        [
            {"alpha": "0.1", "seed": "1", "_stet_timestamp": stamp},
            {"alpha": "0.2", "seed": "1", "_stet_timestamp": stamp},
        ],
    )


def _imported_rows(store: Path) -> None:
    results = store.parent / "results.csv"
    results.write_text("alpha,seed,score\n0.1,1,0.9\n0.2,1,0.8\n")
    run_python(
        ["-m", "stet", "import", str(results), "--key", "alpha,seed", "--store", str(store)],
        cwd=store.parent,
    )


def _backend_rows(store: Path) -> None:
    backend = get_backend(store)
    backend.record({"alpha": 0.1, "seed": 1})
    backend.record({"alpha": "0.2", "seed": "1"})  # as text, as 0.0.x docs taught


@pytest.mark.parametrize(
    "write",
    [_legacy_rows, _imported_rows, _backend_rows],
    ids=["written-by-0.0.x", "stet-import", "backend-record"],
)
def test_records_without_a_function_count_for_every_function_with_those_key_names(
    store: Path, write: object
) -> None:
    assert callable(write)
    write(store)
    ran: list[tuple[str, object]] = []

    @stet.once(store=store, quiet=True)
    def train(alpha: float, seed: int) -> None:
        ran.append(("train", alpha))

    @stet.once(store=store, quiet=True)
    def evaluate(alpha: float, seed: int) -> None:
        ran.append(("evaluate", alpha))

    @stet.once(store=store, quiet=True)
    def narrower(alpha: float) -> None:
        ran.append(("narrower", alpha))

    @stet.once(store=store, quiet=True)
    def wider(alpha: float, seed: int, lr: float = 0.01) -> None:
        ran.append(("wider", alpha))

    for alpha in (0.1, 0.2):
        train(alpha, 1)
        evaluate(alpha, 1)
        narrower(alpha)
        wider(alpha, 1)
    train(0.3, 1)
    assert ran == [
        ("narrower", 0.1),
        ("wider", 0.1),
        ("narrower", 0.2),
        ("wider", 0.2),
        ("train", 0.3),
    ]


# -- once(name=...) -------------------------------------------------------------------


def test_a_renamed_function_keeps_its_history_with_once_name(store: Path) -> None:
    @stet.once(store=store, quiet=True)
    def train(alpha: float, seed: int) -> None:
        pass

    train(0.1, 1)
    ran: list[float] = []

    @stet.once(store=store, quiet=True, name="train")
    def train_v2(alpha: float, seed: int) -> None:
        ran.append(alpha)

    assert train_v2.name == "train"
    train_v2(0.1, 1)
    train_v2(0.2, 1)
    assert ran == [0.2]
    assert [r["_stet_func"] for r in get_backend(store).load()] == ["train", "train"]


def test_once_name_lets_two_functions_share_their_runs_on_purpose(
    tmp_path: Path, store: Path
) -> None:
    script = tmp_path / "shared.py"
    script.write_text(
        "import sys, stet\n"
        "@stet.once(store=sys.argv[1], quiet=True, name='simulate')\n"
        "def simulate_cpu(n, seed):\n"
        "    print('cpu', n, seed)\n"
        "@stet.once(store=sys.argv[1], quiet=True, name='simulate')\n"
        "def simulate_gpu(n, seed):\n"
        "    print('gpu', n, seed)\n"
        "simulate_cpu(10, 1)\n"
        "simulate_gpu(10, 1)\n"
        "simulate_gpu(20, 1)\n"
    )
    first = run_python([str(script), str(store)], cwd=tmp_path).stdout.splitlines()
    assert first == ["cpu 10 1", "gpu 20 1"]
    assert run_python([str(script), str(store)], cwd=tmp_path).stdout == ""


def test_once_name_must_be_printable_text(tmp_path: Path) -> None:
    """A name with a line break would split a CSV record over two lines."""

    def f(x: int) -> None:
        pass

    with pytest.raises(ValueError, match="name="):
        stet.once(store=tmp_path / "runs.csv", name="two\nlines")(f)


# -- status per function ----------------------------------------------------------------


def _three_kinds(store: Path) -> None:
    @stet.once(store=store, quiet=True)
    def train(alpha: float, seed: int) -> None:
        pass

    @stet.once(store=store, quiet=True)
    def evaluate(alpha: float, seed: int) -> None:
        pass

    train(0.1, 1)
    train(0.2, 1)
    evaluate(0.1, 1)
    get_backend(store).record({"alpha": 0.3, "seed": 1})


BY_FUNCTION = "[stet] By function: evaluate: 1, train: 2, (no function): 1"


def test_status_counts_runs_per_function(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _three_kinds(store)
    capsys.readouterr()
    summary = stet.status(store)
    assert summary.completed == 4
    assert summary.by_function == {"train": 2, "evaluate": 1, None: 1}
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [
        f"[stet] Store: {store}",
        "[stet] 4 completed experiments recorded",
        BY_FUNCTION,
    ]


def test_status_of_a_store_of_one_function_has_no_per_function_line(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    @stet.once(store=store, quiet=True)
    def train(alpha: float) -> None:
        pass

    train(0.1)
    capsys.readouterr()
    assert stet.status(store).by_function == {"train": 1}
    assert "By function" not in capsys.readouterr().out


def test_cli_status_counts_runs_per_function(tmp_path: Path, store: Path) -> None:
    _three_kinds(store)
    out = subprocess.run(
        [PYTHON, "-m", "stet", "status", str(store)],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert BY_FUNCTION in out.stdout.splitlines()
    assert "[stet] 4 completed experiments recorded" in out.stdout


def test_first_call_counts_the_runs_this_function_would_skip(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its own two runs and the one recorded without a function (which ``train(0.3, 1)``
    would skip); not ``evaluate``'s run."""
    _three_kinds(store)
    capsys.readouterr()

    @stet.once(store=store)
    def train(alpha: float, seed: int) -> None:
        pass

    train(0.1, 1)
    assert capsys.readouterr().out.splitlines()[0] == (
        f"[stet] train: store {store} holds 3 completed runs of it"
    )
