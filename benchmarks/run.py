"""Benchmark stet's decorator against the performance targets of the spec (S8).

Run from the repository root:

    python benchmarks/run.py            # full run: 1k, 10k, 100k and 1M records
    python benchmarks/run.py --quick    # CI smoke run: 1k and 10k, fewer samples, no 1M

Everything goes through ``@stet.once`` on a no-op function ``f(a, seed)``. The script
prints a plain text table, writes ``results.json`` and three PNG plots to ``--out``
(default ``docs/assets/benchmarks``) and, with ``--markdown``, the results table of
``docs/explanation/performance.md``.

Stores are filled with the library's own writers (``FileBackend._rewrite`` for the file
formats; for SQLite, stet creates the table with its first record and the rest go in
one transaction with stet's column names), so the files are exactly what stet writes.
Cold starts and sweeps run in fresh Python processes (this script with ``--child``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))  # measure the checkout this script lives in

STORES = ("csv", "json", "sqlite", "parquet")
LABELS = {"csv": "CSV", "json": "JSON", "sqlite": "SQLite", "parquet": "Parquet"}
COLORS = {"csv": "tab:blue", "json": "tab:orange", "sqlite": "tab:green", "parquet": "tab:red"}
MARKERS = {"csv": "o", "json": "s", "sqlite": "^", "parquet": "D"}  # the file stores overlap
SEEDS = 10  # record i of a store is the run f(a=i // SEEDS, seed=i % SEEDS)
NEW_A = 10**9  # record-path calls use a >= NEW_A, which no filled store contains
MILLION = 1_000_000
HEAVY = ("pandas", "pyarrow", "numpy", "psycopg")

# S8 of the spec, in the units the tables use.
TARGET_SKIP_US = 20.0
TARGET_RECORD_US = {"csv": 300.0, "sqlite": 300.0, "json": 1000.0}
TARGET_IMPORT_MS = 100.0
TARGET_COLD_1M_S = 2.0
TARGET_INDEX_BYTES = 200.0
TARGET_PENDING_S = 2.0


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run or the quick CI smoke run."""

    sizes: tuple[int, ...]
    skip_calls: int
    warmup: int
    record_calls: int
    parquet_record_calls: int
    cold_repeats: int
    import_repeats: int
    sweep_a: int  # the sweep is sweep_a x SEEDS points
    million: bool
    joblib_entries: int
    joblib_hits: int
    joblib_misses: int
    diskcache_entries: int
    diskcache_hits: int
    diskcache_misses: int


FULL = Plan(
    sizes=(1_000, 10_000, 100_000),
    skip_calls=2_000,
    warmup=200,
    record_calls=1_000,
    parquet_record_calls=60,
    cold_repeats=3,
    import_repeats=7,
    sweep_a=1_000,
    million=True,
    joblib_entries=1_000,
    joblib_hits=1_000,
    joblib_misses=200,
    diskcache_entries=10_000,
    diskcache_hits=2_000,
    diskcache_misses=1_000,
)

QUICK = Plan(
    sizes=(1_000, 10_000),
    skip_calls=500,
    warmup=50,
    record_calls=200,
    parquet_record_calls=15,
    cold_repeats=1,
    import_repeats=3,
    sweep_a=100,
    million=False,
    joblib_entries=100,
    joblib_hits=200,
    joblib_misses=50,
    diskcache_entries=1_000,
    diskcache_hits=500,
    diskcache_misses=200,
)


def progress(message: str) -> None:
    """Say what is running, on stderr so that stdout holds only the results."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def key_of(i: int) -> tuple[int, int]:
    """The arguments ``(a, seed)`` of the ``i``-th record of a filled store."""
    return i // SEEDS, i % SEEDS


# -- the machine -----------------------------------------------------------------------


def proc_status(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM) in bytes; 0 if unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def filesystem_of(path: Path) -> str:
    """The file system type holding ``path`` (from /proc/mounts), or ``"?"``."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1]
                inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


def machine(work: Path) -> dict[str, Any]:
    import stet

    try:
        cores_usable = len(os.sched_getaffinity(0))
    except AttributeError:
        cores_usable = os.cpu_count() or 0
    total_kb = 0
    try:
        with open("/proc/meminfo") as f:
            total_kb = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": cores_usable,
        "memory_gb": round(total_kb / 1024**2, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "stet": stet.__version__,
        "store_filesystem": filesystem_of(work),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


# -- statistics ------------------------------------------------------------------------


def summary_us(samples_ns: Sequence[int]) -> dict[str, float]:
    """Median and spread of per-call times, in microseconds."""
    ordered = sorted(samples_ns)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))] / 1000

    return {
        "median_us": statistics.median(ordered) / 1000,
        "p10_us": at(0.10),
        "p90_us": at(0.90),
        "calls": n,
    }


def time_calls(func: Callable[[int, int], Any], keys: Iterable[tuple[int, int]]) -> list[int]:
    """Nanoseconds each ``func(a, seed)`` call took, the garbage collector paused."""
    clock = time.perf_counter_ns
    out: list[int] = []
    gc.collect()
    gc.disable()
    try:
        for a, seed in keys:
            start = clock()
            func(a, seed)
            out.append(clock() - start)
    finally:
        gc.enable()
    return out


def _noop(a: int, seed: int) -> None:
    return None


def _noop_joblib(a: int, seed: int) -> None:
    return None


def _noop_diskcache(a: int, seed: int) -> None:
    return None


# -- filling stores with stet's own writers --------------------------------------------


class Records:
    """Rows for filled stores, built once with stet's identity code and shared."""

    def __init__(self) -> None:
        self._rows: list[Any] = []

    def first(self, n: int) -> list[Any]:
        from stet._identity import identity_of
        from stet.backends._base import Row, utc_now

        stamp = utc_now()
        for i in range(len(self._rows), n):
            a, seed = key_of(i)
            self._rows.append(Row.of(identity_of({"a": a, "seed": seed}), stamp))
        return self._rows[:n]

    def drop(self) -> None:
        self._rows = []


def fill(path: Path, rows: list[Any]) -> None:
    """Write ``rows`` into a new store at ``path`` in stet's own format."""
    from stet.backends import get_backend

    backend = get_backend(path)
    if path.suffix == ".sqlite":
        fill_sqlite(backend, rows)
    else:
        columns = backend._merge_columns([], ("a", "seed"))
        with backend._locked():
            backend._rewrite(rows, columns)
    check_filled(path, len(rows))


def fill_sqlite(backend: Any, rows: list[Any]) -> None:
    # stet has no bulk insert: its own add() creates the table and index with the first
    # record, then the rest go in one transaction with the columns add() writes.
    from stet._identity import identity_of
    from stet.backends._base import TIMESTAMP, TYPES
    from stet.backends._sqlite import KEY, TABLE, _quote

    a, seed = key_of(0)  # rows[0] is this run
    backend.add(identity_of({"a": a, "seed": seed}), rows[0].timestamp)
    names = ("a", "seed", TYPES, TIMESTAMP, KEY)
    sql = (
        f"INSERT INTO {TABLE} ({', '.join(map(_quote, names))}) "
        f"VALUES ({', '.join('?' * len(names))})"
    )
    with backend._db() as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            sql,
            (
                (r.values["a"], r.values["seed"], r.types, r.timestamp, r.digest()[0].hex())
                for r in rows[1:]
            ),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    backend._conn = None


def check_filled(path: Path, n: int) -> None:
    """Read the store back with a fresh backend: first and last record in, next one out."""
    from stet._identity import identity_of
    from stet.backends import get_backend

    backend = get_backend(path)
    for i, expect in ((0, True), (n - 1, True), (n, False)):
        a, seed = key_of(i)
        if backend.contains(identity_of({"a": a, "seed": seed})) is not expect:
            raise SystemExit(f"benchmark store {path} was not filled as stet reads it")
    if hasattr(backend, "_conn") and backend._conn is not None:
        backend._conn.close()
        backend._conn = None


# -- fresh processes -------------------------------------------------------------------


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env["STET_QUIET"] = "1"
    return env


def in_child(task: dict[str, Any]) -> dict[str, Any]:
    """Run ``task`` in a fresh interpreter (this script, ``--child``); return its result."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(task)],
        capture_output=True,
        text=True,
        env=child_env(),
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child {task['kind']} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def child_main(task: dict[str, Any]) -> None:
    """The ``--child`` side: decorate ``f`` on a store and time what ``task`` asks."""
    clock = time.perf_counter
    rss_start = proc_status("VmRSS")
    t0 = clock()
    import stet

    t1 = clock()
    ran: list[int] = []

    def f(a: int, seed: int) -> None:
        ran.append(1)

    g = stet.once(store=task["store"], quiet=True)(f)
    t2 = clock()
    out: dict[str, Any] = {"import_s": t1 - t0, "decorate_s": t2 - t1}

    if task["kind"] == "cold":
        gc.collect()
        rss0, hwm0 = proc_status("VmRSS"), proc_status("VmHWM")
        a, seed = task["key"]
        t3 = clock()
        g(a, seed)
        t4 = clock()
        gc.collect()
        rss1, hwm1 = proc_status("VmRSS"), proc_status("VmHWM")
        backend = g._stet_runner.backend  # type: ignore[attr-defined]
        index = getattr(backend, "_index", None)
        out.update(
            first_call_s=t4 - t3,
            body_ran=len(ran),
            rss_start=rss_start,
            rss_before=rss0,
            rss_after=rss1,
            peak_growth=max(hwm1 - rss0, 0) if hwm1 > hwm0 else 0,
            index_bytes=None
            if index is None
            else sys.getsizeof(index) + sum(sys.getsizeof(d) for d in index),
        )
        if task.get("pending"):
            grid = {"a": list(range(task["pending"] // SEEDS)), "seed": list(range(SEEDS))}
            t5 = clock()
            left = sum(1 for _ in g.pending(grid))
            out.update(pending_s=clock() - t5, pending_points=task["pending"], pending_left=left)
    elif task["kind"] == "sweep":
        t3 = clock()
        for a in range(task["a"]):
            for seed in range(SEEDS):
                g(a, seed)
        out.update(loop_s=clock() - t3, body_ran=len(ran))
    print(json.dumps(out))


def import_times(repeats: int) -> dict[str, Any]:
    """``import stet`` in fresh interpreters: median seconds, and heavy modules loaded."""
    code = (
        "import sys, time, json\n"
        "t = time.perf_counter()\n"
        "import stet\n"
        "t = time.perf_counter() - t\n"
        f"print(json.dumps([t, [m for m in {HEAVY!r} if m in sys.modules]]))\n"
    )
    runs: list[float] = []
    heavy: list[str] = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=child_env(),
            check=True,
        )
        seconds, heavy = json.loads(proc.stdout)
        runs.append(seconds)
    return {
        "median_ms": statistics.median(runs) * 1000,
        "runs_ms": [r * 1000 for r in runs],
        "heavy_modules_loaded": heavy,
    }


# -- the measurements ------------------------------------------------------------------


def decorated(path: Path) -> Any:
    import stet

    return stet.once(store=str(path), quiet=True)(_noop)


def measure_store(
    ext: str, size: int, path: Path, plan: Plan, rng: random.Random
) -> dict[str, Any]:
    """Skip path, record path and cold start on a filled store of ``size`` records."""
    f = decorated(path)
    result: dict[str, Any] = {}

    warm = [key_of(rng.randrange(size)) for _ in range(plan.warmup)]
    time_calls(f, warm)  # the first of these reads the store into the index
    keys = [key_of(rng.randrange(size)) for _ in range(plan.skip_calls)]
    result["skip"] = summary_us(time_calls(f, keys))

    # The cost of the two halves of a skip: the run identity, then the store lookup.
    runner = f._stet_runner
    backend = runner.backend
    idents = [runner.identity(k, {}) for k in keys]
    ident_ns = time_calls(lambda a, seed: runner.identity((a, seed), {}), keys)
    clock = time.perf_counter_ns
    look_ns = []
    for ident in idents:
        start = clock()
        backend.contains(ident)
        look_ns.append(clock() - start)
    result["skip_identity_us"] = statistics.median(ident_ns) / 1000
    result["skip_lookup_us"] = statistics.median(look_ns) / 1000

    # New keys; a few unmeasured first so the first append path is warm too.
    calls = plan.parquet_record_calls if ext == "parquet" else plan.record_calls
    start_a = NEW_A + size
    time_calls(f, [(start_a - 1 - j, 0) for j in range(3)])
    result["record"] = summary_us(time_calls(f, [(start_a + j, 0) for j in range(calls)]))

    result["cold"] = cold_start(path, size, plan.cold_repeats)
    return result


def cold_start(path: Path, size: int, repeats: int, pending: int = 0) -> dict[str, Any]:
    """First call of a freshly decorated function in new processes; medians over runs."""
    runs = []
    for i in range(repeats):
        task = {
            "kind": "cold",
            "store": str(path),
            "key": key_of(size // 2),
            "pending": pending if i == 0 else 0,
        }
        runs.append(in_child(task))
    if any(r["body_ran"] for r in runs):
        raise SystemExit(f"cold start on {path}: the recorded run was not skipped")
    out: dict[str, Any] = {
        "first_call_ms": statistics.median(r["first_call_s"] for r in runs) * 1000,
        "decorate_ms": statistics.median(r["decorate_s"] for r in runs) * 1000,
        "repeats": repeats,
    }
    first = runs[0]
    for name in ("rss_before", "rss_after", "peak_growth", "index_bytes"):
        out[name] = first[name]
    out["rss_growth_per_record"] = (first["rss_after"] - first["rss_before"]) / size
    out["peak_growth_per_record"] = first["peak_growth"] / size
    if first["index_bytes"] is not None:
        out["index_bytes_per_record"] = first["index_bytes"] / size
    if pending:
        out["pending_s"] = first["pending_s"]
        out["pending_points"] = first["pending_points"]
        out["pending_left"] = first["pending_left"]
    return out


def sweep(path: Path, plan: Plan) -> dict[str, Any]:
    """A sweep of ``plan.sweep_a * SEEDS`` points on a new store, then its resume."""
    task = {"kind": "sweep", "store": str(path), "a": plan.sweep_a}
    first = in_child(task)
    again = in_child(task)
    points = plan.sweep_a * SEEDS
    if first["body_ran"] != points or again["body_ran"] != 0:
        raise SystemExit(f"sweep on {path}: ran {first['body_ran']} then {again['body_ran']}")
    return {
        "points": points,
        "first_run_s": first["loop_s"],
        "resume_s": again["loop_s"],
        "first_run_per_point_us": first["loop_s"] / points * 1e6,
        "resume_per_point_us": again["loop_s"] / points * 1e6,
    }


def million(ext: str, path: Path, records: Records) -> dict[str, Any]:
    """Cold start, index memory and ``pending`` over a 1,000,000-point grid."""
    fill(path, records.first(MILLION))
    pending = MILLION if ext in ("csv", "sqlite") else 0
    return cold_start(path, MILLION, 1, pending=pending)


def comparison(work: Path, plan: Plan, rng: random.Random) -> dict[str, Any]:
    """Cache hit and miss+store cost of joblib.Memory and diskcache on the same no-op."""
    import diskcache
    import joblib

    out: dict[str, Any] = {}

    memory = joblib.Memory(location=str(work / "joblib"), verbose=0)
    cached = memory.cache(_noop_joblib)
    n = plan.joblib_entries
    for i in range(n):
        cached(*key_of(i))
    hits = [key_of(rng.randrange(n)) for _ in range(plan.joblib_hits)]
    misses = [(NEW_A + j, 0) for j in range(plan.joblib_misses)]
    out["joblib"] = {
        "version": joblib.__version__,
        "entries": n,
        "hit": summary_us(time_calls(cached, hits)),
        "miss": summary_us(time_calls(cached, misses)),
    }

    with diskcache.Cache(str(work / "diskcache")) as cache:
        memo = cache.memoize()(_noop_diskcache)
        n = plan.diskcache_entries
        for i in range(n):
            memo(*key_of(i))
        hits = [key_of(rng.randrange(n)) for _ in range(plan.diskcache_hits)]
        misses = [(NEW_A + j, 0) for j in range(plan.diskcache_misses)]
        out["diskcache"] = {
            "version": diskcache.__version__,
            "entries": n,
            "hit": summary_us(time_calls(memo, hits)),
            "miss": summary_us(time_calls(memo, misses)),
        }
    return out


def run(plan: Plan, work: Path) -> dict[str, Any]:
    rng = random.Random(20240601)
    results: dict[str, Any] = {
        "machine": machine(work),
        "plan": {"quick": plan is QUICK, **plan.__dict__},
        "targets": {
            "skip_us": TARGET_SKIP_US,
            "record_us": TARGET_RECORD_US,
            "import_ms": TARGET_IMPORT_MS,
            "cold_1m_s": TARGET_COLD_1M_S,
            "index_bytes_per_record": TARGET_INDEX_BYTES,
            "pending_1m_s": TARGET_PENDING_S,
        },
    }
    progress("import stet in fresh processes")
    results["import"] = import_times(plan.import_repeats)
    results["bare_call"] = summary_us(
        time_calls(_noop, [key_of(i) for i in range(plan.skip_calls)])
    )

    records = Records()
    stores: dict[str, dict[str, Any]] = {ext: {} for ext in STORES}
    for size in plan.sizes:
        rows = records.first(size)
        for ext in STORES:
            path = work / f"store-{size}.{ext}"
            progress(f"{LABELS[ext]}, {size:,} records: fill, skip, record, cold start")
            fill(path, rows)
            stores[ext][str(size)] = measure_store(ext, size, path, plan, rng)
    results["stores"] = stores

    results["sweep"] = {}
    for ext in STORES:
        progress(f"{LABELS[ext]}: sweep of {plan.sweep_a * SEEDS:,} points, then resume")
        results["sweep"][ext] = sweep(work / f"sweep.{ext}", plan)

    progress("joblib.Memory and diskcache")
    results["comparison"] = comparison(work, plan, rng)

    if plan.million:
        results["million"] = {}
        for ext in STORES:
            progress(f"{LABELS[ext]}, 1,000,000 records: fill, cold start, memory, pending")
            path = work / f"store-1m.{ext}"
            results["million"][ext] = million(ext, path, records)
            path.unlink()
        records.drop()

    results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


# -- output ----------------------------------------------------------------------------


def num(value: float | None) -> str:
    """A number with about three significant digits, never in exponent form."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def duration(seconds: float) -> str:
    """Seconds as ``"2.14 s"``, or as milliseconds below one second."""
    return f"{num(seconds)} s" if seconds >= 1 else f"{num(seconds * 1000)} ms"


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [title, "-" * len(title)]
    lines.append(
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    for row in rows:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def text_report(results: dict[str, Any]) -> str:
    m = results["machine"]
    sizes = [int(s) for s in results["stores"]["csv"]]
    size_cols = [f"{s:,}" for s in sizes]
    parts = [
        "stet benchmarks",
        f"machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), "
        f"{m['memory_gb']} GB; Python {m['python']} ({m['implementation']}); "
        f"{m['platform']}",
        f"stet {m['stet']}; stores on {m['store_filesystem']}; {m['date']}; load average "
        f"{m['load_average_start']} at start, {m['load_average_end']} at end",
        f"import stet: {num(results['import']['median_ms'])} ms median of "
        f"{len(results['import']['runs_ms'])} fresh processes (target <= "
        f"{TARGET_IMPORT_MS:g} ms); heavy modules loaded by it: "
        f"{', '.join(results['import']['heavy_modules_loaded']) or 'none'}",
        f"undecorated no-op call: {num(results['bare_call']['median_us'])} us median",
    ]
    stores = results["stores"]

    rows = []
    for ext in STORES:
        cells = [num(stores[ext][str(s)]["skip"]["median_us"]) for s in sizes]
        top = stores[ext][str(sizes[-1])]
        rows.append(
            [
                LABELS[ext],
                *cells,
                num(top["skip_identity_us"]),
                num(top["skip_lookup_us"]),
                f"<= {TARGET_SKIP_US:g}",
            ]
        )
    for name in ("joblib", "diskcache"):
        c = results["comparison"][name]
        rows.append(
            [
                f"{name} hit ({c['entries']:,} entries)",
                num(c["hit"]["median_us"]),
                *[""] * (len(sizes) + 1),
                "",
            ]
        )
    parts.append(
        table(
            "Skip path: median us per call on recorded keys",
            ["store", *size_cols, "identity", "lookup", "target"],
            rows,
        )
    )

    rows = []
    for ext in STORES:
        cells = [num(stores[ext][str(s)]["record"]["median_us"]) for s in sizes]
        target = TARGET_RECORD_US.get(ext)
        n = stores[ext][str(sizes[-1])]["record"]["calls"]
        rows.append([LABELS[ext], *cells, str(n), f"<= {target:g}" if target else "as low as"])
    for name in ("joblib", "diskcache"):
        c = results["comparison"][name]
        rows.append(
            [
                f"{name} miss+store",
                num(c["miss"]["median_us"]),
                *[""] * (len(sizes) - 1),
                str(c["miss"]["calls"]),
                "",
            ]
        )
    parts.append(
        table(
            "Record path: median us per call on new keys",
            ["store", *size_cols, "calls", "target"],
            rows,
        )
    )

    rows = []
    for ext in STORES:
        cold = [stores[ext][str(s)]["cold"] for s in sizes]
        mil = results.get("million", {}).get(ext)
        rows.append(
            [
                LABELS[ext],
                *[num(c["first_call_ms"]) for c in cold],
                num(mil["first_call_ms"]) if mil else "-",
                num(cold[-1]["decorate_ms"]),
            ]
        )
    parts.append(
        table(
            "Cold start: first call in a fresh process, ms (decorate = once() itself)",
            ["store", *size_cols, "1,000,000", "decorate"],
            rows,
        )
    )

    if "million" in results:
        rows = []
        for ext in STORES:
            mil = results["million"][ext]
            rows.append(
                [
                    LABELS[ext],
                    num(mil["first_call_ms"]),
                    num(mil["rss_growth_per_record"]),
                    num(mil.get("index_bytes_per_record")),
                    num(mil["peak_growth_per_record"]),
                    num(mil.get("pending_s")),
                ]
            )
        parts.append(
            table(
                f"1,000,000 records (targets: first call <= {TARGET_COLD_1M_S:g} s, "
                f"<= {TARGET_INDEX_BYTES:g} B/record, pending <= {TARGET_PENDING_S:g} s)",
                [
                    "store",
                    "first call ms",
                    "RSS B/rec",
                    "index B/rec",
                    "peak B/rec",
                    "pending 1M s",
                ],
                rows,
            )
        )

    rows = []
    for ext in STORES:
        s = results["sweep"][ext]
        rows.append(
            [
                LABELS[ext],
                num(s["first_run_s"]),
                num(s["first_run_per_point_us"]),
                num(s["resume_s"]),
                num(s["resume_per_point_us"]),
            ]
        )
    points = results["sweep"]["csv"]["points"]
    parts.append(
        table(
            f"Sweep of {points:,} points in a fresh process (loop only), then its resume",
            ["store", "first run s", "us/point", "resume s", "us/point"],
            rows,
        )
    )
    return "\n\n".join(parts) + "\n"


def markdown_table(results: dict[str, Any]) -> str:
    """The results table of docs/explanation/performance.md, ready to paste."""
    stores = results["stores"]
    sizes = [int(s) for s in stores["csv"]]
    low, high = str(sizes[0]), str(sizes[-1])
    span = f"{sizes[0] // 1000}k → {sizes[-1] // 1000}k records"
    lines = ["| Measure | Store | Target | Result |", "| --- | --- | --- | --- |"]

    def add(measure: str, store: str, target: str, result: str) -> None:
        lines.append(f"| {measure} | {store} | {target} | {result} |")

    add(
        "`import stet`",
        "—",
        f"≤ {TARGET_IMPORT_MS:g} ms",
        f"{num(results['import']['median_ms'])} ms",
    )
    for ext in STORES:
        a, b = stores[ext][low]["skip"], stores[ext][high]["skip"]
        add(
            f"Skip path, median per call ({span})",
            LABELS[ext],
            f"≤ {TARGET_SKIP_US:g} µs",
            f"{num(a['median_us'])} → {num(b['median_us'])} µs",
        )
    for ext in STORES:
        a, b = stores[ext][low]["record"], stores[ext][high]["record"]
        target = TARGET_RECORD_US.get(ext)
        add(
            f"Record path, median per call ({span})",
            LABELS[ext],
            f"≤ {num(target)} µs" if target else "as low as the format allows",
            f"{num(a['median_us'])} → {num(b['median_us'])} µs",
        )
    for ext in STORES:
        cold = stores[ext][high]["cold"]
        add(
            f"Cold start, first call ({int(high):,} records)",
            LABELS[ext],
            "—",
            f"{num(cold['first_call_ms'])} ms",
        )
    for ext in STORES:
        mil = results.get("million", {}).get(ext)
        if mil:
            add(
                "Cold start, first call (1,000,000 records)",
                LABELS[ext],
                f"≤ {TARGET_COLD_1M_S:g} s",
                duration(mil["first_call_ms"] / 1000),
            )
    for ext in STORES:
        mil = results.get("million", {}).get(ext)
        if mil and mil.get("index_bytes_per_record") is not None:
            add(
                "Index memory per record (1,000,000 records): RSS growth / index size",
                LABELS[ext],
                f"≤ {TARGET_INDEX_BYTES:g} B",
                f"{num(mil['rss_growth_per_record'])} B / {num(mil['index_bytes_per_record'])} B",
            )
    for ext in STORES:
        mil = results.get("million", {}).get(ext)
        if mil and "pending_s" in mil:
            add(
                "`f.pending(grid)`, 1,000,000-point grid",
                LABELS[ext],
                f"≤ {TARGET_PENDING_S:g} s",
                f"{num(mil['pending_s'])} s",
            )
    for ext in STORES:
        s = results["sweep"][ext]
        add(
            f"Sweep of {s['points']:,} points: first run / resume",
            LABELS[ext],
            "—",
            f"{num(s['first_run_s'])} s / {num(s['resume_s'])} s",
        )
    for name, label in (("joblib", "joblib.Memory"), ("diskcache", "diskcache")):
        c = results["comparison"][name]
        add(
            "Cache hit, median per call (comparison)",
            label,
            "—",
            f"{num(c['hit']['median_us'])} µs",
        )
        add(
            "Cache miss and store, median per call (comparison)",
            label,
            "—",
            f"{num(c['miss']['median_us'])} µs",
        )
    return "\n".join(lines) + "\n"


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    stores = results["stores"]
    sizes = [int(s) for s in stores["csv"]]
    comp = results["comparison"]
    written = []
    out.mkdir(parents=True, exist_ok=True)

    def size_axis(ax: Any) -> None:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{s:,}" for s in sizes])
        ax.minorticks_off()
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("records in the store")
        ax.grid(True, which="major", alpha=0.3)

    def path_plot(
        metric: str,
        targets: list[tuple[float, str, str]],
        peer: str,
        title: str,
        name: str,
    ) -> None:
        """One line per store for ``metric`` against store size, with targets and peers."""
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for ext in STORES:
            ys = [stores[ext][str(s)][metric]["median_us"] for s in sizes]
            ax.plot(
                sizes,
                ys,
                marker=MARKERS[ext],
                markerfacecolor="none",
                color=COLORS[ext],
                label=f"stet {LABELS[ext]}",
            )
        for value, color, label in targets:
            ax.axhline(value, color=color, linestyle="--", label=label)
        for tool, color, style, label in (
            ("joblib", "tab:purple", ":", "joblib.Memory"),
            ("diskcache", "tab:brown", "-.", "diskcache memoize"),
        ):
            ax.axhline(
                comp[tool][peer]["median_us"],
                color=color,
                linestyle=style,
                label=f"{label} {'hit' if peer == 'hit' else 'miss+store'}",
            )
        size_axis(ax)
        ax.set_ylabel("median µs per call")
        ax.set_title(title)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
        fig.tight_layout()
        written.append(out / name)
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)

    path_plot(
        "skip",
        [(TARGET_SKIP_US, "black", "target (≤ 20 µs)")],
        "hit",
        "Skip path: a call whose run is already recorded",
        "skip_path.png",
    )
    path_plot(
        "record",
        [
            (TARGET_RECORD_US["csv"], "black", "target CSV, SQLite (≤ 300 µs)"),
            (TARGET_RECORD_US["json"], "gray", "target JSON (≤ 1 ms)"),
        ],
        "miss",
        "Record path: a call with a new key (run, then record)",
        "record_path.png",
    )

    mil = results.get("million", {})
    groups = [*sizes, MILLION] if mil else sizes
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4.5), gridspec_kw={"width_ratios": [1, 4]})
    left.bar(["import stet"], [results["import"]["median_ms"]], color="tab:gray")
    left.axhline(TARGET_IMPORT_MS, color="black", linestyle="--", label="target ≤ 100 ms")
    left.set_ylabel("ms")
    left.legend(fontsize=8, loc="upper right")
    left.set_ylim(0, max(TARGET_IMPORT_MS, results["import"]["median_ms"]) * 1.3)
    width = 0.8 / len(groups)
    shades = ["#c6dbef", "#6baed6", "#2171b5", "#08306b"]
    for j, size in enumerate(groups):
        xs, ys = [], []
        for i, ext in enumerate(STORES):
            if size == MILLION:
                value = mil[ext]["first_call_ms"]
            else:
                value = stores[ext][str(size)]["cold"]["first_call_ms"]
            xs.append(i + (j - (len(groups) - 1) / 2) * width)
            ys.append(value)
        right.bar(xs, ys, width=width, color=shades[j % len(shades)], label=f"{size:,} records")
    if mil:
        right.axhline(
            TARGET_COLD_1M_S * 1000,
            color="black",
            linestyle="--",
            label="target at 1,000,000 (≤ 2 s)",
        )
    right.set_yscale("log")
    right.set_xticks(range(len(STORES)))
    right.set_xticklabels([LABELS[e] for e in STORES])
    right.set_ylabel("first call, ms (log scale)")
    right.grid(True, axis="y", alpha=0.3)
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)
    fig.suptitle("Cold start: a fresh process imports stet, then its first call reads the store")
    fig.tight_layout()
    written.append(out / "cold_start.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child_main(json.loads(argv[1]))
        return
    parser = argparse.ArgumentParser(description="Benchmark stet against its targets (S8).")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1k and 10k records only, fewer samples, no 1M (CI smoke run)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where results.json and the plots go "
        "(default: docs/assets/benchmarks in the repository)",
    )
    parser.add_argument(
        "--tmp",
        type=Path,
        default=None,
        help="directory for the stores (default: a new temporary directory)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="also print the results table of docs/explanation/performance.md",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="measure nothing: print the tables and redraw the plots of an earlier run",
    )
    args = parser.parse_args(argv)

    if args.render is not None:
        results = json.loads(args.render.read_text())
        if not args.no_plots:
            plots(results, args.out if args.out is not None else args.render.parent)
        print(text_report(results))
        if args.markdown:
            print(markdown_table(results))
        return

    plan = QUICK if args.quick else FULL
    out = args.out if args.out is not None else ROOT / "docs" / "assets" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    if args.tmp is not None:
        args.tmp.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="stet-bench-", dir=args.tmp)).resolve()
    started = time.perf_counter()
    try:
        results = run(plan, work)
    finally:
        if args.keep:
            progress(f"stores kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["duration_s"] = time.perf_counter() - started

    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    written = [out / "results.json"]
    if not args.no_plots:
        written += plots(results, out)
    print(text_report(results))
    if args.markdown:
        print(markdown_table(results))
    progress(f"done in {results['duration_s']:.0f} s; wrote {', '.join(map(str, written))}")


if __name__ == "__main__":
    main()
