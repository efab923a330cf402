"""Run identity (SPEC S4): when two calls are the same run."""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
import os
import pickle
import subprocess
import sys
from collections import namedtuple
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


# -- property: record, restart, must skip; differ, must run -----------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "",
            "NA",
            "None",
            "nan",
            "null",
            "N/A",
            "True",
            "1",
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
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=4), inner, max_size=3),
    ),
    max_leaves=6,
)


def _same(a: Any, b: Any) -> bool:
    """Oracle, independent of stet: same run iff same type and same value.

    Floats compare by repr, so nan equals nan and -0.0 differs from 0.0; dicts ignore
    key order (as Python's == does).
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


_names = st.sampled_from(["alpha", "seed", "name", "x"])
_calls = st.dictionaries(_names, _values, min_size=1, max_size=3)

_example = itertools.count()

_CHECKER = """
import pickle, sys
import stet
store, path = sys.argv[1], sys.argv[2]
with open(path, "rb") as f:
    calls = pickle.load(f)
ran = []

@stet.once(store=store, quiet=True)
def run(**kwargs):
    return True

print([run(**call) is True for call in calls])
"""


@pytest.mark.parametrize("ext", [".csv", ".json", ".sqlite", ".parquet"])
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(recorded=st.lists(_calls, min_size=1, max_size=4), probes=st.lists(_calls, max_size=4))
def test_recorded_runs_are_skipped_after_restart_and_others_run(
    tmp_path: Path, ext: str, recorded: list[dict[str, Any]], probes: list[dict[str, Any]]
) -> None:
    store = tmp_path / f"prop{next(_example)}{ext}"  # a fresh store per example

    @stet.once(store=store, quiet=True)
    def run(**kwargs: Any) -> bool:
        return True

    for call in recorded:
        run(**call)
    # Python's own dict equality decides "same key set"; values by the oracle.
    expected = [
        not any(c.keys() == r.keys() and all(_same(c[k], r[k]) for k in c) for r in recorded)
        for c in recorded + probes
    ]
    calls_file = tmp_path / "calls.pickle"
    calls_file.write_bytes(pickle.dumps(recorded + probes))
    out = subprocess.run(
        [sys.executable, "-c", _CHECKER, str(store), str(calls_file)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ran = eval(out)  # a list of bools printed by the checker
    # Within the probe list itself a repeated value runs only the first time.
    for i, call in enumerate(probes):
        j = len(recorded) + i
        earlier = (recorded + probes)[len(recorded) : j]
        if any(c.keys() == call.keys() and all(_same(c[k], call[k]) for k in c) for c in earlier):
            expected[j] = False
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
