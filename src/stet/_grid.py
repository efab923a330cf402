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
from collections.abc import Iterator, Mapping, Sequence
from itertools import compress, product, starmap
from operator import not_, xor
from typing import TYPE_CHECKING, Any

from stet._identity import Identity, base, piece

if TYPE_CHECKING:
    from stet._binding import Binder
    from stet.backends import BaseBackend

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
        out: list[Any] = []
        iterator = iter(grid)
        while batch := list(itertools.islice(iterator, _BATCH)):
            idents = [self._point_identity(point) for point in batch]
            done = self._backend.completed(idents)
            busy = self._busy
            for point, ident, finished in zip(batch, idents, done, strict=True):
                if not finished and (busy is None or ident.digest not in busy):
                    out.append(point)
        return out

    def _point_identity(self, point: Any) -> Identity:
        binder = self._binder
        if isinstance(point, Mapping):
            return binder.identity((), dict(point))
        if isinstance(point, tuple):
            return binder.identity(point, {})
        return binder.identity((point,), {})

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
            typed.append([piece(name, *binder.pair(name, v)) for v in values])
        digests = _combine(fixed, typed)
        backend = self._backend
        index = backend.index(len(digests))
        pending: list[int]
        if index is None:
            pending = []
            legacy = _Lazy(lambda: self._legacy_digests(axes, key_axes, binder))
            for start in range(0, len(digests), _BATCH):
                chunk = digests[start : start + _BATCH]
                points = [_Point(d, binder.name, legacy, start + j) for j, d in enumerate(chunk)]
                done = backend.completed(points)
                pending += [start + j for j, finished in enumerate(done) if not finished]
        else:
            known = index.digests
            # The indices of the points not in the index, in C loops: a million points
            # are a few tenths of a second.
            pending = list(
                compress(range(len(digests)), map(not_, map(known.__contains__, digests)))
            )
            if index.plain and pending:
                shift = base(binder.name) ^ base(None)
                pending = [i for i in pending if digests[i] ^ shift not in known]
            if (index.text or index.text_func) and pending:
                texts = self._legacy_digests(axes, key_axes, binder)
                shift = base(None, True) ^ base(binder.name, True)
                pending = [
                    i
                    for i in pending
                    if texts[i] not in known and not (index.text_func and texts[i] ^ shift in known)
                ]
        if self._busy:
            busy = self._busy
            pending = [i for i in pending if digests[i] not in busy]
        return _Product(names, axes, pending)

    def _legacy_digests(
        self, axes: list[list[Any]], key_axes: list[tuple[int, str]], binder: Binder
    ) -> list[int]:
        """Text-only digests of every point (for stores holding 0.0.x or imported rows)."""
        params = binder.signature.parameters
        fixed = base(None, True)
        for key in binder.key:
            if all(k != key for _, k in key_axes):
                fixed ^= piece(key, "", binder.pair(key, params[key].default)[1])
        pieces: list[list[int]] = []
        for i, values in enumerate(axes):
            name = next((k for at, k in key_axes if at == i), None)
            if name is None:
                pieces.append([0] * len(values))
            else:
                pieces.append([piece(name, "", binder.pair(name, v)[1]) for v in values])
        return _combine(fixed, pieces)


def _combine(fixed: int, pieces: list[list[int]]) -> list[int]:
    """XOR of one piece per axis for every point, in product order."""
    out = [fixed]
    for axis in pieces:
        out = list(starmap(xor, product(out, axis)))
    return out


class _Product(Sequence[dict[str, Any]]):
    """Pending points of a dict-of-lists grid, made into dicts as they are read."""

    def __init__(self, names: list[str], axes: list[list[Any]], flat: list[int]) -> None:
        self._names = names
        self._axes = axes
        self._flat = flat
        self._sizes = [len(a) for a in axes]

    def __len__(self) -> int:
        return len(self._flat)

    def _point(self, flat: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, axis, size in zip(
            reversed(self._names), reversed(self._axes), reversed(self._sizes), strict=True
        ):
            flat, j = divmod(flat, size)
            out[name] = axis[j]
        return {name: out[name] for name in self._names}

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._point(f) for f in self._flat[i]]
        return self._point(self._flat[i])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        point = self._point
        for flat in self._flat:
            yield point(flat)
