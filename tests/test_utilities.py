"""status, reset and load (SPEC S2, S6)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import stet
from stet.backends import get_backend


def _fill(store: Path) -> None:
    @stet.once(store=store, quiet=True)
    def f(alpha: float, seed: int) -> None:
        pass

    f(0.1, 1)
    f(0.2, 1)
    f(0.1, 2)


def test_status_prints_summary(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(store)
    last = get_backend(store).load()[-1]["_stet_timestamp"]
    stet.status(store)
    assert capsys.readouterr().out.splitlines() == [
        f"[stet] Store: {store}",
        "[stet] 3 completed experiments recorded",
        f"[stet] Last run: {last}",
        "[stet] Key columns: alpha, seed",
    ]


def test_status_of_missing_store(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.csv"):
        stet.status(tmp_path / "nothing.csv")
    with pytest.raises(FileNotFoundError):
        stet.status()


def test_reset_without_tty_clears(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(store)
    capsys.readouterr()
    assert stet.reset(store) == 3
    assert capsys.readouterr().out == f"[stet] Store cleared: {store}\n"
    assert get_backend(store).load() == []


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal (pty): not on Windows")
@pytest.mark.parametrize(("answer", "cleared"), [("n", False), ("", False), ("y", True)])
def test_reset_asks_on_a_real_tty(store: Path, answer: str, cleared: bool) -> None:
    import pty  # POSIX only: importing it fails on Windows

    _fill(store)
    main, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import stet; stet.reset({str(store)!r})"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    output = b""
    while b"[y/N]" not in output:
        chunk = os.read(main, 1024)  # once the child is gone: OSError on Linux, b"" on BSDs
        assert chunk, f"the child exited without asking: {output!r}"
        output += chunk
    os.write(main, answer.encode() + b"\n")
    proc.wait(timeout=30)
    try:
        while chunk := os.read(main, 1024):
            output += chunk
    except OSError:
        pass  # the pty closes when the child exits
    os.close(main)
    text = output.decode()
    assert "Remove all 3 records" in text
    assert ("Store cleared" in text) is cleared
    assert ("Aborted." in text) is not cleared
    assert len(get_backend(store).load()) == (0 if cleared else 3)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal (pty): not on Windows")
def test_reset_yes_clears_on_a_tty_without_asking(store: Path) -> None:
    import pty  # POSIX only: importing it fails on Windows

    _fill(store)
    main, secondary = pty.openpty()
    proc = subprocess.run(
        [sys.executable, "-c", f"import stet; stet.reset({str(store)!r}, yes=True)"],
        stdin=secondary,
        stdout=subprocess.PIPE,
        text=True,
        timeout=30,  # a prompt would wait for input that never comes
        check=True,
    )
    os.close(secondary)
    os.close(main)
    assert proc.stdout == f"[stet] Store cleared: {store}\n"
    assert get_backend(store).load() == []


@pytest.mark.parametrize("key", [{"alpha": "0.1", "seed": "2"}, {"alpha": 0.1, "seed": 2}])
def test_reset_one_entry(
    store: Path, key: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(store)
    capsys.readouterr()
    assert stet.reset(store, key) == 1
    assert capsys.readouterr().out == f"[stet] Removed entry: {key}\n"
    rows = [(r["alpha"], r["seed"]) for r in get_backend(store).load()]
    assert rows == [("0.1", "1"), ("0.2", "1")]


def test_reset_with_unknown_column_removes_nothing(store: Path) -> None:
    _fill(store)
    before = store.read_bytes()
    with pytest.raises(ValueError, match=r"'alpah'.*key columns are: alpha, seed"):
        stet.reset(store, {"alpah": 0.1, "seed": 1})
    assert store.read_bytes() == before


def test_reset_partial_key_does_not_widen(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(store)
    capsys.readouterr()
    assert stet.reset(store, {"alpha": 0.1}) == 0
    assert "No record matches" in capsys.readouterr().out
    assert len(get_backend(store).load()) == 3


def test_reset_missing_store(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        stet.reset(tmp_path / "none.json")


def test_load_returns_typed_dataframe(store: Path) -> None:
    @stet.once(store=store, quiet=True)
    def f(alpha: float, seed: int, tag: str, flag: bool) -> None:
        pass

    f(0.5, 1, "NA", True)
    f(0.25, 2, "", False)
    frame = stet.load(store)
    assert list(frame.columns) == [
        "alpha",
        "seed",
        "tag",
        "flag",
        "_stet_func",
        "_stet_host",
        "_stet_duration",
        "_stet_timestamp",
    ]
    assert frame["alpha"].dtype == "float64"
    assert frame["seed"].dtype == "int64"
    assert list(frame["tag"]) == ["NA", ""]
    assert list(frame["flag"]) == [True, False]
    assert list(frame["_stet_func"]) == ["f", "f"]
    assert (frame["_stet_duration"] >= 0).all()
    assert isinstance(frame["_stet_timestamp"].dtype, pd.DatetimeTZDtype)


def test_status_with_grid_shows_progress_and_eta(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(store)  # (0.1, 1), (0.2, 1), (0.1, 2)
    capsys.readouterr()
    stet.status(store, grid={"alpha": [0.1, 0.2], "seed": [1, 2, 3]})
    lines = capsys.readouterr().out.splitlines()
    assert "[stet] Progress: 3 / 6 done (50.0%)" in lines
    assert len([line for line in lines if line.startswith("[stet] ETA: ")]) == 1
    stet.status(store, grid=[{"alpha": 0.1, "seed": 1}, {"alpha": 0.2, "seed": 1}])
    lines = capsys.readouterr().out.splitlines()
    assert "[stet] Progress: 2 / 2 done (100.0%)" in lines
    assert not any(line.startswith("[stet] ETA") for line in lines)


def test_eta_follows_the_pace_of_the_recent_runs(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"
    stamps = [f"2026-01-01T00:00:{s:02d}.000000+00:00" for s in (0, 10, 20)]
    rows = [f"{a},1,f,a=int;seed=int,{t}" for a, t in enumerate(stamps)]
    store.write_text("a,seed,_stet_func,_stet_types,_stet_timestamp\n" + "\n".join(rows) + "\n")
    summary = stet.status(store, grid={"a": list(range(6)), "seed": [1]})
    assert (summary.total, summary.done) == (6, 3)
    assert summary.eta == "0m 30s at the recent pace (10 s per run)"


def test_eta_is_unknown_before_two_runs(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"
    store.write_text("a,_stet_types,_stet_timestamp\n0,a=int,2026-01-01T00:00:00.000000+00:00\n")
    summary = stet.status(store, grid={"a": [0, 1]})
    assert summary.eta == "unknown until two runs have completed"
