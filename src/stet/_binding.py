"""Binding a call's arguments to the key parameters, and the run they identify.

``inspect.Signature.bind`` takes about 5 microseconds for a call with keywords. A
decorated function instead gets a small generated function with the same parameters
(the same kinds, the same defaults) that returns the key values: Python's own call
machinery then binds the arguments, in a fraction of that time, with the same errors.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from stet._identity import Identity, _pieces, base, check_name, identity_pair, piece, unfaithful

__all__ = ["Binder"]

_KIND = inspect.Parameter


def _key_names(
    func_name: str,
    params: list[inspect.Parameter],
    key: Iterable[str] | str | None,
    ignore: Iterable[str] | str | None,
) -> tuple[str, ...]:
    """The key parameters: ``key``, else all but ``ignore`` (and a leading self/cls)."""
    names = [p.name for p in params]
    described = ", ".join(names) or "(none)"
    if key is not None and ignore is not None:
        raise ValueError(f"stet: give key= or ignore= for {func_name}, not both")
    chosen = None if key is None else (key,) if isinstance(key, str) else tuple(key)
    left_out = () if ignore is None else (ignore,) if isinstance(ignore, str) else tuple(ignore)
    for kind, given in (("key", chosen or ()), ("ignore", left_out)):
        unknown = [k for k in given if k not in names]
        if unknown:
            raise ValueError(
                f"stet: {kind} names {unknown} are not parameters of {func_name}; its "
                f"parameters are: {described}"
            )
        if len(set(given)) != len(given):
            raise ValueError(f"stet: {kind}={list(given)} repeats a name")
    if chosen is None:
        skip_first = bool(params) and names[0] in ("self", "cls")
        chosen = tuple(n for n in (names[1:] if skip_first else names) if n not in left_out)
    for name in chosen:
        check_name(name, f"the key of {func_name}")
    return chosen


def _parameter_list(params: list[inspect.Parameter]) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """Source of ``params``' parameter list, and the defaults to set on a function with it.

    Defaults are written as ``None`` and set afterwards from the original objects (never
    through their text), so a default is the same value it is for the real function.
    """
    parts: list[str] = []
    defaults: list[Any] = []
    kwdefaults: dict[str, Any] = {}
    star = False
    for i, p in enumerate(params):
        if p.kind is _KIND.VAR_POSITIONAL:
            parts.append(f"*{p.name}")
            star = True
        elif p.kind is _KIND.VAR_KEYWORD:
            parts.append(f"**{p.name}")
        elif p.kind is _KIND.KEYWORD_ONLY:
            if not star:
                parts.append("*")
                star = True
            parts.append(p.name if p.default is p.empty else f"{p.name}=None")
            if p.default is not p.empty:
                kwdefaults[p.name] = p.default
        else:
            parts.append(p.name if p.default is p.empty else f"{p.name}=None")
            if p.default is not p.empty:
                defaults.append(p.default)
            if p.kind is _KIND.POSITIONAL_ONLY and (
                i + 1 == len(params) or params[i + 1].kind is not _KIND.POSITIONAL_ONLY
            ):
                parts.append("/")
    return ", ".join(parts), tuple(defaults), kwdefaults


# The generated functions see these helpers under names no parameter is allowed to take
# (key names cannot start with "_stet_", and any other parameter with such a name makes
# `Binder` fall back to the general path).
_HELPERS = ("_stet_frepr", "_stet_irepr", "_stet_pair", "_stet_pieces", "_stet_piece",
            "_stet_identity", "_stet_names", "_stet_func", "_stet_base")  # fmt: skip

_VALUE = """
    _stet_t = type({v})
    if _stet_t is float:
        g{i}, x{i} = "float", _stet_frepr({v})
    elif _stet_t is int:
        g{i}, x{i} = "int", _stet_irepr({v})
    elif _stet_t is str and {v}.isascii():
        g{i}, x{i} = "str", {v}
    else:
        g{i}, x{i} = _stet_pair({n!r}, {v})
    p{i} = _stet_pieces.get(f"P{n}\\x1e{{g{i}}}\\x1e{{x{i}}}")
    if p{i} is None:
        p{i} = _stet_piece({n!r}, g{i}, x{i})
"""


def _generated(
    params: list[inspect.Parameter], key: tuple[str, ...], helpers: tuple[Any, ...]
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(bind, identify)``: functions with ``params``' parameter list.

    ``bind`` returns the key values; ``identify`` returns the run's `Identity` directly,
    with the common value types (int, float, ASCII str) turned into text inline.
    """
    signature, defaults, kwdefaults = _parameter_list(params)
    n = len(key)
    body = "".join(_VALUE.format(v=k, n=k, i=i) for i, k in enumerate(key))
    xor = " ^ ".join(["_stet_base", *(f"p{i}" for i in range(n))])
    tags = "(" + "".join(f"g{i}, " for i in range(n)) + ")"
    texts = "(" + "".join(f"x{i}, " for i in range(n)) + ")"
    values = "(" + "".join(f"{k}, " for k in key) + ")"
    source = (
        f"def make({', '.join(_HELPERS)}):\n"
        f"  def bind({signature}):\n    return {values}\n"
        f"  def identify({signature}):\n"
        + "".join("  " + line + "\n" for line in body.splitlines() if line)
        + f"      return _stet_identity(_stet_names, {tags}, {texts}, _stet_func, {xor})\n"
        "  return bind, identify\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, "<stet binder>", "exec"), namespace)  # parameter names only
    made: tuple[Callable[..., Any], Callable[..., Any]] = namespace["make"](*helpers)
    for function in made:
        function.__defaults__ = defaults or None
        function.__kwdefaults__ = kwdefaults or None
    return made


class Binder:
    """Everything about one function's key: which parameters, and the run of a call.

    Attributes:
        name: the function name runs are recorded under.
        key: the key parameter names, in parameter order.
        signature: the function's signature.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        name: str,
        key: Iterable[str] | str | None,
        ignore: Iterable[str] | str | None = None,
    ) -> None:
        self.name = name
        self.signature = inspect.signature(func)
        self.params = list(self.signature.parameters.values())
        self.key = _key_names(name, self.params, key, ignore)
        self._base = base(name)
        helpers = (
            float.__repr__,
            int.__repr__,
            self.pair,
            _pieces,
            piece,
            Identity,
            self.key,
            name,
            self._base,
        )
        self._bind, self._identify = _generated(self.params, self.key, helpers)
        if any(p.name in _HELPERS for p in self.params):
            self._identify = self._identify_slowly  # a parameter shadows a helper

    def values(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """The key values of a call, defaults applied.

        Raises:
            TypeError: for arguments the function would not accept, like Python does.
        """
        try:
            values: tuple[Any, ...] = self._bind(*args, **kwargs)
        except TypeError:
            try:
                self.signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{self.name}(): {exc}") from None
            raise
        return values

    def identity(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Identity:
        """The run a call with ``args`` and ``kwargs`` makes.

        Raises:
            TypeError: for arguments the function would not accept, like Python does,
                or a key value without a faithful identity (naming the parameter).
        """
        try:
            ident: Identity = self._identify(*args, **kwargs)
        except TypeError as exc:
            if str(exc).startswith("stet:"):
                raise  # a value without a faithful identity: the message says which
            return self.identity_of(self.values(args, kwargs))  # raises the bind error
        return ident

    def _identify_slowly(self, *args: Any, **kwargs: Any) -> Identity:
        return self.identity_of(self.values(args, kwargs))

    def identity_of(self, values: tuple[Any, ...]) -> Identity:
        """The run of these key values (in `key` order)."""
        d = self._base
        tags: list[str] = []
        texts: list[str] = []
        for name, value in zip(self.key, values, strict=True):
            tag, text = self.pair(name, value)
            d ^= piece(name, tag, text)
            tags.append(tag)
            texts.append(text)
        return Identity(self.key, tuple(tags), tuple(texts), self.name, d)

    def pairs(self, name: str, values: Iterable[Any]) -> list[tuple[str, str]]:
        """`pair` of each value of parameter ``name`` (a grid's axis, a column of points)."""
        pair = self.pair
        return [pair(name, value) for value in values]

    def pair(self, name: str, value: Any) -> tuple[str, str]:
        """``(tag, text)`` of one key value, with errors naming the parameter.

        Ints, floats and ASCII strs directly: the text `canonical` would give them.
        """
        cls = type(value)
        if cls is int:
            return "int", int.__repr__(value)
        if cls is float:
            return "float", float.__repr__(value)
        if cls is str and value.isascii():
            return "str", value
        return identity_pair(name, value, self.name)

    def unfaithful(self, name: str, problem: str) -> TypeError:
        """The TypeError for a value of parameter ``name`` without a faithful identity."""
        return unfaithful(name, self.name, problem)
