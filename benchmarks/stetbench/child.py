"""The fresh-process side: what runs in ``python benchmarks/run.py --child TASK``.

Costs that only a new process sees are measured here: ``import stet``, the first call
on an existing store (reading it into memory), the memory that takes, a sweep and its
resume, records made until the process exits (Parquet may finish its file at exit),
and the workers of the claims benchmark. `run` starts a child and returns the JSON
object it printed last; this module imports nothing heavy before it times
``import stet``.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

from stetbench import RUN_PY, SRC
from stetbench.machine import peak_rss, rss
from stetbench.plan import CALLS, FUNCS, SEEDS, new_point


def env() -> dict[str, str]:
    """The environment of a child: this checkout's ``src/`` first, skips quiet."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), out.get("PYTHONPATH")) if p)
    out["STET_QUIET"] = "1"
    return out


def command(task: dict[str, Any]) -> list[str]:
    return [sys.executable, str(RUN_PY), "--child", json.dumps(task)]


def parse(task: dict[str, Any], proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child {task['kind']} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run(task: dict[str, Any]) -> dict[str, Any]:
    """Run ``task`` in a fresh interpreter; return its result with ``exited_at`` added.

    ``exited_at`` is the wall clock (``time.time``) just after the process ended, so a
    child can report when its work started and the parent adds the process exit.
    """
    proc = subprocess.run(command(task), capture_output=True, text=True, env=env(), check=False)
    exited = time.time()
    result = parse(task, proc)
    result["exited_at"] = exited
    return result


def main(task: dict[str, Any]) -> None:
    """Dispatch a task by its ``kind`` and print its result as one JSON line."""
    kinds = {
        "cold": cold,
        "amortised": amortised,
        "sweep": sweep,
        "claim": claim_worker,
        "sqlite_pending": sqlite_pending,
    }
    out = kinds[task["kind"]](task)
    print(json.dumps(out), flush=True)


def _decorated(task: dict[str, Any], **options: Any) -> tuple[Any, dict[str, Any]]:
    clock = time.perf_counter
    t0 = clock()
    import stet

    t1 = clock()
    func, _, key = FUNCS[task.get("func", "f")]
    g = stet.once(store=task["store"], key=key, quiet=True, **options)(func)
    return g, {"import_s": t1 - t0, "decorate_s": clock() - t1}


def cold(task: dict[str, Any]) -> dict[str, Any]:
    """First call on an existing store: time, memory growth, then optionally pending."""
    clock = time.perf_counter
    rss_start = rss()
    g, out = _decorated(task)
    gc.collect()
    rss0, hwm0 = rss(), peak_rss()
    t3 = clock()
    g(*task["point"])
    t4 = clock()
    gc.collect()
    rss1, hwm1 = rss(), peak_rss()
    from stetbench.stores import index_bytes

    out.update(
        first_call_s=t4 - t3,
        body_ran=CALLS[0],
        rss_start=rss_start,
        rss_before=rss0,
        rss_after=rss1,
        peak_growth=max(hwm1 - rss0, 0) if hwm1 > hwm0 else 0,
        index_bytes=index_bytes(g),
    )
    if task.get("pending"):
        out["pending"] = pending(g, *task["pending"])
    return out


def pending(g: Any, a0: int, a1: int) -> dict[str, Any]:
    """``g.pending`` over the ``a0 <= a < a1`` x ``seed`` grid as dict, tuples, dicts."""
    clock = time.perf_counter
    seeds = range(SEEDS)
    out: dict[str, Any] = {"points": (a1 - a0) * SEEDS}
    grids: list[tuple[str, Any]] = [
        ("dict", lambda: {"a": list(range(a0, a1)), "seed": list(seeds)})
    ]
    grids.append(("tuples", lambda: [(a, s) for a in range(a0, a1) for s in seeds]))
    grids.append(("dicts", lambda: [{"a": a, "seed": s} for a in range(a0, a1) for s in seeds]))
    for name, build in grids:
        grid = build()
        gc.collect()
        start = clock()
        left = sum(1 for _ in g.pending(grid))
        out[f"{name}_s"] = clock() - start
        out[f"{name}_left"] = left
        del grid
    return out


def sqlite_pending(task: dict[str, Any]) -> dict[str, Any]:
    """The SQLite floor's ``pending`` over the ``a0 <= a < a1`` x ``seed`` grid."""
    from stetbench import sqlfloor

    a0, a1 = task["span"]
    grid = {"a": list(range(a0, a1)), "seed": list(range(SEEDS))}
    return {"points": (a1 - a0) * SEEDS, **sqlfloor.pending(task["path"], grid)}


def amortised(task: dict[str, Any]) -> dict[str, Any]:
    """Record up to ``n`` new runs, then exit; the parent adds the exit to the time."""
    g, out = _decorated(task)
    names = FUNCS[task.get("func", "f")][1]
    g(*task["point"])  # a recorded run: reads the store, so the loop times records only
    if CALLS[0]:
        raise SystemExit("amortised: a recorded run was not skipped")
    limit = task["limit_s"]
    start = time.time()
    done = 0
    for j in range(task["start"], task["start"] + task["n"]):
        g(*new_point(names, j))
        done += 1
        if time.time() - start > limit:
            break
    out.update(loop_start=start, loop_end=time.time(), recorded=done, body_ran=CALLS[0])
    return out


def sweep(task: dict[str, Any]) -> dict[str, Any]:
    """A loop over ``a`` x ``seed`` on a store: the first run records, a resume skips."""
    g, out = _decorated(task)
    start = time.perf_counter()
    for a in range(task["a"]):
        for seed in range(SEEDS):
            g(a, seed)
    out.update(loop_s=time.perf_counter() - start, body_ran=CALLS[0])
    return out


def claim_worker(task: dict[str, Any]) -> dict[str, Any]:
    """One of N workers walking the same keys with ``claim=True``, started together.

    It opens the store, says it is ready (a file in the barrier directory), waits for
    the ``go`` file, then walks every key in order.
    """
    import stet

    body_s = task["body_s"]

    def job(a: int, seed: int) -> None:
        CALLS[0] += 1
        if body_s:
            time.sleep(body_s)

    lease = task.get("lease", 60.0)
    g = stet.once(store=task["store"], claim=True, lease=lease, quiet=True)(job)
    g.has(-1, -1)  # opens the store or connection before the start
    barrier = task["barrier"]
    with open(os.path.join(barrier, f"ready-{task['index']}"), "w"):
        pass
    go = os.path.join(barrier, "go")
    deadline = time.time() + 120
    while not os.path.exists(go):
        if time.time() > deadline:
            raise SystemExit("claims worker: no go signal within 120 s")
        time.sleep(0.0005)
    start = time.time()
    for k in range(task["keys"]):
        g(*divmod(k, SEEDS))
    return {"start": start, "end": time.time(), "ran": CALLS[0]}
