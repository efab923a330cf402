"""``import stet`` in fresh processes, and two memoizers on the same no-op function.

``import stet`` must stay under 100 ms and must not load pandas, pyarrow or psycopg
(S8); it is timed in new interpreters, each printing the modules it ended up with.
joblib.Memory and diskcache's ``memoize`` are not the same tool (they store return
values), but a reader deciding whether stet's per-call cost matters will compare: their
hit and miss+store costs on the same no-op function are measured side by side.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from random import Random
from typing import Any

from stetbench import child
from stetbench.plan import ALSO_WATCHED, HEAVY, NAMES_F, Plan, new_point, point
from stetbench.timing import summary_us, time_calls


def import_times(repeats: int) -> dict[str, Any]:
    """``import stet`` in fresh interpreters: median ms, and which watched modules loaded."""
    watched = (*HEAVY, *ALSO_WATCHED)
    code = (
        "import sys, time, json\n"
        "t = time.perf_counter()\n"
        "import stet\n"
        "t = time.perf_counter() - t\n"
        f"print(json.dumps([t, [m for m in {watched!r} if m in sys.modules]]))\n"
    )
    runs: list[float] = []
    loaded: list[str] = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=child.env(),
            check=True,
        )
        seconds, loaded = json.loads(proc.stdout)
        runs.append(seconds)
    return {
        "median_ms": statistics.median(runs) * 1000,
        "runs_ms": [r * 1000 for r in runs],
        "heavy_modules_loaded": [m for m in loaded if m in HEAVY],
        "other_modules_loaded": [m for m in loaded if m not in HEAVY],
    }


def _noop_joblib(a: int, seed: int) -> None:
    return None


def _noop_diskcache(a: int, seed: int) -> None:
    return None


def _noop(a: int, seed: int) -> None:
    return None


def bare_call(plan: Plan) -> dict[str, float]:
    """An undecorated no-op call, for scale."""
    return summary_us(time_calls(_noop, [point(NAMES_F, i) for i in range(plan.skip_calls * 4)]))


def memoizers(work: Path, plan: Plan, rng: Random) -> dict[str, Any]:
    """Cache hit and miss+store cost of joblib.Memory and diskcache on the same no-op."""
    import diskcache
    import joblib

    out: dict[str, Any] = {}
    memory = joblib.Memory(location=str(work / "joblib"), verbose=0)
    cached = memory.cache(_noop_joblib)
    n = plan.joblib_entries
    for i in range(n):
        cached(*point(NAMES_F, i))
    hits = [point(NAMES_F, rng.randrange(n)) for _ in range(plan.joblib_hits)]
    misses = [new_point(NAMES_F, j) for j in range(plan.joblib_misses)]
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
            memo(*point(NAMES_F, i))
        hits = [point(NAMES_F, rng.randrange(n)) for _ in range(plan.diskcache_hits)]
        misses = [new_point(NAMES_F, j) for j in range(plan.diskcache_misses)]
        out["diskcache"] = {
            "version": diskcache.__version__,
            "entries": n,
            "hit": summary_us(time_calls(memo, hits)),
            "miss": summary_us(time_calls(memo, misses)),
        }
    return out
