"""The stet command line, run as a real console script in a subprocess."""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import stet
from _helpers import child_env
from stet.backends import get_backend


@functools.cache
def script() -> str:
    """The installed ``stet`` console script: ``bin/stet``, or ``Scripts\\stet.exe`` on
    Windows, which is not next to ``python.exe`` outside a virtual environment."""
    folders = [
        sysconfig.get_path("scripts"),
        sysconfig.get_path("scripts", sysconfig.get_preferred_scheme("user")),
        os.path.dirname(sys.executable),
    ]
    found = shutil.which("stet", path=os.pathsep.join(folders))
    assert found, f"no stet console script in {folders}: pip install -e ."
    return found


def run(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [script(), *args],
        cwd=cwd,
        env=child_env(),  # this checkout's stet, whatever the console script was installed from
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


def _fill(store: Path) -> None:
    backend = get_backend(store)
    for alpha in (0.1, 0.2):
        for seed in (1, 2):
            backend.record({"alpha": alpha, "seed": seed})


def test_version(tmp_path: Path) -> None:
    out = run("--version", cwd=tmp_path)
    assert out.returncode == 0
    assert out.stdout.strip() == f"stet {stet.__version__}"


def test_python_dash_m_is_the_same_command(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stet", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"stet {stet.__version__}"


def test_status(tmp_path: Path, ext: str) -> None:
    store = tmp_path / f"runs{ext}"
    _fill(store)
    out = run("status", store.name, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "[stet] 4 completed experiments recorded" in out.stdout
    assert "[stet] Key columns: alpha, seed" in out.stdout


def test_status_default_store_and_missing_store(tmp_path: Path) -> None:
    out = run("status", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1  # one line, no traceback
    assert "_stet_store.csv" in out.stderr
    _fill(tmp_path / "_stet_store.csv")
    assert run("status", cwd=tmp_path).returncode == 0


def test_show_table_with_limit(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"
    _fill(store)
    out = run("show", "runs.csv", "--limit", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["alpha", "seed", "_stet_func", "_stet_timestamp"]
    assert [line.split()[:2] for line in lines[1:3]] == [["0.2", "1"], ["0.2", "2"]]
    assert "2 most recent of 4" in lines[3]


def test_reset_where_removes_exactly_one(tmp_path: Path, ext: str) -> None:
    store = tmp_path / f"runs{ext}"
    _fill(store)
    out = run("reset", store.name, "--where", "alpha=0.1", "--where", "seed=2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Removed entry" in out.stdout
    backend = get_backend(store)
    assert not backend.has({"alpha": 0.1, "seed": 2})
    assert len(backend.load()) == 3


def test_reset_where_unknown_column_is_one_line_error(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"
    _fill(store)
    before = store.read_bytes()
    out = run("reset", "runs.csv", "--where", "alpah=0.1", cwd=tmp_path)
    assert out.returncode == 2  # a usage mistake
    assert "key columns are: alpha, seed" in out.stderr
    assert "Traceback" not in out.stderr
    assert store.read_bytes() == before


def test_reset_all_needs_yes_without_a_terminal(tmp_path: Path) -> None:
    store = tmp_path / "runs.json"
    _fill(store)
    out = run("reset", "runs.json", cwd=tmp_path, stdin="")
    assert out.returncode == 2
    assert "--yes" in out.stderr
    assert len(get_backend(store).load()) == 4
    out = run("reset", "runs.json", "--yes", cwd=tmp_path)
    assert out.returncode == 0
    assert get_backend(store).load() == []


def test_reset_where_matching_nothing_exits_1(tmp_path: Path) -> None:
    _fill(tmp_path / "runs.csv")
    out = run("reset", "runs.csv", "--where", "alpha=0.9", "--where", "seed=1", cwd=tmp_path)
    assert out.returncode == 1
    assert "No record matches" in out.stdout
    assert len(get_backend(tmp_path / "runs.csv").load()) == 4


def test_import_with_a_short_row_imports_nothing(tmp_path: Path) -> None:
    (tmp_path / "results.csv").write_text("alpha,seed\n0.1,1\n0.2\n")
    out = run("import", "results.csv", "--key", "alpha,seed", cwd=tmp_path)
    assert out.returncode == 2
    assert "data row 2" in out.stderr
    assert not (tmp_path / "_stet_store.csv").exists()


def test_bad_where_syntax(tmp_path: Path) -> None:
    _fill(tmp_path / "runs.csv")
    out = run("reset", "runs.csv", "--where", "alpha", cwd=tmp_path)
    assert out.returncode == 2
    assert "NAME=VALUE" in out.stderr


def test_import_marks_results_done(tmp_path: Path, ext: str) -> None:
    results = tmp_path / "results.csv"
    results.write_text("alpha,seed,score\n0.1,1,0.5\n0.2,1,0.7\n0.1,1,0.5\nNA,3,0.1\n")
    store = tmp_path / f"runs{ext}"
    out = run("import", "results.csv", "--key", "alpha,seed", "--store", store.name, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Imported 3 runs" in out.stdout
    calls: list[tuple[object, int]] = []

    @stet.once(store=store, quiet=True)
    def f(alpha: object, seed: int) -> None:
        calls.append((alpha, seed))

    f(0.1, 1)
    f(0.2, 1)
    f("NA", 3)
    f(0.3, 1)
    assert calls == [(0.3, 1)]
    again = run("import", "results.csv", "--key", "alpha,seed", "--store", store.name, cwd=tmp_path)
    assert "Imported 0 runs" in again.stdout
    assert len(get_backend(store).load()) == 4


def test_import_missing_column(tmp_path: Path) -> None:
    (tmp_path / "results.csv").write_text("alpha,score\n0.1,0.5\n")
    out = run("import", "results.csv", "--key", "alpha,seed", cwd=tmp_path)
    assert out.returncode == 2
    assert "'seed'" in out.stderr and "alpha, score" in out.stderr
    assert not (tmp_path / "_stet_store.csv").exists()


@pytest.mark.parametrize("args", [["bogus"], ["show", "--limit", "x"], []])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    out = run(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert "usage: stet" in out.stderr


# -- failures --------------------------------------------------------------------------


def _sweep_with_failures(store: Path) -> None:
    @stet.once(store, quiet=True)
    def train(alpha: float, seed: int) -> None:
        if seed == 2:
            raise RuntimeError(f"CUDA out of memory (seed {seed})")

    for alpha in (0.1, 0.2):
        for seed in (1, 2):
            with contextlib.suppress(RuntimeError):
                train(alpha, seed)
    with contextlib.suppress(RuntimeError):
        train(0.1, 2)


def test_status_counts_failures(tmp_path: Path, ext: str) -> None:
    _sweep_with_failures(tmp_path / f"runs{ext}")
    out = run("status", f"runs{ext}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1] == (
        "[stet] 2 completed experiments recorded, 3 failed (2 distinct runs)"
    )


def test_show_failed_lists_the_failures(tmp_path: Path, ext: str) -> None:
    _sweep_with_failures(tmp_path / f"runs{ext}")
    out = run("show", f"runs{ext}", "--failed", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    header, *lines = out.stdout.splitlines()
    assert header.split() == [
        "alpha",
        "seed",
        "_stet_func",
        "error",
        "attempt",
        "host",
        "job",
        "duration",
        "_stet_timestamp",
    ]
    assert len(lines) == 3
    assert [line.split()[:3] for line in lines] == [
        ["0.1", "2", "train"],
        ["0.2", "2", "train"],
        ["0.1", "2", "train"],
    ]
    assert all("RuntimeError: CUDA out of memory (seed 2)" in line for line in lines)
    assert all(f"  {socket.gethostname()}  " in line for line in lines)
    assert "Traceback" not in out.stdout  # the traceback is in stet.load(failed=True)


def test_show_failed_limit(tmp_path: Path) -> None:
    _sweep_with_failures(tmp_path / "runs.csv")
    out = run("show", "runs.csv", "--failed", "--limit", "1", cwd=tmp_path)
    lines = out.stdout.splitlines()
    assert len(lines) == 3
    assert lines[1].split()[:2] == ["0.1", "2"]  # the most recent
    assert lines[2] == "(1 most recent of 3 failures; --limit 0 shows all)"


def test_show_failed_without_failures_prints_only_the_header(tmp_path: Path) -> None:
    _fill(tmp_path / "runs.csv")
    out = run("show", "runs.csv", "--failed", cwd=tmp_path)
    assert out.returncode == 0
    assert out.stdout.split() == [
        "_stet_func",
        "error",
        "attempt",
        "host",
        "job",
        "duration",
        "_stet_timestamp",
    ]


def test_show_failed_when_every_run_failed(tmp_path: Path) -> None:
    @stet.once(tmp_path / "runs.csv", quiet=True)
    def train(seed: int) -> None:
        raise ModuleNotFoundError("No module named 'torch'")

    with contextlib.suppress(ModuleNotFoundError):
        train(1)
    out = run("show", "runs.csv", "--failed", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ModuleNotFoundError: No module named 'torch'" in out.stdout


# -- a user's situation never shows a traceback --------------------------------------------


def test_show_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """``stet show big.csv | head -1``: head exits after one line, stet's next write
    meets a closed pipe. Far more output than a pipe holds, so the write must fail."""
    from stet._identity import Identity

    get_backend(tmp_path / "big.csv").add_many(
        [Identity.of_text({"alpha": f"{i / 7:.12f}", "seed": str(i)}) for i in range(20_000)]
    )
    command = f"set -o pipefail; {shlex.quote(script())} show --limit 0 big.csv | head -1"
    out = subprocess.run(
        ["bash", "-c", command],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stderr == ""
    assert out.returncode == 0  # pipefail: stet's own exit status
    assert out.stdout.split() == ["alpha", "seed", "_stet_func", "_stet_timestamp"]


def test_negative_limit_is_a_usage_error(tmp_path: Path) -> None:
    _fill(tmp_path / "runs.csv")
    out = run("show", "runs.csv", "--limit", "-3", cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "-3" in errors[0], out.stderr
    assert out.stdout == ""


@pytest.mark.parametrize("command", ["status", "show", "reset", "import"])
def test_every_subcommand_help_says_what_store_is_and_its_default(
    tmp_path: Path, command: str
) -> None:
    out = run(command, "--help", cwd=tmp_path)
    assert out.returncode == 0
    text = " ".join(out.stdout.split())  # argparse wraps lines anywhere
    assert "STORE" in text
    for part in (".csv", ".json", ".sqlite", ".parquet", "postgresql://"):
        assert part in text, (command, part)
    assert "default: _stet_store.csv in the current directory" in text


def test_corrupt_store_is_one_line_naming_the_file(tmp_path: Path) -> None:
    stamp = "2025-01-01T00:00:00.000001+00:00"
    (tmp_path / "runs.csv").write_text(
        f"i,_stet_types,_stet_timestamp\n1,i=int,{stamp}\n2,i=int,{stamp},x\n3,i=int,{stamp}\n"
    )
    for args in (["status", "runs.csv"], ["show", "runs.csv"]):
        out = run(*args, cwd=tmp_path)
        assert out.returncode == 1
        assert "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "runs.csv" in out.stderr and "line 3" in out.stderr
