"""A run found done just after a look at a file store is skipped without looking again.

A file store's skip path looks at the file (a ``stat``) only when the last look is older
than ``FRESH`` (a millisecond): that look costs more than the rest of a skip. What this
must not change: a run not found is always looked for (another process may have just
recorded it), a change made in this process is seen by the very next call, and one made
by another process is seen once the moment has passed. The tests stretch the moment to a
minute where they check what must hold inside it, so they do not depend on speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

import stet
from _helpers import run_python
from stet.backends import _fileread, get_backend

FILE_STORES = [".csv", ".json", ".parquet"]


@pytest.fixture
def fresh_for(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Set how long a look at the file is trusted, for every file store."""

    def set_fresh(seconds: float) -> None:
        monkeypatch.setattr(_fileread, "FRESH", seconds)

    return set_fresh


def _skipped_once(store: Path) -> tuple[Callable[[int], None], list[int]]:
    """``f`` on ``store``, having run ``f(1)`` and then skipped it; and what ran."""
    ran: list[int] = []

    @stet.once(store=store, quiet=True)
    def f(i: int) -> None:
        ran.append(i)

    f(1)
    f(1)  # found done: the look at the file just before is trusted for a moment
    assert ran == [1]
    return f, ran


@pytest.mark.parametrize("ext", FILE_STORES)
def test_a_run_removed_through_another_backend_object_runs_at_the_next_call(
    tmp_path: Path, ext: str, fresh_for: Callable[[float], None]
) -> None:
    fresh_for(60.0)
    store = tmp_path / f"runs{ext}"
    f, ran = _skipped_once(store)
    assert get_backend(store).remove({"i": 1}) == 1  # another object, same process
    f(1)
    assert ran == [1, 1]


@pytest.mark.parametrize("ext", FILE_STORES)
def test_a_run_another_process_recorded_is_skipped_even_just_after_a_skip(
    tmp_path: Path, ext: str, fresh_for: Callable[[float], None]
) -> None:
    fresh_for(60.0)
    store = tmp_path / f"runs{ext}"
    f, ran = _skipped_once(store)
    code = "import sys; from stet.backends import get_backend as g; g(sys.argv[1]).record({'i': 2})"
    run_python(["-c", code, str(store)], cwd=tmp_path)
    f(2)  # not found in the index: the file is looked at, and there it is
    assert ran == [1]


@pytest.mark.parametrize("ext", FILE_STORES)
def test_a_run_another_process_removed_runs_again_once_the_moment_passed(
    tmp_path: Path, ext: str
) -> None:
    store = tmp_path / f"runs{ext}"
    f, ran = _skipped_once(store)
    run_python(["-m", "stet", "reset", str(store), "--where", "i=1"], cwd=tmp_path)
    time.sleep(2 * _fileread.FRESH)  # (the child took longer anyway)
    f(1)
    assert ran == [1, 1]
