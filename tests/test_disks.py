"""Read-only and full disks (SPEC S5 "Faults"), on real filesystems.

A store on a read-only filesystem (a tmpfs remounted read-only), or in a directory the
user cannot write, still serves the skip path, ``load``, ``status``, ``pending`` and
``stet show``; recording there raises a `stet.StoreError` naming the store before the
function body runs. A full disk (a small tmpfs filled up) makes a record raise a
`stet.StoreError` naming the store and saying the run was not recorded, and leaves no
record behind that a fresh process would accept.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import stet
from _helpers import EXTENSIONS, child_env, in_unprivileged_child, read_standard, run_python
from _mounts import fill, needs_mounts, read_only, tmpfs
from stet._cli import main as cli_main
from stet.backends import get_backend

KEYS = [0, 1, 2]

MAKE = r"""
import sys
from stet.backends import get_backend

backend = get_backend(sys.argv[1])
for i in range(int(sys.argv[2])):
    backend.record({"i": i, "note": "n" * int(sys.argv[3])})
"""

READ = r"""
import json, sys
import stet

ran = []

@stet.once(store=sys.argv[1], quiet=True)
def experiment(i, note=""):
    ran.append(i)

skipped = experiment(0) is None
rows = stet.load(sys.argv[1])
print(json.dumps({"skipped": skipped, "ran": ran, "keys": [str(k) for k in rows["i"]]}))
"""


def make_store(path: Path, n: int = len(KEYS), note: int = 0) -> None:
    """A store of records ``i = 0..n-1`` written (and closed) by another process."""
    run_python(["-c", MAKE, str(path), str(n), str(note)], cwd=path.parent)
    for extra in (".journal", "-wal", "-shm"):
        assert not Path(f"{path}{extra}").exists(), f"{path}{extra} left behind"


def files(directory: Path) -> dict[str, bytes]:
    """The bytes of every file in ``directory``."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def stet_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real ``stet`` console script (see test_cli.py), run in ``cwd``."""
    from test_cli import script

    return subprocess.run(
        [script(), *args], cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=120
    )


# -- a read-only filesystem ------------------------------------------------------------


@needs_mounts
def test_read_only_filesystem_serves_reads_and_refuses_records(
    tmp_path: Path, ext: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with tmpfs(tmp_path / "disk") as disk:
        path = disk / f"runs{ext}"
        make_store(path)
        before = files(disk)
        with read_only(disk):
            ran: list[int] = []

            @stet.once(store=path, quiet=True)
            def experiment(i: int, note: str = "") -> None:
                ran.append(i)

            assert [experiment(i) for i in KEYS] == [None] * len(KEYS)
            assert len(experiment.pending({"i": [*KEYS, 3, 4]})) == 2
            assert [str(i) for i in stet.load(path)["i"]] == ["0", "1", "2"]
            capsys.readouterr()
            stet.status(path)
            assert "[stet] 3 completed experiments recorded" in capsys.readouterr().out

            with pytest.raises(stet.StoreError) as info:
                experiment(3)
            assert str(path) in str(info.value)
            assert ran == [], "the body ran although its run could not be recorded"
            with pytest.raises(stet.StoreError, match=str(path)):
                get_backend(path).record({"i": 4, "note": ""})

            shown = stet_cli("show", path.name, cwd=disk)
            assert (shown.returncode, shown.stderr) == (0, ""), shown.stderr
            assert [line.split()[0] for line in shown.stdout.splitlines()[1:]] == ["0", "1", "2"]
            status = stet_cli("status", path.name, cwd=disk)
            assert (status.returncode, status.stderr) == (0, ""), status.stderr
            assert "3 completed experiments recorded" in status.stdout
        assert files(disk) == before, "stet changed a store on a read-only filesystem"


# -- a directory this user cannot write ------------------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory owned by root that the unprivileged child (user nobody) can enter."""
    if sys.platform == "win32" or os.geteuid() != 0:
        pytest.skip("runs the reader as user nobody: needs root on POSIX")
    path = Path(tempfile.mkdtemp(dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _warm_up(directory: Path, ext: str) -> None:
    """Import what the child needs before it gives up root (it cannot read /root)."""
    warm = directory / f"warm{ext}"
    get_backend(warm).record({"i": 0})
    stet.load(warm)
    with contextlib.redirect_stdout(io.StringIO()):
        stet.status(warm)
        cli_main(["show", str(warm)])
    for name in os.listdir(directory):
        (directory / name).unlink()


def _as_nobody(action: Callable[[], object]) -> tuple[Any, ...]:
    kind, exc_type, value = in_unprivileged_child(action)
    assert kind == "ok", f"{exc_type}: {value}"
    assert isinstance(value, tuple)
    return value


@pytest.mark.parametrize("lock_file", ["lock-file", "no-lock-file"])
def test_unwritable_directory_serves_reads_and_refuses_records(
    shared_dir: Path, ext: str, lock_file: str
) -> None:
    _warm_up(shared_dir, ext)
    store_dir = shared_dir / "archive"
    store_dir.mkdir()
    path = store_dir / f"runs{ext}"
    make_store(path)
    for extra in store_dir.iterdir():
        os.chmod(extra, 0o666)  # every file writable: only the directory is not
    if lock_file == "no-lock-file":
        Path(f"{path}.lock").unlink(missing_ok=True)
    os.chmod(store_dir, 0o555)
    before = files(store_dir)

    def reads() -> object:
        ran: list[int] = []

        @stet.once(store=path, quiet=True)
        def experiment(i: int, note: str = "") -> None:
            ran.append(i)

        skipped = [experiment(i) for i in KEYS]
        pending = len(experiment.pending({"i": [*KEYS, 3]}))
        keys = [str(i) for i in stet.load(path)["i"]]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            stet.status(path)
            code = cli_main(["show", str(path)])
        return skipped, ran, pending, keys, out.getvalue(), code

    skipped, ran, pending, keys, out, code = _as_nobody(reads)
    assert skipped == [None] * len(KEYS) and ran == []
    assert pending == 1
    assert keys == ["0", "1", "2"]
    assert "[stet] 3 completed experiments recorded" in out
    assert code == 0

    def record() -> object:
        ran: list[int] = []

        @stet.once(store=path, quiet=True)
        def experiment(i: int, note: str = "") -> None:
            ran.append(i)

        try:
            experiment(3)
        except stet.StoreError as exc:
            return "StoreError", str(exc), ran
        return "recorded", "", ran

    kind, message, ran = _as_nobody(record)
    assert kind == "StoreError"
    assert str(path) in message
    assert ran == [], "the body ran although its run could not be recorded"
    assert files(store_dir) == before


# -- a full disk -----------------------------------------------------------------------


@needs_mounts
def test_full_disk_record_is_a_store_error_and_the_run_is_not_counted(
    tmp_path: Path, ext: str
) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        path = disk / f"runs{ext}"
        make_store(path)
        filler = fill(disk)
        ran: list[int] = []

        @stet.once(store=path, quiet=True)
        def experiment(i: int, note: str = "") -> None:
            ran.append(i)

        # A value larger than a page: it cannot fit in the unused end of the last one.
        with pytest.raises(stet.StoreError) as info:
            experiment(3, "x" * 20_000)
        message = str(info.value)
        assert str(path) in message, message
        assert "not recorded" in message, message
        # A file store finds the disk full when it writes the record, after the body
        # ran; SQLite already when it opens the database for writing, before.
        assert ran == ([] if ext == ".sqlite" else [3])
        filler.unlink()
        # A fresh process: the run did not count, every earlier record is there.
        code = "import stet, sys; print(*stet.load(sys.argv[1])['i'])"
        out = run_python(["-c", code, str(path)], cwd=disk).stdout
        assert out.split() == ["0", "1", "2"]


# Regression (fixed): _filestore.FileBackend._rewrite: a record that adds a column
# rewrites the file, and atomic_write's ENOSPC message says 'Nothing was changed.', not
# that the run was not recorded


@needs_mounts
def test_full_disk_record_adding_a_column_says_the_run_was_not_recorded(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        path = disk / "runs.csv"
        make_store(path)
        fill(disk)
        with pytest.raises(stet.StoreError) as info:
            get_backend(path).record({"i": 3, "note": "", "extra": "x" * 20_000})
        message = str(info.value)
        assert str(path) in message
        assert "not recorded" in message, message


def _append_size(path: Path, key: dict[str, object]) -> int:
    """How many bytes recording ``key`` writes into a copy of the store at ``path``."""
    scratch = Path(tempfile.mkdtemp())
    try:
        copy = scratch / path.name
        shutil.copyfile(path, copy)
        before = copy.stat().st_size
        get_backend(copy).record(key)
        closing = 3 if path.suffix == ".json" else 0  # the "\n]\n" it writes over
        return copy.stat().st_size - before + closing
    finally:
        shutil.rmtree(scratch)


@needs_mounts
@pytest.mark.parametrize(
    ("ext", "missing"),
    [(".csv", 1), (".csv", 2), (".json", 1), (".json", 3)],
    ids=["csv-without-LF", "csv-without-CRLF", "json-without-last-LF", "json-without-closing"],
)
def test_write_cut_by_a_full_disk_just_before_the_line_end_leaves_no_record(
    tmp_path: Path, ext: str, missing: int
) -> None:
    """The disk is filled so that all of a record's bytes but the last ``missing`` fit.

    Without its line end a CSV row, or a JSON object followed by ``]``, looks complete:
    a fresh process must not find the run the caller was told had failed.
    """
    from _mounts import PAGE

    key: dict[str, object] = {"i": 7, "note": "z"}
    with tmpfs(tmp_path / "disk", "256k") as disk:
        path = disk / f"runs{ext}"
        make_store(path, 1, note=1)
        size = path.stat().st_size
        length = _append_size(path, key)
        at = size - (3 if ext == ".json" else 0)  # where the record's bytes go
        # Pad the first record so that the record written next ends `missing` bytes
        # beyond the end of the file's last page.
        pad = -(at + length - missing) % PAGE
        path.unlink()
        make_store(path, 1, note=1 + pad)
        size = path.stat().st_size
        at = size - (3 if ext == ".json" else 0)
        assert (at + length - missing) % PAGE == 0, "the record does not end where planned"
        before = path.read_bytes()
        fill(disk)
        with pytest.raises(stet.StoreError) as info:
            get_backend(path).record(key)
        assert str(path) in str(info.value)
        assert "not recorded" in str(info.value)
        code = "import sys\nfrom stet.backends import get_backend\n"
        code += "print(get_backend(sys.argv[1]).has({'i': 7, 'note': 'z'}))"
        assert run_python(["-c", code, str(path)], cwd=disk).stdout.strip() == "False"
        assert path.read_bytes() == before, "the store is not as it was"
        assert len(read_standard(path)) == 1


# Regression (fixed): _sqliteopen.open_database: can_write() looks only at permissions,
# so on a full disk the database is opened for writing and creating its -shm file fails
# with 'disk I/O error', a StoreError, instead of falling back to a read-only
# connection


@needs_mounts
def test_sqlite_store_on_a_full_disk_can_be_read_by_a_new_process(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        path = disk / "runs.sqlite"
        make_store(path)
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        fill(disk)
        proc = subprocess.run(
            [sys.executable, "-c", READ, str(path)],
            cwd=disk,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == '{"skipped": true, "ran": [], "keys": ["0", "1", "2"]}'


@needs_mounts
@pytest.mark.parametrize("ext", [e for e in EXTENSIONS if e != ".sqlite"])
def test_file_store_on_a_full_disk_can_be_read_by_a_new_process(tmp_path: Path, ext: str) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        path = disk / f"runs{ext}"
        make_store(path)
        fill(disk)
        out = run_python(["-c", READ, str(path)], cwd=disk).stdout
        assert out.strip() == '{"skipped": true, "ran": [], "keys": ["0", "1", "2"]}'
