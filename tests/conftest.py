"""Shared fixtures: every store format, a clean working directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

EXTENSIONS = [".csv", ".json", ".sqlite", ".parquet"]


@pytest.fixture(params=EXTENSIONS)
def ext(request: pytest.FixtureRequest) -> str:
    """A store file ending; tests using it run once per format."""
    value: str = request.param
    return value


@pytest.fixture
def store(tmp_path: Path, ext: str) -> Path:
    """Path of a store that does not exist yet, in a fresh temporary directory."""
    return tmp_path / f"runs{ext}"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run in a temp cwd with stet's environment variables unset."""
    monkeypatch.chdir(tmp_path)
    for name in ("STET_QUIET", "STET_LOCK_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    yield
    os.environ.pop("STET_QUIET", None)
