"""A real Dask cluster with process workers sharing one store (SPEC S5, S6)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
