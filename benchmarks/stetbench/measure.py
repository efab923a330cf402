"""The per-store measurements: skip path, record path, cold start, pending, sweeps.

- Skip path (in this process, on recorded keys drawn at random): stet against
  `floor.SkipFloor` on the same keys, alternating, for the three call styles of
  `plan.STYLES`. The store was read by a warm-up first, so this is the steady state
  of a resumed sweep: what S8 bounds at 1.5x (2x on SQLite) the floor, flat in size.
- Record path (in this process, new keys): stet against `floor.RecordFloor` on CSV,
  JSON, SQLite and PostgreSQL. Parquet cannot append, so its figure is the amortised
  one below, which the target is about.
- Amortised records (fresh processes, the median of ``plan.amortised_repeats``): each
  records ``n`` new runs into a filled store and exits; (exit - loop start) / n, so
  whatever stet does at exit to complete the file counts. The file is then read back
  with pandas (or json/sqlite3) to check every row is there.
- Cold start (fresh processes): the first call on a store just written, then on the
  same store from a second fresh process (a later stet may leave a snapshot behind the
  first), with the RSS growth of the first call per record (the index memory target).
- Pending: ``f.pending(grid)`` over a grid half of which the store holds, as a dict of
  lists, a list of tuples and a list of dicts, in each fresh process after the first,
  after its first call; the median of those processes.
- Sweep: a loop over a grid on a new store in a fresh process, then its resume.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from random import Random
from typing import Any

from stetbench import child
from stetbench.floor import RecordFloor, SkipFloor
from stetbench.plan import CALLS, FUNCS, NAMES_F, SEEDS, STYLES, Plan, new_point, point
from stetbench.sqlfloor import SqliteFloor
from stetbench.stores import count_rows, skip_parts
from stetbench.timing import alternate, chunked, round_ratio, time_calls

AMORTISED_START = 10**6  # new runs of the amortised child; in-process records use 0..


def decorate(store: str, func_name: str) -> Any:
    """``func_name`` of `plan.FUNCS` decorated with ``@stet.once`` on ``store``."""
    import stet

    func, _, key = FUNCS[func_name]
    return stet.once(store=store, key=key, quiet=True)(func)


class Floors:
    """The skip floors of one store size, holding that many runs, shared by all stores."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.decorated: dict[str, Any] = {}
        for name, (func, names, key) in FUNCS.items():
            floor = SkipFloor(key)
            floor.mark(point(names, i) for i in range(size))
            self.decorated[name] = floor(func)


class SqliteFloors:
    """The SQLite floor's databases of one store size, one per benchmark function."""

    def __init__(self, size: int, work: Path) -> None:
        self.floors: dict[str, SqliteFloor] = {}
        for name, (_, names, _) in FUNCS.items():
            floor = SqliteFloor(work / f"sqlite-floor-{name}-{size}.db", len(names))
            floor.mark(point(names, i) for i in range(size))
            self.floors[name] = floor

    def path(self, name: str) -> str:
        return str(self.floors[name].path)

    def skip(self, name: str) -> Any:
        func, _, key = FUNCS[name]
        return self.floors[name].skip(func, key)

    def record(self, name: str) -> Any:
        func, _, key = FUNCS[name]
        return self.floors[name].record(func, key)

    def close(self) -> None:
        for floor in self.floors.values():
            floor.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{floor.path}{suffix}").unlink(missing_ok=True)


def _compare(
    sides: dict[str, Any], points: list[tuple[Any, ...]], plan: Plan, keyword: bool
) -> dict[str, Any]:
    result = alternate(sides, chunked(points, plan.rounds), keyword)
    result["ratio"] = round_ratio(result)
    if "sqlite_floor" in sides:
        result["ratio_sqlite"] = round_ratio(result, floor="sqlite_floor")
    return result


def skip_path(
    stores: dict[str, str],
    size: int,
    floors: Floors,
    plan: Plan,
    rng: Random,
    sqlite: SqliteFloors | None = None,
) -> dict[str, Any]:
    """stet and the skip floor (and the SQLite floor) on recorded keys, per call style."""
    out: dict[str, Any] = {}
    calls_before = CALLS[0]
    for style in STYLES:
        fname = "train" if style == "readme" else "f"
        names = FUNCS[fname][1]
        g = decorate(stores[fname], fname)
        floor = floors.decorated[fname]
        keyword = style == "keyword"
        warm = [point(names, rng.randrange(size)) for _ in range(plan.warmup)]
        sides = {"floor": floor, "stet": g}
        if sqlite is not None:
            sides["sqlite_floor"] = sqlite.skip(fname)
        for side in sides.values():
            time_calls(side, warm, keyword)  # stet's first call reads the store
        points = [point(names, rng.randrange(size)) for _ in range(plan.rounds * plan.skip_calls)]
        out[style] = _compare(sides, points, plan, keyword)
        if style == "positional":
            out["parts"] = skip_parts(g, points[: plan.skip_calls])
    if CALLS[0] != calls_before:
        raise SystemExit(f"skip path on {stores}: a recorded run ran its body")
    return out


def record_path(
    store: str, size: int, plan: Plan, floor_file: Path, sqlite: SqliteFloors | None = None
) -> dict[str, Any]:
    """stet and the record floor (and the SQLite floor) on new keys (``f(a, seed)``)."""
    g = decorate(store, "f")
    floor = RecordFloor(floor_file)
    try:
        floor.mark(point(NAMES_F, i) for i in range(size))
        sides = {"floor": floor(FUNCS["f"][0]), "stet": g}
        if sqlite is not None:
            sides["sqlite_floor"] = sqlite.record("f")
        warm = [new_point(NAMES_F, j) for j in range(3)]
        for side in sides.values():
            time_calls(side, warm)  # the first new record may set things up
        count = plan.rounds * plan.record_calls
        points = [new_point(NAMES_F, j) for j in range(3, 3 + count)]
        calls_before = CALLS[0]
        out = _compare(sides, points, plan, False)
        if CALLS[0] - calls_before != len(sides) * count:
            raise SystemExit(f"record path on {store}: bodies ran {CALLS[0] - calls_before} times")
        out["floor_lock"] = floor.lock_kind
        out["recorded"] = count + len(warm)
    finally:
        floor.close()
    return out


def amortised(
    store: str, size: int, n: int, limit_s: float, before: int, repeats: int = 1
) -> dict[str, Any]:
    """``repeats`` fresh processes each record ``n`` new runs into a store and exit.

    The figures are the medians of the processes (each is one sample, and a burst of
    load on the machine in one of them is not the code's cost); ``samples`` keeps each.
    """
    samples = []
    done = 0
    for i in range(repeats):
        result = child.run(
            {
                "kind": "amortised",
                "store": store,
                "func": "f",
                "point": point(NAMES_F, size // 2),
                "start": AMORTISED_START + i * n,
                "n": n,
                "limit_s": limit_s,
            }
        )
        recorded = result["recorded"]
        if result["body_ran"] != recorded:
            raise SystemExit(f"amortised records on {store}: {result['body_ran']} bodies ran")
        done += recorded
        samples.append(
            {
                "recorded": recorded,
                "per_record_us": (result["exited_at"] - result["loop_start"]) / recorded * 1e6,
                "loop_per_record_us": (result["loop_end"] - result["loop_start"]) / recorded * 1e6,
                "exit_ms": (result["exited_at"] - result["loop_end"]) * 1e3,
            }
        )
    rows = count_rows(store)
    return {
        **medians(samples, ("per_record_us", "loop_per_record_us", "exit_ms")),
        "recorded": samples[0]["recorded"],
        "asked": n,
        "rows_read_back": rows,
        "rows_expected": before + done,
        "complete": rows == before + done,
        "samples": samples,
    }


def medians(samples: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float]:
    """The median of each of ``keys`` over ``samples`` (one dict per fresh process)."""
    return {key: statistics.median(s[key] for s in samples) for key in keys}


def pending_of(runs: list[dict[str, Any]], where: str) -> dict[str, Any]:
    """The median `child.pending` of several processes; they must agree on what is left."""
    counts = [k for k in runs[0] if k == "points" or k.endswith("_left")]
    for key in counts:
        if len({run[key] for run in runs}) != 1:
            raise SystemExit(f"pending on {where}: {key} differs between processes")
    timed = tuple(k for k in runs[0] if k.endswith("_s"))
    samples = [{k: run[k] for k in timed} for run in runs]
    return {**{k: runs[0][k] for k in counts}, **medians(runs, timed), "samples": samples}


def cold_start(
    store: str, size: int, repeats: int, pending_span: tuple[int, int] | None = None
) -> dict[str, Any]:
    """First call in a first and a second fresh process (and ``repeats`` more)."""
    task: dict[str, Any] = {"kind": "cold", "store": store, "func": "f"}
    task["point"] = point(NAMES_F, size // 2)
    first = child.run(task)
    second = child.run({**task, "pending": pending_span})
    later = [child.run({**task, "pending": pending_span}) for _ in range(repeats)]
    runs = [first, second, *later]
    if any(r["body_ran"] for r in runs):
        raise SystemExit(f"cold start on {store}: the recorded run was not skipped")

    def per_record(run: dict[str, Any]) -> float:
        return float(run["rss_after"] - run["rss_before"]) / size

    out: dict[str, Any] = {
        "first_ms": first["first_call_s"] * 1000,
        "second_ms": second["first_call_s"] * 1000,
        "later_ms": statistics.median(r["first_call_s"] for r in later) * 1000 if later else None,
        "decorate_ms": statistics.median(r["decorate_s"] for r in runs) * 1000,
        "import_ms": statistics.median(r["import_s"] for r in runs) * 1000,
        "rss_per_record": per_record(first),
        "rss_per_record_second": per_record(second),
        "peak_per_record": first["peak_growth"] / size,
        "index_bytes_per_record": None
        if first["index_bytes"] is None
        else first["index_bytes"] / size,
        "size": size,
    }
    if pending_span is not None:
        out["pending"] = pending_of([second["pending"], *(r["pending"] for r in later)], store)
    return out


def pending_only(
    store: str, points: int, span: tuple[int, int], repeats: int = 1
) -> dict[str, Any]:
    """``pending`` in ``repeats`` fresh processes (after one lookup), for a server store."""
    task = {"kind": "cold", "store": store, "func": "f", "point": point(NAMES_F, 0)}
    runs = [child.run({**task, "pending": span})["pending"] for _ in range(repeats)]
    return {**pending_of(runs, store), "store_records": points}


def sqlite_pending(
    path: str, points: int, span: tuple[int, int], repeats: int = 1
) -> dict[str, Any]:
    """The SQLite floor's ``pending`` (dict of lists) in ``repeats`` fresh processes."""
    task = {"kind": "sqlite_pending", "path": path, "span": span}
    runs = [child.run(task) for _ in range(repeats)]
    return {**pending_of(runs, path), "store_records": points}


def sweep(store: str, plan: Plan) -> dict[str, Any]:
    """A sweep of ``plan.sweep_a * SEEDS`` points on a new store, then its resume."""
    task = {"kind": "sweep", "store": store, "a": plan.sweep_a}
    first = child.run(task)
    again = child.run(task)
    points = plan.sweep_a * SEEDS
    if first["body_ran"] != points or again["body_ran"] != 0:
        raise SystemExit(f"sweep on {store}: ran {first['body_ran']} then {again['body_ran']}")
    return {
        "points": points,
        "first_run_s": first["loop_s"],
        "resume_s": again["loop_s"],
        "first_run_per_point_us": first["loop_s"] / points * 1e6,
        "resume_per_point_us": again["loop_s"] / points * 1e6,
    }
