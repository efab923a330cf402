"""The call semantics of @stet.once (SPEC S2)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import stet
from _helpers import dead_pid
from stet.backends import get_backend


def test_bare_decorator_uses_default_store_in_cwd(tmp_path: Path) -> None:
    calls: list[int] = []

    @stet.once
    def f(x: int) -> int:
        calls.append(x)
        return x * 2

    assert f(3) == 6
    assert f(3) is None
    assert calls == [3]
    assert (tmp_path / "_stet_store.csv").is_file()
    assert f.store == str(tmp_path / "_stet_store.csv")


def test_store_argument_picks_backend(store: Path) -> None:
    @stet.once(store=store)
    def f(x: int) -> int:
        return x

    assert f(1) == 1
    assert store.exists()
    assert get_backend(store).has({"x": 1})


def test_positional_keyword_and_default_are_the_same_run(store: Path) -> None:
    calls: list[tuple[int, int]] = []

    @stet.once(store=store)
    def f(x: int, y: int = 5) -> None:
        calls.append((x, y))

    f(1)
    f(x=1)
    f(1, 5)
    f(y=5, x=1)
    assert calls == [(1, 5)]
    f(1, 6)
    assert calls == [(1, 5), (1, 6)]


def test_key_subset_ignores_other_parameters(store: Path) -> None:
    calls: list[Any] = []

    @stet.once(store=store, key=["alpha", "seed"])
    def f(alpha: float, seed: int, verbose: bool = False) -> None:
        calls.append((alpha, seed, verbose))

    f(0.1, 1)
    f(0.1, 1, verbose=True)
    f(0.1, 2, verbose=True)
    assert calls == [(0.1, 1, False), (0.1, 2, True)]
    assert f.key == ("alpha", "seed")


def test_key_as_single_string(store: Path) -> None:
    @stet.once(store=store, key="x")
    def f(x: int, y: int) -> None:
        pass

    f(1, 2)
    assert f.has(1, 99)


def test_unknown_key_name_fails_at_decoration(store: Path) -> None:
    with pytest.raises(ValueError, match=r"'alhpa'.*parameters are: alpha, seed"):

        @stet.once(store=store, key=["alhpa"])
        def f(alpha: float, seed: int) -> None:
            pass


def test_unknown_extension_fails_at_decoration(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.csv, \.json, \.sqlite, \.db, \.parquet"):
        stet.once(store=tmp_path / "runs.txt")


def test_skip_prints_line_and_returns_none(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    @stet.once(store=store)
    def f(alpha: float, seed: int) -> str:
        return "ran"

    assert f(0.1, 2) == "ran"
    assert f(0.1, seed=2) is None
    assert capsys.readouterr().out.splitlines() == [
        f"[stet] f: store {store} (new, nothing recorded yet)",
        "[stet] Skipping f(alpha=0.1, seed=2)",
    ]


def test_first_call_says_which_store_and_how_many_runs_it_holds(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def make() -> stet.OnceFunction[[int], None]:
        @stet.once(store=store)
        def f(x: int) -> None:
            pass

        return f

    f = make()
    f(1)
    f(2)
    assert capsys.readouterr().out.splitlines()[0] == (
        f"[stet] f: store {store} (new, nothing recorded yet)"
    )
    again = make()  # as a rerun of the script would decorate it
    again(3)
    again(4)
    assert capsys.readouterr().out.splitlines() == [
        f"[stet] f: store {store} holds 2 completed runs of it"
    ]


def test_first_call_says_one_completed_run_in_the_singular(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    get_backend(store).record({"x": 1})

    @stet.once(store=store)
    def f(x: int) -> None:
        pass

    f(2)
    assert capsys.readouterr().out.splitlines()[0] == (
        f"[stet] f: store {store} holds 1 completed run of it"
    )


def test_exception_propagates_and_records_nothing(store: Path) -> None:
    attempts: list[int] = []

    @stet.once(store=store)
    def f(x: int) -> int:
        attempts.append(x)
        if len(attempts) == 1:
            raise RuntimeError("boom")
        return x

    with pytest.raises(RuntimeError, match="boom"):
        f(1)
    assert not f.has(1)
    assert f(1) == 1
    assert f.has(1)
    assert attempts == [1, 1]


def test_keyboard_interrupt_records_nothing(store: Path) -> None:
    @stet.once(store=store)
    def f(x: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        f(1)
    assert not f.has(1)


def test_wraps_metadata(store: Path) -> None:
    def original(x: int) -> int:
        """Docstring here."""
        return x

    f = stet.once(store=store)(original)
    assert f.__name__ == "original"
    assert f.__doc__ == "Docstring here."
    assert f.__wrapped__ is original
    assert f.__module__ == original.__module__


def test_async_recorded_when_coroutine_completes(store: Path) -> None:
    calls: list[int] = []

    @stet.once(store=store)
    async def f(x: int) -> int:
        await asyncio.sleep(0)
        calls.append(x)
        return x + 1

    coroutine = f(1)
    assert not f.has(1)  # created, not awaited: nothing recorded
    assert asyncio.run(coroutine) == 2
    assert f.has(1)
    assert asyncio.run(f(1)) is None
    assert calls == [1]


def test_async_never_awaited_records_nothing(store: Path) -> None:
    @stet.once(store=store)
    async def f(x: int) -> int:
        return x

    coroutine = f(5)
    coroutine.close()
    assert not f.has(5)


def test_async_exception_records_nothing(store: Path) -> None:
    @stet.once(store=store)
    async def f(x: int) -> int:
        raise ValueError("bad")

    with pytest.raises(ValueError):
        asyncio.run(f(1))
    assert not f.has(1)


def test_methods_leave_out_self_and_cls(store: Path) -> None:
    calls: list[Any] = []

    class Model:
        def __init__(self, name: str) -> None:
            self.name = name

        @stet.once(store=store)
        def fit(self, lr: float) -> None:
            calls.append((self.name, lr))

        @classmethod
        @stet.once(store=store)
        def build(cls, size: int) -> None:
            calls.append(("build", size))

    Model("a").fit(0.1)
    Model("b").fit(0.1)  # a different instance, same key: skipped
    Model.build(3)
    Model.build(3)
    assert calls == [("a", 0.1), ("build", 3)]
    assert Model.fit.key == ("lr",)


def test_two_functions_sharing_a_store_need_exact_key_sets(store: Path) -> None:
    ran: list[str] = []

    @stet.once(store=store)
    def g(x: int, y: int) -> None:
        ran.append("g")

    @stet.once(store=store)
    def f(x: int) -> None:
        ran.append("f")

    g(x=1, y=2)
    f(x=1)
    f(x=1)
    g(1, 2)
    assert ran == ["g", "f"]


def test_missing_parent_directories_are_created_on_the_first_record(
    tmp_path: Path, ext: str
) -> None:
    """On every store, decorating and looking up create nothing; recording creates the
    directories."""
    path = tmp_path / "a" / "b" / f"runs{ext}"

    @stet.once(store=path)
    def f(x: int) -> None:
        pass

    assert not (tmp_path / "a").exists(), "decorating created a directory"
    assert not f.has(1)
    assert list(f.pending({"x": [1, 2]})) == [{"x": 1}, {"x": 2}]
    assert not (tmp_path / "a").exists(), "a lookup created a directory"
    f(1)
    assert path.is_file()
    assert f.has(1)


def test_unfaithful_value_raises_type_error_naming_parameter(store: Path) -> None:
    class Opaque:
        pass

    @stet.once(store=store)
    def f(model: object, seed: int) -> None:
        pass

    with pytest.raises(TypeError, match=r"'model'.*key=") as info:
        f(Opaque(), 1)
    assert "f()" in str(info.value)


def test_helpers_has_reset_pending(store: Path) -> None:
    calls: list[tuple[int, int]] = []

    @stet.once(store=store)
    def f(a: int, b: int = 0) -> None:
        calls.append((a, b))

    f(1)
    f(2, 1)
    assert f.has(1) and f.is_done(a=1, b=0) and not f.has(1, 1)
    grid = {"a": [1, 2, 3], "b": [0, 1]}
    assert list(f.pending(grid)) == [
        {"a": 1, "b": 1},
        {"a": 2, "b": 0},
        {"a": 3, "b": 0},
        {"a": 3, "b": 1},
    ]
    assert list(f.pending([(1, 0), (1, 1)])) == [(1, 1)]
    assert list(f.pending([{"a": 2, "b": 1}, {"a": 9}])) == [{"a": 9}]
    assert f.reset(1) is True
    assert f.reset(1) is False
    f(1)
    assert calls == [(1, 0), (2, 1), (1, 0)]


def test_quiet_true_prints_nothing(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    @stet.once(store=store, quiet=True)
    def f(x: int) -> None:
        pass

    f(1)
    f(1)
    assert capsys.readouterr().out == ""


def test_quiet_environment_variable(
    store: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    @stet.once(store=store)
    def f(x: int) -> None:
        pass

    f(1)
    capsys.readouterr()
    monkeypatch.setenv("STET_QUIET", "1")
    f(1)
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("STET_QUIET", "0")
    for _ in range(15):
        f(1)
    assert capsys.readouterr().out.count("[stet] Skipping f(x=1)") == 15


def test_default_prints_ten_skips_then_one_line(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    @stet.once(store=store)
    def f(x: int) -> None:
        pass

    for i in range(30):
        f(i)
    capsys.readouterr()
    for i in range(30):
        f(i)
    lines = capsys.readouterr().out.splitlines()
    assert lines[:10] == [f"[stet] Skipping f(x={i})" for i in range(10)]
    assert lines[10:] == [
        "[stet] Skipping more completed runs of f without a line each (STET_QUIET=0 shows "
        "every skip, STET_QUIET=1 none)"
    ]


def test_zero_parameter_function_runs_once(store: Path) -> None:
    calls: list[int] = []

    @stet.once(store=store)
    def setup() -> None:
        calls.append(1)

    setup()
    setup()
    assert calls == [1]


def test_var_positional_and_keyword_parameters(store: Path) -> None:
    calls: list[Any] = []

    @stet.once(store=store)
    def f(*args: int, **kwargs: int) -> None:
        calls.append((args, kwargs))

    f(1, 2, a=3, b=4)
    f(1, 2, b=4, a=3)
    f(2, 1, a=3, b=4)
    assert calls == [((1, 2), {"a": 3, "b": 4}), ((2, 1), {"a": 3, "b": 4})]


def test_missing_pyarrow_gives_install_hint(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['pyarrow'] = None\n"
        "import stet\n"
        "try:\n"
        f"    stet.once(store={str(tmp_path / 'r.parquet')!r})\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert 'pip install "stet[parquet]"' in out.stdout


def test_records_of_another_process_are_seen(store: Path) -> None:
    @stet.once(store=store)
    def f(x: int) -> None:
        pass

    f(1)
    assert not f.has(2)
    script = f"import stet\nb = stet.backends.get_backend({str(store)!r})\nb.record({{'x': 2}})\n"
    subprocess.run([sys.executable, "-c", "import stet.backends\n" + script], check=True)
    assert f.has(2)
    assert f.has(1)


def test_reset_helper_removes_records_of_0_0_x_and_imports(store: Path) -> None:
    """Regression: f.reset compared only typed digests, so text-matched rows stayed."""
    from stet._identity import Identity

    backend = get_backend(store)
    backend.add(Identity.of_text({"alpha": "0.1", "seed": "2"}))
    calls: list[tuple[float, int]] = []

    @stet.once(store=store, quiet=True)
    def f(alpha: float, seed: int) -> None:
        calls.append((alpha, seed))

    f(0.1, 2)
    assert calls == []
    assert f.reset(0.1, 2) is True
    f(0.1, 2)
    assert calls == [(0.1, 2)]


def test_orphaned_temporary_files_are_cleaned(tmp_path: Path) -> None:
    """A rewrite killed before its rename leaves .NAME.PID.stet-tmp; the next one removes it."""
    done = dead_pid()
    orphan = tmp_path / f".runs.csv.{done}.stet-tmp"
    orphan.write_text("partial")
    backend = get_backend(tmp_path / "runs.csv")
    backend.record({"x": 1})
    backend.remove({"x": 1})  # a whole-file rewrite
    assert not orphan.exists()


def test_skip_line_cuts_long_values(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    @stet.once(store=store)
    def f(note: str, n: int) -> None:
        pass

    f("x" * 500, 1)
    capsys.readouterr()
    f("x" * 500, 1)
    line = capsys.readouterr().out.strip()
    assert line == f"[stet] Skipping f(note='{'x' * 56}..., n=1)"


# -- the store given positionally, and ignore= ---------------------------------------


def test_store_given_positionally(tmp_path: Path, ext: str) -> None:
    calls: list[int] = []

    @stet.once(f"runs{ext}")  # relative: the current directory (tmp_path) when decorating
    def f(x: int) -> None:
        calls.append(x)

    f(1)
    f(1)
    assert calls == [1]
    assert f.store == str(tmp_path / f"runs{ext}")
    assert get_backend(tmp_path / f"runs{ext}").has({"x": 1})


def test_store_given_positionally_as_a_path_with_options(tmp_path: Path) -> None:
    @stet.once(tmp_path / "sub" / "runs.sqlite", key="x", quiet=True)
    def f(x: int, y: int) -> None:
        pass

    f(1, 2)
    assert f.has(1, 99)
    assert f.store == str(tmp_path / "sub" / "runs.sqlite")


def test_store_given_twice_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="got the store twice"):
        stet.once("a.csv", store="b.csv")  # type: ignore[call-overload]


def test_a_positional_argument_that_is_neither_function_nor_path(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"takes a function, or the store as a path; got int"):
        stet.once(3)  # type: ignore[call-overload]


def test_ignore_is_the_complement_of_key(store: Path) -> None:
    calls: list[tuple[float, int, bool, str]] = []

    @stet.once(store, ignore=["verbose", "device"])
    def f(alpha: float, seed: int, verbose: bool = False, device: str = "cpu") -> None:
        calls.append((alpha, seed, verbose, device))

    assert f.key == ("alpha", "seed")
    f(0.1, 1)
    f(0.1, 1, verbose=True, device="cuda:0")  # same run: the ignored ones do not count
    f(0.1, 2, device="cuda:1")
    assert calls == [(0.1, 1, False, "cpu"), (0.1, 2, False, "cuda:1")]
    [first, _] = get_backend(store).load()
    assert [name for name in first if not name.startswith("_stet_")] == ["alpha", "seed"]


def test_ignore_and_the_equivalent_key_are_the_same_runs(store: Path) -> None:
    def body(alpha: float, seed: int, verbose: bool = False) -> None:
        pass

    by_key = stet.once(store, key=["alpha", "seed"], name="train", quiet=True)(body)
    by_ignore = stet.once(store, ignore="verbose", name="train", quiet=True)(body)
    assert by_key.key == by_ignore.key == ("alpha", "seed")
    by_key(0.1, 1)
    assert by_ignore.has(0.1, 1, verbose=True)
    assert list(by_ignore.pending({"alpha": [0.1, 0.2], "seed": [1]})) == [
        {"alpha": 0.2, "seed": 1}
    ]


def test_ignore_on_a_method_still_leaves_out_self(store: Path) -> None:
    class Model:
        @stet.once(store, ignore=["workers"])
        def fit(self, lr: float, workers: int = 4) -> None:
            pass

    assert Model.fit.key == ("lr",)


def test_ignore_naming_no_parameter_fails_at_decoration(store: Path) -> None:
    with pytest.raises(
        ValueError, match=r"ignore names \['verbos'\].*parameters are: alpha, verbose"
    ):

        @stet.once(store, ignore=["verbos"])
        def f(alpha: float, verbose: bool = False) -> None:
            pass


@pytest.mark.parametrize(
    ("key", "ignore"),
    [(["alpha"], ["verbose"]), ("alpha", "verbose"), ([], [])],
    ids=["lists", "strings", "empty"],
)
def test_key_and_ignore_together_is_a_value_error(
    store: Path, key: list[str] | str, ignore: list[str] | str
) -> None:
    with pytest.raises(ValueError, match="give key= or ignore= for f, not both"):

        @stet.once(store, key=key, ignore=ignore)
        def f(alpha: float, verbose: bool = False) -> None:
            pass
