"""Shared fixtures: every store format, a clean working directory."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import socket
import subprocess
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
SKIP_POSTGRES_ENV = "STET_SKIP_POSTGRES"
POSTGRES_SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "postgres.sh"
#: Where packages install initdb and pg_ctl when they are not on PATH: Debian and Ubuntu,
#: the PostgreSQL project's RPMs, Homebrew's versioned formulae.
POSTGRES_BIN_DIRS = (
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
    "/opt/homebrew/opt/postgresql@*/bin",
    "/usr/local/opt/postgresql@*/bin",
)
#: Runs a command (the server's stop) once the process $1 (the tests) is gone, however it ended.
WATCH_AND_STOP = 'pid=$1; shift; while kill -0 "$pid" 2>/dev/null; do sleep 1; done; exec "$@"'


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


def _flag(name: str) -> bool:
    """Whether an environment variable is set to something other than empty/0/false/no."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _version_key(directory: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", str(directory)))


def _postgres_bindir() -> Path | None:
    """The directory holding PostgreSQL's initdb and pg_ctl, or None if they are not installed.

    PATH first, then the places packages put them off PATH (the newest version wins).
    """
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    found = [
        Path(d)
        for pattern in POSTGRES_BIN_DIRS
        for d in glob.glob(pattern)
        if os.access(Path(d, "initdb"), os.X_OK) and os.access(Path(d, "pg_ctl"), os.X_OK)
    ]
    return max(found, key=_version_key, default=None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return f"--- {path}\n" + "\n".join(text.splitlines()[-lines:]) + "\n"


@contextlib.contextmanager
def _throwaway_server(bindir: Path) -> Iterator[str]:
    """Run a PostgreSQL server with .ci/postgres.sh for as long as the context lasts.

    A watcher process also stops it if this process dies without tearing down (killed,
    or ended by a timeout's os._exit), so that no server outlives the test session.
    """
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    port = _free_port()
    note = Path("/tmp") / f"stet-pg-dir.{port}"  # postgres.sh writes its directory there

    def stop_command() -> list[str]:
        return ["bash", str(POSTGRES_SCRIPT), "stop", note.read_text().strip()]

    watcher: subprocess.Popen[bytes] | None = None
    try:
        started = subprocess.run(
            ["bash", str(POSTGRES_SCRIPT), "start", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if started.returncode != 0:
            logs = ""
            if note.exists():
                directory = Path(note.read_text().strip())
                logs = _tail(directory / "initdb.log") + _tail(directory / "server.log")
            pytest.fail(
                f"could not start a PostgreSQL server with {bindir}/pg_ctl "
                f"(.ci/postgres.sh start {port} exited with {started.returncode})\n"
                f"{started.stderr}{logs}"
                f"Set {POSTGRES_ENV} to use a server you run, or {SKIP_POSTGRES_ENV}=1 "
                "to skip the PostgreSQL tests.",
                pytrace=False,
            )
        watcher = subprocess.Popen(
            ["sh", "-c", WATCH_AND_STOP, "stet-pg-watch", str(os.getpid()), *stop_command()],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # out of reach of the terminal's Ctrl-C
        )
        yield started.stdout.strip().splitlines()[-1]
    finally:
        if watcher is not None:
            watcher.terminate()
            watcher.wait()
        if note.exists():  # also after a failed or interrupted start; stop removes the note
            subprocess.run(
                stop_command(), env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=120
            )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of the PostgreSQL server the tests use.

    STET_TEST_POSTGRES_URL when it is set. Otherwise, if PostgreSQL's server programs are
    installed, a throwaway server started for this session (only once a test needs it)
    and stopped at its end; its URL is put in os.environ for the processes tests start.
    Without either the PostgreSQL tests are skipped, except under CI (CI=true), where a
    missing server is a failure unless the job says it has none on purpose
    (STET_SKIP_POSTGRES=1, e.g. on macOS/Windows).
    """
    url = os.environ.get(POSTGRES_ENV)
    if url:
        yield url
        return
    if _flag(SKIP_POSTGRES_ENV):
        pytest.skip(f"{SKIP_POSTGRES_ENV} is set")
    can_start = os.name == "posix" and shutil.which("bash") is not None  # for postgres.sh
    bindir = _postgres_bindir() if can_start else None
    if bindir is None:
        use_yours = (
            f"set {POSTGRES_ENV}=postgresql://USER@HOST:PORT/DATABASE to use a server you run"
        )
        message = (
            "no PostgreSQL server for these tests. Install PostgreSQL (Debian/Ubuntu: "
            "sudo apt-get install postgresql; macOS: brew install postgresql) and the tests "
            "start a throwaway server themselves (initdb and pg_ctl are looked for on PATH "
            f"and in /usr/lib/postgresql/*/bin), or {use_yours}"
            if can_start
            else f"no PostgreSQL server for these tests: {use_yours}"
        )
        if _flag("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with _throwaway_server(bindir) as url:
        os.environ[POSTGRES_ENV] = url
        try:
            yield url
        finally:
            os.environ.pop(POSTGRES_ENV, None)


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
