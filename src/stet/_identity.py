"""Run identity: the canonical text of key values.

Two calls are the same run when their key parameters have the same names, the same
type families and the same canonical text. The text of a Python scalar is ``str(value)``
(floats print their shortest round-trip form), which keeps stores written by stet 0.0.x
matching. Containers get a canonical, order-independent text where order carries no
meaning (dict keys, sets). Values whose text would not identify them faithfully raise
``TypeError`` instead of risking a false skip.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import fractions
import hashlib
import pathlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "Identity",
    "canonical",
    "identity_of",
    "format_types",
    "parse_types",
    "TAGS",
]

# A type tag names the family a value belongs to. It is stored next to the text so that
# "1" (a str) and 1 (an int), or "None" and None, stay different runs. The tag "text"
# marks a record imported from text (``stet import``): it matches by text alone, like a
# record written by stet 0.0.x.
TAGS = frozenset(
    {
        "none", "bool", "int", "float", "str", "complex", "decimal", "fraction",
        "path", "bytes", "datetime", "date", "time", "timedelta", "uuid", "enum",
        "tuple", "list", "dict", "set", "frozenset", "record", "text",
    }
)  # fmt: skip

_SCALAR_TAGS: dict[type, str] = {
    type(None): "none",
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    complex: "complex",
    decimal.Decimal: "decimal",
    fractions.Fraction: "fraction",
    bytes: "bytes",
    _dt.datetime: "datetime",
    _dt.date: "date",
    _dt.time: "time",
    _dt.timedelta: "timedelta",
    uuid.UUID: "uuid",
}

# Separators that cannot appear in a parameter name or a type tag; they only frame the
# hashed identity string, never a stored cell.
_FIELD = "\x1e"
_ITEM = "\x1f"


class _Unfaithful(Exception):
    """Raised inside canonicalisation; turned into a TypeError naming the parameter."""


def _unwrap_numpy(value: Any) -> Any:
    """Return the Python scalar behind a NumPy scalar, or raise for arrays."""
    cls = type(value)
    if cls.__name__ == "ndarray" or cls.__name__ == "matrix":
        raise _Unfaithful(
            f"a NumPy array (shape {getattr(value, 'shape', '?')}) has no faithful "
            "text identity; pass tuple(arr.tolist()) or leave it out of the key"
        )
    item = getattr(value, "item", None)
    if item is None:
        raise _Unfaithful(f"an object of type {cls.__module__}.{cls.__qualname__}")
    return item()


def _tag_of(value: Any) -> tuple[str, Any]:
    """Classify ``value``; return its tag and the (possibly converted) value."""
    cls = type(value)
    tag = _SCALAR_TAGS.get(cls)
    if tag is not None:
        return tag, value
    module = cls.__module__
    if module == "numpy" or module.startswith("numpy."):
        return _tag_of(_unwrap_numpy(value))
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
    # Subclasses of the scalar types (a str subclass, an IntFlag, ...) keep their base
    # family when they add no identity of their own.
    for base, base_tag in _SCALAR_TAGS.items():
        if base is not type(None) and isinstance(value, base):
            convert: Any = base
            return base_tag, convert(value) if base in (str, int, float, complex, bytes) else value
    raise _Unfaithful(f"an object of type {module}.{cls.__qualname__}")


def _nested(value: Any) -> str:
    """Canonical text of a value inside a container (strings quoted, like repr)."""
    tag, value = _tag_of(value)
    if tag == "str" or tag == "bytes":
        return repr(value)
    if tag in ("none", "bool", "int", "float", "decimal", "fraction", "uuid", "complex"):
        return _top(tag, value) if tag != "decimal" else f"Decimal('{value}')"
    return (
        f"{tag}:{_top(tag, value)}"
        if tag in ("path", "datetime", "date", "time", "timedelta")
        else _top(tag, value)
    )


def _top(tag: str, value: Any) -> str:
    """Canonical text of a top-level value of family ``tag``."""
    if tag == "float":
        return repr(value)
    if tag in ("tuple", "list"):
        inner = ", ".join(_nested(v) for v in value)
        if tag == "list":
            return f"[{inner}]"
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if tag == "dict":
        items = sorted((_nested(k), _nested(v)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if tag in ("set", "frozenset"):
        inner = ", ".join(sorted(_nested(v) for v in value))
        if tag == "set":
            return "{" + inner + "}" if value else "set()"
        return f"frozenset({{{inner}}})" if value else "frozenset()"
    if tag == "enum":
        cls = type(value)
        return f"{cls.__qualname__}.{value.name}"
    if tag == "record":
        cls = type(value)
        if dataclasses.is_dataclass(value):
            fields = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
        else:
            fields = list(zip(cls._fields, value, strict=True))
        inner = ", ".join(f"{name}={_nested(v)}" for name, v in fields)
        return f"{cls.__qualname__}({inner})"
    if tag == "path":
        return str(value)
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
        return "int", str(value)
    if cls is float:
        return "float", repr(value)
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


def format_types(names: tuple[str, ...], tags: tuple[str, ...]) -> str:
    """Text of the ``_stet_types`` column: ``alpha=float;seed=int`` (``-`` if no keys).

    The separator is ``;`` so that a CSV writer never needs to quote the cell.
    """
    if not names:
        return "-"
    return ";".join(f"{n}={t}" for n, t in zip(names, tags, strict=True))


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


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def digest_plan(
    names: tuple[str, ...], tags: tuple[str, ...] | None
) -> tuple[str, tuple[int, ...], tuple[str, ...]]:
    """How to build the digested text of a record with these key names and tags.

    The text is a head letter (``T`` typed, ``L`` by text alone, as 0.0.x and imported
    records match), then one piece per key parameter, sorted by name so parameter
    order never matters, joined by a separator. A piece is ``prefix + len(text) + ":"
    + text``: the length keeps texts that contain the separators from running into
    each other.

    Returns the head letter, the order in which to take the texts, and the prefix of
    each piece in that order.
    """
    order = tuple(sorted(range(len(names)), key=names.__getitem__))
    if tags is None or "text" in tags:
        return "L", order, tuple(f"{names[i]}{_FIELD}" for i in order)
    return "T", order, tuple(f"{names[i]}{_FIELD}{tags[i]}{_FIELD}" for i in order)


def digester(
    names: tuple[str, ...], tags: tuple[str, ...] | None, positions: Sequence[Any]
) -> Callable[[Any], bytes]:
    """A function digesting a record's texts, found at ``positions`` of its cells.

    The one implementation of the digest (see `digest_plan`), used for calls and for
    stored records alike. Records with one, two or three key parameters (nearly all
    sweeps) get a function with the pieces spelled out, a third faster than the
    general loop: a cold start digests every record, and each call digests its key.
    """
    head, order, prefixes = digest_plan(names, tags)
    pairs = tuple(zip(prefixes, [positions[i] for i in order], strict=True))
    blake2b = hashlib.blake2b

    def general(cells: Any) -> bytes:
        text = head + _ITEM.join([f"{p}{len(cells[i])}:{cells[i]}" for p, i in pairs])
        return blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    if len(pairs) == 1:
        ((p0, i0),) = pairs

        def one(c: Any) -> bytes:
            a = c[i0]
            text = f"{head}{p0}{len(a)}:{a}"
            return blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

        return one
    if len(pairs) == 2:
        (p0, i0), (p1, i1) = pairs

        def two(c: Any) -> bytes:
            a, b = c[i0], c[i1]
            text = f"{head}{p0}{len(a)}:{a}{_ITEM}{p1}{len(b)}:{b}"
            return blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

        return two
    if len(pairs) == 3:
        (p0, i0), (p1, i1), (p2, i2) = pairs

        def three(c: Any) -> bytes:
            a, b, d = c[i0], c[i1], c[i2]
            text = f"{head}{p0}{len(a)}:{a}{_ITEM}{p1}{len(b)}:{b}{_ITEM}{p2}{len(d)}:{d}"
            return blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

        return three
    return general


_digesters: dict[tuple[tuple[str, ...], tuple[str, ...] | None], Callable[[Any], bytes]] = {}


def _texts_digester(names: tuple[str, ...], tags: tuple[str, ...] | None) -> Callable[[Any], bytes]:
    """The cached digester of a tuple of texts in ``names`` order."""
    found = _digesters.get((names, tags))
    if found is None:
        found = digester(names, tags, range(len(names)))
        if len(_digesters) < 10_000:
            _digesters[(names, tags)] = found
    return found


def typed_digest(names: tuple[str, ...], tags: tuple[str, ...], texts: tuple[str, ...]) -> bytes:
    """Digest identifying a record exactly: its key names, type tags and texts."""
    return _texts_digester(names, tags)(texts)


def legacy_digest(names: tuple[str, ...], texts: tuple[str, ...]) -> bytes:
    """Digest of a record by names and texts only, as stet 0.0.x compared them."""
    return _texts_digester(names, None)(texts)


def digest_part(name: str, tag: str, text: str) -> str:
    """One key parameter's piece of a typed digest (see `digest_plan`).

    For callers that precompute pieces, such as `pending` over a grid, which reuses
    each axis value's piece for every point it appears in.
    """
    return f"{name}{_FIELD}{tag}{_FIELD}{len(text)}:{text}"


def digest_of(parts: list[str]) -> bytes:
    """The typed digest of a record from its ``digest_part`` pieces, sorted by name."""
    return _digest("T" + _ITEM.join(parts))


def text_part(name: str, text: str) -> str:
    """One key parameter's piece of a text-only digest (see `digest_plan`)."""
    return f"{name}{_FIELD}{len(text)}:{text}"


def text_digest_of(parts: list[str]) -> bytes:
    """The text-only digest of a record from its ``text_part`` pieces, sorted by name."""
    return _digest("L" + _ITEM.join(parts))


class Identity:
    """The identity of one call: key names, tags and texts, plus their digests."""

    __slots__ = ("_legacy", "digest", "is_text", "names", "tags", "texts")

    def __init__(self, names: tuple[str, ...], tags: tuple[str, ...], texts: tuple[str, ...]):
        self.names = names
        self.tags = tags
        self.texts = texts
        self.is_text = "text" in tags
        self._legacy: bytes | None = None
        self.digest = self.legacy if self.is_text else typed_digest(names, tags, texts)

    @classmethod
    def of_text(cls, key: Mapping[str, str]) -> Identity:
        """A record known only by its texts (imported): it matches calls by text alone."""
        names = tuple(key)
        return cls(names, ("text",) * len(names), tuple(key.values()))

    @property
    def legacy(self) -> bytes:
        """Digest under 0.0.x matching rules (text only), computed on first use."""
        if self._legacy is None:
            self._legacy = legacy_digest(self.names, self.texts)
        return self._legacy

    @property
    def types(self) -> str:
        """The ``_stet_types`` cell for this identity."""
        return format_types(self.names, self.tags)

    def as_dict(self) -> dict[str, str]:
        """Key texts by parameter name."""
        return dict(zip(self.names, self.texts, strict=True))


def identity_pair(name: str, value: Any, where: str = "") -> tuple[str, str]:
    """``canonical(value)``, with the TypeError naming parameter ``name`` of ``where``."""
    try:
        return canonical(value)
    except TypeError as exc:
        owner = f" of {where}()" if where else ""
        raise TypeError(
            f"stet: parameter {name!r}{owner} has a value without a faithful text "
            f"identity ({exc}), so stet cannot tell whether this run already "
            f"completed. Leave it out of the key with key=[...] naming the other "
            f"parameters, or pass a plain value (str, number, tuple) that identifies it."
        ) from None


def identity_of(key: Mapping[str, Any], where: str = "") -> Identity:
    """Build the identity of a mapping of key parameter names to Python values.

    Args:
        key: parameter name to value.
        where: the function or call the values belong to, for error messages.

    Raises:
        TypeError: naming the parameter whose value has no faithful text identity.
        ValueError: for a name that cannot be a key column.
    """
    names = tuple(key)
    tags: list[str] = []
    texts: list[str] = []
    for name, value in key.items():
        tag, text = identity_pair(name, value, where.removesuffix("()"))
        tags.append(tag)
        texts.append(text)
    return Identity(names, tuple(tags), tuple(texts))


def check_name(name: object, where: str) -> str:
    """Validate a key column name; return it.

    Raises:
        ValueError: when the name is not an identifier or uses the ``_stet_`` prefix.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(
            f"stet: key name {name!r} in {where} is not a valid parameter name; key "
            "names must be Python identifiers"
        )
    if name.startswith("_stet_"):
        raise ValueError(
            f"stet: key name {name!r} in {where} starts with '_stet_', which is "
            "reserved for stet's own columns; rename the parameter"
        )
    return name
