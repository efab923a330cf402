"""The canonical text of a key value: what identifies it, stored in the key column.

The text of a Python scalar is ``str(value)`` (floats print their shortest round-trip
form), which keeps stores written by stet 0.0.x matching. Containers get a canonical,
order-independent text where order carries no meaning (dict keys, sets). Values whose
text would not identify them faithfully raise ``TypeError`` instead of risking a false
skip. Identity never comes from text a class can override: a subclass of a built-in is
identified by its built-in value.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import fractions
import pathlib
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = ["TAGS", "canonical", "format_types", "parse_types"]

# A type tag names the family a value belongs to. It is stored next to the text so that
# "1" (a str) and 1 (an int), or "None" and None, stay different runs. The tag "text"
# marks a value known only as text (``stet import``, or a string given to the backend
# API as 0.0.x taught): such a record matches by text alone, like a 0.0.x record.
TAGS = frozenset(
    {
        "none", "bool", "int", "float", "str", "complex", "decimal", "fraction",
        "path", "bytes", "datetime", "date", "time", "timedelta", "uuid", "enum",
        "tuple", "list", "dict", "set", "frozenset", "record", "text",
        "datetime64", "timedelta64",
    }
)  # fmt: skip

_DT = _dt.datetime

# Exact built-in types, and how to read the built-in value out of an instance of a
# subclass without calling anything the subclass may have overridden.
_SCALARS: dict[type, tuple[str, Any]] = {
    type(None): ("none", None),
    bool: ("bool", None),
    int: ("int", int.__int__),
    float: ("float", float.__float__),
    str: ("str", str.__str__),
    complex: ("complex", complex.__complex__),
    bytes: ("bytes", bytes.__bytes__),
    decimal.Decimal: ("decimal", None),
    fractions.Fraction: ("fraction", None),
    _dt.datetime: ("datetime", lambda v: _DT.combine(_DT.date(v), _DT.timetz(v))),
    _dt.date: ("date", lambda v: _dt.date.fromordinal(_dt.date.toordinal(v))),
    _dt.time: ("time", lambda v: _dt.time.fromisoformat(_dt.time.isoformat(v))),
    _dt.timedelta: ("timedelta", None),
    uuid.UUID: ("uuid", None),
}
# Subclasses are checked in this order: bool before int, datetime before date.
_SUBCLASS_ORDER = (int, float, str, complex, bytes, _dt.datetime, _dt.date, _dt.time)


class _Unfaithful(Exception):
    """Raised inside canonicalisation; turned into a TypeError naming the parameter."""


def _from_numpy(value: Any) -> tuple[str, Any]:
    """The tag and Python value of a NumPy scalar, or raise for anything else."""
    cls = type(value)
    dtype = getattr(value, "dtype", None)
    if cls.__name__ in ("ndarray", "matrix") or getattr(value, "ndim", 0) != 0:
        raise _Unfaithful(
            f"a NumPy array (shape {getattr(value, 'shape', '?')}) has no faithful "
            "text identity; pass tuple(arr.tolist()) or leave it out of the key"
        )
    kind = getattr(dtype, "kind", None)
    if kind in ("M", "m"):
        # datetime64/timedelta64: .item() would give None for NaT (same as None) or an
        # int for nanosecond units (same as an int). Their own text carries the unit.
        return ("datetime64" if kind == "M" else "timedelta64"), str(value)
    if kind == "f" and getattr(dtype, "itemsize", 8) > 8:
        raise _Unfaithful(
            f"a NumPy {dtype} has more precision than a Python float, so its text would "
            "not identify it; convert it with float() or str() first"
        )
    if kind in ("b", "i", "u", "f", "c", "U", "S"):
        return _tag_of(value.item())
    raise _Unfaithful(f"a NumPy scalar of dtype {dtype}")


def _tag_of(value: Any) -> tuple[str, Any]:
    """Classify ``value``; return its tag and the value to take its text from."""
    cls = type(value)
    found = _SCALARS.get(cls)
    if found is not None:
        return found[0], value
    module = cls.__module__
    if module == "numpy" or module.startswith("numpy."):
        return _from_numpy(value)
    if module == "pandas" or module.startswith("pandas."):
        raise _Unfaithful(
            f"a pandas {cls.__name__} has no faithful text identity (its repr is "
            "truncated); leave it out of the key"
        )
    if isinstance(value, enum.Enum):
        return "enum", value
    if isinstance(value, pathlib.PurePath):
        return "path", value
    if isinstance(value, tuple):
        if hasattr(cls, "_fields"):
            return "record", value
        return "tuple", value
    if isinstance(value, list):
        return "list", value
    if isinstance(value, Mapping):
        return "dict", value
    if isinstance(value, frozenset):
        return "frozenset", value
    if isinstance(value, set):
        return "set", value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return "record", value
    for base_type in _SUBCLASS_ORDER:
        if isinstance(value, base_type):
            tag, unwrap = _SCALARS[base_type]
            return tag, unwrap(value)
    raise _Unfaithful(f"an object of type {module}.{cls.__qualname__}")


def _nested(value: Any) -> str:
    """Canonical text of a value inside a container (strings quoted, like repr)."""
    tag, value = _tag_of(value)
    if tag == "str":
        return str.__repr__(value)
    if tag == "bytes":
        return bytes.__repr__(value)
    if tag == "decimal":
        return f"Decimal('{value}')"
    if tag in ("none", "bool", "int", "float", "fraction", "uuid", "complex"):
        return _top(tag, value)
    if tag in ("path", "datetime", "date", "time", "timedelta", "datetime64", "timedelta64"):
        return f"{tag}:{_top(tag, value)}"
    return _top(tag, value)


def _enum_text(value: enum.Enum) -> str:
    cls = type(value)
    name = value._name_
    if name is not None and cls._member_map_.get(name) is value:
        return f"{cls.__qualname__}.{name}"
    # A Flag combination or pseudo-member (Perm(0), Perm(8)) has no member name of its
    # own: identify it by its value.
    return f"{cls.__qualname__}({_nested(value._value_)})"


def _top(tag: str, value: Any) -> str:
    """Canonical text of a top-level value of family ``tag``."""
    if tag == "float":
        return float.__repr__(value)
    if tag == "int":
        return int.__repr__(value)
    if tag == "str":
        return value  # type: ignore[no-any-return]
    if tag == "bytes":
        return bytes.__repr__(value)
    if tag == "complex":
        return complex.__repr__(value)
    if tag in ("tuple", "list"):
        inner = ", ".join(_nested(v) for v in value)
        if tag == "list":
            return f"[{inner}]"
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if tag == "dict":
        items = sorted((_nested(k), _nested(v)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if tag in ("set", "frozenset"):
        # Sorted texts: the same set has the same text whatever its iteration order,
        # which for strings changes with PYTHONHASHSEED from one process to the next.
        inner = ", ".join(sorted(_nested(v) for v in value))
        if tag == "set":
            return "{" + inner + "}" if value else "set()"
        return f"frozenset({{{inner}}})" if value else "frozenset()"
    if tag == "enum":
        return _enum_text(value)
    if tag == "record":
        cls = type(value)
        if dataclasses.is_dataclass(value):
            fields = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
        else:
            fields = list(zip(cls._fields, value, strict=True))
        inner = ", ".join(f"{name}={_nested(v)}" for name, v in fields)
        return f"{cls.__qualname__}({inner})"
    if tag == "path":
        return pathlib.PurePath.__str__(value)
    return str(value)


def canonical(value: Any) -> tuple[str, str]:
    """Return ``(tag, text)``: the type family and canonical text of a key value.

    Raises:
        TypeError: when the value has no faithful text identity.
    """
    cls = type(value)
    if cls is str:
        if not value.isascii():
            _check_encodable(value)
        return "str", value
    if cls is int:
        return "int", int.__repr__(value)
    if cls is float:
        return "float", float.__repr__(value)
    try:
        tag, value = _tag_of(value)
        text = _top(tag, value)
    except _Unfaithful as exc:
        raise TypeError(str(exc)) from None
    except RecursionError:
        raise TypeError("a self-referencing container") from None
    if not text.isascii():
        _check_encodable(text)  # e.g. a path holding undecodable file-name bytes
    return tag, text


def _check_encodable(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TypeError(
            f"a str with a lone surrogate ({text[exc.start]!r} at index {exc.start}) cannot "
            "be stored as UTF-8 text"
        ) from None


# -- the stored form of a record's types ----------------------------------------------


def format_types(names: tuple[str, ...], tags: tuple[str, ...]) -> str:
    """Text of the ``_stet_types`` column: ``alpha=float;seed=int`` (``-`` if no keys).

    The separator is ``;`` so that a CSV writer never needs to quote the cell.
    """
    found = _types_texts.get((names, tags))
    if found is None:
        found = ";".join(f"{n}={t}" for n, t in zip(names, tags, strict=True)) if names else "-"
        if len(_types_texts) < _TYPES_TEXTS:  # a function has few; a flood is not kept
            _types_texts[(names, tags)] = found
    return found


_types_texts: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}
_TYPES_TEXTS = 4096


_types_cache: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}


def parse_types(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Parse a ``_stet_types`` cell into ``(names, tags)``.

    Raises:
        ValueError: when the text is not a valid types cell.
    """
    cached = _types_cache.get(text)
    if cached is not None:
        return cached
    if text == "-":
        parsed: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    else:
        names: list[str] = []
        tags: list[str] = []
        for part in text.split(";"):
            name, sep, tag = part.partition("=")
            if not sep or not name.isidentifier() or tag not in TAGS or name in names:
                raise ValueError(f"invalid _stet_types value {text!r}")
            names.append(name)
            tags.append(tag)
        parsed = (tuple(names), tuple(tags))
    if len(_types_cache) < 10_000:
        _types_cache[text] = parsed
    return parsed
