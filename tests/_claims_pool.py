"""A decorated function importable by pool workers (spawn re-imports modules)."""

from __future__ import annotations

from multiprocessing.context import BaseContext

import stet


def make(store: str) -> stet.OnceFunction[[int], int | None]:
    @stet.once(store=store, claim=True, quiet=True)
    def square(x: int) -> int:
        return x * x

    return square


def call(args: tuple[str, int]) -> int | None:
    store, x = args
    return make(store)(x)


def run_pool(store: str, context: BaseContext) -> list[int]:
    with context.Pool(3) as pool:
        results = pool.map(call, [(store, x) for x in range(20)] * 2)
    return [i % 20 for i, r in enumerate(results) if r is not None]
