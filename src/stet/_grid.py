"""``f.pending(grid)``: the points of a grid whose run has not completed.

A grid is a dict of lists (their product, in ``itertools.product`` order), or an
iterable of points: dicts of arguments, tuples of positional arguments, or single
values for a function of one parameter. The answer is computed once, in one pass over
the store's index: each value of a dict-of-lists grid is turned into its digest piece
once per axis, and a point's digest is the XOR of its pieces, so a million points cost
a fraction of a second.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from itertools import compress, product, repeat, starmap
from operator import not_, xor
from typing import TYPE_CHECKING, Any

from stet._gridpoints import bound_columns, column_digests, dicts_by_name, tuples_are_keys
from stet._identity import base, piece, pieces

if TYPE_CHECKING:
    from stet._binding import Binder
    from stet.backends import BaseBackend
    from stet.backends._index import Index

__all__ = ["Pending"]

_BATCH = 4096


class _Lazy:
    """A list computed on first use (the text-only digests of a whole grid)."""

    def __init__(self, compute: Any) -> None:
        self._compute = compute
        self._values: list[int] | None = None

    def __getitem__(self, i: int) -> int:
        if self._values is None:
            self._values = self._compute()
        return self._values[i]


class _Point:
    """A grid point's digests, the text-only one computed only if asked."""

    __slots__ = ("_at", "_legacy", "digest", "func")

    def __init__(self, digest: int, func: str, legacy: _Lazy, at: int) -> None:
        self.digest = digest
        self.func = func
        self._legacy = legacy
        self._at = at

    @property
    def plain(self) -> int:
        return self.digest ^ base(self.func) ^ base(None)

    @property
    def legacy(self) -> int:
        return self._legacy[self._at]


class Pending:
    """The points of a grid not yet completed; ``len()`` and iteration, like a list.

    Computed on first use (``len``, ``bool`` or iteration) and then kept, so
    ``tqdm(f.pending(grid))`` shows the right total.
    """

    def __init__(
        self, binder: Binder, backend: BaseBackend, grid: Any, busy: set[int] | None = None
    ) -> None:
        self._binder = binder
        self._backend = backend
        self._grid = grid
        self._busy = busy
        self._points: Sequence[Any] | None = None
        self._tuples_are_keys = tuples_are_keys(binder)
        self._by_name = dicts_by_name(binder)

    def _compute(self) -> Sequence[Any]:
        if self._points is None:
            grid = self._grid
            if isinstance(grid, Mapping):
                self._points = self._product(grid)
            else:
                self._points = self._listed(grid)
        return self._points

    def __len__(self) -> int:
        return len(self._compute())

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self) -> Iterator[Any]:
        return iter(self._compute())

    def __repr__(self) -> str:
        return f"<stet pending: {len(self)} runs of {self._binder.name}>"

    # -- grids given as points ---------------------------------------------------

    def _listed(self, grid: Any) -> list[Any]:
        backend = self._backend
        binder = self._binder
        busy = self._busy
        try:
            size = len(grid)
        except TypeError:
            size = 0  # a generator: its size shows as it is read
        index = None
        seen = 0
        memos: dict[str, dict[Any, int]] = {name: {} for name in binder.key}
        text_memos: dict[str, dict[Any, int]] = {name: {} for name in binder.key}
        out: list[Any] = []
        iterator = iter(grid)
        while batch := list(itertools.islice(iterator, _BATCH)):
            seen += len(batch)
            if index is None:
                # The store's whole index once the grid is big enough for it to pay.
                index = backend.index(max(size, seen))
            columns = bound_columns(binder, batch, self._tuples_are_keys, self._by_name)
            left: list[bool]  # per point: still pending
            if index is None:
                rows = zip(*columns, strict=True) if columns else [()] * len(batch)
                idents = [binder.identity_of(v) for v in rows]
                digests = [ident.digest for ident in idents]
                left = list(map(not_, backend.completed(idents)))
            else:
                digests = column_digests(binder, columns, len(batch), memos)
                left = list(map(not_, map(index.digests.__contains__, digests)))
                if index.plain or index.text or index.text_func:  # (most stores: neither)
                    texts_at = partial(_texts_at, binder, columns, text_memos)
                    _drop_older_kinds(index, binder.name, digests, left, texts_at)
            if busy:
                _drop(left, digests, busy.__contains__)
            out += compress(batch, left)
        return out

    # -- dict-of-lists grids ---------------------------------------------------------

    def _product(self, grid: Mapping[str, Any]) -> _Product:
        binder = self._binder
        names = list(grid)
        axes = [list(grid[name]) for name in names]
        params = binder.signature.parameters
        unknown = [n for n in names if n not in params]
        if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            raise TypeError(
                f"{binder.name}(): the grid names {unknown}, which are not parameters; its "
                f"parameters are: {', '.join(params)}"
            )
        fixed = binder._base
        key_axes: list[tuple[int, str]] = []
        for key in binder.key:
            if key in grid:
                key_axes.append((names.index(key), key))
                continue
            default = params[key].default
            if default is inspect.Parameter.empty:
                raise TypeError(
                    f"{binder.name}(): the grid has no values for parameter {key!r}, "
                    "which has no default"
                )
            tag, text = binder.pair(key, default)
            fixed ^= piece(key, tag, text)
        # Digest pieces per axis value (computed once), combined axis by axis in the
        # grid's own order, so digests come out in itertools.product order.
        typed: list[list[int]] = []
        for i, values in enumerate(axes):
            name = next((k for at, k in key_axes if at == i), None)
            if name is None:
                typed.append([0] * len(values))
                continue
            typed.append(pieces(name, binder.pairs(name, values)))
        digests = _combine(fixed, typed)
        backend = self._backend
        index = backend.index(len(digests))
        # One flag per point, in product order: True while the point is pending.
        left: list[bool]
        if index is None:
            left = []
            legacy = _Lazy(lambda: self._legacy_digests(axes, key_axes, binder))
            for start in range(0, len(digests), _BATCH):
                chunk = digests[start : start + _BATCH]
                points = [_Point(d, binder.name, legacy, start + j) for j, d in enumerate(chunk)]
                left += map(not_, backend.completed(points))
        else:
            # C loops: a million points are a few tenths of a second.
            left = list(map(not_, map(index.digests.__contains__, digests)))

            def texts_at(at: list[int]) -> list[int]:
                texts = self._legacy_digests(axes, key_axes, binder)
                return [texts[i] for i in at]

            _drop_older_kinds(index, binder.name, digests, left, texts_at)
        if self._busy:
            _drop(left, digests, self._busy.__contains__)
        return _Product(names, axes, left)

    def _legacy_digests(
        self, axes: list[list[Any]], key_axes: list[tuple[int, str]], binder: Binder
    ) -> list[int]:
        """Text-only digests of every point (for stores holding 0.0.x or imported rows)."""
        params = binder.signature.parameters
        fixed = base(None, True)
        for key in binder.key:
            if all(k != key for _, k in key_axes):
                fixed ^= piece(key, "", binder.pair(key, params[key].default)[1])
        by_axis: list[list[int]] = []
        for i, values in enumerate(axes):
            name = next((k for at, k in key_axes if at == i), None)
            if name is None:
                by_axis.append([0] * len(values))
            else:
                texts = [("", text) for _, text in binder.pairs(name, values)]
                by_axis.append(pieces(name, texts))
        return _combine(fixed, by_axis)


def _texts_at(
    binder: Binder, columns: list[list[Any]], memos: dict[str, dict[Any, int]], at: list[int]
) -> list[int]:
    """The text-only digests of the points at indices ``at``."""
    picked = [[column[i] for i in at] for column in columns]
    return column_digests(binder, picked, len(at), memos, by_text=True)


def _combine(fixed: int, pieces: list[list[int]]) -> list[int]:
    """XOR of one piece per axis for every point, in product order."""
    out = [fixed]
    for axis in pieces:
        out = list(starmap(xor, product(out, axis)))
    return out


def _drop(left: list[bool], digests: list[int], done: Callable[[int], bool]) -> None:
    """Clear the flag of each pending point ``i`` for which ``done(digests[i])`` is true."""
    for i in list(compress(range(len(left)), left)):
        if done(digests[i]):
            left[i] = False


def _drop_older_kinds(
    index: Index,
    func: str,
    digests: list[int],
    left: list[bool],
    text_digests: Callable[[list[int]], list[int]],
) -> None:
    """Clear the flag of each pending point that an older kind of record completed.

    Records without a function name match through the function-less digest; records
    matched by text alone through the points' text digests, which ``text_digests``
    gives for the points at the indices it is passed (computed only when needed).
    """
    known = index.digests
    if index.plain:
        shift = base(func) ^ base(None)
        _drop(left, digests, lambda d: d ^ shift in known)
    if index.text or index.text_func:
        at = list(compress(range(len(left)), left))
        texts = [0] * len(left)  # only the pending points' are looked at
        for i, text in zip(at, text_digests(at), strict=True):
            texts[i] = text
        shift = base(None, True) ^ base(func, True)
        with_func = index.text_func
        _drop(left, texts, lambda t: t in known or (with_func and t ^ shift in known))


class _Product(Sequence[dict[str, Any]]):
    """Pending points of a dict-of-lists grid, made into dicts as they are read."""

    def __init__(self, names: list[str], axes: list[list[Any]], left: list[bool]) -> None:
        self._names = names
        self._axes = axes
        self._left = left
        self._len = sum(left)
        self._flat: list[int] | None = None  # indices of the pending points, if asked

    def __len__(self) -> int:
        return self._len

    def _point(self, flat: int) -> dict[str, Any]:
        values: list[Any] = []
        for axis in reversed(self._axes):
            flat, j = divmod(flat, len(axis))
            values.append(axis[j])
        return dict(zip(self._names, reversed(values), strict=True))

    def __getitem__(self, i: Any) -> Any:
        if self._flat is None:
            self._flat = list(compress(range(len(self._left)), self._left))
        if isinstance(i, slice):
            return [self._point(f) for f in self._flat[i]]
        return self._point(self._flat[i])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # Product order; a dict display per point builds it 2.5x faster than
        # dict(zip(names, values)), which is most of the time of a big grid.
        points = compress(product(*self._axes), self._left)
        if any(type(name) is not str for name in self._names):
            return map(dict, map(zip, repeat(self._names), points))
        return starmap(_dict_maker(tuple(self._names)), points)


def _dict_maker(names: tuple[str, ...]) -> Callable[..., dict[str, Any]]:
    """``lambda v0, v1, ...: {names[0]: v0, names[1]: v1, ...}``.

    The names enter as ``str.__repr__`` literals (not an overridable repr), so any
    string, even one only ``**kwargs`` accepts, is safe in the source.
    """
    args = ", ".join(f"v{i}" for i in range(len(names)))
    items = ", ".join(f"{str.__repr__(name)}: v{i}" for i, name in enumerate(names))
    maker: Callable[..., dict[str, Any]] = eval(f"lambda {args}: {{{items}}}")
    return maker
