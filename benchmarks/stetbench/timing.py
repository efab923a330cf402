"""Timing helpers: per-call timers, floor/stet alternation, summaries, progress lines.

Each call is timed on its own with ``perf_counter_ns`` (the clock's ~50 ns cost is in
every sample, the floor's too) with the garbage collector paused, and reported as a
median with the 10th and 90th percentiles. stet and its floor are timed in alternating
rounds over the same keys, switching which goes first, so that a burst of other work on
this shared machine lands on both sides; the ratio is the median of the per-round
ratios (`round_ratio`).
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

Point = tuple[Any, Any]


def progress(message: str) -> None:
    """Say what is running, on stderr so that stdout holds only the results."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def summary_us(samples_ns: Sequence[int]) -> dict[str, float]:
    """Median, mean and spread of per-call times, in microseconds."""
    ordered = sorted(samples_ns)
    n = len(ordered)
    if not n:
        return {
            "median_us": float("nan"),
            "p10_us": float("nan"),
            "p90_us": float("nan"),
            "calls": 0,
        }

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))] / 1000

    return {
        "median_us": statistics.median(ordered) / 1000,
        "mean_us": statistics.fmean(ordered) / 1000,
        "p10_us": at(0.10),
        "p90_us": at(0.90),
        "calls": n,
    }


def time_calls(
    func: Callable[..., Any], points: Iterable[Point], keyword: bool = False
) -> list[int]:
    """Nanoseconds each call took: ``func(x, y)``, or ``func(a=x, seed=y)`` if ``keyword``.

    The calls are spelled out as a user writes them (no ``*args``/``**kwargs`` packing
    in the loop), so the interpreter does what it does in a real sweep.
    """
    clock = time.perf_counter_ns
    out: list[int] = []
    append = out.append
    gc.collect()
    gc.disable()
    try:
        if keyword:
            for x, y in points:
                start = clock()
                func(a=x, seed=y)
                append(clock() - start)
        else:
            for x, y in points:
                start = clock()
                func(x, y)
                append(clock() - start)
    finally:
        gc.enable()
    return out


def alternate(
    sides: dict[str, Callable[..., Any]],
    chunks: Sequence[Sequence[Point]],
    keyword: bool = False,
) -> dict[str, Any]:
    """Time every side on each chunk in turn, alternating which side goes first.

    Returns:
        side name to its `summary_us` over all chunks, plus ``"round_medians_us"``:
        side name to its median in each round (for `round_ratio`).
    """
    samples: dict[str, list[int]] = {name: [] for name in sides}
    rounds: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for i, chunk in enumerate(chunks):
        for name in names if i % 2 == 0 else names[::-1]:
            times = time_calls(sides[name], chunk, keyword)
            samples[name] += times
            rounds[name].append(statistics.median(times) / 1000)
    out: dict[str, Any] = {name: summary_us(s) for name, s in samples.items()}
    out["round_medians_us"] = rounds
    return out


def round_ratio(result: dict[str, Any], side: str = "stet", floor: str = "floor") -> float | None:
    """The median over rounds of ``side``'s median / ``floor``'s median in that round.

    A burst of other work that lasts a round inflates both sides of that round's ratio,
    and the median over rounds drops the rounds it distorted anyway.
    """
    pairs = zip(result["round_medians_us"][side], result["round_medians_us"][floor], strict=True)
    ratios = [s / f for s, f in pairs if f > 0]
    return statistics.median(ratios) if ratios else None


def chunked(points: Sequence[Point], rounds: int) -> list[Sequence[Point]]:
    """``points`` cut into ``rounds`` consecutive chunks of (nearly) equal length."""
    size = max(1, -(-len(points) // rounds))
    return [points[i : i + size] for i in range(0, len(points), size)]


def wall(func: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``func()`` took, and what it returned."""
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result
