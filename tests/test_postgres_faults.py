"""PostgreSQL faults (SPEC S5, S6): stet errors only, secrets kept, connections retried.

Most tests run against a throwaway server of their own (started with
``.ci/postgres.sh start PORT``, stopped afterwards), because they restart it, change
its authentication and create roles. Passwords there are checked (``scram-sha-256``),
so a URL whose password was misread cannot connect.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import stet
from _helpers import child_env
from stet.backends import get_backend

psycopg = pytest.importorskip("psycopg")

ROOT = Path(__file__).resolve().parent.parent
#: Passwords with each character that makes a URL ambiguous, written unencoded.
PASSWORDS = {
    "pw_hash": "Hunter2#xyz",
    "pw_query": "Hunter2?xyz",
    "pw_slash": "Hunter2/xyz",
    "pw_at": "Hunter2@xyz",
}


@dataclass
class Server:
    """A PostgreSQL server of this module's own."""

    port: int
    directory: Path

    @property
    def admin(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, user: str = "postgres", password: str = "", **params: str) -> str:
        secret = f":{password}" if password else ""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://{user}{secret}@127.0.0.1:{self.port}/postgres" + (
            f"?{query}" if query else ""
        )

    def pg_ctl(self, *args: str) -> None:
        tool = _find("pg_ctl")
        command = [tool, "-D", str(self.directory / "data"), *args]
        if os.geteuid() == 0:  # the server runs as the unprivileged user stetpg
            command = ["su", "stetpg", "-s", "/bin/sh", "-c", " ".join(map(_quote, command))]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """Start the stopped server again, as .ci/postgres.sh does."""
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        log = str(self.directory / "server.log")
        self.pg_ctl("start", "-w", "-t", "60", "-l", log, "-o", options)

    def sql(self, statement: str) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(statement)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _find(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[::-1]), None
    )
    if found is None:
        pytest.skip(f"no PostgreSQL server programs ({name}) on this machine")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    if sys.platform == "win32":
        pytest.skip(".ci/postgres.sh needs a POSIX shell")
    _find("initdb")
    port = _free_port()
    started = subprocess.run(
        ["bash", str(ROOT / ".ci" / "postgres.sh"), "start", str(port)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    record = Path(f"/tmp/stet-pg-dir.{port}")
    if started.returncode != 0:
        pytest.fail(f".ci/postgres.sh start failed:\n{started.stderr}")
    directory = Path(record.read_text().strip())
    own = Server(port, directory)
    try:
        hba = directory / "data" / "pg_hba.conf"
        roles = ",".join(PASSWORDS)
        hba.write_text(f"host all {roles} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        for role, password in PASSWORDS.items():
            literal = password.replace("'", "''")
            own.sql(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{literal}'")
        own.sql("SELECT pg_reload_conf()")
        yield own
    finally:
        subprocess.run(
            ["bash", str(ROOT / ".ci" / "postgres.sh"), "stop", str(directory)],
            capture_output=True,
            timeout=120,
        )
        record.unlink(missing_ok=True)


def _table() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


# -- table names and shapes --------------------------------------------------------------


def test_table_name_longer_than_56_bytes_is_refused(postgres_server: str) -> None:
    """PostgreSQL cuts names at 63 bytes; stet adds ``_claims``/``_ledger`` (7)."""
    fits = "t" * 56
    with pytest.raises(stet.StoreError, match="57 bytes") as info:
        get_backend(f"{postgres_server}?table={'t' * 57}")
    assert "56" in str(info.value)
    backend = get_backend(f"{postgres_server}?table={fits}")
    try:
        backend.record({"x": 1})
        assert backend.has({"x": 1})
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {fits}, {fits}_claims, {fits}_ledger")


def test_multibyte_table_name_is_measured_in_bytes(postgres_server: str) -> None:
    name = "é" * 29  # 29 characters, 58 bytes
    with pytest.raises(stet.StoreError, match="58 bytes"):
        get_backend(f"{postgres_server}?table={name}")


def test_table_of_another_shape_is_a_store_error_and_left_untouched(
    postgres_server: str,
) -> None:
    table = _table()
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'alpha')")
    url = f"{postgres_server}?table={table}"
    ran: list[int] = []

    @stet.once(store=url, quiet=True)
    def experiment(x: int) -> None:
        ran.append(x)

    try:
        attempts: dict[str, Callable[[], object]] = {
            "has": lambda: get_backend(url).has({"x": 1}),
            "record": lambda: get_backend(url).record({"x": 1}),
            "load": lambda: get_backend(url).load(),
            "decorated": lambda: experiment(1),
        }
        for name, attempt in attempts.items():
            with pytest.raises(stet.StoreError) as info:
                attempt()
            assert not isinstance(info.value, psycopg.Error), name
            assert table in str(info.value), (name, str(info.value))
        assert ran == []
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            assert conn.execute(f"SELECT * FROM {table}").fetchall() == [(1, "alpha")]
            columns = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "ORDER BY ordinal_position",
                (table,),
            ).fetchall()
            assert columns == [("id",), ("name",)]
            others = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE %s",
                (f"{table}_%",),
            ).fetchone()
            assert others == (0,), "stet created its other tables beside a foreign one"
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_claims, {table}_ledger")


def test_unknown_url_parameter_is_a_store_error(postgres_server: str) -> None:
    url = f"{postgres_server}?TABLE=x"
    with pytest.raises(stet.StoreError) as info:
        get_backend(url).has({"x": 1})
    assert not isinstance(info.value, psycopg.Error)
    assert "TABLE" in str(info.value)


def test_cli_with_unknown_url_parameter_prints_one_line(postgres_server: str) -> None:
    from test_cli import script

    out = subprocess.run(
        [script(), "status", f"{postgres_server}?TABLE=x"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "TABLE" in out.stderr


# -- passwords -----------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(PASSWORDS))
def test_password_with_url_characters_connects_and_is_never_shown(
    server: Server, role: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_cli import script

    password = PASSWORDS[role]
    table = _table()
    url = server.url(role, password, table=table)
    backend = get_backend(url)
    backend.record({"x": 1})  # the server checks the password: it was read right
    assert get_backend(url).has({"x": 1})
    assert password not in repr(backend) and password not in backend.location

    stet.status(url)
    stet.reset(url, {"x": 1})
    out = capsys.readouterr().out
    assert "127.0.0.1" in out and password not in out and "Hunter2" not in out

    wrong = server.url(role, password.replace("Hunter2", "Wrong42"), table=table)
    with pytest.raises(stet.StoreError) as info:
        get_backend(wrong).has({"x": 1})
    assert "Wrong42" not in str(info.value) and "127.0.0.1" in str(info.value)

    for args in (["status", url], ["show", url], ["status", wrong], ["status", url + "&bad=1"]):
        done = subprocess.run(
            [script(), *args], env=child_env(), capture_output=True, text=True, timeout=120
        )
        shown = done.stdout + done.stderr
        assert "Hunter2" not in shown and "Wrong42" not in shown, shown
        assert "Traceback" not in done.stderr, done.stderr


# -- connections that break ----------------------------------------------------------------


def test_server_restart_mid_sweep_is_retried_and_the_finished_run_recorded(
    server: Server,
) -> None:
    url = server.url(table=_table())
    ran: list[int] = []
    starting: list[threading.Thread] = []

    @stet.once(store=url, quiet=True)
    def experiment(i: int) -> None:
        ran.append(i)
        if i == 2:
            # The server goes down while the body runs and comes back a moment later.
            server.pg_ctl("stop", "-m", "fast", "-w")
            thread = threading.Thread(target=server.start)
            thread.start()
            starting.append(thread)

    try:
        with pytest.warns(RuntimeWarning, match="retrying"):
            for i in range(5):
                experiment(i)
    finally:
        for thread in starting:
            thread.join(120)
    assert ran == [0, 1, 2, 3, 4]
    assert sorted(int(r["i"]) for r in get_backend(url).load()) == [0, 1, 2, 3, 4]


def test_killed_connection_is_retried(server: Server) -> None:
    name = f"stet_{uuid.uuid4().hex[:8]}"
    url = server.url(table=_table(), application_name=name)
    ran: list[int] = []

    @stet.once(store=url, quiet=True)
    def experiment(i: int) -> None:
        ran.append(i)
        if i == 1:
            server.sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE application_name = '{name}'"
            )

    with pytest.warns(RuntimeWarning, match="retrying"):
        for i in range(3):
            experiment(i)
    assert ran == [0, 1, 2]
    assert sorted(int(r["i"]) for r in get_backend(url).load()) == [0, 1, 2]


def test_too_many_connections_is_retried_until_a_slot_frees_up(server: Server) -> None:
    role = f"limited_{uuid.uuid4().hex[:8]}"
    # Not a superuser: superusers are exempt from connection limits.
    server.sql(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
    server.sql(f"GRANT ALL ON SCHEMA public TO {role}")
    url = server.url(role, table=_table())
    blocker = psycopg.connect(server.url(role), autocommit=True)  # the only slot
    timer = threading.Timer(2.0, blocker.close)
    timer.start()
    try:
        ran: list[int] = []

        @stet.once(store=url, quiet=True)
        def experiment(i: int) -> None:
            ran.append(i)

        with pytest.warns(RuntimeWarning, match="retrying"):
            experiment(1)
        assert ran == [1]
        assert blocker.closed
    finally:
        timer.cancel()
        blocker.close()
    assert [r["i"] for r in get_backend(server.url(table=url.rsplit("=", 1)[1])).load()] == ["1"]
