"""Run identity (SPEC S4): when two calls are the same run."""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
import os
from collections import namedtuple
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stet
from _helpers import OtherProcess, sweep_function
from _identity_values import AlikeBytes, AlikeFloat, AlikeInt, AlikeStr, Perm
from stet._identity import canonical, identity_of


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "None"),
        ("", ""),
        ("NA", "NA"),
        ("None", "None"),
        (True, "True"),
        (0.1, "0.1"),
        (0.1 + 0.2, "0.30000000000000004"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (-0.0, "-0.0"),
        (2**70, str(2**70)),
        (Path("/data/x.csv"), "/data/x.csv".replace("/", os.sep)),  # \data\x.csv on Windows
    ],
)
def test_scalars_use_str_like_0_0_x(value: Any, text: str) -> None:
    assert canonical(value)[1] == text


def test_type_families_keep_equal_texts_apart() -> None:
    tags = {canonical(v)[0] for v in (None, "None", 1, "1", True, 1.0, Path("1"))}
    assert len(tags) == 6  # str "None" and "1" share the str family


def test_numpy_scalars_equal_python_values() -> None:
    assert canonical(np.float64(0.1)) == canonical(0.1)
    assert canonical(np.int64(7)) == canonical(7)
    assert canonical(np.bool_(True)) == canonical(True)
    assert canonical(np.str_("a")) == canonical("a")
    assert canonical(np.float32(0.1)) != canonical(0.1)  # a different number


def test_dict_order_does_not_matter_and_nesting_is_canonical() -> None:
    a = {"b": [1, (2, "x")], "a": {"z": None, "y": 1.5}}
    b = {"a": {"y": 1.5, "z": None}, "b": [1, (2, "x")]}
    assert canonical(a) == canonical(b)
    assert canonical([1, 2]) != canonical((1, 2))
    assert canonical(["1"]) != canonical([1])
    assert canonical({1, 2, 3}) == canonical({3, 2, 1})
    assert canonical((1,)) == ("tuple", "(1,)")


class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass(frozen=True)
class Config:
    lr: float
    layers: tuple[int, ...]


Point = namedtuple("Point", "x y")


def test_other_faithful_types() -> None:
    assert canonical(Color.RED) == ("enum", "Color.RED")
    assert canonical(Config(0.1, (2, 3))) == ("record", "Config(lr=0.1, layers=(2, 3))")
    assert canonical(Point(1, 2)) == ("record", "Point(x=1, y=2)")
    assert canonical(Decimal("1.10"))[1] == "1.10"
    assert canonical(Fraction(1, 3))[1] == "1/3"
    assert canonical(PurePosixPath("a/b")) == ("path", "a/b")


def _function() -> None:
    pass


@pytest.mark.parametrize(
    "value",
    [
        object(),
        np.arange(3),
        np.zeros((1000, 1000)),
        pd.DataFrame({"a": [1]}),
        pd.Series([1, 2]),
        _function,
        lambda: None,
        [1, object()],
        {"k": np.arange(2)},
    ],
    ids=[
        "object",
        "array",
        "big-array",
        "dataframe",
        "series",
        "function",
        "lambda",
        "nested-object",
        "nested-array",
    ],
)
def test_values_without_faithful_text_raise(value: Any) -> None:
    with pytest.raises(TypeError, match=r"parameter 'model'.*key="):
        identity_of({"model": value}, "train()")


def test_self_referencing_list_raises() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match="'x'"):
        identity_of({"x": loop})


# -- values whose text lies, or that print alike ---------------------------------------


def _record_then_ask(
    other: OtherProcess, store: Path, recorded: list[Any], asked: list[Any]
) -> list[bool]:
    """Record ``f(value)`` for each recorded value here; return which of ``asked`` run
    in another process afterwards."""
    f = sweep_function(store, ["value"])
    assert all(f(value) is True for value in recorded), "a recorded value was skipped"
    return other.ran(store, [{"value": value} for value in asked])


@pytest.mark.parametrize(
    ("cls", "held", "other"),
    [
        (AlikeStr, "a", "b"),
        (AlikeInt, 1, 2),
        (AlikeFloat, 0.5, 0.25),
        (AlikeBytes, b"a", b"b"),
    ],
    ids=["str", "int", "float", "bytes"],
)
def test_a_builtin_subclass_is_identified_by_its_value_not_its_text(
    store: Path, other_process: OtherProcess, cls: type, held: Any, other: Any
) -> None:
    """Two instances that print alike (``__str__``, ``__repr__``, ``__format__`` and the
    conversions all overridden) but hold different data are different runs; equal data
    is the same run as the plain built-in value."""
    assert str(cls(held)) == str(cls(other)) and repr(cls(held)) == repr(cls(other))
    ran = _record_then_ask(
        other_process,
        store,
        [cls(held)],
        [cls(held), held, cls(other), other, (cls(held),), (held,), [cls(other)]],
    )
    assert ran == [False, False, True, False, True, False, True]


def test_a_builtin_subclass_value_never_collides_with_its_text(
    store: Path, other_process: OtherProcess
) -> None:
    ran = _record_then_ask(
        other_process, store, [AlikeInt(7), AlikeStr("x")], ["alike", "7", 0, AlikeInt(0)]
    )
    assert ran == [True, True, True, False]


def test_intflag_pseudo_members_are_different_runs(
    store: Path, other_process: OtherProcess
) -> None:
    """``Perm(0)`` and ``Perm(8)`` have no member name: a text built from the name would
    make them (and every other pseudo-member) one run."""
    assert Perm(0)._name_ is None and Perm(8)._name_ is None
    ran = _record_then_ask(
        other_process,
        store,
        [Perm(0)],
        [Perm(0), Perm(8), Perm.R | Perm.W, Perm(6), Perm.R, 0, 8, Perm(0)],
    )
    assert ran == [False, True, True, False, True, True, True, False]


def test_datetime64_nat_is_not_none_and_datetime64_is_not_an_int(
    store: Path, other_process: OtherProcess
) -> None:
    nat = np.datetime64("NaT")
    tnat = np.timedelta64("NaT")
    ns = np.datetime64(5, "ns")
    ran = _record_then_ask(
        other_process,
        store,
        [None, 5],
        [nat, tnat, ns, np.timedelta64(5, "ns"), None, 5, nat, ns, tnat],
    )
    assert ran == [True, True, True, True, False, False, False, False, False]


@pytest.mark.skipif(
    np.finfo(np.longdouble).nmant <= np.finfo(np.float64).nmant,
    reason="numpy.longdouble is a float64 on this platform",
)
def test_numpy_longdouble_raises_type_error_naming_the_parameter(store: Path) -> None:
    ran: list[object] = []

    @stet.once(store=store)
    def f(alpha: object, seed: int) -> None:
        ran.append(alpha)

    with pytest.raises(TypeError, match=r"parameter 'alpha' of f\(\).*key="):
        f(np.longdouble("0.1"), 1)
    with pytest.raises(TypeError, match=r"parameter 'alpha'"):
        f([np.longdouble(1)], 1)
    assert ran == []
    assert not store.exists()


# -- property: record, restart, must skip; differ, must run -----------------------

_strings = st.one_of(
    st.sampled_from(
        [
            "",
            "NA",
            "None",
            "nan",
            "null",
            "N/A",
            "True",
            "False",
            "1",
            "-3",
            "0.1",
            "a,b",
            'q"uote',
            "new\nline",
            "tab\tx",
            "ünï",
            "日本",
            " pad ",
        ]
    ),
    st.text(max_size=12),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    _strings,
)
#: Sets and frozensets: of ints, or of strings (whose iteration order depends on the
#: process's hash seed).
_sets = st.one_of(
    st.sets(st.integers(min_value=-20, max_value=20), max_size=5),
    st.frozensets(st.integers(min_value=-20, max_value=20), max_size=5),
    st.sets(_strings, max_size=5),
    st.frozensets(_strings, max_size=5),
)
_values = st.recursive(
    st.one_of(_scalars, _sets),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=4), inner, max_size=3),
    ),
    max_leaves=6,
)


def _twin(value: Any) -> Any:
    """A value of another type that prints like ``value``: ``1`` and ``"1"``, ``None``
    and ``"None"``, ``True`` and ``"True"``, a set and the frozenset of its elements,
    a set of ints and the set of their texts. Different runs, every one of them."""
    if value is None or isinstance(value, (bool, int, float)):
        return str(value)
    if isinstance(value, str):
        for other in (None, True, False):
            if value == str(other):
                return other
        for parse in (int, float):
            try:
                return parse(value)
            except ValueError:
                pass
        return [value]
    if isinstance(value, frozenset):
        return set(value)
    if isinstance(value, set):
        if all(type(v) is int for v in value):
            return {str(v) for v in value}
        return frozenset(value)
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, tuple):
        return list(value)
    return list(value.items()) if value else set()


def _same(a: Any, b: Any) -> bool:
    """Oracle, independent of stet: same run iff same type and same value.

    Floats compare by repr, so nan equals nan and -0.0 differs from 0.0; dicts ignore
    key order and sets element order (as Python's == does); set elements are only ever
    ints or only strings, so == also compares their types.
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _same_call(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)


_names = st.sampled_from(["alpha", "seed", "name", "x"])
_calls = st.dictionaries(_names, _values, min_size=1, max_size=3)

_example = itertools.count()


@pytest.fixture(scope="module")
def other_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtherProcess]:
    """A second process, with a hash seed of its own, that answers as a restarted script."""
    process = OtherProcess(tmp_path_factory.mktemp("other"), PYTHONHASHSEED="12345")
    yield process
    process.close()


@pytest.mark.parametrize("ext", [".csv", ".json", ".sqlite", ".parquet"])
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    recorded=st.lists(_calls, min_size=1, max_size=5),
    probes=st.lists(_calls, max_size=4),
    twins=st.lists(st.integers(min_value=0, max_value=4), max_size=5),
)
def test_recorded_runs_are_skipped_after_restart_and_others_run(
    tmp_path: Path,
    ext: str,
    other_process: OtherProcess,
    recorded: list[dict[str, Any]],
    probes: list[dict[str, Any]],
    twins: list[int],
) -> None:
    """Record some calls; another process must skip exactly those, and run every call
    that differs, in particular the look-alike of a recorded value (``1`` / ``"1"``,
    ``None`` / ``"None"``, ``True`` / ``"True"``, a set / its frozenset)."""
    store = tmp_path / f"prop{next(_example)}{ext}"  # a fresh store per example

    for call in recorded:
        sweep_function(store, sorted(call))(**call)
    # The look-alike twin of one value of some recorded calls.
    for i in twins:
        call = dict(recorded[i % len(recorded)])
        name = sorted(call)[i % len(call)]
        call[name] = _twin(call[name])
        probes.append(call)
    calls = recorded + probes
    ran = other_process.ran(store, calls)
    # Python's own dict equality decides "same key set"; values by the oracle. Within
    # the probes a repeated call runs only the first time.
    expected = [
        not any(_same_call(c, earlier) for earlier in calls[:i]) for i, c in enumerate(calls)
    ]
    expected[: len(recorded)] = [False] * len(recorded)
    assert ran == expected


def test_nan_is_the_same_run_as_nan(store: Path) -> None:
    calls: list[float] = []

    @stet.once(store=store)
    def f(x: float) -> None:
        calls.append(x)

    f(math.nan)
    f(float("nan"))
    f(np.float64("nan"))
    assert len(calls) == 1


_axis = st.lists(_scalars, min_size=1, max_size=4, unique_by=lambda v: (type(v), repr(v)))


@pytest.mark.parametrize("ext", [".csv", ".sqlite"])
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(a=_axis, b=_axis, data=st.data())
def test_pending_agrees_with_has_point_by_point(
    tmp_path: Path, ext: str, a: list[Any], b: list[Any], data: st.DataObject
) -> None:
    """pending() builds digests from per-axis pieces; it must match a call's identity."""
    store = tmp_path / f"grid{next(_example)}{ext}"

    @stet.once(store=store, quiet=True)
    def f(a: Any, b: Any, c: int = 3) -> None:
        pass

    points = [{"a": x, "b": y} for x in a for y in b]
    for point in data.draw(st.lists(st.sampled_from(points), max_size=len(points))):
        f(**point)
    expected = [p for p in points if not f.has(**p)]
    assert list(f.pending({"a": a, "b": b})) == expected
    assert list(f.pending(points)) == expected
