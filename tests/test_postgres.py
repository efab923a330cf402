"""The PostgreSQL store against a real server (SPEC S6 "Scale-out")."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

import stet
from stet.backends import PostgresBackend, get_backend


def test_url_selects_postgres_and_table_is_created_on_first_use(postgres_url: str) -> None:
    backend = get_backend(postgres_url)
    assert isinstance(backend, PostgresBackend)
    assert not backend.exists()
    assert not backend.has({"alpha": 0.1})  # reading creates nothing

    @stet.once(store=postgres_url)
    def f(alpha: float, name: str = "NA") -> float:
        return alpha

    assert f(0.1) == 0.1
    assert f(0.1) is None
    assert backend.exists()
    assert f.store == postgres_url


def test_records_are_plain_sql_rows(postgres_url: str, postgres_server: str) -> None:
    backend = get_backend(postgres_url)
    backend.record({"alpha": 0.5, "seed": 3})
    backend.record({"alpha": None, "seed": 4})
    table = postgres_url.rsplit("table=", 1)[1]
    with psycopg.connect(postgres_server) as conn:
        rows = conn.execute(
            f'SELECT alpha, seed, _stet_types FROM "{table}" ORDER BY seed'
        ).fetchall()
    assert rows == [("0.5", "3", "alpha=float;seed=int"), ("None", "4", "alpha=none;seed=int")]


def test_same_semantics_as_file_stores(postgres_url: str) -> None:
    backend = get_backend(postgres_url)
    backend.record({"x": 2})
    backend.record({"x": "1", "y": ""})
    backend.record({"x": "1"})  # text: the run of any value that prints as 1
    backend.record({"x": 1})  # already recorded, by text: nothing added
    assert backend.has({"x": "1", "y": ""}) and backend.has({"x": "1"}) and backend.has({"x": 1})
    assert not backend.has({"x": 3})
    assert len(backend.load()) == 3
    assert backend.key_columns() == ["x", "y"]
    assert backend.remove({"x": 2}) == 1
    assert backend.remove({"x": 1}) == 1  # the text record "1" is the run of 1
    assert not backend.has({"x": 1})
    assert backend.has({"x": "1", "y": ""})  # a different key set: untouched
    backend.clear()
    assert backend.load() == []


def test_status_and_reset_never_print_the_password(
    postgres_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with_password = postgres_server.replace("postgres@", "postgres:hunter2@", 1)
    url = f"{with_password}?table=pw_{os.getpid()}"
    get_backend(url).record({"x": 1})
    stet.status(url)
    stet.reset(url, {"x": 1})
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert "127.0.0.1" in out


def test_refused_connection_names_host_not_password() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    backend = get_backend(f"postgresql://me:s3cret@127.0.0.1:{port}/db")
    with pytest.raises(stet.StoreError) as info:
        backend.has({"x": 1})
    message = str(info.value)
    assert f"127.0.0.1:{port}/db" in message
    assert "s3cret" not in message


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_unresponsive_server_does_not_hang(
    silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STET_CONNECT_TIMEOUT", "2")
    backend = get_backend(f"postgresql://me@127.0.0.1:{silent_server}/db")
    started = time.monotonic()
    with pytest.raises(stet.StoreError, match=rf"127\.0\.0\.1:{silent_server}"):
        backend.has({"x": 1})
    assert time.monotonic() - started < 30  # bounded, not forever


def test_table_of_another_shape_is_refused_untouched(postgres_server: str) -> None:
    table = f"foreign_{os.getpid()}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{table}" (id INTEGER, payload TEXT)')
        conn.execute(f"INSERT INTO \"{table}\" VALUES (1, 'keep me')")
    backend = get_backend(f"{postgres_server}?table={table}")
    with pytest.raises(stet.StoreError, match=table):
        backend.record({"x": 1})
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        assert conn.execute(f'SELECT * FROM "{table}"').fetchall() == [(1, "keep me")]
        conn.execute(f'DROP TABLE "{table}"')


def test_bad_table_name_in_url(postgres_server: str) -> None:
    with pytest.raises(ValueError, match="not an identifier"):
        get_backend(f"{postgres_server}?table=drop;table")


def test_table_name_with_capitals_is_found_again(postgres_server: str) -> None:
    """Regression: to_regclass folded the unquoted name, so a new process missed it."""
    url = f"{postgres_server}?table=Mixed_{os.getpid()}"
    get_backend(url).record({"x": 1})
    fresh = get_backend(url)
    assert fresh.exists()
    assert fresh.has({"x": 1})


def test_status_on_a_store_without_claims_creates_nothing(
    postgres_url: str, postgres_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    table = postgres_url.rsplit("table=", 1)[1]

    def tables() -> list[str]:
        with psycopg.connect(postgres_server) as conn:
            rows = conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE %s ORDER BY 1", (f"{table}%",)
            ).fetchall()
        return [r[0] for r in rows]

    with pytest.raises(FileNotFoundError):
        stet.status(postgres_url)  # no store yet: and looking creates nothing
    assert tables() == []
    get_backend(postgres_url).record({"x": 1})
    before = tables()
    stet.status(postgres_url)
    assert tables() == before
