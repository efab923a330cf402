"""Provenance (SPEC S6): each completed record says how long it took, where and in which job.

``_stet_duration`` (seconds), ``_stet_host``, ``_stet_job`` (the Slurm job, when there is
one) and ``_stet_meta`` (``once(meta=...)`` as JSON) are columns of the record, readable
by ``stet.load`` and by each format's own tools. The Slurm variables are set for a real
child process, as Slurm sets them for a job step.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import stet
from _helpers import child_env, read_standard
from stet.backends import get_backend

HOST = socket.gethostname()


def test_a_record_carries_its_duration_and_host(any_store: str) -> None:
    @stet.once(any_store, quiet=True)
    def train(seed: int) -> None:
        time.sleep(0.1)

    train(1)
    frame = stet.load(any_store)
    assert frame["_stet_duration"].dtype == "Float64"
    assert 0.1 <= frame["_stet_duration"][0] < 30
    assert list(frame["_stet_host"]) == [HOST]
    [row] = get_backend(any_store).load()
    assert 0.1 <= float(row["_stet_duration"]) < 30  # stored as text, in seconds


def test_duration_is_the_bodys_own_time(any_store: str) -> None:
    @stet.once(any_store, quiet=True)
    def train(seed: int) -> None:
        time.sleep(0.05 * seed)

    train(1)
    train(4)
    durations = list(stet.load(any_store)["_stet_duration"])
    assert durations[0] < durations[1]
    assert durations[1] >= 0.2


def test_meta_lands_in_stet_meta_as_json(any_store: str) -> None:
    meta = {"commit": "3f2a1c0", "gpus": 2, "note": "warm-up fixed, ünïcode"}

    @stet.once(any_store, quiet=True, meta=meta)
    def train(seed: int) -> None:
        pass

    train(1)
    [cell] = list(stet.load(any_store)["_stet_meta"])
    assert json.loads(cell) == meta


def test_meta_is_taken_when_decorating(tmp_path: Path) -> None:
    meta = {"commit": "aaaaaaa"}

    @stet.once(tmp_path / "runs.csv", quiet=True, meta=meta)
    def train(seed: int) -> None:
        pass

    meta["commit"] = "bbbbbbb"  # changing the dict afterwards changes nothing
    train(1)
    assert json.loads(stet.load(tmp_path / "runs.csv")["_stet_meta"][0]) == {"commit": "aaaaaaa"}


def test_meta_values_without_json_form_are_stored_as_text(tmp_path: Path) -> None:
    @stet.once(tmp_path / "runs.json", quiet=True, meta={"data": Path("/data/mnist")})
    def train(seed: int) -> None:
        pass

    train(1)
    assert json.loads(stet.load(tmp_path / "runs.json")["_stet_meta"][0]) == {"data": "/data/mnist"}


def test_without_meta_or_job_load_has_no_such_columns(any_store: str) -> None:
    @stet.once(any_store, quiet=True)
    def train(seed: int) -> None:
        pass

    train(1)
    columns = list(stet.load(any_store).columns)
    assert "_stet_meta" not in columns
    assert "_stet_job" not in columns


def test_standard_tools_see_the_provenance_columns(store: Path) -> None:
    @stet.once(store, quiet=True, meta={"commit": "3f2a1c0"})
    def train(alpha: float) -> None:
        pass

    train(0.5)
    [row] = read_standard(store)
    assert row["_stet_host"] == HOST
    assert float(str(row["_stet_duration"])) >= 0
    assert json.loads(str(row["_stet_meta"])) == {"commit": "3f2a1c0"}
    assert row["alpha"] == "0.5"


SCRIPT = """
import stet

@stet.once("runs.csv", quiet=True, meta={"stage": "pilot"})
def train(seed):
    pass

train(1)
"""


@pytest.mark.parametrize(
    ("slurm", "job"),
    [
        (
            {"SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "7", "SLURM_JOB_ID": "4250"},
            "4242_7",
        ),
        ({"SLURM_JOB_ID": "981"}, "981"),
    ],
    ids=["array-task", "job"],
)
def test_a_run_in_a_slurm_job_records_the_job(
    tmp_path: Path, slurm: dict[str, str], job: str
) -> None:
    env = {k: v for k, v in child_env().items() if not k.startswith("SLURM_")}
    env.update(slurm)
    (tmp_path / "sweep.py").write_text(SCRIPT, encoding="utf-8")
    subprocess.run([sys.executable, "sweep.py"], cwd=tmp_path, env=env, check=True, timeout=120)
    frame = stet.load(tmp_path / "runs.csv")
    assert list(frame["_stet_job"]) == [job]
    assert list(frame["_stet_host"]) == [HOST]
    assert json.loads(frame["_stet_meta"][0]) == {"stage": "pilot"}


def test_a_run_outside_slurm_records_no_job(tmp_path: Path) -> None:
    env = {k: v for k, v in child_env().items() if not k.startswith("SLURM_")}
    (tmp_path / "sweep.py").write_text(SCRIPT, encoding="utf-8")
    subprocess.run([sys.executable, "sweep.py"], cwd=tmp_path, env=env, check=True, timeout=120)
    [row] = read_standard(tmp_path / "runs.csv")
    assert row["_stet_job"] == ""
