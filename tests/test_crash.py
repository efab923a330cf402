"""Crash safety (SPEC S5): kill -9 at random moments, torn trailing appends.

A child process records in a tight loop and prints each key after its call returned;
the test kills it with SIGKILL (TerminateProcess on Windows) after a random number of
printed keys, then starts the next child, whose first act is to load the store in a
fresh process. Every key a child reported finished must be there, and recording
continues where it stopped.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import (
    KILLED,
    OPTIONAL,
    PYTHON,
    TIMESTAMP_RE,
    child_env,
    read_standard,
    run_python,
)
from stet.backends import get_backend

CHILD = r"""
import json
import sys

import stet
from stet.backends import get_backend

path, mode, run, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

# A fresh process loads the store first and reports what it holds.
rows = get_backend(path).load()
print("LOADED " + json.dumps(rows), flush=True)

if mode == "backend":
    backend = get_backend(path)
    i = 0
    while limit == 0 or i < limit:
        backend.record({"run": run, "i": i})
        sys.stdout.write(f"ran {i}\n")
        sys.stdout.flush()
        i += 1
else:

    @stet.once(store=path, quiet=True)
    def step(i):
        return i

    i = 0
    while limit == 0 or i < limit:
        result = step(i)
        sys.stdout.write(f"{'skip' if result is None else 'ran'} {i}\n")
        sys.stdout.flush()
        i += 1
"""

ITERATIONS = 15
SEED = 20240611


def _start(script: Path, store: Path, mode: str, run: int, limit: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, str(script), str(store), mode, str(run), str(limit)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )


def _loaded(proc: subprocess.Popen[str]) -> list[dict[str, str]]:
    """Read the child's LOADED line: the store as a fresh process loads it."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("LOADED "):
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"the child could not load the store: {line!r}\n{err}")
    rows: list[dict[str, str]] = json.loads(line[len("LOADED ") :])
    return rows


def _keys(rows: list[dict[str, str]], mode: str) -> list[tuple[int, int]]:
    """The keys of loaded rows, checking each row is complete."""
    names = ["run", "i"] if mode == "backend" else ["i"]
    types = "run=int;i=int" if mode == "backend" else "i=int"
    out = []
    for row in rows:
        assert set(row) - OPTIONAL == {*names, "_stet_types", "_stet_timestamp"}, row
        assert row["_stet_types"] == types, row
        assert TIMESTAMP_RE.match(row["_stet_timestamp"]), row
        out.append((int(row.get("run", "0")), int(row["i"])))
    return out


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["backend", "decorator"])
def test_sigkill_at_random_moments_loses_nothing_finished(
    tmp_path: Path, store: Path, ext: str, mode: str
) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rng = random.Random(f"{SEED}{ext}{mode}")
    finished: set[tuple[int, int]] = set()  # keys whose call returned, as reported
    ran: set[tuple[int, int]] = set()  # keys a child actually executed
    for run in range(ITERATIONS):
        proc = _start(script, store, mode, run, 0)
        keys = _keys(_loaded(proc), mode)
        assert len(set(keys)) == len(keys), f"iteration {run}: duplicate records"
        missing = finished - set(keys)
        assert not missing, f"iteration {run}: finished records lost: {sorted(missing)}"

        assert proc.stdout is not None
        wanted = rng.randint(1, 40)
        seen = 0
        while seen < wanted:
            line = proc.stdout.readline()
            if not line:
                _, err = proc.communicate()
                raise AssertionError(f"iteration {run}: the child died by itself:\n{err}")
            seen += line.startswith("ran ")
            _note(line, run, mode, finished, ran)
        proc.kill()  # SIGKILL; TerminateProcess on Windows
        rest, _ = proc.communicate()
        assert proc.returncode == KILLED
        for line in rest.splitlines(keepends=True):
            if line.endswith("\n"):  # a line cut by the kill proves nothing
                _note(line, run, mode, finished, ran)

    # A last child loads the store, then records a few keys and exits normally.
    final = _start(script, store, mode, ITERATIONS, 5 if mode == "backend" else len(ran) + 5)
    keys = _keys(_loaded(final), mode)
    assert not finished - set(keys), "finished records lost after the last kill"
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    for line in out.splitlines(keepends=True):
        _note(line, ITERATIONS, mode, finished, ran)

    # Afterwards the file parses with the standard tool, each key exactly once.
    rows = read_standard(store)
    stored = [(int(str(r.get("run") or 0)), int(str(r["i"]))) for r in rows]
    assert len(set(stored)) == len(stored), "duplicate records"
    assert finished <= set(stored)
    assert len(stored) == len(get_backend(store).load())


def _note(
    line: str, run: int, mode: str, finished: set[tuple[int, int]], ran: set[tuple[int, int]]
) -> None:
    what, _, number = line.strip().partition(" ")
    assert number.isdigit(), f"unexpected output line from the child: {line!r}"
    key = (run if mode == "backend" else 0, int(number))
    if what == "ran":
        # A completed run is never executed a second time (decorator mode shares keys).
        assert key not in ran, f"{key} ran twice"
        ran.add(key)
    finished.add(key)


# -- torn trailing appends ------------------------------------------------------------

# Values that put quotes, separators and newlines inside the record being torn.
VALUES = ["plain", 'quote " and, comma', "new\nline", "x" * 40, "ünï\r\ncode"]


def _torn_versions(store: Path, ext: str) -> tuple[bytes, list[bytes]]:
    """Write a store of len(VALUES) records; return the bytes before the last append
    and every state a torn last append can leave (each prefix of its write)."""
    backend = get_backend(store)
    for n, value in enumerate(VALUES[:-1]):
        backend.record({"n": n, "v": value})
    before = store.read_bytes()
    backend.record({"n": len(VALUES) - 1, "v": VALUES[-1]})
    after = store.read_bytes()
    if ext == ".csv":
        assert after.startswith(before)
        return before, [after[:cut] for cut in range(len(before) + 1, len(after))]
    # JSON: the record is written in place over the end of the array (the closing
    # bracket and what surrounds it), starting where the two versions first differ.
    pairs = enumerate(zip(before, after, strict=False))
    resume = next((i for i, (x, y) in pairs if x != y), len(before))
    assert b"]" in before[resume:], "the append did not start at the end of the array"
    written = after[resume:]
    old_tail = before[resume:]
    states = []
    for k in range(1, len(written)):
        states.append(before[:resume] + written[:k] + old_tail[k:])
    return before, states


@pytest.mark.parametrize("ext", [".csv", ".json"])
def test_torn_trailing_append_is_ignored_then_repaired(tmp_path: Path, ext: str) -> None:
    store = tmp_path / f"runs{ext}"
    _, states = _torn_versions(store, ext)
    full = get_backend(store).load()
    assert [r["v"] for r in full] == VALUES
    for number, torn in enumerate(states):
        store.write_bytes(torn)
        rows = get_backend(store).load()  # a fresh reader: no error
        assert len(rows) in (len(VALUES) - 1, len(VALUES)), (number, torn)
        assert rows == full[: len(rows)], (number, torn)

        backend = get_backend(store)
        for n, value in enumerate(VALUES[:-1]):
            assert backend.has({"n": n, "v": value})
        backend.record({"n": 99, "v": "after the crash"})
        again = get_backend(store).load()
        assert again[:-1] == rows, (number, torn)
        assert again[-1]["v"] == "after the crash"
        # The repaired file is clean: the standard tool reads exactly these records.
        standard = read_standard(store)
        assert [r["v"] for r in standard] == [r["v"] for r in again], (number, torn)
        assert [r["n"] for r in standard] == [r["n"] for r in again]
        # and the record missing since the crash can be recorded again
        backend.record({"n": len(VALUES) - 1, "v": VALUES[-1]})
        assert get_backend(store).has({"n": len(VALUES) - 1, "v": VALUES[-1]})


@pytest.mark.parametrize("ext", [".csv", ".json"])
def test_torn_append_by_hand_keeps_the_file(tmp_path: Path, ext: str) -> None:
    """Half a record typed (or cut) at the end of a file never costs the whole file."""
    store = tmp_path / f"runs{ext}"
    backend = get_backend(store)
    for n in range(3):
        backend.record({"n": n})
    if ext == ".csv":
        store.write_bytes(store.read_bytes() + b'3,n=int,"2025-01-')
    else:
        text = store.read_bytes().rstrip()
        assert text.endswith(b"]")
        store.write_bytes(text[:-1].rstrip() + b',\n{"n": "3", "_stet_types": "n=')
    fresh = get_backend(store)
    assert [r["n"] for r in fresh.load()] == ["0", "1", "2"]
    assert fresh.has({"n": 2})
    assert not fresh.has({"n": 3})
    fresh.record({"n": 3})
    assert [r["n"] for r in read_standard(store)] == ["0", "1", "2", "3"]
    assert [r["n"] for r in get_backend(store).load()] == ["0", "1", "2", "3"]


LIMITED = r"""
import resource
import signal
import sys

from stet.backends import get_backend

store, limit = sys.argv[1], int(sys.argv[2])
get_backend(store).load()  # import what recording needs before the limit applies
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit get EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    get_backend(store).record({"n": 3, "v": "y" * 200})
    print("returned")
except BaseException as exc:
    print(f"raised {type(exc).__name__}: {exc}")
"""


def _record_with_file_size_limit(store: Path, limit: int) -> tuple[str, str]:
    """In a child process limited to ``limit`` bytes per file (as on a full disk),
    record one key; return ("returned", "") or ("raised", "Type: message")."""
    env = child_env(PYTHONDONTWRITEBYTECODE="1")  # no .pyc files to write past the limit
    out = run_python(["-c", LIMITED, str(store), str(limit)], cwd=store.parent, env=env)
    outcome, _, message = out.stdout.strip().partition(" ")
    assert outcome in ("returned", "raised"), out.stdout
    return outcome, message


@pytest.mark.skipif(
    sys.platform == "win32", reason="needs RLIMIT_FSIZE (the resource module), not on Windows"
)
@pytest.mark.parametrize("room", [0, 1, 2, 10, 60])
def test_a_short_write_never_counts_as_recorded(store: Path, room: int) -> None:
    """A write cut short (disk full, file size limit) must raise, never return as if
    the run were recorded: a returned call's record must survive (SPEC S5). And once
    there is room again, the store still loads and recording continues. ``room`` is
    how many bytes the file may grow before writes fail."""
    backend = get_backend(store)
    for n in range(3):
        backend.record({"n": n, "v": "x"})
    before = get_backend(store).load()
    size = store.stat().st_size
    outcome, _ = _record_with_file_size_limit(store, size + room)
    after = get_backend(store).load()  # the store still loads
    assert after[:3] == before
    recorded = get_backend(store).has({"n": 3, "v": "y" * 200})
    if outcome == "returned":
        assert recorded, "record() returned normally but the record is not in the store"
    else:
        assert not recorded
    # recording continues once there is room again
    get_backend(store).record({"n": 4, "v": "z"})
    assert get_backend(store).has({"n": 4, "v": "z"})
    assert [r["n"] for r in get_backend(store).load()][:3] == ["0", "1", "2"]
