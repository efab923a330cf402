"""Claims for cooperating workers (SPEC S6), on every store including PostgreSQL.

Time is driven explicitly: a lease that already ran out is a negative lease, and the
heartbeat is made to beat by calling it, then the stored expiry is compared. No test
waits for a lease to run out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

import stet
from _helpers import PYTHON, child_env, dead_pid
from stet._claiming import heartbeat
from stet._identity import identity_of
from stet.backends import get_backend
from stet.backends._claims import Claim, Outcome, Owner
from stet.backends._liveness import this_place, this_process

HOST = "worker-host"


def other(token: str, place: str = "another-machine/0/0", pid: int = 4242) -> Owner:
    """A worker on another machine: judged by its lease only."""
    return Owner(HOST, place, pid, 0, token)


def _claim_of(backend: stet.backends.BaseBackend, run: str) -> Claim:
    found = [c for c in backend.in_progress() if c.run == run]
    assert len(found) == 1, backend.in_progress()
    return found[0]


def test_claim_busy_complete(any_store: str) -> None:
    backend = get_backend(any_store)
    ident = identity_of({"alpha": 0.1, "seed": 1})
    first, second = Owner.new(), Owner.new()
    outcome, claim = backend.claim(ident, first, lease=60)
    assert outcome is Outcome.CLAIMED and claim is not None
    assert claim.run == "alpha=0.1, seed=1" and claim.generation == 1
    outcome, busy = backend.claim(ident, second, lease=60)
    assert outcome is Outcome.BUSY and busy is not None and busy.owner == first
    # A claim is not a completed run anywhere.
    assert not backend.has({"alpha": 0.1, "seed": 1})
    assert backend.load() == []
    assert [c.run for c in backend.in_progress()] == ["alpha=0.1, seed=1"]
    assert backend.complete(ident, first) is True
    assert backend.has({"alpha": 0.1, "seed": 1})
    assert backend.in_progress() == []
    assert backend.claim(ident, second, lease=60) == (Outcome.DONE, None)
    assert len(backend.load()) == 1


def test_release_lets_another_worker_claim(any_store: str) -> None:
    backend = get_backend(any_store)
    ident = identity_of({"x": 1})
    first, second = Owner.new(), Owner.new()
    backend.claim(ident, first, lease=60)
    backend.release(ident, first)
    assert backend.in_progress() == []
    assert backend.claim(ident, second, lease=60)[0] is Outcome.CLAIMED
    backend.release(ident, first)  # not the holder any more: no effect
    assert backend.claim(ident, Owner.new(), lease=60)[0] is Outcome.BUSY


def test_renew_extends_the_stored_lease(any_store: str) -> None:
    backend = get_backend(any_store)
    ident = identity_of({"x": 2})
    owner = other("renewed")
    backend.claim(ident, owner, lease=30)
    before = _claim_of(backend, "x=2").expires
    assert backend.renew([(ident, owner, 3600)]) == []
    after = _claim_of(backend, "x=2").expires
    assert after - before > 3000  # 30 s -> 3600 s from about the same instant


def test_expired_lease_is_taken_over_one_generation_up(any_store: str) -> None:
    backend = get_backend(any_store)
    ident = identity_of({"x": 3})
    first, second = other("first"), other("second")
    backend.claim(ident, first, lease=-1)  # a lease that ran out without a heartbeat
    outcome, claim = backend.claim(ident, second, lease=60)
    assert outcome is Outcome.CLAIMED and claim is not None and claim.generation == 2
    # The first worker learns it lost the claim, and cannot take it back.
    assert backend.renew([(ident, first, 60)]) == [ident]
    assert backend.claim(ident, first, lease=60)[0] is Outcome.BUSY
    # Both bodies finish: one record, and the ledger says the run ran twice.
    assert backend.complete(ident, second) is True
    assert backend.complete(ident, first) is False
    assert len(backend.load()) == 1
    assert [e.kind for e in backend.events()] == ["duplicate"]
    assert stet.status(any_store).duplicates == 1


def test_a_fenced_worker_that_finishes_first_records_once(any_store: str) -> None:
    backend = get_backend(any_store)
    ident = identity_of({"x": 4})
    first, second = other("first"), other("second")
    backend.claim(ident, first, lease=-1)
    backend.claim(ident, second, lease=60)
    assert backend.complete(ident, first) is True  # its body did complete: recorded
    assert backend.complete(ident, second) is False  # no second record
    assert len(backend.load()) == 1
    assert backend.in_progress() == []
    assert [e.kind for e in backend.events()] == ["duplicate"]


def test_dead_process_on_this_machine_is_taken_over_at_once(any_store: str) -> None:
    backend = get_backend(any_store)
    ident = identity_of({"x": 5})
    backend.claim(ident, Owner(HOST, this_place(), dead_pid(), 0, "gone"), lease=3600)
    assert backend.claim(ident, Owner.new(), lease=60)[0] is Outcome.CLAIMED


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="start times from /proc: Linux")
def test_a_reused_pid_is_not_its_old_owner(any_store: str) -> None:
    backend = get_backend(any_store)
    ident = identity_of({"x": 6})
    pid, started = this_process()
    # This very pid is alive, but the claim's process started at another time.
    backend.claim(ident, Owner(HOST, this_place(), pid, started + 1, "old"), lease=3600)
    assert backend.claim(ident, Owner.new(), lease=60)[0] is Outcome.CLAIMED


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process states from /proc: Linux")
def test_a_zombie_is_dead(any_store: str) -> None:
    child = subprocess.Popen([PYTHON, "-c", "pass"])
    deadline = time.monotonic() + 30
    stat_path = Path(f"/proc/{child.pid}/stat")
    while stat_path.read_text().split(") ")[1][0] != "Z":  # exited, not yet waited for
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = int(stat_path.read_text().rsplit(")", 1)[1].split()[19])
    backend = get_backend(any_store)
    ident = identity_of({"x": 7})
    backend.claim(ident, Owner(HOST, this_place(), child.pid, started, "zombie"), lease=3600)
    assert backend.claim(ident, Owner.new(), lease=60)[0] is Outcome.CLAIMED
    child.wait()


def test_a_dead_pid_elsewhere_waits_for_its_lease(any_store: str) -> None:
    backend = get_backend(any_store)
    ident = identity_of({"x": 8})
    gone = dead_pid()
    # Same host name, another pid namespace (a container): its pids mean nothing here.
    place = this_place().rsplit("/", 1)[0] + "/1"
    backend.claim(ident, Owner(HOST, place, gone, 0, "boxed"), lease=3600)
    assert backend.claim(ident, Owner.new(), lease=60)[0] is Outcome.BUSY


def test_decorator_with_claims(any_store: str, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[int] = []

    @stet.once(store=any_store, claim=True)
    def f(x: int) -> int:
        calls.append(x)
        if x == 2:
            raise RuntimeError("fails")
        return x

    assert f(1) == 1
    assert f(1) is None
    with pytest.raises(RuntimeError):
        f(2)
    backend = get_backend(any_store)
    assert backend.in_progress() == []  # released on the exception
    assert not f.has(2)
    backend.claim(identity_of({"x": 3}, func="f"), other("busy"), lease=60)
    capsys.readouterr()
    assert f(3) is None
    out = capsys.readouterr().out
    assert f"another worker is running it ({HOST}, pid 4242)" in out
    assert calls == [1, 2]
    assert list(f.pending({"x": [1, 2, 3, 4]})) == [{"x": 2}, {"x": 4}]  # 3 is running


def _running(any_store: str, lease: float) -> tuple[threading.Thread, threading.Event]:
    """A decorated call whose body runs until the returned event is set."""
    gate = threading.Event()

    @stet.once(store=any_store, claim=True, lease=lease, quiet=True)
    def slow(x: int) -> None:
        gate.wait(60)

    thread = threading.Thread(target=slow, args=(1,))
    thread.start()
    backend = get_backend(any_store)
    deadline = time.monotonic() + 30
    while not backend.in_progress():
        assert time.monotonic() < deadline, "the call never claimed its run"
        time.sleep(0.01)
    return thread, gate


def test_heartbeat_renews_every_held_claim(any_store: str) -> None:
    thread, gate = _running(any_store, lease=600)
    backend = get_backend(any_store)
    try:
        before = _claim_of(backend, "x=1").expires
        time.sleep(0.05)  # the store's clock moves on
        heartbeat.beat()
        after = _claim_of(backend, "x=1").expires
        assert after > before
    finally:
        gate.set()
        thread.join()
    assert backend.has({"x": 1})
    assert backend.in_progress() == []


def test_heartbeat_warns_once_when_the_claim_was_taken_over(
    any_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    thread, gate = _running(any_store, lease=600)
    backend = get_backend(any_store)
    try:
        ident = identity_of({"x": 1}, func="slow")
        mine = _claim_of(backend, "x=1")
        # As if the lease had run out: the claim now belongs to another worker.
        backend.release(ident, mine.owner)
        backend.claim(ident, other("taker"), lease=600)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            heartbeat.beat()
            heartbeat.beat()
        lost = [w for w in caught if "Lost the claim" in str(w.message)]
        assert len(lost) == 1 and "slow(x=1)" in str(lost[0].message)
        assert capsys.readouterr().out.count("Lost the claim on slow(x=1)") == 1
    finally:
        gate.set()
        thread.join()


def test_status_lists_runs_in_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "runs.csv"
    backend = get_backend(store)
    backend.record({"x": 0})
    backend.claim(identity_of({"x": 1}), other("a"), lease=60)
    summary = stet.status(store)
    out = capsys.readouterr().out
    assert "[stet] 1 completed experiments recorded" in out
    assert "[stet] 1 runs in progress (claimed by live workers)" in out
    assert f"[stet]   x=1 on {HOST} (pid 4242), lease" in out
    assert [c.run for c in summary.running] == ["x=1"]


SKEWED = r"""
import sys, time
real = time.time
time.time = lambda: real() + 60  # this host's clock runs a minute ahead
from stet.backends import get_backend
from stet.backends._claims import Owner
from stet._identity import identity_of
backend = get_backend(sys.argv[1])
outcome, _ = backend.claim(identity_of({"x": 1}), Owner.new(), lease=60)
print(outcome.value)
"""


def test_a_client_clock_ahead_never_takes_over_a_live_claim(postgres_url: str) -> None:
    backend = get_backend(postgres_url)
    backend.claim(identity_of({"x": 1}), other("live"), lease=30)
    out = subprocess.run(
        [PYTHON, "-c", SKEWED, postgres_url], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "busy"


NAMESPACED = r"""
import socket, sys
from stet.backends import get_backend
from stet.backends._claims import Owner
from stet._identity import identity_of
backend = get_backend(sys.argv[1])
lease = float(sys.argv[2])
outcome, _ = backend.claim(identity_of({"x": int(sys.argv[3])}), Owner.new(), lease=lease)
print(outcome.value, flush=True)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("unshare") is None or os.geteuid() != 0,
    reason="needs unshare(1) and root for new UTS and PID namespaces",
)
def test_a_worker_in_another_pid_namespace_is_taken_over_by_lease_only(any_store: str) -> None:
    """Two containers sharing a host name must not judge each other's pids."""
    import socket

    def in_namespace(lease: float, x: int) -> str:
        # The worker runs in its own UTS and PID namespaces, with our host name. It
        # claims, then exits: its pid (1 there) means nothing to this process.
        command = [
            "unshare", "--uts", "--pid", "--fork", "--mount-proc",
            "sh", "-c", 'hostname "$1"; shift; exec "$@"', "sh", socket.gethostname(),
            PYTHON, "-c", NAMESPACED, any_store, str(lease), str(x),
        ]  # fmt: skip
        out = subprocess.run(command, capture_output=True, text=True, env=child_env(), timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    backend = get_backend(any_store)
    assert in_namespace(3600, 1) == "claimed"
    # Its process has ended, yet from here it cannot be judged dead: the lease decides.
    assert backend.claim(identity_of({"x": 1}), Owner.new(), lease=60)[0] is Outcome.BUSY
    assert in_namespace(-1, 2) == "claimed"  # a lease that ran out at once
    assert backend.claim(identity_of({"x": 2}), Owner.new(), lease=60)[0] is Outcome.CLAIMED
