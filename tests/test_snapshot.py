"""The index snapshot beside a large store: a faster start, never a wrong skip (SPEC S8).

A process that read or wrote a file store of 20,000 records or more saves the digests
of its runs to ``<store>.stet-index``, with the SHA-256 of the store bytes they cover
and of the digests themselves. A later process uses the snapshot only while the store
still starts with exactly those bytes; a snapshot of other bytes, or a damaged one, is
ignored, the store is read whole, and the snapshot is written again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _helpers import run_python
from stet.backends._index import SNAPSHOT_MIN, Snapshot

#: The stores a person or another tool may edit by hand.
TEXT_STORES = [".csv", ".json"]

FILL = r"""
import sys
from stet._identity import Identity
from stet.backends import get_backend

store, start, stop, pad = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
get_backend(store).add_many(
    [Identity.of_text({"i": str(i), "note": "n" * pad}) for i in range(start, stop)]
)
"""

ASK = r"""
import json
import sys
from stet.backends import get_backend

store, pad = sys.argv[1], int(sys.argv[2])
backend = get_backend(store)
print(json.dumps([backend.has({"i": str(i), "note": "n" * pad}) for i in json.loads(sys.argv[3])]))
"""


def _fill(store: Path, start: int, stop: int, pad: int) -> None:
    run_python(["-c", FILL, str(store), str(start), str(stop), str(pad)], cwd=store.parent)


def _ask(store: Path, keys: list[int | str], pad: int) -> list[bool]:
    """Whether a fresh process finds each run ``i`` done."""
    proc = run_python(["-c", ASK, str(store), str(pad), json.dumps(keys)], cwd=store.parent)
    answers: list[bool] = json.loads(proc.stdout)
    return answers


def _snapshot_size(store: Path) -> int | None:
    """Runs in the store's snapshot, or None when it is missing or does not match."""
    saved = Snapshot(f"{store}.stet-index").load(store.read_bytes())
    return None if saved is None else len(saved[0])


@pytest.fixture
def big_store(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, int]:
    """A store of ``N`` runs ``i = 0 .. N-1`` with its snapshot; ``(path, pad)``.

    ``pad`` lengthens each record: with 450 characters the store is over 8 MB, and the
    store is hashed on a thread while the digests are loaded.
    """
    ext, pad = request.param
    store = tmp_path / f"runs{ext}"
    _fill(store, 0, N, pad)
    assert _snapshot_size(store) == N
    return store, pad


BIG = [(ext, pad) for ext in TEXT_STORES for pad in (0, 450)]
N = SNAPSHOT_MIN + 10  # runs in a big store: still big enough after one is removed


def _edit_line_of(store: Path, i: int, how: str) -> None:
    """Edit run ``i``'s line by hand, rewriting the file in place.

    ``removed``: the line goes (the file gets shorter). ``renamed``: its key becomes
    ``"a"``, keeping the file's length, so only the bytes tell the change.
    """
    lines = store.read_bytes().splitlines(keepends=True)
    csv_head, json_key = f"{i},".encode(), f'"i": "{i}"'.encode()
    at = [n for n, line in enumerate(lines) if line.startswith(csv_head) or json_key in line]
    assert len(at) == 1
    if how == "removed":
        del lines[at[0]]
    else:
        line = lines[at[0]]
        lines[at[0]] = (
            b"a," + line[2:] if line.startswith(csv_head) else line.replace(json_key, b'"i": "a"')
        )
    with open(store, "r+b") as fh:
        fh.write(b"".join(lines))
        fh.truncate()


@pytest.mark.parametrize("big_store", BIG, indirect=True, ids=lambda p: f"{p[0]}-pad{p[1]}")
@pytest.mark.parametrize("how", ["removed", "renamed"])
def test_a_run_edited_away_by_hand_is_not_skipped_from_an_old_snapshot(
    big_store: tuple[Path, int], how: str
) -> None:
    store, pad = big_store
    _edit_line_of(store, 7, how)
    assert _snapshot_size(store) is None  # the snapshot no longer matches the store
    assert _ask(store, [6, 7, 8, N - 1, "a"], pad) == [True, False, True, True, how == "renamed"]
    # Written again after the full read.
    assert _snapshot_size(store) == (N - 1 if how == "removed" else N)


@pytest.mark.parametrize("big_store", BIG[:2], indirect=True, ids=lambda p: p[0])
@pytest.mark.parametrize("damage", ["garbage", "cut", "one digest flipped", "old format"])
def test_a_damaged_snapshot_is_ignored_and_written_again(
    big_store: tuple[Path, int], damage: str
) -> None:
    store, pad = big_store
    index = Path(f"{store}.stet-index")
    data = bytearray(index.read_bytes())
    if damage == "garbage":
        data[8:] = bytes(range(256)) * ((len(data) - 8) // 256)
    elif damage == "cut":
        del data[len(data) // 2 :]
    elif damage == "one digest flipped":
        data[-1] ^= 0xFF  # the last run's digest: trusted, that run would run again
    else:
        data[7] = 2  # the format before the digests had their own hash
    index.write_bytes(bytes(data))
    assert _snapshot_size(store) is None
    assert _ask(store, [0, 3, N - 1, N], pad) == [True, True, True, False]
    assert _snapshot_size(store) == N


@pytest.mark.parametrize("big_store", BIG, indirect=True, ids=lambda p: f"{p[0]}-pad{p[1]}")
def test_runs_appended_after_the_snapshot_are_seen(big_store: tuple[Path, int]) -> None:
    store, pad = big_store
    _fill(store, N, N + 5, pad)  # another process, later
    assert _ask(store, [0, N - 1, N, N + 4, N + 5], pad) == [True, True, True, True, False]


@pytest.mark.parametrize("big_store", [(".csv", 0), (".json", 0)], indirect=True, ids=str)
def test_a_process_that_adds_a_few_runs_leaves_the_snapshot_and_one_that_adds_many_saves_it(
    big_store: tuple[Path, int],
) -> None:
    """Writing every digest again costs a short process on a big store more than its
    runs; the next process parses the few lines after the snapshot instead."""
    store, pad = big_store
    snapshot = Path(f"{store}.stet-index")
    before = snapshot.read_bytes()
    _fill(store, N, N + 5, pad)
    assert snapshot.read_bytes() == before
    assert _ask(store, [N + 4, N + 5], pad) == [True, False]
    assert snapshot.read_bytes() == before  # reading the five lines did not save it either
    many = N // 16 + 10
    _fill(store, N + 5, N + 5 + many, pad)
    assert _snapshot_size(store) == N + 5 + many
