"""Ctrl-C at any instant (SPEC S5 "Faults"): an interrupt never leaves a store locked.

A child process records in a loop and is interrupted hundreds of times at random
instants of a decorated call, in two ways: real ``SIGINT`` signals sent by this process
(Python raises KeyboardInterrupt), and a timer signal inside the child whose handler
raises SystemExit a random few microseconds into the call, which lands in the middle of
the lock acquisition, the write, or just after SQLite's ``BEGIN IMMEDIATE`` as often as
anywhere else. The child catches each interrupt and goes on.

Afterwards, while the interrupted child is still alive (a lock it leaked would still be
held), another process must record with ``STET_LOCK_TIMEOUT=1``; then the interrupted
child itself records again; and a fresh process must find every run whose call
returned, and no torn record, through stet and through the format's standard tool.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _helpers import EXTENSIONS, PYTHON, check_row, child_env, read_standard, run_python
from stet.backends import get_backend

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals (SIGINT, SIGALRM)"),
    pytest.mark.timeout(240),
]

#: Interrupts delivered per store and per kind: hundreds in all, per store.
INTERRUPTS = 150
SEED = 20250611

CHILD = r"""
import faulthandler
import json
import os
import random
import signal
import sys
import time

import stet

path, kind, count, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
faulthandler.register(signal.SIGUSR1)  # the parent asks for the stacks of a stuck child


def say(line):
    os.write(1, (line + "\n").encode())  # unbuffered: safe inside a signal handler


@stet.once(store=path, quiet=True)
def step(i):
    return i


armed = False


def on_signal(signum, frame):
    global armed
    if not armed:
        say("AGAIN")  # landed outside a call: the parent sends another one
        return
    armed = False
    raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit("interrupted")


signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGALRM, on_signal)

# How long one call takes here, so that the timer's instants cover all of it.
i = 0
started = time.perf_counter()
for _ in range(50):
    step(i)
    i += 1
call = (time.perf_counter() - started) / 50
done = list(range(i))  # keys whose call returned: recorded for sure
interrupted = 0
say("READY")
while interrupted < count:
    if kind == "sigint":
        say("ARMED")  # the parent sends one SIGINT per line
    try:
        armed = True
        if kind == "timer":
            signal.setitimer(signal.ITIMER_REAL, rng.uniform(0, 1.5 * call))
        while armed:
            step(i)
            if armed:
                done.append(i)
            i += 1
        say(f"SWALLOWED {i - 1}")  # the handler raised, but the call returned
    except (KeyboardInterrupt, SystemExit):
        interrupted += 1
        i += 1
armed = False
signal.setitimer(signal.ITIMER_REAL, 0)
say("STORM-OVER")
sys.stdin.readline()  # the parent records from another process meanwhile
final = step(10**6)
say("DONE " + json.dumps({"done": done, "final": final, "calls": i}))
"""

OTHER = r"""
import sys
from stet.backends import get_backend

get_backend(sys.argv[1]).record({"i": 10**6 + 1})
"""


class Child:
    """The interrupted child: its output lines, read with a deadline."""

    def __init__(self, args: list[str], stderr: Path) -> None:
        self.stderr = stderr
        with stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=child_env(STET_LOCK_TIMEOUT="1"),
            )
        self._buffer = b""

    def line(self, timeout: float = 30) -> str:
        """The next line the child printed; fail with its stacks if none comes."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            # poll, not select: select refuses descriptors past 1023 (FD_SETSIZE)
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            ready = poller.poll(max(left, 0) * 1000) if left > 0 else []
            if not ready:
                os.kill(self.proc.pid, signal.SIGUSR1)  # faulthandler prints its stacks
                time.sleep(1)
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"the child printed nothing for {timeout} s:\n{self.stderr.read_text()}"
                )
            chunk = os.read(fd, 65536)
            if not chunk:
                self.proc.wait(60)
                raise AssertionError(
                    f"the child ended ({self.proc.returncode}):\n{self.stderr.read_text()}"
                )
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


_RANDOM_STORES = [".csv", ".json", ".sqlite", ".parquet"]


@pytest.mark.parametrize("ext", _RANDOM_STORES)
@pytest.mark.parametrize("kind", ["sigint", "timer"])
def test_interrupts_at_random_instants_never_leave_the_store_locked(
    tmp_path: Path, ext: str, kind: str
) -> None:
    path = tmp_path / f"runs{ext}"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    seed = SEED + EXTENSIONS.index(ext)
    rng = random.Random(seed)
    args = [PYTHON, str(script), str(path), kind, str(INTERRUPTS), str(seed)]
    child = Child(args, tmp_path / "stderr.txt")
    swallowed: list[str] = []
    try:
        assert child.line() == "READY"
        while (line := child.line()) != "STORM-OVER":
            if line.startswith("SWALLOWED"):
                swallowed.append(line)
            elif kind == "sigint" and line in ("ARMED", "AGAIN"):
                time.sleep(rng.uniform(0.0002, 0.003))
                os.kill(child.proc.pid, signal.SIGINT)
            else:
                raise AssertionError(f"unexpected line from the child: {line!r}")

        # The interrupted process is alive and idle: any lock it leaked is still held.
        run_python(["-c", OTHER, str(path)], cwd=tmp_path, env=child_env(STET_LOCK_TIMEOUT="1"))

        child.send("go\n")
        line = child.line()
        assert line.startswith("DONE "), line
        report = json.loads(line.removeprefix("DONE "))
        assert child.proc.wait(60) == 0
    finally:
        child.close()

    assert report["final"] == 10**6, "the interrupted process could not record again"
    # A fresh process: every run whose call returned is there, once, untorn.
    code = "import json, sys\nfrom stet.backends import get_backend\n"
    code += "print(json.dumps(get_backend(sys.argv[1]).load()))"
    rows = json.loads(run_python(["-c", code, str(path)], cwd=tmp_path).stdout)
    keys = [int(row["i"]) for row in rows]
    assert len(keys) == len(set(keys)), "a run was recorded twice"
    missing = set(report["done"]) - set(keys)
    assert not missing, f"runs whose call returned are missing: {sorted(missing)[:10]}"
    assert {10**6, 10**6 + 1} <= set(keys)
    assert set(keys) <= set(range(report["calls"])) | {10**6, 10**6 + 1}
    for row in read_standard(path):
        problem = check_row(row, ["i"], "i=int")
        assert problem is None, f"torn record: {problem}: {row}"
    assert len(read_standard(path)) == len(keys)
    assert get_backend(path).has({"i": 10**6})
    assert swallowed == [], "interrupts that never reached the caller"


# -- every instant, deterministically ----------------------------------------------------

EVERY = r"""
import faulthandler
import json
import os
import resource
import sqlite3
import sys

import stet

directory, ext = sys.argv[1], sys.argv[2]
HERE = os.path.abspath(__file__)
# Where the instants are: stet, filelock, and the standard library's locks.
WATCHED = (os.sep + "stet" + os.sep, os.sep + "filelock" + os.sep, "threading.py")
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one SQLite connection per store


class Interrupt:
    # A trace function that raises KeyboardInterrupt at the at-th event (a line about to
    # run, a call, a return) of anything the decorated call runs, once.

    def __init__(self, at):
        self.at = at
        self.seen = 0
        self.where = None

    def __call__(self, frame, event, arg):
        if self.where is not None:
            return None
        name = frame.f_code.co_filename
        if name == HERE:
            return self
        if not any(part in name for part in WATCHED):
            return None  # not an instant of interest (and no line events inside)
        self.seen += 1
        if self.seen == self.at:
            code = frame.f_code
            self.where = f"{event} {code.co_filename}:{frame.f_lineno} in {code.co_name}"
            raise KeyboardInterrupt
        return self


def lock_free(path):
    if ext == ".sqlite":
        if not os.path.exists(path):
            return True
        conn = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()
    import fcntl

    try:
        fd = os.open(path + ".lock", os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def sweep(new_store):
    held, done, at = [], [], 0
    shared = os.path.join(directory, "runs" + ext)
    while True:
        at += 1
        # A new store gets a directory of its own, which stet creates.
        path = os.path.join(directory, f"new{at}", "runs" + ext) if new_store else shared

        @stet.once(store=path, quiet=True)
        def step(i):
            return i

        tracer = Interrupt(at)
        sys.settrace(tracer)
        try:
            step(at)
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(None)
        if tracer.where is None:
            return at - 1, held, done  # the call ran to its end: every instant was tried
        if not lock_free(path):
            held.append(tracer.where)
        sys.stderr.write(f"after the interrupt at {tracer.where}\n")
        faulthandler.dump_traceback_later(30, exit=True)  # a hang fails, with its stacks
        assert step(10**6 + at) == 10**6 + at, "the next call did not run"
        faulthandler.cancel_dump_traceback_later()
        done.append(10**6 + at)


created, held_new, _ = sweep(new_store=True)
appended, held, done = sweep(new_store=False)
print(json.dumps({"created": created, "appended": appended, "held": held_new + held, "done": done}))
"""

# Regression (fixed): _base.BaseBackend._ensure_process sets self._forks before calling
# _start_process(): an interrupt between the two (or inside _start_process) leaves a
# backend marked as set up whose state was never built, and every later call in the
# process fails with AttributeError ('_sig', '_local')
# Regression (fixed): _sqlite.SqliteBackend._in_write keeps self._columns read inside a
# transaction that an interrupt rolled back (the CREATE TABLE of a new store): every
# later lookup fails with 'no such table: stet_records'
# Regression (fixed): _parquet.ParquetBackend._add_locked calls threading.Event.set() on
# every record: an interrupt just after Event.set acquires the Event's internal lock
# leaves that lock held, and the next record (and the folding thread) wait for it
# forever


@pytest.mark.parametrize("ext", [".csv", ".json", ".sqlite", ".parquet"])
def test_an_interrupt_at_every_instant_of_a_call_leaves_no_lock_and_no_hang(
    tmp_path: Path, ext: str
) -> None:
    """A KeyboardInterrupt raised, in turn, at each line, call and return that a
    decorated call runs (stet's code, filelock's, the standard library's), once per call:
    the store's lock (SQLite: its write transaction) is free afterwards, the next call
    runs and is recorded, and nothing hangs."""
    script = tmp_path / "every.py"
    script.write_text(EVERY)
    store_dir = tmp_path / "stores"
    store_dir.mkdir()
    proc = subprocess.run(
        [PYTHON, str(script), str(store_dir), ext],
        env=child_env(STET_LOCK_TIMEOUT="1"),
        capture_output=True,
        text=True,
        timeout=200,
    )
    last = proc.stderr.strip().splitlines()[-40:]
    assert proc.returncode == 0, "\n".join(last)
    report = json.loads(proc.stdout)
    assert report["created"] > 100 and report["appended"] > 100, report
    assert report["held"] == [], "interrupts at these instants left the lock held"
    path = store_dir / f"runs{ext}"
    keys = {int(row["i"]) for row in get_backend(path).load()}
    assert set(report["done"]) <= keys
    for row in read_standard(path):
        assert check_row(row, ["i"], "i=int") is None, row
