"""A real Slurm array job sharing one sweep (SPEC S6): examples/slurm_array.sh, submitted.

Needs a Slurm cluster that ``sbatch`` reaches and whose jobs see this machine's files
(the test's store and log live in its temporary directory). ``.ci/slurm.sh start``
starts a one-node cluster on this machine; ``.ci/run`` does so and sets
``STET_TEST_SLURM=1``, which turns a cluster that does not answer into a failure
instead of a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

import stet
from stet.backends import get_backend

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "slurm_array.sh"
SLURM_ENV = "STET_TEST_SLURM"
HOW_TO_START = (
    "start a one-node test cluster with: export SLURM_CONF=$(.ci/slurm.sh start) "
    "(as root; it installs Slurm and munge from the Debian packages if missing)"
)

TASKS = 4
KEYS = 24
#: Long enough that the tasks Slurm starts together (two on a 2-core node) all find runs
#: left to claim, even when one starts a few seconds after the other on a loaded machine.
SECONDS_PER_RUN = 0.25


def _slurm_problem() -> str | None:
    """Why no Slurm cluster can take a job from here, or None if one can."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "the Slurm client commands (sbatch, sinfo) are not installed"
    try:
        out = subprocess.run(
            ["sinfo", "--noheader", "--responding", "--format=%T"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30 s"
    if out.returncode != 0:
        said = (out.stderr.strip() or out.stdout.strip() or "no message").splitlines()
        return f"sinfo failed ({said[-1]})"
    usable = {"idle", "mixed", "allocated", "completing"}
    states = set(out.stdout.split())
    if not states & usable:
        return f"no Slurm node can run jobs (node states: {sorted(states) or 'none'})"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Skip (or fail, when CI started a cluster) unless sbatch can run jobs here."""
    problem = _slurm_problem()
    if problem is None:
        return
    message = f"{problem}; {HOW_TO_START}"
    if os.environ.get(SLURM_ENV) == "1":
        pytest.fail(f"{SLURM_ENV}=1 but {message}")
    pytest.skip(message)


@pytest.fixture(params=["csv", "postgres"])
def slurm_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return str(tmp_path / "runs.csv")


def _job_env(store: str) -> dict[str, str]:
    """This environment, with the running interpreter first on PATH (it is the ``python``
    the job script calls) and the stet under test importable by absolute path (the
    tasks start in the repository, not in this test's directory)."""
    env = dict(os.environ)
    env["STET_STORE_URL"] = store
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    stet_src = str(Path(stet.__file__).resolve().parent.parent)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = stet_src + (os.pathsep + old if old else "")
    env.pop("SBATCH_EXPORT", None)  # a user's default must not hide our environment
    return env


def _outputs(out_dir: Path) -> dict[Path, str]:
    return {path: path.read_text() for path in sorted(out_dir.glob("task-*.out"))}


def test_array_job_runs_every_key_exactly_once(
    slurm_cluster: None, slurm_store: str, tmp_path: Path
) -> None:
    log = tmp_path / "log.txt"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    name = f"stet-test-{uuid.uuid4().hex[:8]}"
    command = [
        "sbatch",
        "--wait",  # return when every task has ended; fail if one failed
        f"--array=0-{TASKS - 1}",
        f"--job-name={name}",
        "--export=ALL",
        "--cpus-per-task=1",
        "--time=5",  # minutes; a 2-core node runs two tasks at a time
        f"--output={out_dir}/task-%A_%a.out",
        str(SCRIPT),
        str(log),
        str(SECONDS_PER_RUN),
        str(KEYS),
    ]
    try:
        # From the repository's top directory, as the example says: its tasks cd there.
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=_job_env(slurm_store),
            capture_output=True,
            text=True,
            timeout=240,
        )
    except subprocess.TimeoutExpired:
        subprocess.run(["scancel", f"--name={name}"], timeout=30, check=False)
        raise
    outputs = _outputs(out_dir)
    report = "\n".join(f"--- {path.name}\n{text}" for path, text in outputs.items())
    assert done.returncode == 0, f"sbatch: {done.stdout}{done.stderr}\n{report}"

    # Every task ran, with the submitter's python and environment.
    assert len(outputs) == TASKS, report
    python = str(Path(sys.executable).parent / "python")
    for text in outputs.values():
        assert f" runs {python}\n" in text, report
        assert "done" in text.splitlines()[-1], report

    # Each key started and ended once: no task ran a key another task had claimed.
    events = [line.split() for line in log.read_text().splitlines()]
    starts = Counter(int(key) for kind, key, _ in events if kind == "start")
    ends = Counter(int(key) for kind, key, _ in events if kind == "end")
    assert starts == Counter(range(KEYS)), starts
    assert ends == Counter(range(KEYS)), ends
    assert len({pid for _, _, pid in events}) >= 2, "one task ran the whole grid"

    backend = get_backend(slurm_store)
    rows = backend.load()
    assert Counter(str(row["k"]) for row in rows) == Counter(str(k) for k in range(KEYS))
    assert backend.in_progress() == []
