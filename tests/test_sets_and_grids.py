"""Order that carries no meaning never changes a run (SPEC S4, S6).

A set's identity does not depend on its iteration order, which for ints follows the
order of insertion and for strings changes with the process's hash seed. A grid given
to ``f.pending`` as a dict may list its axes in any order: each axis is paired with the
parameter it names, never with the parameter at the same position.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stet
from _helpers import OtherProcess, child_env, run_python, sweep_function
from stet._identity import canonical
from stet.backends import get_backend, open_store


@pytest.fixture(scope="module")
def other_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtherProcess]:
    process = OtherProcess(tmp_path_factory.mktemp("other"), PYTHONHASHSEED="2")
    yield process
    process.close()


# -- sets --------------------------------------------------------------------------------


def test_int_sets_built_in_another_order_are_the_same_run(
    store: Path, other_process: OtherProcess
) -> None:
    """Regression: ``{0, 8}`` and ``{8, 0}`` iterate in insertion order (0 and 8 share a
    hash slot), so a text taken in iteration order made them two runs."""
    first, second = set([0, 8]), set([8, 0])  # insertion order matters
    assert first == second and list(first) != list(second), "the sets iterate alike here"
    f = sweep_function(store, ["value"])
    assert f(first) is True
    assert f(second) is None
    assert f(frozenset(second)) is True  # a frozenset is not a set
    assert f(frozenset(first)) is None
    nested = [(second, 1), {"k": first}, [frozenset([8, 0, 16]), {0}]]
    for value in nested:
        assert f(value) is True
    again = [(set([0, 8]), 1), {"k": set([8, 0])}, [frozenset([16, 0, 8]), {0}]]
    assert other_process.ran(store, [{"value": v} for v in [second, frozenset(first), *again]]) == [
        False,
        False,
        False,
        False,
        False,
    ]


WORDS = ["b", "a", "c", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]

HASH_SEED_SCRIPT = r"""
import json
import sys

import stet

store, mode = sys.argv[1], sys.argv[2]
words = json.loads(sys.argv[3])
values = [
    set(words),
    frozenset(words),
    (frozenset(words[:5]), "x"),
    {"k": set(words)},
    {frozenset(words[:3]), frozenset(words[3:7])},
    [set(words[2:])],
]
if mode == "order":
    print(json.dumps([list(set(words)), list(frozenset(words[:5]))]))
else:
    @stet.once(store=store, quiet=True)
    def f(value):
        return True

    print(json.dumps([f(v) is True for v in values]))
"""


def _with_seed(tmp_path: Path, seed: str, *args: str) -> Any:
    script = tmp_path / "hash_seed.py"
    script.write_text(HASH_SEED_SCRIPT)
    env = child_env(PYTHONHASHSEED=seed)
    out = run_python([str(script), *args, json.dumps(WORDS)], cwd=tmp_path, env=env)
    return json.loads(out.stdout)


def test_string_sets_are_the_same_run_under_another_hash_seed(tmp_path: Path, store: Path) -> None:
    """Record sets and frozensets of strings with PYTHONHASHSEED=1; a process with
    PYTHONHASHSEED=2, where the same sets iterate in another order, skips them all."""
    assert _with_seed(tmp_path, "1", str(store), "order") != _with_seed(
        tmp_path, "2", str(store), "order"
    ), "these sets iterate alike under both seeds: pick other words"
    assert _with_seed(tmp_path, "1", str(store), "record") == [True] * 6
    assert _with_seed(tmp_path, "2", str(store), "record") == [False] * 6
    assert _with_seed(tmp_path, "3", str(store), "record") == [False] * 6


# -- pending(grid) against has(), point by point -------------------------------------------

#: Axis values, look-alikes side by side: a grid point matched through the wrong axis
#: or the wrong name shows up as a difference between pending() and has().
_ALPHAS: list[Any] = [0.1, "0.1", 1, "1", 1.0, True, None, "None", (1, 2), frozenset({"a", "b"})]
_SEEDS: list[Any] = [0, 1, 2, "1", 3, False]
_LRS: list[Any] = [0.5, 0.25, "0.5"]


def _axis(pool: list[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique_by=repr)


def _functions(store: Path) -> dict[str, Any]:
    """Functions whose parameters come in different orders, and one with a default."""

    @stet.once(store=store, quiet=True)
    def alpha_seed(alpha: Any, seed: Any) -> None:
        pass

    @stet.once(store=store, quiet=True)
    def seed_alpha(seed: Any, alpha: Any) -> None:
        pass

    @stet.once(store=store, quiet=True)
    def seed_alpha_lr(seed: Any, alpha: Any, lr: Any = 0.5) -> None:
        pass

    @stet.once(store=store, quiet=True, name="someone_else")
    def other_seed_alpha(seed: Any, alpha: Any) -> None:
        pass

    @stet.once(store=store, quiet=True, name="someone_else")
    def other_seed_alpha_lr(seed: Any, alpha: Any, lr: Any = 0.5) -> None:
        pass

    found = {f.name: f for f in (alpha_seed, seed_alpha, seed_alpha_lr)}
    found["someone_else"] = other_seed_alpha
    found["someone_else_lr"] = other_seed_alpha_lr
    return found


_grid_number = itertools.count()

#: How a point gets recorded: by the function itself, by ``backend.record`` with Python
#: values (no function: counts for every function), with texts (matched by text), or by
#: another function with the same parameters (never counts).
_HOW = ["call", "plain", "text", "other"]


@pytest.mark.parametrize("ext", [".csv", ".sqlite"])
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_pending_of_a_dict_grid_in_any_key_order_agrees_with_has(
    tmp_path: Path, ext: str, data: st.DataObject
) -> None:
    store = tmp_path / f"grid{next(_grid_number)}{ext}"
    functions = _functions(store)
    name = data.draw(st.sampled_from(["alpha_seed", "seed_alpha", "seed_alpha_lr"]), "function")
    f = functions[name]
    axes = {"alpha": data.draw(_axis(_ALPHAS), "alpha"), "seed": data.draw(_axis(_SEEDS), "seed")}
    if name == "seed_alpha_lr" and data.draw(st.booleans(), "lr axis"):
        axes["lr"] = data.draw(_axis(_LRS), "lr")
    order = data.draw(st.permutations(list(axes)), "grid key order")
    grid = {key: axes[key] for key in order}
    points = [dict(zip(order, combo, strict=True)) for combo in itertools.product(*grid.values())]

    # The backend the decorated functions use: records of another backend object (another
    # process) are checked in test_another_process_s_records_are_seen_at_once.
    backend = open_store(store)
    recorded = data.draw(
        st.lists(st.tuples(st.sampled_from(points), st.sampled_from(_HOW)), max_size=8),
        "recorded",
    )
    for point, how in recorded:
        key = {**({"lr": 0.5} if name == "seed_alpha_lr" else {}), **point}
        if how == "call":
            f(**point)
        elif how == "plain":
            backend.record(key)
        elif how == "text":
            backend.record({k: canonical(v)[1] for k, v in key.items()})
        else:
            functions["someone_else_lr" if name == "seed_alpha_lr" else "someone_else"](**point)

    expected = [p for p in points if not f.has(**p)]
    assert _exactly(f.pending(grid)) == _exactly(expected)
    assert _exactly(f.pending(points)) == _exactly(expected)
    params = list(f.key)
    as_tuples = [tuple(p.get(k, 0.5) for k in params) for p in points]
    pending_tuples = [dict(zip(params, t, strict=True)) for t in f.pending(as_tuples)]
    assert _exactly(pending_tuples) == _exactly(
        [{k: p.get(k, 0.5) for k in params} for p in expected]
    )
    # An anchor that does not rest on has(): runs recorded with the function's own values
    # are done, and only records of another function leave every point pending.
    done_for_sure = _exactly([p for p, how in recorded if how in ("call", "plain")])
    assert not set(done_for_sure) & set(_exactly(expected))
    if all(how == "other" for _, how in recorded):
        assert _exactly(expected) == _exactly(points)


@pytest.mark.parametrize("order", [("alpha", "seed"), ("seed", "alpha")])
def test_pending_pairs_each_axis_with_the_parameter_it_names(
    store: Path, order: tuple[str, str]
) -> None:
    """``def f(seed, alpha)`` and a grid listing alpha first (or not): each axis's values
    go with its own name. Paired by position, the point ``alpha=2, seed=1`` would be
    taken for the run ``f(seed=2, alpha=1)``, which completed: a false skip."""

    @stet.once(store=store, quiet=True)
    def f(seed: int, alpha: float) -> None:
        pass

    f(1, 0.5)
    f(seed=2, alpha=0.1)
    f(seed=2, alpha=1)  # not a point of the grid
    open_store(store).record({"seed": 3, "alpha": 0.5})  # no function: counts for f
    open_store(store).record({"seed": "1", "alpha": "0.1"})  # matched by text
    axes = {"alpha": [0.1, 0.5, 2], "seed": [1, 2, 3]}
    grid = {name: axes[name] for name in order}
    pending = [(0.1, 3), (0.5, 2), (2, 1), (2, 2), (2, 3)]
    expected = [{n: {"alpha": a, "seed": s}[n] for n in order} for a, s in pending]
    if order[0] == "seed":
        expected.sort(key=lambda p: (p["seed"], p["alpha"]))  # itertools.product order
    assert _exactly(f.pending(grid)) == _exactly(expected)
    assert _exactly([p for p in expected if not f.has(**p)]) == _exactly(expected)


# A grid of 10,000 points or more is checked against the store's whole index in one
# read (SQLite and PostgreSQL read every key at once), and a grid of points has its
# digests built column by column; each path must give the answers has() gives, also for
# records without a function, records matched by text, and values that look alike.


def test_a_big_grid_gets_the_answers_has_gives(any_store: str) -> None:
    @stet.once(store=any_store, quiet=True)
    def f(alpha: Any, seed: int) -> None:
        pass

    alphas: list[Any] = [*range(1_000), "1", "2", 1.0, 2.5, True, None, (1, 2)]
    grid = {"alpha": alphas, "seed": list(range(12))}
    points = [(a, s) for a in alphas for s in grid["seed"]]
    assert len(points) >= 10_000
    f(3, 0)
    f("1", 1)  # the str twin of 1: not the run f(1, 1)
    f(2.5, 2)
    f(None, 3)
    backend = get_backend(any_store)
    backend.record({"alpha": 7, "seed": 4})  # no function: done for f
    backend.record({"alpha": "8", "seed": "5"})  # text only: done for f(8, 5), f("8", 5)
    backend.record({"alpha": canonical((1, 2))[1], "seed": "6"})  # text only, a tuple's
    done = [p for p in points if f.has(*p)]
    assert sorted(map(repr, done)) == sorted(
        map(repr, [(3, 0), ("1", 1), (2.5, 2), (None, 3), (7, 4), (8, 5), ((1, 2), 6)])
    )
    expected = [p for p in points if not f.has(*p)]
    assert _exactly(f.pending(grid)) == _exactly([{"alpha": a, "seed": s} for a, s in expected])
    assert [repr(p) for p in f.pending(points)] == [repr(p) for p in expected]
    as_dicts = [{"seed": s, "alpha": a} for a, s in points]
    assert _exactly(f.pending(as_dicts)) == _exactly([{"seed": s, "alpha": a} for a, s in expected])
    assert [repr(p) for p in f.pending(iter(points))] == [repr(p) for p in expected]


def _exactly(points: Any) -> list[tuple[tuple[str, str, str], ...]]:
    """Points as comparable tuples that tell ``1`` from ``True`` and ``1.0`` (which ==
    does not)."""
    return [tuple((k, type(v).__name__, repr(v)) for k, v in p.items()) for p in points]


# A batch of dict points that all name the same parameters is bound once and read
# column by column; dicts that leave out a defaulted key, name a parameter that is not
# in the key, or name other parameters than their neighbours must get has()'s answers.


@pytest.mark.parametrize("size", [5_000, 12_000], ids=["probed", "indexed"])
def test_pending_of_dicts_naming_different_parameters_agrees_with_has(
    store: Path, size: int
) -> None:
    @stet.once(store=store, quiet=True, ignore="verbose")
    def f(a: int, seed: int, epochs: int = 10, verbose: bool = False) -> None:
        pass

    shapes: list[Callable[[int], dict[str, Any]]] = [
        lambda i: {"a": i, "seed": i % 3},
        lambda i: {"seed": i % 3, "a": i, "epochs": 10},  # the default, written out
        lambda i: {"a": i, "seed": i % 3, "epochs": 20},
        lambda i: {"verbose": True, "a": i, "seed": i % 3},  # not a key parameter
        lambda i: {"epochs": 10, "seed": i % 3, "a": i},
    ]
    f(5, 2)  # done for the shapes with epochs=10
    f(7, 1, epochs=20)
    f(4, 1, 10, True)
    mixed = [shapes[i % len(shapes)](i) for i in range(size)]
    for points in [*([shape(i) for i in range(size)] for shape in shapes), mixed]:
        expected = [p for p in points if not f.has(**p)]
        assert 1 <= len(points) - len(expected) <= 3
        assert [repr(p) for p in f.pending(points)] == [repr(p) for p in expected]
    tuples = [(i, i % 3) for i in range(size)] + [(i, i % 3, 20, False) for i in range(size)]
    left = [p for p in tuples if not f.has(*p)]
    assert len(left) == len(tuples) - 3
    assert list(f.pending(tuples)) == left

    @stet.once(store=store, quiet=True, key=["a"])
    def g(a: int, seed: int = 0) -> None:
        pass

    g(3)
    assert [p["a"] for p in g.pending([{"a": i} for i in range(size)])] == [
        i for i in range(size) if i != 3
    ]


def test_pending_of_dicts_for_a_key_with_kwargs_agrees_with_has(store: Path) -> None:
    """Regression: dicts naming the same parameters were bound once, from the first
    dict, so a key with ``**kwargs`` got the first point's extra arguments for every
    point, and a positional-only parameter took a value its default keeps."""

    @stet.once(store=store, quiet=True)
    def g(a: int, **options: int) -> None:
        pass

    @stet.once(store=store, quiet=True)
    def h(a: int = 0, /, **options: int) -> None:
        pass

    g(a=1, b=2)
    h(a=5)  # a goes to **options; the parameter a keeps its default
    for size in (20, 12_000):  # probed and indexed on the database stores
        points = [{"a": 1, "b": i} for i in range(size)]
        assert [p["b"] for p in g.pending(points)] == [i for i in range(size) if i != 2]
        points = [{"a": i} for i in range(size)]
        assert [p["a"] for p in h.pending(points)] == [i for i in range(size) if i != 5]
        assert [p["a"] for p in points if not h.has(**p)] == [i for i in range(size) if i != 5]


@pytest.mark.parametrize("size", [20, 12_000])
def test_pending_of_a_function_without_key_parameters(store: Path, size: int) -> None:
    """Regression: with no key parameter, points bound to no columns, and on a store
    asked point by point every point came out done."""

    @stet.once(store=store, quiet=True, key=[])
    def f(x: int) -> None:
        pass

    points = [(i,) for i in range(size)]
    assert list(f.pending(points)) == points
    f(0)
    assert list(f.pending(points)) == []


def test_pending_names_the_parameter_a_dict_point_lacks(store: Path) -> None:
    f = sweep_function(store, ["a", "seed"])
    points = [{"a": i, "seed": 0} for i in range(100)]
    points[50] = {"a": 50, "epochs": 0}  # as many names as its neighbours, not the same
    with pytest.raises(TypeError, match="seed"):
        list(f.pending(points))  # type: ignore[attr-defined]


def test_pending_of_a_dict_grid_keeps_any_parameter_name(store: Path) -> None:
    """Points of a dict grid are built by generated code; a name with quotes, or a str
    subclass whose repr is code, must come out as the same dict key."""

    class Sneaky(str):
        def __repr__(self) -> str:
            return "__import__('os').getcwd()"

    @stet.once(store=store, quiet=True, key=["a"])
    def f(a: int, **options: Any) -> None:
        pass

    odd = 'it\'s "odd"\\'
    f(1, **{odd: 0})
    assert list(f.pending({"a": [1, 2], odd: [0]})) == [{"a": 2, odd: 0}]
    (point,) = f.pending({"a": [2], Sneaky("x"): [0]})
    assert [type(k) for k in point] == [str, Sneaky]


# Regression (fixed): SQLite store: which kinds of record the table holds (runs recorded
# without a function, runs matched by text) is cached per process and refreshed at most
# once a second, and index() (used by pending) never refreshes it, so records another
# process added are not looked for


def test_pending_sees_runs_another_process_recorded_without_a_function(
    store: Path, ext: str, request: pytest.FixtureRequest
) -> None:

    @stet.once(store=store, quiet=True)
    def f(alpha: float, seed: int) -> None:
        pass

    f(0.1, 1)  # the sweep's process has its store open
    other = get_backend(store)  # another process: records that name no function
    other.record({"alpha": 0.2, "seed": 1})
    other.record({"alpha": "0.3", "seed": "1"})  # the 0.0.x import recipe
    alphas = [0.1, 0.2, 0.3, 0.4]
    assert list(f.pending({"alpha": alphas, "seed": [1]})) == [{"alpha": 0.4, "seed": 1}]
    assert [f.has(alpha, 1) for alpha in alphas] == [True, True, True, False]


def test_a_run_imported_by_another_process_is_skipped_at_once(
    store: Path, ext: str, request: pytest.FixtureRequest
) -> None:
    """The 0.0.x import recipe, while a sweep's process (a notebook kernel) is running."""
    ran: list[float] = []

    @stet.once(store=store, quiet=True)
    def f(alpha: float, seed: int) -> None:
        ran.append(alpha)

    f(0.1, 1)
    assert not f.has(0.7, 4)
    get_backend(store).record({"alpha": "0.7", "seed": "4"})  # another process imports it
    f(0.7, 4)
    assert ran == [0.1]


# Regression (fixed): SQLite store: index() (what pending() reads) uses the process's
# state before creating it, so in a fresh process whose first use of an existing store
# is pending() it raises AttributeError: 'SqliteBackend' object has no attribute
# '_memory'

RESUME = r"""
import json
import sys

import stet

@stet.once(store=sys.argv[1], quiet=True)
def train(alpha, seed):
    pass

todo = train.pending({"alpha": [0.1, 0.2], "seed": [1, 2]})  # first thing: a progress bar
print(json.dumps({"total": len(todo), "points": list(todo)}))
"""


def test_pending_is_the_first_call_of_a_restarted_script(
    tmp_path: Path, store: Path, ext: str, request: pytest.FixtureRequest
) -> None:
    """``for p in tqdm(train.pending(grid))`` at the top of the script, run again."""
    script = tmp_path / "resume.py"
    script.write_text(RESUME)
    sweep_function(store, ["alpha", "seed"])(alpha=0.2, seed=2)  # another function's run
    get_backend(store).record({"alpha": 0.1, "seed": 2})  # no function: counts
    out = run_python([str(script), str(store)], cwd=tmp_path).stdout
    assert json.loads(out) == {
        "total": 3,
        "points": [{"alpha": 0.1, "seed": 1}, {"alpha": 0.2, "seed": 1}, {"alpha": 0.2, "seed": 2}],
    }
