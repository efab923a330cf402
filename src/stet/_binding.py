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

from stet._identity import Identity, base, check_name, identity_pair, piece, unfaithful

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


def _fast_binder(params: list[inspect.Parameter], key: tuple[str, ...]) -> Callable[..., Any]:
    """A function with ``params``' parameter list that returns the ``key`` values.

    Defaults are set on the generated function from the original objects (never
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
    body = "(" + "".join(f"{k}, " for k in key) + ")"
    source = f"def bind({', '.join(parts)}):\n    return {body}\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, "<stet binder>", "exec"), namespace)  # parameter names only
    bind: Callable[..., Any] = namespace["bind"]
    bind.__defaults__ = tuple(defaults) or None
    bind.__kwdefaults__ = kwdefaults or None
    return bind


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
        self._bind = _fast_binder(self.params, self.key)
        self._base = base(name)

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
        """The run a call with ``args`` and ``kwargs`` makes."""
        return self.identity_of(self.values(args, kwargs))

    def identity_of(self, values: tuple[Any, ...]) -> Identity:
        """The run of these key values (in `key` order)."""
        d = self._base
        tags: list[str] = []
        texts: list[str] = []
        for name, value in zip(self.key, values, strict=True):
            cls = type(value)
            if cls is str and value.isascii():
                tag, text = "str", value
            elif cls is int:
                tag, text = "int", int.__repr__(value)
            elif cls is float:
                tag, text = "float", float.__repr__(value)
            else:
                tag, text = identity_pair(name, value, self.name)
            d ^= piece(name, tag, text)
            tags.append(tag)
            texts.append(text)
        return Identity(self.key, tuple(tags), tuple(texts), self.name, d)

    def pair(self, name: str, value: Any) -> tuple[str, str]:
        """``(tag, text)`` of one key value, with errors naming the parameter."""
        return identity_pair(name, value, self.name)

    def unfaithful(self, name: str, problem: str) -> TypeError:
        """The TypeError for a value of parameter ``name`` without a faithful identity."""
        return unfaithful(name, self.name, problem)
