"""Symbolic links (SPEC S5 "Faults"): a linked store is changed through its link; a link
planted where stet keeps its own files never makes stet write to what it points at.

A store may be a symbolic link to a shared file (one results file linked into several
projects): every rewrite goes to the target, and the link stays a link. A link planted
where stet keeps its lock file, its index snapshot or its claims log (by a mistake, or
by another user of a shared directory) must never truncate or change its target.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import stet
from _helpers import PYTHON, child_env, read_standard
from stet.backends import get_backend

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need privileges")

ROOT = Path(__file__).resolve().parent.parent
FILE_STORES = [".csv", ".json", ".parquet"]
VICTIM = b"somebody's precious file\nwith two lines\n"


def _keys(path: Path) -> list[str]:
    return sorted(str(row["i"]) for row in read_standard(path))


@pytest.fixture
def linked(tmp_path: Path, ext: str) -> tuple[Path, Path]:
    """``(link, target)``: a store in ``shared/`` with records 0..3, linked into ``project/``."""
    shared, project = tmp_path / "shared", tmp_path / "project"
    shared.mkdir()
    project.mkdir()
    target = shared / f"runs{ext}"
    backend = get_backend(target)
    for i in range(4):
        backend.record({"i": i})
    if ext == ".parquet":
        backend.fold()  # type: ignore[attr-defined]
    link = project / f"runs{ext}"
    link.symlink_to(target)
    return link, target


def _assert_still_a_link(link: Path, target: Path) -> None:
    assert link.is_symlink(), "the link was replaced by a file"
    assert link.resolve() == target.resolve()
    assert target.is_file() and not target.is_symlink()


# -- a store that is a link: changed through it ------------------------------------------


def test_reset_of_one_run_rewrites_through_the_link(linked: tuple[Path, Path]) -> None:
    link, target = linked
    assert stet.reset(link, {"i": 2}) == 1
    _assert_still_a_link(link, target)
    assert _keys(target) == ["0", "1", "3"]


def test_remove_rewrites_through_the_link(linked: tuple[Path, Path]) -> None:
    link, target = linked
    assert get_backend(link).remove({"i": 0}) == 1
    _assert_still_a_link(link, target)
    assert _keys(target) == ["1", "2", "3"]


def test_clear_empties_the_target_through_the_link(linked: tuple[Path, Path]) -> None:
    link, target = linked
    get_backend(link).clear()
    _assert_still_a_link(link, target)
    assert get_backend(target).load() == []


def test_reset_of_the_whole_store_empties_the_target_and_keeps_the_link(
    linked: tuple[Path, Path],
) -> None:
    """``stet.reset(store)`` removes a store's file, but not a shared file it links to:
    the target is emptied through the link instead (as `stet.reset` documents)."""
    link, target = linked
    assert stet.reset(link, yes=True) == 4
    _assert_still_a_link(link, target)
    assert get_backend(target).load() == []
    assert get_backend(link).load() == []
    backend = get_backend(link)
    backend.record({"i": 9})  # and the emptied store keeps working
    if target.suffix == ".parquet":
        backend.fold()  # type: ignore[attr-defined]
    assert _keys(target) == ["9"]


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_new_column_rewrites_through_the_link(linked: tuple[Path, Path], ext: str) -> None:
    """A record with a new key name makes CSV rewrite its header (Parquet its schema)."""
    link, target = linked
    backend = get_backend(link)
    backend.record({"i": 4, "seed": 1})
    if ext == ".parquet":
        backend.fold()  # type: ignore[attr-defined]
    _assert_still_a_link(link, target)
    rows = read_standard(target)
    assert [str(r["i"]) for r in rows] == ["0", "1", "2", "3", "4"]
    assert rows[-1]["seed"] == "1"


def test_decorated_sweep_through_the_link_records_in_the_target(
    linked: tuple[Path, Path],
) -> None:
    link, target = linked
    ran: list[int] = []

    @stet.once(store=link, quiet=True)
    def experiment(i: int) -> None:
        ran.append(i)

    for i in range(6):
        experiment(i)
    assert ran == [4, 5]
    _assert_still_a_link(link, target)
    if target.suffix == ".parquet":
        get_backend(link).fold()  # type: ignore[attr-defined]
    assert _keys(target) == ["0", "1", "2", "3", "4", "5"]


TWO_PROJECTS = r"""
import sys
from stet.backends import get_backend

backend = get_backend(sys.argv[1])
start = int(sys.argv[2])
for i in range(start, start + int(sys.argv[3])):
    backend.record({"i": i})
"""

# Regression (fixed): _filestore.FileBackend.__init__ puts the lock (and the Parquet
# journal, claims, index) beside the link, not beside the file it points to: two links
# to one store lock different files, and their writers overwrite each other's records


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "ext",
    [*FILE_STORES, ".sqlite"],
)
def test_two_projects_linking_one_store_lose_no_record(tmp_path: Path, ext: str) -> None:
    """One shared store, linked into two projects, written by both at once."""
    shared = tmp_path / "shared"
    shared.mkdir()
    target = shared / f"runs{ext}"
    get_backend(target).record({"i": -1})
    links = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        link = tmp_path / name / f"runs{ext}"
        link.symlink_to(target)
        links.append(link)
    each = 3000
    procs = [
        subprocess.Popen(
            [PYTHON, "-c", TWO_PROJECTS, str(link), str(n * 10_000), str(each)],
            env=child_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, link in enumerate(links)
    ]
    errors = [proc.communicate(timeout=150)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], errors
    expected = sorted(["-1", *(str(n * 10_000 + i) for n in range(2) for i in range(each))])
    assert _keys(target) == expected


# -- links planted where stet keeps its own files ---------------------------------------------


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file that belongs to somebody else, in another directory."""
    (tmp_path / "elsewhere").mkdir()
    path = tmp_path / "elsewhere" / "precious.txt"
    path.write_bytes(VICTIM)
    return path


def _operations(store: Path) -> dict[str, object]:
    """What each operation on ``store`` gave: its result, or the StoreError text."""
    outcomes: dict[str, object] = {}
    ran: list[int] = []

    @stet.once(store=store, quiet=True)
    def experiment(i: int) -> None:
        ran.append(i)

    attempts: dict[str, Callable[[], object]] = {
        "record": lambda: get_backend(store).record({"i": 10}),
        "load": lambda: get_backend(store).load(),
        "has": lambda: get_backend(store).has({"i": 0}),
        "decorated": lambda: experiment(11),
        "remove": lambda: get_backend(store).remove({"i": 0}),
        "clear": lambda: get_backend(store).clear(),
    }
    for name, attempt in attempts.items():
        try:
            outcomes[name] = attempt()
        except stet.StoreError as exc:
            outcomes[name] = f"StoreError: {exc}"
    outcomes["ran"] = ran
    return outcomes


@pytest.mark.parametrize("ext", FILE_STORES)
def test_planted_lock_file_link_is_refused_and_its_target_kept(
    tmp_path: Path, victim: Path, ext: str
) -> None:
    store = tmp_path / f"runs{ext}"
    get_backend(store).record({"i": 0})
    lock = Path(f"{store}.lock")
    lock.unlink()
    lock.symlink_to(victim)
    before = store.read_bytes()
    outcomes = _operations(store)
    assert victim.read_bytes() == VICTIM, "stet changed the file a planted lock link points to"
    assert lock.is_symlink()
    assert outcomes.pop("ran") == []
    for name, outcome in outcomes.items():
        assert isinstance(outcome, str), f"{name} went ahead through a planted lock link"
        assert str(lock) in outcome and "symbolic link" in outcome, (name, outcome)
    assert store.read_bytes() == before


@pytest.mark.parametrize("ext", FILE_STORES)
def test_planted_index_snapshot_link_never_changes_its_target(
    tmp_path: Path, victim: Path, ext: str
) -> None:
    """The index snapshot is written after reading a large store (20,000 records)."""
    from stet.backends._index import SNAPSHOT_MIN

    store = tmp_path / f"runs{ext}"
    code = (
        "import sys\nfrom stet.backends import get_backend\n"
        "from stet._identity import Identity\n"
        "b = get_backend(sys.argv[1])\n"
        "b.add_many([Identity.of_text({'i': str(i)}) for i in range(int(sys.argv[2]))])\n"
    )
    subprocess.run([PYTHON, "-c", code, str(store), str(SNAPSHOT_MIN)], env=child_env(), check=True)
    index = Path(f"{store}.stet-index")
    index.unlink(missing_ok=True)
    index.symlink_to(victim)
    backend = get_backend(store)
    assert backend.has({"i": "5"})  # a full read, which saves a snapshot
    backend.record({"i": "x"})
    backend.remove({"i": "x"})  # a rewrite, which removes the snapshot
    assert get_backend(store).has({"i": str(SNAPSHOT_MIN - 1)})
    assert victim.read_bytes() == VICTIM, "stet changed the file a planted index link points to"


@pytest.mark.parametrize("ext", FILE_STORES)
def test_planted_claims_link_is_refused_and_its_target_kept(
    tmp_path: Path, victim: Path, ext: str
) -> None:
    store = tmp_path / f"runs{ext}"
    get_backend(store).record({"i": 0})
    claims = Path(f"{store}.claims")
    claims.symlink_to(victim)
    ran: list[int] = []

    @stet.once(store=store, quiet=True, claim=True)
    def experiment(i: int) -> None:
        ran.append(i)

    with pytest.raises(stet.StoreError) as info:
        experiment(1)
    assert str(claims) in str(info.value), str(info.value)
    assert ran == []
    assert victim.read_bytes() == VICTIM, "stet changed the file a planted claims link points to"


def test_planted_empty_claims_link_is_refused_and_its_target_kept(
    tmp_path: Path, victim: Path
) -> None:
    """A link to an empty file reads as an empty claims log; writing must still refuse."""
    store = tmp_path / "runs.csv"
    get_backend(store).record({"i": 0})
    victim.write_bytes(b"")
    claims = Path(f"{store}.claims")
    claims.symlink_to(victim)

    @stet.once(store=store, quiet=True, claim=True)
    def experiment(i: int) -> None:
        pass

    with pytest.raises(stet.StoreError, match="symbolic links"):
        experiment(1)
    assert victim.read_bytes() == b""


# Regression (fixed): _filewrite.repair_torn opens <store>.stet-torn without O_NOFOLLOW,
# so the bytes of an interrupted append are appended to whatever file a planted link
# there points to


@pytest.mark.filterwarnings("ignore::stet.StoreWarning")
@pytest.mark.parametrize("ext", [".csv", ".json"])
def test_planted_torn_bytes_link_never_changes_its_target(
    tmp_path: Path, victim: Path, ext: str
) -> None:
    store = tmp_path / f"runs{ext}"
    backend = get_backend(store)
    backend.record({"i": 0})
    backend.record({"i": 1})
    data = store.read_bytes()
    store.write_bytes(data[: len(data) - 12])  # an append cut short by a crash
    torn = Path(f"{store}.stet-torn")
    torn.symlink_to(victim)
    with pytest.raises(stet.StoreError) as info:
        get_backend(store).record({"i": 2})
    assert victim.read_bytes() == VICTIM, "stet appended to a file a planted link points to"
    assert str(torn) in str(info.value)
    assert store.read_bytes() == data[: len(data) - 12], "the store changed"


# -- the lock's dependency -------------------------------------------------------------------


def test_filelock_requirement_has_lock_descriptor_and_the_symlink_fix() -> None:
    """stet needs filelock >= 3.30.

    `stet.backends._locking` locks a descriptor it opened itself with ``O_NOFOLLOW``
    through ``filelock.lock_descriptor``/``unlock_descriptor``, which filelock added in
    3.30. Older releases also lack the fix (3.20.1) for CVE-2025-68146, where filelock
    followed a symbolic link planted at the lock path and truncated its target.
    """
    import filelock

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == "filelock"]
    assert len(found) == 1, project["dependencies"]
    lowest = [Version(s.version) for s in found[0].specifier if s.operator in (">=", "==", "~=")]
    assert lowest and min(lowest) >= Version("3.30"), f"pyproject.toml requires {found[0]}"
    assert hasattr(filelock, "lock_descriptor") and hasattr(filelock, "unlock_descriptor")
    assert Version(filelock.__version__) >= Version("3.30")
