"""Claims for cooperating workers (SPEC S6), on every store including PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import stet
from _helpers import dead_pid
from stet._identity import identity_of
from stet.backends import get_backend
from stet.backends._claims import Outcome, Owner, this_host


def test_claim_busy_complete(any_store: str) -> None:
    backend = get_backend(any_store)
    ident = identity_of({"alpha": 0.1, "seed": 1})
    first, second = Owner.new(), Owner.new()
    outcome, claim = backend.claim(ident, first, lease=60)
    assert outcome is Outcome.CLAIMED and claim is not None
    assert claim.run == "alpha=0.1, seed=1"
    outcome, busy = backend.claim(ident, second, lease=60)
    assert outcome is Outcome.BUSY and busy is not None and busy.owner == first
    # A claim is not a completed run anywhere.
    assert not backend.has({"alpha": 0.1, "seed": 1})
    assert backend.load() == []
    assert [c.run for c in backend.in_progress()] == ["alpha=0.1, seed=1"]
    backend.complete(ident, first, "2026-01-01T00:00:00.000000+00:00")
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
    assert backend.claim(ident, second, lease=60)[0] is Outcome.CLAIMED
    backend.release(ident, first)  # not the holder any more: no effect
    assert backend.claim(ident, Owner.new(), lease=60)[0] is Outcome.BUSY


def test_expired_lease_is_taken_over_and_renew_extends(any_store: str) -> None:
    backend = get_backend(any_store)
    ident = identity_of({"x": 2})
    first, second = Owner("elsewhere", 1, "t1"), Owner.new()
    backend.claim(ident, first, lease=0.2)
    assert backend.renew(ident, first, lease=0.2)
    assert backend.claim(ident, second, lease=60)[0] is Outcome.BUSY
    time.sleep(0.3)
    assert backend.claim(ident, second, lease=60)[0] is Outcome.CLAIMED
    assert not backend.renew(ident, first, lease=60)


def test_claim_of_dead_process_on_this_host_is_taken_over_at_once(any_store: str) -> None:
    dead = dead_pid()
    backend = get_backend(any_store)
    ident = identity_of({"x": 3})
    backend.claim(ident, Owner(this_host(), dead, "gone"), lease=3600)
    assert backend.claim(ident, Owner.new(), lease=60)[0] is Outcome.CLAIMED


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
    other = Owner("another-host", 4242, "token")
    backend.claim(identity_of({"x": 3}), other, lease=60)
    capsys.readouterr()
    assert f(3) is None
    out = capsys.readouterr().out
    assert "another worker is running it (another-host, pid 4242)" in out
    assert calls == [1, 2]


def test_heartbeat_keeps_a_long_run_claimed(any_store: str) -> None:
    @stet.once(store=any_store, claim=True, lease=0.3, quiet=True)
    def slow(x: int) -> None:
        time.sleep(1.0)  # three leases long: only the heartbeat keeps the claim

    import threading

    thread = threading.Thread(target=slow, args=(1,))
    thread.start()
    backend = get_backend(any_store)
    ident = identity_of({"x": 1})
    deadline = time.time() + 5
    while not backend.in_progress() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.6)  # past the first lease
    outcome, _ = backend.claim(ident, Owner("elsewhere", 1, "x"), lease=60)
    thread.join()
    assert outcome is Outcome.BUSY
    assert backend.has({"x": 1})


def test_status_counts_runs_in_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "runs.csv"
    backend = get_backend(store)
    backend.record({"x": 0})
    backend.claim(identity_of({"x": 1}), Owner("h", 1, "a"), lease=60)
    stet.status(store)
    out = capsys.readouterr().out
    assert "[stet] 1 completed experiments recorded" in out
    assert "[stet] 1 runs in progress" in out
