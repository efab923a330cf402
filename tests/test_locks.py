"""The store lock (SPEC S5): stale lock files never block; a held lock times out clearly.

File stores lock ``<store>.lock`` with filelock. A lock *file* left behind (by a
finished or killed process, or created by hand) is not a held lock and must never
block anyone. A lock held by another live process longer than ``STET_LOCK_TIMEOUT``
raises ``stet.StoreLockTimeout`` naming the lock file. SQLite stores lock the
database itself, so for them the held lock is an open write transaction and the
message names the database.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

import stet
from _helpers import CAN_FORK, NO_FORK, PYTHON, child_env, in_unprivileged_child, read_standard
from stet.backends import get_backend

FILE_STORES = [".csv", ".json", ".parquet"]


def _use(store: Path) -> list[str]:
    """Every kind of access, each through a fresh backend; return the loaded keys."""
    ran: list[int] = []

    @stet.once(store=store, quiet=True)
    def experiment(i: int) -> None:
        ran.append(i)

    assert not get_backend(store).has({"i": 1})
    get_backend(store).record({"i": 1})
    assert get_backend(store).has({"i": 1})
    experiment(1)
    experiment(2)
    assert ran == [2]
    return [r["i"] for r in get_backend(store).load()]


@pytest.mark.parametrize("content", [b"", b"12345\n", b"\x00garbage\xff"], ids=repr)
def test_stale_lock_file_never_blocks(
    store: Path, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    monkeypatch.setenv("STET_LOCK_TIMEOUT", "1")  # a wrongly held lock fails, not hangs
    Path(f"{store}.lock").write_bytes(content)
    assert _use(store) == ["1", "2"]
    assert [r["i"] for r in read_standard(store)] == ["1", "2"]


def test_lock_file_left_by_a_killed_holder_never_blocks(
    tmp_path: Path, store: Path, ext: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed with SIGKILL (TerminateProcess on Windows) while it held the
    lock leaves the file behind."""
    monkeypatch.setenv("STET_LOCK_TIMEOUT", "1")
    lock = f"{store}.lock"
    script = tmp_path / "holder.py"
    script.write_text(
        "import sys, time\nfrom filelock import FileLock\n"
        "lock = FileLock(sys.argv[1])\nlock.acquire()\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"  # wait for the parent, then get killed
    )
    proc = subprocess.Popen(
        [PYTHON, str(script), lock],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n"
    proc.kill()
    proc.communicate()
    assert _use(store) == ["1", "2"]


@pytest.mark.skipif(
    sys.platform == "win32",
    reason="needs POSIX users (os.getuid/setuid) and mode bits; Windows has neither",
)
@pytest.mark.parametrize("ext", FILE_STORES)
def test_lock_file_left_by_another_user(ext: str) -> None:
    """stet creates lock files every user may open (mode 0o666), so one left behind by
    another user on a shared disk never blocks. A lock file made read-only by hand
    gives a one-line error naming it instead of a puzzle."""
    import tempfile

    directory = Path(tempfile.mkdtemp(dir="/tmp" if os.getuid() == 0 else None))
    try:
        os.chmod(directory, 0o777)
        store = directory / f"runs{ext}"
        old = os.umask(0o022)
        try:
            get_backend(store).record({"i": 0})
        finally:
            os.umask(old)
        os.chmod(store, 0o666)
        lock = Path(f"{store}.lock")
        assert stat.S_IMODE(lock.stat().st_mode) & 0o666 == 0o666

        def action() -> object:
            os.environ["STET_LOCK_TIMEOUT"] = "1"
            loaded = [r["i"] for r in get_backend(store).load()]
            get_backend(store).record({"i": 1})
            return loaded

        assert in_unprivileged_child(action) == ("ok", "", ["0"])
        assert get_backend(store).has({"i": 1})

        os.chmod(lock, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        outcome = in_unprivileged_child(action)
        assert outcome[0] == "error", outcome
        assert str(lock) in str(outcome[2]) and "delete it" in str(outcome[2]), outcome
    finally:
        for path in directory.iterdir():
            path.unlink()


# -- a lock held by a live process ---------------------------------------------------------


def _hold_file_lock(lock: str, held: Any, release: Any) -> None:
    with FileLock(lock):
        held.set()
        release.wait(120)


def _hold_sqlite_write(path: str, held: Any, release: Any) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")  # holds the database's write lock
    held.set()
    release.wait(120)
    conn.execute("ROLLBACK")
    conn.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "start", [pytest.param("fork", marks=pytest.mark.skipif(not CAN_FORK, reason=NO_FORK)), "spawn"]
)
def test_lock_held_by_live_process_times_out_naming_the_lock(
    store: Path, ext: str, start: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    get_backend(store).record({"i": 0})  # the store exists, with its table
    monkeypatch.setenv("STET_LOCK_TIMEOUT", "1")
    ctx: Any = multiprocessing.get_context(start)
    held, release = ctx.Event(), ctx.Event()
    if ext == ".sqlite":
        holder = ctx.Process(target=_hold_sqlite_write, args=(str(store), held, release))
        named = str(store)
    else:
        holder = ctx.Process(target=_hold_file_lock, args=(f"{store}.lock", held, release))
        named = f"{store}.lock"
    # A forked holder must not inherit unreachable SQLite connections: if its garbage
    # collector closed one, POSIX would drop the holder's own locks on that file.
    gc.collect()
    holder.start()
    try:
        assert held.wait(60), "the holder never took the lock"
        before = store.read_bytes()
        ran: list[int] = []

        @stet.once(store=store, quiet=True)
        def experiment(i: int) -> None:
            ran.append(i)

        with pytest.raises(stet.StoreLockTimeout) as info:
            get_backend(store).record({"i": 1})
        assert named in str(info.value), str(info.value)
        assert isinstance(info.value, stet.StoreError)
        assert isinstance(info.value, TimeoutError)

        with pytest.raises(stet.StoreLockTimeout) as info:
            experiment(1)
        assert named in str(info.value), str(info.value)

        if ext != ".sqlite":
            with pytest.raises(stet.StoreLockTimeout, match="lock"):
                get_backend(store).has({"i": 0})
            assert ran == [], "the experiment ran although the store was locked"
        else:  # readers never wait for a SQLite writer (WAL): the check passed, the
            # experiment ran, then recording it timed out
            assert ran == [1]
            assert get_backend(store).has({"i": 0})
            assert [r["i"] for r in get_backend(store).load()] == ["0"]
        assert store.read_bytes() == before
    finally:
        release.set()
        holder.join(60)
    assert holder.exitcode == 0
    # once released, everything works again
    get_backend(store).record({"i": 1})
    assert [r["i"] for r in get_backend(store).load()] == ["0", "1"]


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux)")
def test_stores_let_go_close_their_descriptors(tmp_path: Path, ext: str) -> None:
    """Regression: every backend kept its lock descriptor (and SQLite its connection)
    until the process ended, so a long notebook session or test run that opened many
    stores ran out of descriptors. A backend, or a decorated function, that nothing
    refers to any more closes them."""

    def churn(round_: int) -> None:
        for i in range(25):
            backend = get_backend(tmp_path / f"b{round_}-{i}{ext}")
            backend.record({"x": 1})
            backend.has({"x": 2})
            backend.load()

            @stet.once(tmp_path / f"f{round_}-{i}{ext}", quiet=True, claim=True)
            def f(x: int) -> None:
                pass

            f(1)
            f(2)

    churn(0)  # the first round loads modules and starts stet's threads
    gc.collect()
    before = _open_descriptors()
    churn(1)
    deadline = time.monotonic() + 10  # Parquet's folding thread lets go once it folded
    while True:
        gc.collect()
        leaked = _open_descriptors() - before
        if leaked <= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert leaked <= 2, f"{leaked} descriptors left open by 50 stores let go"
