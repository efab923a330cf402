"""Shared fixtures: every store format, a clean working directory."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import stet

# Every child process a test starts (scripts, the CLI, workers, a Jupyter kernel) must
# import the stet under test, not the editable install of another checkout: put its
# source tree first on PYTHONPATH for them all.
_SRC = str(Path(stet.__file__).resolve().parent.parent)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [_SRC, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != _SRC)]
)

EXTENSIONS = [".csv", ".json", ".sqlite", ".parquet"]

POSTGRES_ENV = "STET_TEST_POSTGRES_URL"


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


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """URL of the PostgreSQL server the tests use (started by .ci/postgres.sh).

    Under CI (CI=true) a missing server is a failure, never a skip, unless the CI job
    says it has no server on purpose (STET_SKIP_POSTGRES=1, e.g. on macOS/Windows).
    """
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        message = (
            f"{POSTGRES_ENV} is not set; start a server with: "
            f"export {POSTGRES_ENV}=$(.ci/postgres.sh start)"
        )
        if os.environ.get("CI") and not os.environ.get("STET_SKIP_POSTGRES"):
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A store URL with a table of its own, so tests never see each other's records."""
    return f"{postgres_server}?table=t_{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=[*EXTENSIONS, "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every store: the four file formats and a PostgreSQL table."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return str(tmp_path / f"runs{request.param}")
