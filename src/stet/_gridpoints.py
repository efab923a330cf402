"""Grids given as points: their key values as columns, and their digests.

A batch of points (tuples of positional arguments, dicts of arguments) is bound to the
key parameters all at once where it can be, and kept as one list per key parameter:
a tuple per point would make a million tracked objects, and with them the garbage
collector's full passes over the whole grid, again and again. Digests are then built
column by column, each distinct value's piece computed once.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from itertools import compress, repeat, starmap
from operator import is_, itemgetter, xor
from typing import TYPE_CHECKING, Any

from stet._identity import base, pieces

if TYPE_CHECKING:
    from stet._binding import Binder

__all__ = ["bound_columns", "column_digests", "dicts_by_name", "tuples_are_keys"]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def dicts_by_name(binder: Binder) -> bool:
    """Whether a dict point's value for a key parameter's name is always that value.

    So it is when every key parameter can be given by keyword and none is ``*args`` or
    ``**kwargs`` (a name may then land in ``**kwargs``, or a positional-only parameter
    keep its default while ``**kwargs`` takes its name).
    """
    key = set(binder.key)
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return all(p.kind in keyword for p in binder.params if p.name in key)


def tuples_are_keys(binder: Binder) -> bool:
    """Whether a tuple with a value for each parameter binds to itself.

    So it does when the parameters are the key, in order, and all can be positional.
    """
    params = binder.params
    return all(p.kind in _POSITIONAL for p in params) and (
        tuple(p.name for p in params) == binder.key
    )


def bound_columns(
    binder: Binder, batch: list[Any], keys_as_tuples: bool, by_name: bool
) -> list[list[Any]]:
    """The key values of the points, a column per key parameter; at once if it can be.

    ``keys_as_tuples`` and ``by_name``: `tuples_are_keys` and `dicts_by_name` of
    ``binder``.
    """
    width = len(binder.key)
    kinds = set(map(type, batch))
    try:
        if kinds == {tuple}:
            if keys_as_tuples and set(map(len, batch)) == {width}:
                return _columns(batch, width)  # each point already is its key values
            return _columns(list(starmap(binder._bind, batch)), width)
        if kinds == {dict}:
            if by_name and (columns := _dict_columns(binder, batch)) is not None:
                return columns
            return _columns([binder._bind(**point) for point in batch], width)
    except TypeError:
        pass  # some point does not fit: the one-by-one path below says which
    rows: list[tuple[Any, ...]] = []
    for point in batch:
        if isinstance(point, Mapping):
            rows.append(binder.values((), dict(point)))
        elif isinstance(point, tuple):
            rows.append(binder.values(point, {}))
        else:
            rows.append(binder.values((point,), {}))
    return _columns(rows, width)


def _dict_columns(binder: Binder, batch: list[dict[str, Any]]) -> list[list[Any]] | None:
    """The key columns of dict points that all name the same keys; else None.

    Dicts of one length that all hold the first dict's names hold exactly those
    names, so binding the first dict binds them all: the key values are their
    values for those names and, for the other key parameters, the same defaults.
    Only for a binder whose key parameters `dicts_by_name` allows.
    """
    names = tuple(batch[0])
    if not names or set(map(len, batch)) != {len(names)}:
        return None
    try:
        given = {name: list(map(itemgetter(name), batch)) for name in names}
    except KeyError:  # some dict names other parameters
        return None
    first: tuple[Any, ...] = binder._bind(**batch[0])  # a TypeError for one is one for all
    return [
        given[name] if name in given else [first[i]] * len(batch)
        for i, name in enumerate(binder.key)
    ]


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """``rows`` (tuples of ``width`` values) as ``width`` lists, without zip(*rows)."""
    return [list(map(itemgetter(i), rows)) for i in range(width)]


def column_digests(
    binder: Binder,
    columns: list[list[Any]],
    size: int,
    memos: dict[str, dict[Any, int]],
    by_text: bool = False,
) -> list[int]:
    """The digest of each of ``size`` points, built column by column.

    A column's values repeat, so each value's piece is computed once (``memos``, one
    dict per key parameter, kept across batches). A column of exact ints and strs is
    looked up by value (equal values of those types have equal texts, and an int never
    equals a str); any other by its ``(tag, text)``. ``by_text``: the digests of
    records matched by text alone.
    """
    start = base(None, True) if by_text else binder._base
    digests: list[int] | None = None
    for name, column in zip(binder.key, columns, strict=True):
        by_value = set(map(type, column)) <= {int, str}
        keys: Sequence[Any] = column if by_value else binder.pairs(name, column)
        memo = memos[name]
        found: list[Any] = list(map(memo.get, keys))  # None: not in the memo yet
        if None in found:
            new = list(dict.fromkeys(compress(keys, map(is_, found, repeat(None)))))
            texts = binder.pairs(name, new) if by_value else new
            if by_text:
                texts = [("", text) for _, text in texts]
            made = pieces(name, texts)
            if digests is None:  # the first column's memo holds start ^ piece
                made = [start ^ p for p in made]
            memo.update(zip(new, made, strict=True))
            found = list(map(memo.__getitem__, keys))
        digests = found if digests is None else list(map(xor, digests, found))
    return [start] * size if digests is None else digests
