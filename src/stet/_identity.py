"""Run identity: which function, which key names, which values, and their digest.

Two calls are the same run when they come from the same function and their key
parameters have the same names, the same type families and the same canonical text
(see `stet._canonical`). The digest of a run is the XOR of one 128-bit piece per key
parameter and a base for the function (see `piece` and `base`). XOR makes the digest
independent of parameter order and lets a grid reuse each axis value's piece for every
point it appears in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from stet._canonical import TAGS, canonical, format_types, parse_types

__all__ = [
    "TAGS",
    "Identity",
    "base",
    "canonical",
    "check_func_name",
    "check_name",
    "format_types",
    "identity_of",
    "parse_types",
    "piece",
    "pieces",
]

# Separators that cannot appear in a parameter name, a type tag or a function name; they
# only frame the hashed text, never a stored cell.
_FIELD = "\x1e"

_pieces: dict[str, int] = {}
_PIECE_CACHE = 1 << 17  # entries; grid values repeat, so most lookups hit
_CACHED_TEXT = 256  # longer texts are hashed each time rather than kept


def _hash(text: str) -> int:
    data = text.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "little")


def piece(name: str, tag: str, text: str) -> int:
    """The 128-bit piece one key parameter contributes to a run's digest.

    ``tag`` is the value's type family, or ``""`` for a value matched by text alone
    (0.0.x and imported records). The hashed text is ``name, tag, text`` framed by a
    separator that no name or tag can hold, so no two parameters share a piece.
    """
    framed = f"P{name}{_FIELD}{tag}{_FIELD}{text}"
    found = _pieces.get(framed)
    if found is None:
        found = _hash(framed)
        if len(text) <= _CACHED_TEXT:
            if len(_pieces) >= _PIECE_CACHE:
                _pieces.clear()
            _pieces[framed] = found
    return found


def pieces(name: str, pairs: Iterable[tuple[str, str]]) -> list[int]:
    """`piece` of each ``(tag, text)`` of one parameter (a grid's axis), in one loop.

    Not cached: an axis's values are each used once here, and a big axis would only
    push out the pieces that calls reuse.
    """
    head = f"P{name}{_FIELD}"
    blake2b = hashlib.blake2b
    from_bytes = int.from_bytes
    return [
        from_bytes(
            blake2b(
                f"{head}{tag}{_FIELD}{text}".encode("utf-8", "surrogatepass"), digest_size=16
            ).digest(),
            "little",
        )
        for tag, text in pairs
    ]


_bases: dict[tuple[bool, str | None], int] = {}


def base(func: str | None, by_text: bool = False) -> int:
    """The part of a run's digest that says which function it belongs to.

    Args:
        func: the recorded function name; None for a record that matches every
            function with the same key names (0.0.x, imports, ``backend.record``).
        by_text: whether the record is matched by text alone.
    """
    found = _bases.get((by_text, func))
    if found is None:
        head = "L" if by_text else "T"
        found = _bases[(by_text, func)] = _hash(f"B{head}{_FIELD}{func or ''}")
    return found


def digest_of(
    names: tuple[str, ...], tags: tuple[str, ...] | None, texts: Any, func: str | None
) -> int:
    """The digest of a record: its function base XOR one piece per key parameter.

    ``tags`` None (or any ``"text"`` tag) makes it a record matched by text alone.
    """
    by_text = tags is None or "text" in tags
    d = base(func, by_text)
    if by_text:
        for name, text in zip(names, texts, strict=True):
            d ^= piece(name, "", text)
    else:
        for name, tag, text in zip(names, tags, texts, strict=True):  # type: ignore[arg-type]
            d ^= piece(name, tag, text)
    return d


class Identity:
    """The identity of one run: function, key names, tags and texts, and its digest.

    Attributes:
        digest: the digest a record of exactly this run carries.
        plain: the digest of the same run recorded without a function name.
        legacy: the digest of the same texts matched by text alone (computed on use).
    """

    __slots__ = ("_legacy", "digest", "func", "is_text", "names", "tags", "texts")

    def __init__(
        self,
        names: tuple[str, ...],
        tags: tuple[str, ...],
        texts: tuple[str, ...],
        func: str | None = None,
        digest: int | None = None,
    ) -> None:
        self.names = names
        self.tags = tags
        self.texts = texts
        self.func = func
        self.is_text = "text" in tags
        self._legacy: int | None = None
        self.digest = digest_of(names, tags, texts, func) if digest is None else digest

    @classmethod
    def of_text(cls, key: Mapping[str, str], func: str | None = None) -> Identity:
        """A record known only by its texts (imported): it matches calls by text alone."""
        names = tuple(key)
        return cls(names, ("text",) * len(names), tuple(key.values()), func)

    def with_func(self, func: str | None) -> Identity:
        """The same run recorded under function name ``func``."""
        shift = base(self.func, self.is_text) ^ base(func, self.is_text)
        return Identity(self.names, self.tags, self.texts, func, self.digest ^ shift)

    @property
    def plain(self) -> int:
        """The digest of this run recorded without a function name."""
        if self.func is None:
            return self.digest
        return self.digest ^ base(self.func, self.is_text) ^ base(None, self.is_text)

    @property
    def legacy(self) -> int:
        """The digest under 0.0.x matching rules (text only, no function)."""
        if self._legacy is None:
            self._legacy = digest_of(self.names, None, self.texts, None)
        return self._legacy

    @property
    def types(self) -> str:
        """The ``_stet_types`` cell for this identity."""
        return format_types(self.names, self.tags)

    def as_dict(self) -> dict[str, str]:
        """Key texts by parameter name."""
        return dict(zip(self.names, self.texts, strict=True))


def unfaithful(name: str, where: str, problem: str) -> TypeError:
    """The TypeError for parameter ``name`` of ``where`` whose value has no identity."""
    owner = f" of {where}()" if where else ""
    return TypeError(
        f"stet: parameter {name!r}{owner} has a value without a faithful text "
        f"identity ({problem}), so stet cannot tell whether this run already "
        f"completed. Leave it out of the key with key=[...] naming the other "
        f"parameters, or pass a plain value (str, number, tuple) that identifies it."
    )


def identity_pair(name: str, value: Any, where: str = "") -> tuple[str, str]:
    """``canonical(value)``, with the TypeError naming parameter ``name`` of ``where``."""
    try:
        return canonical(value)
    except TypeError as exc:
        raise unfaithful(name, where, str(exc)) from None


def identity_of(key: Mapping[str, Any], where: str = "", func: str | None = None) -> Identity:
    """Build the identity of a mapping of key parameter names to Python values.

    Args:
        key: parameter name to value.
        where: the function or call the values belong to, for error messages.
        func: the function name the run is recorded under (None: any function).

    Raises:
        TypeError: naming the parameter whose value has no faithful text identity.
    """
    names = tuple(key)
    tags: list[str] = []
    texts: list[str] = []
    for name, value in key.items():
        tag, text = identity_pair(name, value, where.removesuffix("()"))
        tags.append(tag)
        texts.append(text)
    return Identity(names, tuple(tags), tuple(texts), func)


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


def check_func_name(name: object) -> str:
    """Validate a recorded function name (``once(name=...)``); return it.

    Raises:
        ValueError: for an empty name or one holding control characters.
    """
    if not isinstance(name, str) or not name or not name.isprintable():
        raise ValueError(
            f"stet: name={name!r} is not a usable function name for the store; give a "
            "non-empty, printable text such as 'train'"
        )
    return name
