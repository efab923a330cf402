"""Helpers for the reliability tests: standard-tool readers, workers, subprocess runners.

Worker functions live here (not in the test modules) so that ``spawn`` children can
import them cheaply by module name.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import stet
from stet.backends import get_backend

EXTENSIONS = (".csv", ".json", ".sqlite", ".parquet")
TESTS_DIR = Path(__file__).resolve().parent
#: The stet source these tests are about; children import it before any installed copy.
PYTHON = sys.executable

#: Whether tests may start processes with multiprocessing's "fork" method. Windows has
#: no fork. macOS has it, but the system libraries this process has loaded (Accelerate
#: through numpy, libdispatch, the Objective-C runtime) are not fork-safe and CPython
#: defaults to "spawn" there, so tests spawn instead (or skip a fork-only variant).
CAN_FORK = sys.platform != "darwin" and "fork" in multiprocessing.get_all_start_methods()
#: The start method for tests that want fork but work with spawn too.
FORK = "fork" if CAN_FORK else "spawn"
NO_FORK = "multiprocessing's fork start method is missing (Windows) or unsafe (macOS)"

#: The return code of a child stopped by ``Popen.kill()``: SIGKILL on POSIX, and on
#: Windows (no signals) TerminateProcess with exit code 1.
KILLED = 1 if sys.platform == "win32" else -signal.SIGKILL

#: What stet writes in ``_stet_timestamp``: UTC ISO 8601 with microseconds.
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00$")

Cell = str | None


# -- reading a store with the standard tool of its format ---------------------------


def read_standard(path: Path) -> list[dict[str, Cell]]:
    """Every row of the store at ``path`` as the format's standard tool reads it.

    CSV goes through both the ``csv`` module and pandas (``dtype=str``,
    ``keep_default_na=False``) and the two must agree; JSON through ``json``; SQLite
    through ``sqlite3`` (stet's internal ``_stet_key`` column is left out); Parquet
    through pyarrow and pandas. Missing cells are ``""`` in CSV and None elsewhere.
    """
    ext = path.suffix
    if ext == ".csv":
        import pandas as pd

        with path.open(newline="", encoding="utf-8") as fh:
            rows: list[dict[str, Cell]] = [dict(r) for r in csv.DictReader(fh, strict=True)]
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        assert frame.to_dict("records") == rows, "pandas and the csv module disagree"
        return rows
    if ext == ".json":
        value = json.loads(path.read_bytes().decode("utf-8"))
        assert isinstance(value, list)
        assert all(isinstance(item, dict) for item in value)
        return [dict(item) for item in value]
    if ext in (".sqlite", ".db"):
        conn = sqlite3.connect(path)
        try:
            cursor = conn.execute("SELECT * FROM stet_records ORDER BY rowid")
            names = [d[0] for d in cursor.description]
            out = [dict(zip(names, raw, strict=True)) for raw in cursor.fetchall()]
        finally:
            conn.close()
        for row in out:
            row.pop("_stet_key", None)
        return out
    if ext == ".parquet":
        import pandas as pd
        import pyarrow.parquet as pq

        # Bring the file up to date, as stet does a second after the last record.
        get_backend(path).fold()  # type: ignore[attr-defined]

        table = pq.read_table(path)
        pylist: list[dict[str, Cell]] = table.to_pylist()
        frame = pd.read_parquet(path)
        assert len(frame) == len(pylist)
        return pylist
    raise AssertionError(f"unknown store ending {ext}")


def write_0_0_x_store(path: Path, rows: list[dict[str, str]]) -> None:
    """Write ``rows`` as stet 0.0.x did (through pandas; every value ``str(value)``, no
    ``_stet_types`` or ``_stet_func``): CSV, JSON (``indent=2``), SQLite or Parquet."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    elif path.suffix in (".sqlite", ".db"):
        conn = sqlite3.connect(path)
        try:
            frame.to_sql("stet_records", conn, index=False)
        finally:
            conn.close()
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        raise AssertionError(f"unknown store ending {path.suffix}")


def long_value(size: int) -> str:
    """A text of exactly ``size`` characters, the same in every process, full of what a
    store must quote or escape (commas, quotes, line ends, non-ASCII) and numbered every
    kilobyte, so that a cut, a shift or a dropped piece anywhere changes it."""
    filler = 'a,b "quoted" ünï 日本\tx;y=z\\ '
    body = (filler * (1000 // len(filler) + 1))[:986] + "\r\n\n"
    blocks = (size + 999) // 1000
    text = "".join(f"[{i:09d}]{body}" for i in range(blocks))
    return text[:size]


def present(row: Mapping[str, Cell], name: str) -> bool:
    """Whether ``row`` (from :func:`read_standard`) has a value for key ``name``."""
    types = row.get("_stet_types") or ""
    return name in [part.split("=", 1)[0] for part in types.split(";")]


def snapshot(path: Path) -> dict[str, bytes | None]:
    """The bytes of ``path`` (or of every file below it, for a directory).

    A SQLite database is compared by its content (its SQL dump): the bytes of the main
    file change whenever the last connection closes and checkpoints the WAL, which
    depends on when the garbage collector closes an unused connection.
    """
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))}
    if path.exists():
        if path.suffix in (".sqlite", ".db"):
            try:
                conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                try:
                    return {"": "\n".join(conn.iterdump()).encode()}
                finally:
                    conn.close()
            except sqlite3.DatabaseError:
                pass  # not a database stet could read: its bytes must not change
        return {"": path.read_bytes()}
    return {"": None}


def settled_snapshot(path: Path) -> dict[str, bytes | None]:
    """`snapshot` of a store whose committed records all sit in its file.

    A SQLite database in WAL mode keeps recent commits in ``-wal`` and copies them into
    the database file at a checkpoint, which happens when a connection closes: so
    without a checkpoint first, the file may change later without anything new having
    been written.
    """
    if path.suffix in (".sqlite", ".db") and path.is_file():
        conn = sqlite3.connect(path)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    return snapshot(path)


# -- concurrency workers --------------------------------------------------------------


def experiment(p: int, t: int, i: int) -> int:
    """A no-op experiment for the decorator workers (returns 1 when it actually runs)."""
    return 1


#: stet's own columns a record may carry besides _stet_types and _stet_timestamp.
OPTIONAL = {"_stet_func", "_stet_duration", "_stet_host", "_stet_job", "_stet_meta"}


def check_row(row: Mapping[str, Any], key_names: Sequence[str], types: str) -> str | None:
    """Return what is wrong with a loaded record, or None if it is complete."""
    expected = {*key_names, "_stet_types", "_stet_timestamp"}
    if not expected <= set(row) or not set(row) - expected <= OPTIONAL:
        return f"columns {sorted(row)} != {sorted(expected)} (+ optional {sorted(OPTIONAL)})"
    if row["_stet_types"] != types:
        return f"_stet_types {row['_stet_types']!r} != {types!r}"
    if not TIMESTAMP_RE.match(str(row["_stet_timestamp"])):
        return f"bad timestamp {row['_stet_timestamp']!r}"
    for name in key_names:
        value = row[name]
        if not isinstance(value, str) or not value.isdigit():
            return f"{name}={value!r} is not a whole number"
    return None


def write_keys(
    path: str,
    proc: int,
    threads: int,
    keys: int,
    mode: str,
    barrier: Any,
    results: Any,
) -> None:
    """One writer process: ``threads`` threads each record ``keys`` distinct keys.

    ``mode`` is ``"backend"`` (even threads share one backend, odd threads each open
    their own) or ``"decorator"`` (every thread calls one decorated function, then
    calls the keys of the next process's same thread, which must all be skipped).
    Puts ``(proc, executed, skipped, errors)`` on ``results``.
    """
    errors: list[str] = []
    executed = [0] * threads
    skipped = [0] * threads
    shared = get_backend(path)
    decorated = stet.once(store=path, quiet=True)(experiment)
    local = threading.Barrier(threads)

    def run(t: int) -> None:
        try:
            backend = shared if t % 2 == 0 else get_backend(path)
            local.wait()
            if t == 0:
                barrier.wait()  # all processes start together
            local.wait()
            for i in range(keys):
                if mode == "backend":
                    backend.record({"p": proc, "t": t, "i": i})
                    executed[t] += 1
                elif decorated(proc, t, i) == 1:
                    executed[t] += 1
                else:
                    skipped[t] += 1
            if mode == "decorator":
                local.wait()
                if t == 0:
                    barrier.wait()  # every process finished its own keys
                local.wait()
                other = (proc + 1) % barrier.parties
                for i in range(keys):
                    if decorated(other, t, i) is None:
                        skipped[t] += 1
                    else:
                        executed[t] += 1
        except BaseException:
            errors.append(traceback.format_exc())
            local.abort()
            barrier.abort()

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    results.put((proc, sum(executed), sum(skipped), errors))


def write_in_halves(
    path: str,
    proc: int,
    threads: int,
    keys: int,
    writers: Any,
    half_seen: Any,
    results: Any,
) -> None:
    """A writer for the reader test: record half the keys, pause until a reader saw
    exactly that state, record the rest. A reader thread in this process calls
    ``load`` on the writers' own backend meanwhile.
    """
    errors: list[str] = []
    backend = get_backend(path)
    stop = threading.Event()
    local = threading.Barrier(threads)
    loads = [0]

    def write(t: int) -> None:
        try:
            for i in range(keys // 2):
                backend.record({"p": proc, "t": t, "i": i})
            local.wait()
            if t == 0:
                writers.wait()
                if not half_seen.wait(120):
                    raise AssertionError("no reader saw the half-written store")
            local.wait()
            for i in range(keys // 2, keys):
                backend.record({"p": proc, "t": t, "i": i})
        except BaseException:
            errors.append(traceback.format_exc())
            local.abort()
            writers.abort()

    def read() -> None:
        try:
            while not stop.is_set():
                for row in backend.load():
                    problem = check_row(row, ("p", "t", "i"), "p=int;t=int;i=int")
                    if problem:
                        errors.append(f"in-process reader: {problem}: {row}")
                        return
                loads[0] += 1
        except BaseException:
            errors.append(traceback.format_exc())

    reader = threading.Thread(target=read)
    reader.start()
    workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    reader.join()
    results.put(("writer", proc, loads[0], errors))


def read_until_done(
    path: str,
    reader: int,
    total: int,
    half_seen: Any,
    done: Any,
    results: Any,
) -> None:
    """A reader process: ``load()`` in a loop until ``done``; check every record.

    Every row must be complete, no key may appear twice, the count never shrinks, and
    since each writer thread records ``i = 0, 1, 2, ...`` in order, each thread's keys
    seen must be a prefix ``0..m-1``. Sets ``half_seen`` once it loads exactly half.
    """
    errors: list[str] = []
    loads = 0
    partial = 0
    last = 0
    backend = get_backend(path)
    try:
        finished = False
        while not finished:
            finished = done.is_set()  # one more full load after the writers are done
            rows = backend.load()
            loads += 1
            seen: dict[tuple[str, str], set[int]] = {}
            for row in rows:
                problem = check_row(row, ("p", "t", "i"), "p=int;t=int;i=int")
                if problem:
                    raise AssertionError(f"torn record: {problem}: {row}")
                seen.setdefault((row["p"], row["t"]), set()).add(int(row["i"]))
            if sum(len(s) for s in seen.values()) != len(rows):
                raise AssertionError(f"a key appears twice in a load of {len(rows)} rows")
            for who, numbers in seen.items():
                if numbers != set(range(len(numbers))):
                    raise AssertionError(f"writer {who}: saw {sorted(numbers)}, not a prefix")
            if len(rows) < last:
                raise AssertionError(f"record count went down from {last} to {len(rows)}")
            last = len(rows)
            if 0 < len(rows) < total:
                partial += 1
            if len(rows) == total // 2:
                half_seen.set()
        if last != total:
            raise AssertionError(f"final load has {last} records, expected {total}")
    except BaseException:
        errors.append(traceback.format_exc())
        half_seen.set()  # never leave the writers waiting
    results.put(("reader", reader, (loads, partial), errors))


# -- subprocess helpers ---------------------------------------------------------------


#: Where the stet this process imported lives (``src`` of a checkout, or site-packages):
#: children import it from there first, so they run the same stet as the test, even
#: where an editable install points at another checkout.
STET_DIR = Path(stet.__file__).resolve().parent.parent


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python: this one, tests importable, stet quiet off.

    ``PYTHONPATH`` starts with the directory this process imported stet from, then the
    tests folder, so a child runs the same stet as the test that started it.
    """
    env = dict(os.environ)
    env.pop("STET_QUIET", None)
    env.pop("STET_LOCK_TIMEOUT", None)
    old = env.get("PYTHONPATH")
    paths = [str(STET_DIR), str(TESTS_DIR), *([old] if old else [])]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.update(extra)
    return env


def run_python(
    args: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` in ``cwd``; fail the test with its output if it fails."""
    proc = subprocess.run(
        [PYTHON, *args],
        cwd=cwd,
        env=dict(env) if env is not None else child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"python {' '.join(args)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


def sweep_function(store: str | os.PathLike[str], names: Sequence[str]) -> Callable[..., Any]:
    """``@stet.once def run(<names>): return True`` on ``store``, quiet.

    Real named parameters (not ``**kwargs``, whose values stet would see nested in one
    dict), so each value is a key parameter of its own. Every such function is recorded
    as ``run``: calls with the same names are the same function's runs.
    """
    namespace: dict[str, Any] = {}
    exec(f"def run({', '.join(names)}):\n    return True\n", namespace)
    decorated: Callable[..., Any] = stet.once(store=store, quiet=True)(namespace["run"])
    return decorated


#: The loop of `OtherProcess`: for each request, call ``sweep_function(store, names)``
#: with each call's arguments and answer which calls ran.
_OTHER_PROCESS = r"""
import json
import pickle
import sys

from _helpers import sweep_function

for line in sys.stdin:
    store, calls_file = json.loads(line)
    with open(calls_file, "rb") as fh:
        calls = pickle.load(fh)
    runs = {}
    try:
        ran = []
        for call in calls:
            names = tuple(sorted(call))
            if names not in runs:
                runs[names] = sweep_function(store, names)
            ran.append(runs[names](**call) is True)
        answer = {"ran": ran}
    except Exception as exc:
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(answer), flush=True)
"""


class OtherProcess:
    """A second Python process that makes calls of `sweep_function` functions.

    Each store it is given is one it has never opened, so it knows only what the store's
    files hold: it answers as a restarted script would, without the cost of starting
    Python for every hypothesis example. Values are sent pickled (their classes must be
    importable: the tests directory is on its path). ``env`` adds to its environment,
    e.g. its own ``PYTHONHASHSEED``.
    """

    def __init__(self, workdir: Path, **env: str) -> None:
        self.workdir = workdir
        self._n = 0
        self.proc = subprocess.Popen(
            [PYTHON, "-c", _OTHER_PROCESS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(**env),
        )

    def ran(self, store: str | os.PathLike[str], calls: Sequence[Mapping[str, Any]]) -> list[bool]:
        """Make each call (its names are the parameters), in order; return which ran."""
        import pickle

        self._n += 1
        calls_file = self.workdir / f"calls-{self._n}.pickle"
        calls_file.write_bytes(pickle.dumps([dict(c) for c in calls]))
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps([os.fspath(store), str(calls_file)]) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the other process died (exit code {self.proc.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise AssertionError(f"the other process raised {answer['error']}")
        ran: list[bool] = answer["ran"]
        return ran

    def close(self) -> None:
        """End the process (it exits when its input closes)."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def in_unprivileged_child(action: Callable[[], object]) -> tuple[str, str, object]:
    """Run ``action`` in a forked child that gave up root, as user ``nobody``.

    Returns ``("ok", "", result)`` or ``("error", "ExceptionType", message)``. Used
    to make read-only files and directories read-only even when the tests run as
    root. Everything the action needs must be imported before calling this (the
    child may not be allowed to read the interpreter's files).

    Where the tests do not fork (macOS; see `CAN_FORK`) a process that is not root
    has nothing to give up, so the action runs in this process, with ``os.environ``
    restored afterwards. Not for Windows, which has no user ids.
    """
    if sys.platform == "win32":
        raise RuntimeError("in_unprivileged_child needs POSIX user ids")
    if not CAN_FORK:
        if os.getuid() == 0:
            import pytest

            pytest.skip(f"cannot give up root without forking: {NO_FORK}")
        environ = dict(os.environ)
        try:
            return ("ok", "", action())
        except Exception as exc:
            return ("error", type(exc).__name__, str(exc))
        finally:
            os.environ.clear()
            os.environ.update(environ)

    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe(duplex=False)

    def target() -> None:
        try:
            if os.getuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            child_end.send(("ok", "", action()))
        except BaseException as exc:
            child_end.send(("error", type(exc).__name__, str(exc)))

    proc = ctx.Process(target=target)
    proc.start()
    outcome: tuple[str, str, object] = parent_end.recv()
    proc.join()
    return outcome


def dead_pid() -> int:
    """The pid of a process that has already exited (a worker that died)."""
    done = subprocess.run(
        [PYTHON, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)
